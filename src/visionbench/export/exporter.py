"""Export a trained network to ONNX and check that the file computes what eager PyTorch computes
(the logic behind src/export.py).

The network is exported in eval mode (Inception v1 without its auxiliary heads) by ``torch.onnx``'s
dynamo exporter, the one that exports all eight networks: the TorchScript exporter cannot translate
VGG19's adaptive pooling at the Simpsons' 128 px (4x4 -> 7x7, not a divisor) and is deprecated.
Segmentation files take any height and width (prediction feeds each image at its own padded size)
and return full-resolution logits. A file is kept only after ONNX Runtime's logits on a batch of the
task's own validation images match eager PyTorch's within the tolerance.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import default_collate

from visionbench.data.storage.atomic import write_text_atomic
from visionbench.errors import ConfigError, VisionbenchError
from visionbench.export.runtime import EXPORT_PACKAGES, INPUT_NAME, OUTPUT_NAME, OnnxNet, require, sidecar_path
from visionbench.masks import IGNORE_INDEX
from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD
from visionbench.tasks.base import VisionTask

FORMATS = ("onnx",)
DEFAULT_OPSET = 20  # torch 2.14's default; its exporter writes 18 and above natively, lower ones through a version converter


class ParityError(VisionbenchError):
    """ONNX Runtime's logits differ from eager PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against eager PyTorch on one batch: the largest absolute logit difference and how
    many predictions (images, or pixels for segmentation) have the same argmax."""

    source: str  # which images: "8 validation images of task=shapes", or the fixed random batch
    max_abs_diff: float
    agree: int
    total: int
    unit: str  # "images" or "pixels"

    def describe(self, tolerance: float) -> str:
        share = f" ({self.agree / self.total:.2%})" if self.unit == "pixels" else ""
        return (
            f"on {self.source}: max |Δ logit| {self.max_abs_diff:.2e} (tolerance {tolerance:g}), "
            f"top-1 agreement {self.agree}/{self.total} {self.unit}{share}"
        )


def measure_parity(exported: nn.Module, net: nn.Module, images: Tensor, source: str) -> Parity:
    """Both networks on ``images``; classification agrees per image, segmentation per pixel."""
    with torch.no_grad():
        eager, runtime = net.eval()(images), exported(images)
    if eager.shape != runtime.shape:
        raise ParityError(
            f"The exported network returns logits of shape {tuple(runtime.shape)} where eager PyTorch returns "
            f"{tuple(eager.shape)} on {source}: the file holds another network or was altered. Export again from the checkpoint."
        )
    same = eager.argmax(1) == runtime.argmax(1)
    return Parity(source, float((eager - runtime).abs().max()), int(same.sum()), same.numel(), "pixels" if eager.ndim == 4 else "images")


def check_parity(parity: Parity, tolerance: float, model_file: Path, consequence: str) -> None:
    """A ``ParityError`` paragraph when the difference is above ``tolerance`` (or not a number)."""
    if parity.max_abs_diff <= tolerance:
        return
    raise ParityError(
        f"ONNX Runtime does not compute what eager PyTorch computes with '{model_file}': parity {parity.describe(tolerance)}. "
        f"{consequence} A difference near 1e-5 is float32 rounding (another kernel order): a tolerance below it is too "
        "strict, raise tolerance=. A larger one means the file was altered after export or an operator was translated "
        "differently: export again from the checkpoint, and report the model if it persists."
    )


def export_network(net: nn.Module, example: Tensor, path: Path, *, dynamic_batch: bool, dynamic_size: bool, opset: int) -> None:
    """Write ``net`` (put in eval mode) as one ONNX file, input ``images`` and output ``logits``.

    ``example`` fixes the shapes that are not dynamic; a dynamic batch needs an example of at least 2
    images (a batch of 1 is specialised by ``torch.export``).
    """
    require(*EXPORT_PACKAGES, purpose="Exporting to ONNX")
    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch")
    if dynamic_size:
        dims |= {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    with _quiet_exporter():
        torch.onnx.export(
            net.eval(),
            (example,),
            path,
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dims,),
            external_data=False,
            verbose=False,
        )


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's graph passes log each rewrite at INFO ("Removed 7 unused nodes"): not the user's business."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def parity_batch(run_config: dict[str, Any], data_dir: str, count: int) -> tuple[Tensor, str]:
    """``count`` images of the task's validation split, evenly spaced over it (so several classes),
    through its evaluation transform; a fixed random batch when the data is not readable here.

    A data root under the training run's data dir is looked for under ``data_dir`` instead, as
    ``eval.py`` does; ``pipeline=pil`` reads the files themselves, so no cache is built.
    """
    task = OmegaConf.create(run_config["task"])
    trained_data_dir = run_config["paths"]["data_dir"]
    if Path(task.data.root).is_relative_to(trained_data_dir):
        task.data.root = str(Path(data_dir) / Path(task.data.root).relative_to(trained_data_dir))
    try:
        datamodule = instantiate(task.data, pipeline="pil", num_workers=0, _convert_="all")
        datamodule.prepare_data()
        dataset = datamodule.dataset("val")
        picks = sorted({round(i * (len(dataset) - 1) / max(count - 1, 1)) for i in range(min(count, len(dataset)))})
        images = (datamodule.collate_fn("val") or default_collate)([dataset[i] for i in picks])[0]
        return images, f"{len(picks)} validation images of task={task.name}"
    except (VisionbenchError, InstantiationException, OSError) as err:
        images = torch.randn(count, 3, *example_size(task), generator=torch.Generator().manual_seed(0))
        return images, f"a fixed random batch of {count} images (the task's data is not readable here: {str(err).splitlines()[0][:160]})"


def example_size(task: Any) -> tuple[int, int]:
    """(H, W) of a classification input; for segmentation the training crop rounded up to the padding multiple."""
    if task.kind == "classification":
        return (int(task.data.image_size), int(task.data.image_size))
    divisor = int(task.data.get("size_divisor", 32))
    height, width = (math.ceil(int(side) / divisor) * divisor for side in task.data.crop)
    return (height, width)


def sidecar(task: VisionTask, model_file: Path, dynamic_batch: bool, opset: int, parity: Parity, tolerance: float) -> dict[str, Any]:
    """What a user needs to feed ``model_file`` outside the harness, and the run config prediction rebuilds the task from."""
    config = task.run_config
    kind, data = config["task"]["kind"], config["task"]["data"]
    batch: int | str = "batch" if dynamic_batch else 1
    if kind == "classification":
        size = int(data["image_size"])
        shape: list[int | str] = [batch, 3, size, size]
        preprocess = f"RGB, resized to {size}x{size} (bilinear, antialiased, aspect ratio not kept), scaled to [0, 1], normalised"
        output: list[int | str] = [batch, len(task.class_names)]
    else:
        divisor = int(data.get("size_divisor", 32))
        shape = [batch, 3, "height", "width"]
        preprocess = f"RGB at its own size, scaled to [0, 1], normalised, then zero-padded right and bottom to multiples of {divisor}"
        output = [batch, len(task.class_names), "height", "width"]
    described: dict[str, Any] = {
        "format": "onnx",
        "file": model_file.name,
        "model": config["model"]["name"],
        "task": config["task"]["name"],
        "kind": kind,
        "opset": opset,
        "exporter": f"torch.onnx (dynamo) of torch {torch.__version__}",
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "shape": shape,
            "preprocess": preprocess,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": output},
        "class_names": list(task.class_names),
        "parity": {**asdict(parity), "tolerance": tolerance},
    }
    if kind == "segmentation":
        described["void_value"] = int(data.get("ignore_index", IGNORE_INDEX))  # the masks' value on disk; never predicted
    return described | {"run_config": config}


@dataclass(frozen=True)
class ExportResult:
    model_file: Path
    sidecar: Path
    parity: Parity
    export_s: float


def default_export_dir(ckpt_path: Path) -> Path:
    """``<run>/export`` for ``<run>/checkpoints/x.ckpt``; beside the checkpoint otherwise."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    return run_dir / "export"


