"""TensorBoard figures for segmentation: training samples with their masks, image | ground truth |
prediction triplets with a class legend, in the task's colours (``SegmentationTask.colormap``), and
per-class IoU."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from visionbench.callbacks.base import ValidationFigures, add_figure, class_names, task_of
from visionbench.drawing import SegmentationRow, class_bars_figure, overlay, sample_grid, segmentation_figure, unnormalize
from visionbench.tasks.segmentation import SegmentationTask, segmentation_scores


class SegmentationFigures(ValidationFigures):
    """For a ``SegmentationTask``: the per-class IoU bars are drawn from the task's own validation
    confusion matrix (``confmat["val"]``), the one its mIoU comes from, so the two always agree.
    """

    def epoch_confusion(self, pl_module: L.LightningModule) -> Tensor:
        """Read before the task's ``on_validation_epoch_end`` resets it (Lightning runs the callbacks'
        epoch-end hooks first); torchmetrics keeps the computed value, so the task does not sync again."""
        return task_of(pl_module, SegmentationTask).confusion("val").compute()

    def draw_train_samples(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        images = unnormalize(batch[0][: self.num_train_images])
        masks = batch[1][: self.num_train_images].cpu().numpy()
        colormap = task_of(pl_module, SegmentationTask).colormap
        overlays = [overlay(image, mask, colormap=colormap) for image, mask in zip(images, masks, strict=True)]
        add_figure(writer, "train/samples", sample_grid(np.stack(overlays), [""] * len(overlays), columns=4), trainer.global_step)

    def draw(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, matrix: np.ndarray) -> None:
        step = trainer.global_step
        names = class_names(pl_module, len(matrix))
        if self.fixed_val_samples(trainer):
            samples, images, logits = self.predict_fixed(trainer, pl_module)
            pixels, predicted = unnormalize(images), logits.argmax(dim=1).cpu().numpy()
            rows = []
            for j, (_, mask) in enumerate(samples):
                h, w = mask.shape[-2:]  # crop the validation padding away
                rows.append(SegmentationRow(pixels[j, :h, :w], predicted[j, :h, :w], mask.cpu().numpy()))
            add_figure(writer, "val/segmentation", segmentation_figure(rows, names, task_of(pl_module, SegmentationTask).colormap), step)
        iou = segmentation_scores(torch.from_numpy(matrix)).iou.numpy()
        add_figure(writer, "val/per_class_iou", class_bars_figure(iou, names, "IoU"), step)
