"""Semantic segmentation: per-pixel cross-entropy and confusion-matrix metrics over a whole split."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from visionbench.data.transforms.batch import normalize_uint8
from visionbench.errors import ConfigError
from visionbench.masks import IGNORE_INDEX, class_colormap
from visionbench.tasks.base import OptimizerFactory, VisionTask

STAGES = ("val", "test")


class SegmentationScores(NamedTuple):
    pixel_acc: Tensor  # scalar: global accuracy, correct pixels / all pixels
    class_acc: Tensor  # scalar: class-average accuracy, the mean per-class recall
    miou: Tensor  # scalar
    iou: Tensor  # (num_classes,), NaN for classes absent from both prediction and ground truth


def segmentation_scores(confmat: Tensor) -> SegmentationScores:
    """SegNet's three figures (global pixel accuracy, class-average accuracy, mean IoU) and per-class
    IoU from a confusion matrix (rows = truth, cols = prediction).

    IoU_c = TP_c / (TP_c + FP_c + FN_c) = diag_c / (row_c + col_c - diag_c). A class with
    ``row_c + col_c == 0`` (neither in the ground truth nor predicted anywhere in the split)
    has no defined IoU: it is NaN and left out of the mean. A class that is only predicted, or
    only present in the ground truth, has IoU 0 and counts. The class-average accuracy is the mean
    of recall_c = diag_c / row_c over the classes present in the ground truth (a class only
    predicted has no recall); unlike pixel accuracy, it is not dominated by large classes
    (road, sky). Computing all of this once from the matrix of the whole split (not averaging
    per-batch values) is the standard VOC protocol.
    """
    cm = confmat.double()
    tp = cm.diagonal()
    truth = cm.sum(1)
    union = cm.sum(0) + truth - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    recall = torch.where(truth > 0, tp / truth.clamp(min=1), nan)
    return SegmentationScores(pixel_acc=tp.sum() / cm.sum(), class_acc=recall.nanmean(), miou=iou.nanmean(), iou=iou)


class ClassPixels(NamedTuple):
    """What median-frequency weights are computed from, per class, over a split's masks."""

    pixels: list[int]  # labelled pixels of class c
    image_pixels: list[int]  # labelled pixels of the images in which class c is present


