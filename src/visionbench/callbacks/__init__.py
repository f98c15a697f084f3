"""TensorBoard dashboards: sample grids, prediction bars, confusion matrix, mask triplets, layer summary."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from visionbench.callbacks.classification import ClassificationFigures
from visionbench.callbacks.segmentation import SegmentationFigures
from visionbench.errors import ConfigError


def task_figures(kind: str, num_images: int = 4, num_train_images: int = 16, every_n_epochs: int = 1, top_k: int = 10) -> Callback:
    """The figure callback for the task kind, so one config entry (``kind: ${task.kind}``) serves every task.

    ``top_k`` (bars per image) applies to classification only.
    """
    if kind == "classification":
        return ClassificationFigures(num_images, num_train_images, every_n_epochs, top_k)
    if kind == "segmentation":
        return SegmentationFigures(num_images, num_train_images, every_n_epochs)
    raise ConfigError(f"callbacks.figures.kind={kind!r} has no figures; expected 'classification' or 'segmentation'.")
