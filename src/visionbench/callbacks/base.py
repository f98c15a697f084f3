"""What the figure callbacks share: the rank-0 TensorBoard writer, fixed validation samples, and
the validation pass's confusion matrix, computed (synced) on every rank and drawn on rank 0."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from visionbench.tasks.base import VisionTask

TaskT = TypeVar("TaskT", bound=VisionTask)


def has_tensorboard(trainer: L.Trainer) -> bool:
    return any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)


def tensorboard_writer(trainer: L.Trainer) -> SummaryWriter | None:
    """The TensorBoard writer on rank 0; ``None`` on other ranks or without a TensorBoard logger."""
    if not trainer.is_global_zero:
        return None
    return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def add_figure(writer: SummaryWriter, tag: str, figure: Figure, step: int) -> None:
    # close=False: our figures are not registered with pyplot, there is nothing to close.
    writer.add_figure(tag, figure, global_step=step, close=False)


def task_of(pl_module: L.LightningModule, kind: type[TaskT]) -> TaskT:
    """``pl_module`` typed as the task a callback serves: Lightning types a hook's module as any
    LightningModule, whose attributes mypy reads as tensors or submodules. Cast, not checked: any
    module with the attributes a callback reads serves it."""
    return cast(TaskT, pl_module)


def class_names(pl_module: L.LightningModule, num_classes: int) -> list[str]:
    return list(getattr(pl_module, "class_names", None) or [str(i) for i in range(num_classes)])


class ValidationFigures(Callback, ABC):
    """Base of the per-task figure callbacks.

    Subclasses say where the pass's confusion matrix comes from (``epoch_confusion``) and draw
    in ``draw``. Figures are skipped during the sanity check (its few batches would be misleading)
    and entirely when no TensorBoard logger is attached. ``epoch_confusion`` runs on every rank
    because computing a metric all-gathers under DDP; only rank 0 draws and writes.
    """

    def __init__(self, num_images: int = 4, num_train_images: int = 16, every_n_epochs: int = 1) -> None:
        self.num_images = num_images
        self.num_train_images = num_train_images
        self.every_n_epochs = every_n_epochs
        self._samples: list[Any] | None = None  # the fixed validation samples, read once
        self._indices: list[int] = []  # and their indices in the validation set
        self._train_samples_pending = False

    @abstractmethod
    def epoch_confusion(self, pl_module: L.LightningModule) -> Tensor:
        """The confusion matrix of the validation pass that just ended (rows = truth), on every rank."""

    @abstractmethod
    def draw(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, matrix: np.ndarray) -> None:
        """Write the epoch's figures (rank 0); ``matrix`` is the synced confusion matrix."""

    @abstractmethod
    def draw_train_samples(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        """Write the first training batch of the fit (rank 0)."""

    def _active(self, trainer: L.Trainer) -> bool:
        return has_tensorboard(trainer) and not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_samples_pending = self.num_train_images > 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        """The first batch of the fit, as the network sees it (after augmentation and device transfer)."""
        if not self._train_samples_pending:
            return
        self._train_samples_pending = False
        writer = tensorboard_writer(trainer)
        if writer is not None:
            self.draw_train_samples(writer, trainer, pl_module, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        matrix = self.epoch_confusion(pl_module).cpu().numpy()  # on every rank: syncs under DDP
        writer = tensorboard_writer(trainer)
        if writer is not None:
            self.draw(writer, trainer, pl_module, matrix)

    def fixed_val_samples(self, trainer: L.Trainer) -> list[Any]:
        """``num_images`` validation samples spread evenly over the split, the same ones every epoch.

        Spread rather than the first few because splits are ordered by class, so the first
        images would all show one class.
        """
        if self._samples is None:
            dataset: Dataset = self._val_loader(trainer).dataset
            size = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__; a validation set has one
            self._indices = sorted({int(i) for i in np.linspace(0, size - 1, min(self.num_images, size)).round()})
            self._samples = [dataset[i] for i in self._indices]
        return self._samples

    def predict_fixed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list[Any], Tensor, Tensor]:
        """The fixed samples, collated exactly as in validation (e.g. padded), and their logits.

        Runs during validation, so the module is already in eval mode; the logits come from the
        task's ``predict_logits`` (whole image or sliding windows), as in its ``validation_step``.
        The batch skips ``on_after_batch_transfer``: a cached pipeline's images stay uint8 here and
        the task normalises them (``forward``, ``predict_logits``) as its loaders' hook would.
        """
        samples = self.fixed_val_samples(trainer)
        loader = self._val_loader(trainer)
        read_batch = getattr(loader.dataset, "__getitems__", None)  # as the DataLoader's fetcher does
        images = loader.collate_fn(read_batch(self._indices) if read_batch else samples)[0].to(pl_module.device)
        with torch.no_grad():
            return samples, images, task_of(pl_module, VisionTask).predict_logits(images)

    @staticmethod
    def _val_loader(trainer: L.Trainer) -> DataLoader:
        loaders = trainer.val_dataloaders
        assert loaders is not None  # read during validation
        return loaders[0] if isinstance(loaders, (list, tuple)) else loaders
