"""TensorBoard figures for classification: augmented training samples, predictions on fixed
validation images, the confusion matrix and per-class accuracy."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import MulticlassConfusionMatrix

from visionbench.callbacks.base import ValidationFigures, add_figure, class_names, task_of
from visionbench.drawing import Prediction, class_bars_figure, confusion_figure, predictions_figure, sample_grid, unnormalize
from visionbench.tasks.base import VisionTask


class ClassificationFigures(ValidationFigures):
    """Needs ``validation_step`` to return the logits and the module to expose ``num_classes``.

    The task keeps accuracies, not a confusion matrix, so this callback accumulates its own from
    the logits of each validation batch (updated on every rank, synced when computed).
    """

    def __init__(self, num_images: int = 4, num_train_images: int = 16, every_n_epochs: int = 1, top_k: int = 10) -> None:
        super().__init__(num_images, num_train_images, every_n_epochs)
        self.top_k = top_k
        self.confusion: MulticlassConfusionMatrix | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.confusion is None:
            self.confusion = MulticlassConfusionMatrix(task_of(pl_module, VisionTask).num_classes)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.confusion is not None
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._active(trainer):
            self.update(outputs.detach(), batch[1])

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add one validation batch, from the logits ``validation_step`` returned."""
        assert self.confusion is not None
        self.confusion.update(logits.argmax(dim=1), target)

    def epoch_confusion(self, pl_module: L.LightningModule) -> Tensor:
        assert self.confusion is not None
        return self.confusion.compute()

    def draw_train_samples(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        images, labels = batch[0][: self.num_train_images], batch[1][: self.num_train_images]
        if labels.ndim == 2:  # mixup/cutmix: class probabilities, titled by the dominant class
            labels = labels.argmax(1)
        names = class_names(pl_module, task_of(pl_module, VisionTask).num_classes)
        add_figure(writer, "train/samples", sample_grid(unnormalize(images), [names[int(y)] for y in labels]), trainer.global_step)

    def draw(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, matrix: np.ndarray) -> None:
        names = class_names(pl_module, len(matrix))
        step = trainer.global_step
        if self.fixed_val_samples(trainer):
            samples, images, logits = self.predict_fixed(trainer, pl_module)
            probs = logits.softmax(dim=1).float().cpu().numpy()
            predictions = [
                Prediction(image, p, int(label)) for image, p, (_, label) in zip(unnormalize(images), probs, samples, strict=True)
            ]
            add_figure(writer, "val/predictions", predictions_figure(predictions, names, self.top_k), step)
        add_figure(writer, "val/confusion_matrix", confusion_figure(matrix, names), step)
        with np.errstate(invalid="ignore"):
            per_class = np.diag(matrix) / matrix.sum(axis=1)
        add_figure(writer, "val/per_class_accuracy", class_bars_figure(per_class, names, "accuracy"), step)
