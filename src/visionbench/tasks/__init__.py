"""LightningModules that own the loss, metrics, optimiser and logging of each task kind."""
