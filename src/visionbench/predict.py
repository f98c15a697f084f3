"""Predict with a trained checkpoint on an image or a folder (the logic behind src/predict.py).

Lightning's own path: the task is rebuilt from the run config saved in the checkpoint, the files
are read through its evaluation transform (``visionbench.data.predict_files``), ``Trainer.predict``
runs ``VisionTask.predict_step`` (the logits validation computes, sliding windows included) and a
prediction writer (``visionbench.callbacks.prediction_writer``) writes ``predictions.csv``, masks
and figures. A prediction here therefore equals what the test metrics measured. Files that do not
decode as images are listed and skipped; a run where none decodes is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from visionbench.callbacks.prediction_writer import PredictResult, prediction_writer
from visionbench.console import quiet_lightning, tidy_lightning_output
from visionbench.data.predict_files import input_files, predict_loader
from visionbench.errors import ConfigError, CorruptDataError
from visionbench.export.runtime import exported_task
from visionbench.tasks.base import VisionTask


def default_output_dir(ckpt_path: Path) -> Path:
    """``<run>/predictions`` for ``<run>/checkpoints/x.ckpt``; beside the checkpoint (or exported file) otherwise."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    return run_dir / "predictions"


def prediction_trainer(device: str, writer: L.Callback) -> L.Trainer:
    """One device, no logger, checkpoint or Lightning progress bar: the writer reports progress in files."""
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device} needs a CUDA GPU, and PyTorch sees none here (torch.cuda.is_available() is False). Use device=cpu."
        )
    devices = [target.index] if target.index is not None else 1
    return L.Trainer(
        accelerator=target.type,
        devices=devices,
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def model_source(ckpt_path: Path | None, model_file: Path | None) -> Path:
    """The one of ``ckpt_path`` and ``model_file`` that is given: a prediction reads exactly one network."""
    if ckpt_path is not None and model_file is None:
        return ckpt_path
    if model_file is not None and ckpt_path is None:
        return model_file
    raise ConfigError(
        "Pass exactly one of ckpt_path=<run>/checkpoints/last.ckpt (the trained checkpoint) and model_file=<x.onnx> "
        f"(a network exported by src/export.py); got {'both' if ckpt_path else 'neither'}."
    )


def trained_task(ckpt_path: Path | None, model_file: Path | None, device: str) -> VisionTask:
    """The task to predict with: the checkpoint's, or the exported file's around ONNX Runtime (``model_file``)."""
    source = model_source(ckpt_path, model_file)
    if model_file is None:
        return VisionTask.from_checkpoint(source)
    if device != "cpu":
        raise ConfigError(f"model_file= runs on ONNX Runtime's CPU provider; device={device} is for checkpoints. Use device=cpu.")
    return exported_task(source)


def _listed(skipped: list[tuple[Path, str]], limit: int = 5) -> str:
    more = f" and {len(skipped) - limit} more (listed above)" if len(skipped) > limit else ""
    return "; ".join(f"{path} ({why})" for path, why in skipped[:limit]) + more


def predict(
    ckpt_path: Path | None,
    input_path: Path,
    output_dir: Path | None = None,
    top_k: int = 5,
    device: str = "cpu",
    batch_size: int = 16,
    figures: bool = True,
    echo: Callable[[str], None] = print,
    model_file: Path | None = None,
) -> PredictResult:
    """Predict every image of ``input_path`` in batches of ``batch_size`` and write one row per image
    to ``<output_dir>/predictions.csv`` (plus masks and, if ``figures``, a figure per image), with the
    checkpoint's network or, given ``model_file`` instead, the exported one (``trained_task``).

    stdout gets the skipped files and a summary (and the ranking when ``input_path`` is one file);
    if no file is an image, nothing is written and a ``CorruptDataError`` says which files failed.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: pass a positive number of images per forward pass (default 16).")
    if top_k < 1:
        raise ConfigError(f"top_k={top_k}: pass how many of the most likely classes to list, at least 1 (default 5).")
    task = trained_task(ckpt_path, model_file, device)
    output_dir = output_dir or default_output_dir(model_source(ckpt_path, model_file))
    files = input_files(input_path, output_dir)
    kind = task.run_config["task"]["kind"]
    writer = prediction_writer(kind, output_dir, len(files), top_k, figures)
    loader = predict_loader(files, input_path, kind, task.run_config["task"]["data"], batch_size)
    tidy_lightning_output()
    with quiet_lightning():
        prediction_trainer(device, writer).predict(task, dataloaders=loader, return_predictions=False)
    result = writer.result
    for path, why in result.skipped:
        echo(f"{path}: skipped, {why}")
    if not result.predicted:
        raise CorruptDataError(
            f"None of the {len(result.skipped)} file(s) of input='{input_path}' could be read as an image: "
            f"{_listed(result.skipped)}. Pass an image (JPEG, PNG, ...) or a folder that holds some; replace or "
            "re-export broken files."
        )
    if input_path.is_file():
        echo(f"{input_path}:\n{writer.describe(result.rows[0])}")
    skipped = f", {len(result.skipped)} file(s) skipped (not readable as images, listed above)" if result.skipped else ""
    where = f"{result.csv_path}" + (f"; figures in {output_dir}" if figures else "")
    echo(f"{len(result.predicted)} image(s) predicted{skipped}. Per-image results: {where}")
    return result
