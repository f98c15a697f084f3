"""Image classification: cross-entropy (plus weighted auxiliary heads) and torchmetrics accuracies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from visionbench.errors import ConfigError
from visionbench.tasks.base import OptimizerFactory, VisionTask


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 (micro), macro (mean per-class) and, with more than 5 classes, top-5 accuracy."""
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "acc_macro": MulticlassAccuracy(num_classes, average="macro"),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    # compute_groups=False: grouping shares state between metrics that look equal after the first
    # update (top-1 and top-5 can), which then reports one metric's value for the other all run long.
    return MetricCollection(metrics, compute_groups=False)


class ClassRanking(NamedTuple):
    """Every class of each image, most probable first: a writer keeps the top k it was asked for."""

    probabilities: Tensor  # (N, num_classes), descending
    classes: Tensor  # (N, num_classes), the class index of each probability


def balanced_class_weights(counts: Sequence[int], class_names: Sequence[str]) -> Tensor:
    """scikit-learn's ``class_weight="balanced"``: class c weighs n / (k · count_c), so every class
    carries the same total weight in the training loss, and a balanced split weighs every class 1."""
    empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
    if empty:
        raise ConfigError(
            f"task.module.class_weights=balanced weighs class c by n / (k · count_c), but class(es) {empty} have no "
            "training sample, so their weight would be infinite. Use task.module.class_weights=null, or change "
            "task.data.split so that every class keeps training images."
        )
    n = torch.tensor(counts, dtype=torch.float32)
    return n.sum() / (len(n) * n)


class ClassificationTask(VisionTask):
    """Metrics are torchmetrics objects held by the module (so they move with it and sync
    exactly under DDP). Validation and test metrics are logged as objects, so Lightning computes
    and resets them per epoch; training metrics are computed in ``on_train_epoch_end``.

    ``class_weights="balanced"`` weights the training loss by ``balanced_class_weights`` of
    ``class_counts`` (the training split's, passed by ``build_task``), for training sets more
    imbalanced than their test split. Validation and test losses stay unweighted: they report
    the plain cross-entropy (no label smoothing either), comparable across runs whatever their
    training objective.

    ``tta="flip"`` also scores every validation and test image as the mean of the softmax of the
    image and of its mirror image, logged beside the plain metrics as ``<stage>/acc_tta`` etc.;
    the plain metrics (and so the monitored value, the best checkpoint and early stopping) stay
    those of the single view, so a TTA number is never reported in place of a plain one.
    """

    class_weight: Tensor | None

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        *,
        label_smoothing: float = 0.0,
        class_weights: str | None = None,
        class_counts: Sequence[int] | None = None,
        tta: str | None = None,
        **kwargs: Any,  # scheduler, class_names, ...: VisionTask's
    ) -> None:
        super().__init__(net, num_classes, optimizer, monitor="val/acc", monitor_mode="max", **kwargs)
        if tta not in (None, "flip"):
            raise ConfigError(
                f"Unknown task.module.tta {tta!r}. Use null (one view: the default) or 'flip' (also report the mean "
                "softmax of each image and its mirror image, as <stage>/acc_tta beside <stage>/acc)."
            )
        self.tta = tta
        if class_weights not in (None, "balanced"):
            raise ConfigError(
                f"Unknown task.module.class_weights {class_weights!r}. Use null (plain cross-entropy: the default) or "
                "'balanced' (class c weighs n / (k · count_c) of the training split, as scikit-learn's)."
            )
        weight = None
        if class_weights is not None:
            if class_counts is None:
                raise ValueError("class_weights='balanced' needs class_counts, the training split's count of each class")
            weight = balanced_class_weights(class_counts, self.class_names)
        # Not persistent: recomputed from the data at every build, so checkpoints load with or without it.
        self.register_buffer("class_weight", weight, persistent=False)
        self.label_smoothing = label_smoothing
        metrics = accuracy_metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        if tta is not None:
            self.val_tta_metrics = metrics.clone(prefix="val/", postfix="_tta")
            self.test_tta_metrics = metrics.clone(prefix="test/", postfix="_tta")

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """Training cross-entropy against class indices (N,) or, for MixUp/CutMix batches, class
        probabilities (N, num_classes); ``label_smoothing`` and ``class_weight`` apply to both.

        With weights, PyTorch averages index targets over their summed weights but probability
        targets over the batch size, which would scale mixed batches' loss by their mean weight.
        Dividing by each sample's target weight (w · p) instead gives a one-hot batch exactly the
        index-target loss."""
        if self.class_weight is None or y.ndim == 1:
            return F.cross_entropy(logits, y, weight=self.class_weight, label_smoothing=self.label_smoothing)
        total = F.cross_entropy(logits, y, weight=self.class_weight, label_smoothing=self.label_smoothing, reduction="sum")
        return total / (y * self.class_weight).sum()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits, loss = self.training_loss(x, y)
        self.check_finite(loss, batch_idx)
        # Mixed batches (task.data.augment.mixup/cutmix) carry class probabilities: training
        # accuracy counts a prediction of the dominant class as right.
        self.train_metrics.update(logits.detach(), y.argmax(dim=1) if y.ndim == 2 else y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        """Training accuracies are computed (synced across ranks by torchmetrics) once per epoch.
        Logging the collection object at every step instead costs Lightning 3.3 ms of Python per
        step (measured on this CPU), half the loop's overhead on a small network."""
        self.log_dict(self.train_metrics.compute(), prog_bar=True, sync_dist=True)
        self.train_metrics.reset()

    def prediction(self, logits: Tensor) -> ClassRanking:
        """Softmax probabilities ranked; ties keep the lower class index first."""
        probabilities, classes = logits.softmax(dim=1).sort(dim=1, descending=True, stable=True)
        return ClassRanking(probabilities, classes)

    def flip_tta_probabilities(self, x: Tensor, logits: Tensor) -> Tensor:
        """The mean of the softmax of ``x`` (whose ``logits`` are given) and of its mirror image."""
        return (logits.softmax(dim=1) + self.predict_logits(x.flip(-1)).softmax(dim=1)) / 2

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self.predict_logits(x)
        loss_metric = self.val_loss if stage == "val" else self.test_loss
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))  # plain: no class weights, no smoothing
        metrics.update(logits, y)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        if self.tta is not None:
            tta_metrics = self.val_tta_metrics if stage == "val" else self.test_tta_metrics
            tta_metrics.update(self.flip_tta_probabilities(x, logits), y)
            self.log_dict(tta_metrics, on_step=False, on_epoch=True)
        return logits

    def on_validation_epoch_end(self) -> None:
        self.log_best(self.val_metrics["acc"].compute())