def export_checkpoint(
    ckpt_path: Path,
    output_dir: Path | None = None,
    *,
    format: str = "onnx",
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
    parity_images: int = 8,
    data_dir: str = "data",
    echo: Callable[[str], None] = print,
) -> ExportResult:
    """Export the checkpoint's network to ``<output_dir>/<model>.onnx`` with its ``<model>.json``.

    The file is written beside its final place and moved there only once its parity is within
    ``tolerance``; otherwise nothing is kept and a ``ParityError`` says why.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format} is not an export format; use format=onnx (the only one so far).")
    if parity_images < 1 or not tolerance >= 0:
        raise ConfigError(
            f"parity_images={parity_images}, tolerance={tolerance}: the parity check needs at least 1 image and a "
            "tolerance of 0 or more (default 1e-4, the largest |Δ logit| accepted in float32)."
        )
    require(*EXPORT_PACKAGES, purpose="Exporting to ONNX")
    task = VisionTask.from_checkpoint(ckpt_path)
    kind, model = task.run_config["task"]["kind"], task.run_config["model"]["name"]
    output_dir = output_dir or default_export_dir(ckpt_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{model}.onnx"
    images, source = parity_batch(task.run_config, data_dir, parity_images)
    example = images[:1].repeat(2 if dynamic_batch else 1, 1, 1, 1)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".export-") as staging:
        staged = Path(staging) / target.name
        start = time.perf_counter()
        export_network(task.net, example, staged, dynamic_batch=dynamic_batch, dynamic_size=kind == "segmentation", opset=opset)
        export_s = time.perf_counter() - start
        parity = measure_parity(OnnxNet(staged), task.net, images, source)
        check_parity(parity, tolerance, target, "Nothing was written.")
        echo(f"Parity {parity.describe(tolerance)}")
        os.replace(staged, target)
    write_text_atomic(sidecar_path(target), json.dumps(sidecar(task, target, dynamic_batch, opset, parity, tolerance), indent=2))
    batch = "dynamic batch" if dynamic_batch else "batch 1"
    echo(
        f"Exported model={model} ({kind}) to {target} ({target.stat().st_size / 1e6:.1f} MB, opset {opset}, {batch}) in "
        f"{export_s:.1f} s, with {sidecar_path(target).name} (input size, normalisation, classes). "
        f"Predict from it: python src/predict.py model_file={target} input=<image or folder>"
    )
    return ExportResult(target, sidecar_path(target), parity, export_s)
