"""visionbench: classic vision CNNs benchmarked with Lightning + Hydra."""