def class_pixels(masks: Iterable[np.ndarray], num_classes: int) -> ClassPixels:
    """Count ``ClassPixels`` over index masks (void, 255, is neither a class nor counted in an
    image's pixels: the loss never sees it)."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        labelled = np.asarray(mask).ravel()
        labelled = labelled[labelled != IGNORE_INDEX]
        counts = np.bincount(labelled, minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += (counts > 0) * labelled.size
    return ClassPixels(pixels.tolist(), image_pixels.tolist())


def median_frequency_weights(pixels: Sequence[int], image_pixels: Sequence[int], class_names: Sequence[str]) -> Tensor:
    """Median-frequency balancing (Eigen & Fergus 2015; SegNet's choice for CamVid): class c weighs
    median(freq) / freq_c with freq_c = pixels_c / image_pixels_c, so classes rarer than the median
    (poles, signs, cyclists) weigh more than 1 and road and sky less."""
    absent = [name for name, count in zip(class_names, pixels, strict=True) if count == 0]
    if absent:
        raise ConfigError(
            f"task.module.class_weights=median_frequency weighs class c by median(freq) / freq_c, but class(es) {absent} "
            "have no pixel in the training masks, so their weight would be infinite. Use task.module.class_weights=null, "
            "or train on a split whose masks hold every class of task.data.class_names."
        )
    freq = torch.tensor(pixels, dtype=torch.float64) / torch.tensor(image_pixels, dtype=torch.float64)
    return freq.quantile(0.5) / freq  # numpy's median: the mean of the middle two for an even count


def task_colormap(palette: Sequence[Sequence[int]] | None, class_names: Sequence[str]) -> np.ndarray:
    """``class_colormap`` of ``task.module.palette``, which must colour every class."""
    if palette is not None and len(palette) < len(class_names):
        raise ConfigError(
            f"task.module.palette has {len(palette)} colour(s) for the {len(class_names)} classes {list(class_names)}: "
            "give one [r, g, b] per class in mask-index order, or null for VOC's colour map."
        )
    try:
        return class_colormap(palette)
    except ValueError as err:
        raise ConfigError(f"task.module.palette: {err}. Give one [r, g, b] per class, e.g. [[128,128,128],[128,0,0]].") from None


def window_stride(window: tuple[int, int], stride: tuple[int, int] | None) -> tuple[int, int]:
    """The configured stride, or by default 2/3 of the window (a third of each tile overlaps)."""
    if stride:
        return (int(stride[0]), int(stride[1]))
    return (max(1, 2 * window[0] // 3), max(1, 2 * window[1] // 3))


def sliding_window_logits(net: nn.Module, x: Tensor, window: tuple[int, int], stride: tuple[int, int], num_classes: int) -> Tensor:
    """Logits of the normalised float images ``x`` averaged over overlapping ``window`` tiles
    placed every ``stride`` pixels.

    The last tile of each axis is aligned with the image edge so every pixel is covered; an
    image smaller than the window is zero-padded (the mean after normalisation) and cropped back.
    """
    height, width = x.shape[-2:]
    wh, ww = window
    padded = F.pad(x, (0, max(ww - width, 0), 0, max(wh - height, 0)))
    ph, pw = padded.shape[-2:]
    tops = sorted({*range(0, ph - wh, stride[0]), ph - wh})
    lefts = sorted({*range(0, pw - ww, stride[1]), pw - ww})
    logits = padded.new_zeros(x.shape[0], num_classes, ph, pw)
    counts = padded.new_zeros(1, 1, ph, pw)
    for top in tops:
        for left in lefts:
            logits[..., top : top + wh, left : left + ww] += net(padded[..., top : top + wh, left : left + ww])
            counts[..., top : top + wh, left : left + ww] += 1
    return (logits / counts)[..., :height, :width]


class SegmentationTask(VisionTask):
    """Cross-entropy ignoring the void label, and per-split pixel accuracy / class-average accuracy /
    mIoU / per-class IoU.

    Each evaluation stage holds a ``MulticlassConfusionMatrix`` (in a ``ModuleDict``, so it moves
    with the module and syncs exactly under DDP) accumulated over the whole split; the scores
    are derived from it at epoch end (``segmentation_scores``). Void pixels are removed before
    the update, not left to ``ignore_index`` (mishandled by some torchmetrics releases,
    torchmetrics#1385/#2558). ``eval_mode="slide"`` evaluates in overlapping ``window`` tiles
    (the training crop) instead of the whole image at once.

    ``class_weights="median_frequency"`` weights the training loss by ``median_frequency_weights``
    of ``class_pixels`` (the training split's, counted by ``build_task``). Validation and test
    losses stay the plain cross-entropy, comparable across runs whatever their training objective.

    ``palette`` (one ``[r, g, b]`` per class, in index order; None: VOC's colour map) is the
    dataset's own class colours, which every drawing of its masks uses (``colormap``): the figure
    callbacks and, since the config travels in the checkpoint, prediction.
    """

    class_weight: Tensor | None

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        *,
        eval_mode: Literal["whole", "slide"] = "whole",
        window: tuple[int, int] = (320, 480),
        stride: tuple[int, int] | None = None,
        class_weights: str | None = None,
        class_pixels: ClassPixels | Sequence[Sequence[int]] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,  # scheduler, class_names, ...: VisionTask's
    ) -> None:
        super().__init__(net, num_classes, optimizer, monitor="val/miou", monitor_mode="max", **kwargs)
        if eval_mode not in ("whole", "slide"):
            raise ValueError(f"eval_mode must be 'whole' or 'slide', got {eval_mode!r}")
        if class_weights not in (None, "median_frequency"):
            raise ConfigError(
                f"Unknown task.module.class_weights {class_weights!r}. Use null (plain cross-entropy: the default) or "
                "'median_frequency' (class c weighs median(freq) / freq_c over the training masks, as SegNet's)."
            )
        weight = None
        if class_weights is not None:
            if class_pixels is None:
                raise ValueError("class_weights='median_frequency' needs class_pixels, the training masks' ClassPixels")
            pixels, image_pixels = class_pixels
            weight = median_frequency_weights(pixels, image_pixels, self.class_names).float()
        # Not persistent: recomputed from the data at every build, so checkpoints load with or without it.
        self.register_buffer("class_weight", weight, persistent=False)
        self.colormap = task_colormap(palette, self.class_names)
        self.eval_mode = eval_mode
        self.window = (int(window[0]), int(window[1]))
        self.stride = window_stride(self.window, stride)
        self.confmat = nn.ModuleDict({s: MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX) for s in STAGES})
        self.eval_loss = nn.ModuleDict({s: MeanMetric() for s in STAGES})

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The training loss: class-weighted when ``class_weights`` is set (the mean over the
        labelled pixels' weights, PyTorch's weighted mean)."""
        return F.cross_entropy(logits, y, weight=self.class_weight, ignore_index=IGNORE_INDEX)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        _, loss = self.training_loss(x, y)
        self.check_finite(loss, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits as evaluation computes them: the one place that chooses the whole image or sliding
        windows. A uint8 batch (the cached pipeline's, e.g. the figure callbacks' fixed samples,
        which skip ``on_after_batch_transfer``) is normalised first, so windows pad with the mean (0)
        and accumulate floats."""
        if x.dtype == torch.uint8:
            x = normalize_uint8(x)
        if self.eval_mode == "slide":
            return sliding_window_logits(self, x, self.window, self.stride, self.num_classes)
        return self(x)

    def prediction(self, logits: Tensor) -> Tensor:
        """Class-index masks ``(N, H, W)`` uint8 (as VOC's PNGs), still padded as the batch was."""
        return logits.argmax(dim=1).to(torch.uint8)

    def confusion(self, stage: str) -> MulticlassConfusionMatrix:
        """``stage``'s confusion matrix, ``confmat[stage]`` (a ``ModuleDict``'s items are typed as plain modules)."""
        return cast(MulticlassConfusionMatrix, self.confmat[stage])

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self.predict_logits(x)
        valid = y != IGNORE_INDEX
        n_valid = int(valid.sum())
        eval_loss = cast(MeanMetric, self.eval_loss[stage])  # a ModuleDict's items are typed as plain modules
        if n_valid:
            plain = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)  # no class weights
            eval_loss.update(plain, weight=n_valid)
            self.confusion(stage).update(logits.argmax(1)[valid], y[valid])
        self.log(f"{stage}/loss", eval_loss, on_step=False, on_epoch=True, prog_bar=True)
        return logits

    def _log_scores(self, stage: str) -> SegmentationScores:
        """Log the split's scores; classes without a defined IoU (see ``segmentation_scores``) are not logged."""
        scores = segmentation_scores(self.confusion(stage).compute())
        self.confusion(stage).reset()
        self.log(f"{stage}/pixel_acc", scores.pixel_acc.float(), prog_bar=True)
        self.log(f"{stage}/class_acc", scores.class_acc.float(), prog_bar=True)
        self.log(f"{stage}/miou", scores.miou.float(), prog_bar=True)
        for name, iou in zip(self.class_names, scores.iou.float(), strict=True):
            if not torch.isnan(iou):
                self.log(f"{stage}/iou/{name}", iou)
        return scores

    def on_validation_epoch_end(self) -> None:
        self.log_best(self._log_scores("val").miou.float())

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")
