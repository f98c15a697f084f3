"""Every drawing of the project: masks in their dataset's colours, and the matplotlib figures
that the TensorBoard callbacks log and prediction saves.

Masks are coloured with a ``colormap`` (256 x 3 uint8, ``visionbench.masks.class_colormap``): the
task's own (``SegmentationTask.colormap``: CamVid's 11 colours for ``task=camvid``), by default
VOC's (255, the void border, is cream), so predictions look like the dataset's label images in
TensorBoard, in prediction outputs and in any image viewer. Figures are built as ``Figure``
objects on an Agg canvas, never through pyplot: no GUI backend, no global figure registry to
leak from a long training run, and the same figure goes to TensorBoard (``add_figure``) or to a
PNG (``savefig``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from torch import Tensor

from visionbench.masks import IGNORE_INDEX, class_colormap
from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD

VOC_COLORMAP = class_colormap(None)

PREDICTED = "tab:blue"
TRUE_AND_PREDICTED = "tab:green"
TRUE_ONLY = "tab:red"


def colorize(mask: np.ndarray, colormap: np.ndarray = VOC_COLORMAP) -> np.ndarray:
    """Class-index mask ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 in ``colormap``."""
    return colormap[np.asarray(mask, dtype=np.uint8)]


def palette_image(mask: np.ndarray, colormap: np.ndarray = VOC_COLORMAP) -> Image.Image:
    """A mode ``P`` image with ``colormap`` as its palette: the pixel values stay the class indices
    (as VOC's ``SegmentationClass/*.png``) and any viewer shows the dataset's colours."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(colormap.flatten().tolist())
    return image


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, colormap: np.ndarray = VOC_COLORMAP) -> np.ndarray:
    """Blend the coloured mask over an RGB uint8 image; void pixels and black classes (VOC's
    background) stay clear."""
    blended = image.astype(np.float32)
    colours = colorize(mask, colormap)
    labelled = (mask != IGNORE_INDEX) & colours.any(axis=-1)
    blended[labelled] = (1 - alpha) * blended[labelled] + alpha * colours[labelled]
    return blended.round().astype(np.uint8)


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def unnormalize(images: Tensor) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` floats -> ``(N, H, W, 3)`` uint8, undoing the ImageNet statistics.

    uint8 batches (the cached pipeline, before its on-device transform) are shown as they are.
    """
    if images.dtype == torch.uint8:
        return images.permute(0, 2, 3, 1).cpu().numpy()
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    pixels = (images.detach().float() * std + mean).clamp(0, 1) * 255
    return pixels.round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _show(ax: Axes, image: np.ndarray, title: str = "") -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def sample_grid(images: np.ndarray, titles: Sequence[str], columns: int = 8) -> Figure:
    """Images with a caption each (e.g. augmented training samples and their class)."""
    rows = -(-len(images) // columns)
    columns = min(columns, len(images))
    figure = new_figure(1.6 * columns, 1.8 * rows)
    for i, (image, title) in enumerate(zip(images, titles, strict=True)):
        _show(figure.add_subplot(rows, columns, i + 1), image, title)
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class Prediction:
    """One image and its class probabilities; ``label`` is the true class when known."""

    image: np.ndarray
    probs: np.ndarray
    label: int | None = None
    name: str = ""


def prediction_title(pred: Prediction, class_names: Sequence[str]) -> str:
    top = int(pred.probs.argmax())
    title = f"pred: {class_names[top]} ({pred.probs[top]:.2f})"
    if pred.label is not None:
        title += f"\ntrue: {class_names[pred.label]}"
    return f"{pred.name}\n{title}" if pred.name else title


def _draw_bars(ax: Axes, pred: Prediction, class_names: Sequence[str], top_k: int) -> None:
    """Top-k probabilities, highest first; the true class is added (red) when it is outside the top k."""
    order = [int(i) for i in np.argsort(-pred.probs, kind="stable")[: min(top_k, len(class_names))]]
    if pred.label is not None and pred.label not in order:
        order.append(pred.label)
    colours = [
        TRUE_AND_PREDICTED if i == pred.label and rank == 0 else TRUE_ONLY if i == pred.label else PREDICTED for rank, i in enumerate(order)
    ]
    positions = np.arange(len(order))
    ax.barh(positions, pred.probs[order], color=colours)
    ax.set_yticks(positions, [class_names[i] for i in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def predictions_figure(predictions: Sequence[Prediction], class_names: Sequence[str], top_k: int = 10) -> Figure:
    """One row per image: the image (predicted and true class in its title) beside its probability bars."""
    bars = min(top_k, len(class_names)) + 1
    figure = new_figure(7.0, max(2.2, 0.22 * bars + 0.8) * len(predictions))
    for row, pred in enumerate(predictions):
        _show(figure.add_subplot(len(predictions), 2, 2 * row + 1), pred.image, prediction_title(pred, class_names))
        _draw_bars(figure.add_subplot(len(predictions), 2, 2 * row + 2), pred, class_names, top_k)
    figure.tight_layout()
    return figure


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Rows are true classes, normalised to recall (colour); counts are written in each cell when it fits."""
    n = len(class_names)
    recall = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * n + 2)
    figure = new_figure(size + 1, size)
    ax = figure.add_subplot()
    im = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=6, color="white" if recall[i, j] > 0.5 else "black")
    figure.tight_layout()
    return figure


def class_bars_figure(values: np.ndarray, class_names: Sequence[str], xlabel: str) -> Figure:
    """A horizontal bar per class (per-class accuracy or IoU); NaN (class never seen) is drawn as empty."""
    figure = new_figure(5.0, max(2.5, 0.25 * len(class_names) + 1))
    ax = figure.add_subplot()
    positions = np.arange(len(class_names))
    ax.barh(positions, np.nan_to_num(values), color=PREDICTED)
    ax.set_yticks(positions, class_names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    mean = np.nanmean(values) if np.isfinite(values).any() else float("nan")
    ax.set_title(f"mean {mean:.3f}", fontsize=9)
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class SegmentationRow:
    """One image of a segmentation figure: its pixels, predicted mask and, when known, true mask."""

    image: np.ndarray  # (H, W, 3) uint8
    prediction: np.ndarray  # (H, W) class indices
    target: np.ndarray | None = None
    name: str = ""


LEGEND_COLUMNS = 6


def legend_height(num_classes: int) -> float:
    """Inches that ``class_legend`` takes below the panels."""
    return 0.2 * -(-num_classes // LEGEND_COLUMNS) + 0.15


def class_legend(figure: Figure, class_names: Sequence[str], colormap: np.ndarray) -> None:
    """A legend of every class in its colour along the bottom of ``figure``."""
    handles = [Patch(facecolor=colormap[i] / 255, edgecolor="0.4", label=name) for i, name in enumerate(class_names)]
    columns = min(len(class_names), LEGEND_COLUMNS)
    figure.legend(handles=handles, loc="lower center", ncol=columns, fontsize=7, frameon=False, handlelength=1.2)


def segmentation_figure(rows: Sequence[SegmentationRow], class_names: Sequence[str], colormap: np.ndarray = VOC_COLORMAP) -> Figure:
    """image | ground truth | prediction per row (no ground-truth panel when no row has one), masks in
    ``colormap``, and a legend of the classes in their colours."""
    panels = 3 if any(row.target is not None for row in rows) else 2
    height, width = rows[0].image.shape[:2]
    panel = 7.5 / 3 if panels == 3 else 3.5
    legend = legend_height(len(class_names))
    figure = new_figure(panel * panels, (panel * height / width + 0.35) * len(rows) + legend)
    for r, row in enumerate(rows):
        shown = [(row.image, row.name or "image")]
        if panels == 3:
            target = colorize(row.target, colormap) if row.target is not None else np.zeros_like(row.image)
            shown.append((target, "ground truth"))
        shown.append((colorize(row.prediction, colormap), "prediction"))
        for c, (pixels, title) in enumerate(shown):
            _show(figure.add_subplot(len(rows), panels, panels * r + c + 1), pixels, title)
    class_legend(figure, class_names, colormap)
    figure.tight_layout(rect=(0, legend / figure.get_figheight(), 1, 1))
    return figure
