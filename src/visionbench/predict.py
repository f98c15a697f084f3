"""Predict with a trained checkpoint on an image or a folder (the logic behind src/predict.py).

The network is rebuilt from the run config saved in the checkpoint, and every image goes
through the exact evaluation preprocessing of its task, so a prediction here equals what the
test metrics measured. Files that do not decode as images are reported and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image
from torch import Tensor, nn

from visionbench.callbacks.figures import Prediction, predictions_figure
from visionbench.colormap import overlay, palette_image
from visionbench.data.images import load_rgb, unreadable_reason
from visionbench.data.seg_transforms import eval_transform, pad_collate
from visionbench.data.transforms import classification_transform
from visionbench.errors import ConfigError, DataNotFoundError
from visionbench.tasks.segmentation import sliding_window_logits, window_stride

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A network in eval mode plus what it needs to turn a PIL image into a prediction."""

    net: nn.Module
    kind: str
    class_names: list[str]
    task: dict[str, Any]
    device: torch.device

    def classify(self, image: Image.Image) -> np.ndarray:
        """Class probabilities after ``classification_transform(image_size, None)``, the eval transform."""
        x = classification_transform(self.task["data"]["image_size"], None)(image).unsqueeze(0)
        with torch.no_grad():
            return self.net(x.to(self.device)).softmax(dim=1)[0].float().cpu().numpy()

    def segment(self, image: Image.Image) -> np.ndarray:
        """Class-index mask, through the validation path: eval transform, padding, whole or sliding window."""
        x, mask = eval_transform()(image, np.zeros((image.height, image.width), dtype=np.uint8))
        batch, _ = pad_collate([(x, mask)], self.task["data"].get("size_divisor", 32))
        with torch.no_grad():
            logits = self._segmentation_logits(batch.to(self.device))
        return logits[0, :, : image.height, : image.width].argmax(dim=0).byte().cpu().numpy()

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
    if not ckpt_path.is_file():
        raise DataNotFoundError(f"Checkpoint '{ckpt_path}' does not exist. Pass ckpt_path=<run>/checkpoints/last.ckpt (or epoch_XXX.ckpt).")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    config = checkpoint.get("visionbench_config")
    if not config:
        raise ConfigError(
            f"'{ckpt_path}' holds no 'visionbench_config', so the network cannot be rebuilt. Use a checkpoint "
            "written by src/train.py (its run folder's checkpoints/)."
        )
    names = _class_names(checkpoint, config)
    net: nn.Module = instantiate(config["model"]["net"], num_classes=len(names))
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return Predictor(net.eval().to(device), config["task"]["kind"], names, config["task"], torch.device(device))


def input_files(path: Path) -> list[Path]:
    """The file itself, or every non-hidden file under the folder, sorted."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    raise DataNotFoundError(f"input='{path}' does not exist. Pass an image file or a folder of images.")


def default_output_dir(ckpt_path: Path) -> Path:
    """``<run>/predictions`` for ``<run>/checkpoints/x.ckpt``; beside the checkpoint otherwise."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    return run_dir / "predictions"


@dataclass
class PredictResult:
    predicted: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not an image)


def _write_classification(predictor: Predictor, image: Image.Image, name: str, out: Path, top_k: int) -> str:
    probs = predictor.classify(image)
    order = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
    figure = predictions_figure([Prediction(np.asarray(image), probs, None, name)], predictor.class_names, top_k)
    figure.savefig(out.with_suffix(".png"))
    return "\n".join(f"  {rank}. {predictor.class_names[i]:<20} {probs[i]:.4f}" for rank, i in enumerate(order, 1))


def _write_segmentation(predictor: Predictor, image: Image.Image, out: Path, top_k: int) -> str:
    mask = predictor.segment(image)
    palette_image(mask).save(out.with_name(out.stem + "_mask.png"))
    Image.fromarray(overlay(np.asarray(image), mask)).save(out.with_name(out.stem + "_overlay.png"))
    counts = np.bincount(mask.ravel(), minlength=len(predictor.class_names))
    order = np.argsort(-counts, kind="stable")[: min(top_k, int((counts > 0).sum()))]
    return "\n".join(f"  {predictor.class_names[i]:<20} {counts[i] / mask.size:6.1%} of pixels" for i in order)


def predict(
    ckpt_path: Path, input_path: Path, output_dir: Path | None = None, top_k: int = 5, device: str = "cpu",
    echo: Callable[[str], None] = print,
) -> PredictResult:  # fmt: skip
    """Print the top-k classes (or the largest predicted classes of a mask) per image and write its figures."""
    predictor = load_predictor(ckpt_path, device)
    output_dir = output_dir or default_output_dir(ckpt_path)
    result = PredictResult()
    for path in input_files(input_path):
        try:
            image = load_rgb(path)
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for non-images and broken files
            reason = unreadable_reason(path) or str(err)
            echo(f"{path}: skipped, {reason}")
            result.skipped.append((path, reason))
            continue
        relative = path.relative_to(input_path) if input_path.is_dir() else Path(path.name)
        out = output_dir / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if predictor.kind == "segmentation":
            lines = _write_segmentation(predictor, image, out, top_k)
        else:
            lines = _write_classification(predictor, image, str(relative), out, top_k)
        echo(f"{path}:\n{lines}")
        result.predicted.append(path)
    skipped = f", {len(result.skipped)} file(s) skipped (not readable as images)" if result.skipped else ""
    echo(f"{len(result.predicted)} image(s) predicted{skipped}. Figures in {output_dir}")
    return result
