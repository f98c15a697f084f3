"""The augmentation, described once, and its two implementations: per sample and whole batches."""
