"""Predict with a trained checkpoint on an image or a folder (the logic behind src/predict.py).

The network is rebuilt from the run config saved in the checkpoint, and every image goes
through the exact evaluation preprocessing of its task, so a prediction here equals what the
test metrics measured. Images are predicted in batches; each gets a row of predictions.csv and
(optionally) a figure. Files that do not decode as images are listed and skipped; a run where
none decodes is an error.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from visionbench.callbacks.figures import Prediction, predictions_figure
from visionbench.checkpoint import load_checkpoint
from visionbench.colormap import overlay, palette_image
from visionbench.data.atomic import atomic_path
from visionbench.data.images import load_rgb, unreadable_reason
from visionbench.data.seg_transforms import eval_transform, pad_collate
from visionbench.data.transforms import classification_transform
from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError
from visionbench.tasks.segmentation import sliding_window_logits, window_stride


@dataclass
class Predictor:
    """A network in eval mode plus what it needs to turn PIL images into predictions."""

    net: nn.Module
    kind: str
    class_names: list[str]
    task: dict[str, Any]
    device: torch.device

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, classes)`` probabilities after ``classification_transform(image_size, None)``, the eval transform."""
        transform = classification_transform(self.task["data"]["image_size"], None)
        x = torch.stack([transform(image) for image in images])
        with torch.no_grad():
            return self.net(x.to(self.device)).softmax(dim=1).float().cpu().numpy()

    def segment(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Class-index masks, through the validation path: eval transform, padding, whole or sliding window.

        Only images of the same padded size share a forward pass, so each is padded exactly as
        when predicted alone and its mask does not depend on the other images of the folder.
        """
        divisor = self.task["data"].get("size_divisor", 32)
        samples = [eval_transform()(image, np.zeros((image.height, image.width), dtype=np.uint8)) for image in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            groups[(math.ceil(image.height / divisor), math.ceil(image.width / divisor))].append(i)
        masks: dict[int, np.ndarray] = {}
        for indices in groups.values():
            batch, _ = pad_collate([samples[i] for i in indices], divisor)
            with torch.no_grad():
                logits = self._segmentation_logits(batch.to(self.device))
            for row, i in enumerate(indices):
                masks[i] = logits[row, :, : images[i].height, : images[i].width].argmax(dim=0).byte().cpu().numpy()
        return [masks[i] for i in range(len(images))]

    def _segmentation_logits(self, x: Tensor) -> Tensor:
        module = self.task["module"]
        if module.get("eval_mode", "whole") != "slide":
            return self.net(x)
        window = tuple(module["window"])
        return sliding_window_logits(self.net, x, window, window_stride(window, module.get("stride")), len(self.class_names))


def _class_names(checkpoint: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """From the checkpoint when it stores them, else from the training DataModule (same order as in training)."""
    names = checkpoint.get("visionbench_class_names")
    if names:
        return list(names)
    return list(instantiate(config["task"]["data"], _convert_="all").class_names)


def load_predictor(ckpt_path: Path, device: str = "cpu") -> Predictor:
    """Rebuild the network of a visionbench checkpoint (``weights_only``: no code runs while loading)."""
    checkpoint = load_checkpoint(ckpt_path)
    config = checkpoint["visionbench_config"]
    names = _class_names(checkpoint, config)
    net: nn.Module = instantiate(config["model"]["net"], num_classes=len(names))
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return Predictor(net.eval().to(device), config["task"]["kind"], names, config["task"], torch.device(device))


def input_files(path: Path, output_dir: Path | None = None) -> list[Path]:
    """The file itself, or every non-hidden file under the folder, sorted; files under
    ``output_dir`` (an earlier run's figures, when it lies inside the input folder) are outputs, not inputs."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataNotFoundError(f"input='{path}' does not exist. Pass an image file or a folder of images.")
    outputs = output_dir.resolve() if output_dir is not None else None
    nested_outputs = outputs is not None and outputs != path.resolve() and outputs.is_relative_to(path.resolve())
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not (nested_outputs and p.resolve().is_relative_to(outputs))
    )  # fmt: skip
    if not files:
        raise DataNotFoundError(f"input='{path}' holds no files (hidden ones are ignored). Pass an image file or a folder of images.")
    return files


def default_output_dir(ckpt_path: Path) -> Path:
    """``<run>/predictions`` for ``<run>/checkpoints/x.ckpt``; beside the checkpoint otherwise."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    return run_dir / "predictions"


Row = dict[str, str | float]


@dataclass
class PredictResult:
    """What was predicted and skipped, for callers and tests that do not parse stdout."""

    csv_path: Path
    predicted: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not an image)
    rows: list[Row] = field(default_factory=list)  # one per predicted image, as written to ``csv_path``


def _classification_rows(
    predictor: Predictor, images: list[Image.Image], names: list[str], output_dir: Path, top_k: int, figures: bool
) -> list[Row]:
    """``path, predicted, probability, class_2, probability_2, ...`` up to ``top_k``; ``<name>.png`` figures."""
    rows = []
    for image, name, probs in zip(images, names, predictor.classify(images)):
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        row: Row = {"path": name, "predicted": predictor.class_names[order[0]], "probability": round(float(probs[order[0]]), 6)}
        for rank, i in enumerate(order[1:], 2):
            row |= {f"class_{rank}": predictor.class_names[i], f"probability_{rank}": round(float(probs[i]), 6)}
        rows.append(row)
        if figures:
            out = output_dir / f"{name}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            predictions_figure([Prediction(np.asarray(image), probs, None, name)], predictor.class_names, top_k).savefig(out)
    return rows


def _segmentation_rows(predictor: Predictor, images: list[Image.Image], names: list[str], output_dir: Path, figures: bool) -> list[Row]:
    """``path, mask, fraction_<class>...`` (share of the image's pixels); ``<name>.mask.png`` (VOC palette) and,
    as its figure, ``<name>.overlay.png``."""
    rows = []
    for image, name, mask in zip(images, names, predictor.segment(images)):
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        palette_image(mask).save(output_dir / f"{name}.mask.png")
        if figures:
            Image.fromarray(overlay(np.asarray(image), mask)).save(output_dir / f"{name}.overlay.png")
        counts = np.bincount(mask.ravel(), minlength=len(predictor.class_names))
        fractions = {f"fraction_{c}": round(float(n / mask.size), 6) for c, n in zip(predictor.class_names, counts)}
        rows.append({"path": name, "mask": f"{name}.mask.png", **fractions})
    return rows


def _describe(row: Row, top_k: int) -> str:
    """The ranked lines printed for a single input image (a folder gets only the summary)."""
    if "mask" in row:
        fractions = sorted(((v, k.removeprefix("fraction_")) for k, v in row.items() if k.startswith("fraction_") and v), reverse=True)
        return "\n".join(f"  {name:<20} {float(v):6.1%} of pixels" for v, name in fractions[:top_k])
    values = list(row.values())[1:]  # predicted, probability, class_2, probability_2, ...
    return "\n".join(f"  {rank}. {name:<20} {float(p):.4f}" for rank, (name, p) in enumerate(zip(values[::2], values[1::2]), 1))


def _progress() -> Progress:
    """On stderr, so that stdout holds only the summary (and can be piped)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True))


