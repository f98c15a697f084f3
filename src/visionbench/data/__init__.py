"""Datasets in their real on-disk formats, deterministic splits, transforms and DataModules."""