def _listed(skipped: list[tuple[Path, str]], limit: int = 5) -> str:
    more = f" and {len(skipped) - limit} more (listed above)" if len(skipped) > limit else ""
    return "; ".join(f"{path} ({why})" for path, why in skipped[:limit]) + more


def predict(
    ckpt_path: Path, input_path: Path, output_dir: Path | None = None, top_k: int = 5, device: str = "cpu",
    batch_size: int = 16, figures: bool = True, echo: Callable[[str], None] = print,
) -> PredictResult:  # fmt: skip
    """Predict every image of ``input_path`` in batches of ``batch_size`` and write one row per image
    to ``<output_dir>/predictions.csv`` (plus masks and, if ``figures``, a figure per image).

    Output names keep the input's extension (``a.jpg.png``, ``a.png.png``) so that ``a.jpg`` and
    ``a.png`` of one folder never overwrite each other. stdout gets the skipped files and a summary
    (and the ranking when ``input_path`` is one file); if no file is an image, nothing is written
    and a ``CorruptDataError`` says which files failed.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: pass a positive number of images per forward pass (default 16).")
    if top_k < 1:
        raise ConfigError(f"top_k={top_k}: pass how many of the most likely classes to list, at least 1 (default 5).")
    output_dir = output_dir or default_output_dir(ckpt_path)
    files = input_files(input_path, output_dir)
    predictor = load_predictor(ckpt_path, device)
    result = PredictResult(output_dir / "predictions.csv")
    with _progress() as bar:
        task = bar.add_task("predicting", total=len(files))
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            images, paths = [], []
            for path in chunk:
                try:
                    images.append(load_rgb(path))
                    paths.append(path)
                except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for non-images and broken files
                    result.skipped.append((path, unreadable_reason(path) or str(err)))
            names = [(p.relative_to(input_path) if input_path.is_dir() else Path(p.name)).as_posix() for p in paths]
            if images and predictor.kind == "segmentation":
                result.rows += _segmentation_rows(predictor, images, names, output_dir, figures)
            elif images:
                result.rows += _classification_rows(predictor, images, names, output_dir, top_k, figures)
            result.predicted += paths
            bar.advance(task, len(chunk))
    for path, why in result.skipped:
        echo(f"{path}: skipped, {why}")
    if not result.predicted:
        raise CorruptDataError(
            f"None of the {len(result.skipped)} file(s) of input='{input_path}' could be read as an image: "
            f"{_listed(result.skipped)}. Pass an image (JPEG, PNG, ...) or a folder that holds some; replace or "
            "re-export broken files."
        )
    with atomic_path(result.csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result.rows[0]))
        writer.writeheader()
        writer.writerows(result.rows)
    if input_path.is_file():
        echo(f"{input_path}:\n{_describe(result.rows[0], top_k)}")
    skipped = f", {len(result.skipped)} file(s) skipped (not readable as images, listed above)" if result.skipped else ""
    where = f"{result.csv_path}" + (f"; figures in {output_dir}" if figures else "")
    echo(f"{len(result.predicted)} image(s) predicted{skipped}. Per-image results: {where}")
    return result
