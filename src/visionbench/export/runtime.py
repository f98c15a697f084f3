"""An exported network run by ONNX Runtime, and the task around it.

``OnnxNet`` is an ``nn.Module`` whose forward is an ONNX Runtime session, so the task rebuilt from the
sidecar's run config (``exported_task``) predicts through the same ``predict_logits`` (whole image or
sliding windows), writer and figures as the checkpoint's task: only the network differs.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError
from visionbench.tasks.base import VisionTask

EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def require(*packages: str, purpose: str) -> list[ModuleType]:
    """Import the optional ``packages`` for ``purpose``, or say in one paragraph how to install them."""
    modules, missing = [], []
    for name in packages:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as err:
            missing.append(f"{name} ({err})")
    if missing:
        raise ConfigError(
            f"{purpose} needs the optional package(s) {', '.join(missing)}, not installed in this environment. "
            f'Install the export group from the repository: .venv/bin/pip install -e ".[export]" (make install does), '
            f"or pip install {' '.join(EXPORT_PACKAGES)}. Training and evaluation do not need them."
        )
    return modules


def sidecar_path(model_file: Path) -> Path:
    """``<name>.json`` beside ``<name>.onnx``."""
    return model_file.with_suffix(".json")


class OnnxNet(nn.Module):
    """An ONNX file as a network: float32 NCHW images in, logits out, computed by ONNX Runtime on the CPU
    with ``threads`` intra-op threads (default: torch's, so both runtimes use the same cores).

    A file exported with a fixed batch (``dynamic_batch=false``) is fed in chunks of that batch.
    """

    def __init__(self, model_file: Path, threads: int | None = None) -> None:
        super().__init__()
        (ort,) = require("onnxruntime", purpose=f"Running the exported network '{model_file}'")
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

        if not model_file.is_file():
            raise DataNotFoundError(f"model_file='{model_file}' does not exist. Pass an .onnx file written by src/export.py.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as err:
            raise CorruptDataError(
                f"'{model_file}' is not a readable ONNX model ({str(err).strip().splitlines()[0][:200]}): it is truncated, "
                "altered or not an ONNX file. Export it again: python src/export.py ckpt_path=<its checkpoint>."
            ) from None
        (given,) = self.session.get_inputs()
        self.input_name = given.name
        self.fixed_batch = given.shape[0] if isinstance(given.shape[0], int) else None

    def forward(self, x: Tensor) -> Tensor:
        images = x.detach().to("cpu", torch.float32).contiguous().numpy()  # channels_last batches too
        step = self.fixed_batch or len(images)
        logits = [self.session.run(None, {self.input_name: images[i : i + step]})[0] for i in range(0, len(images), step)]
        return torch.from_numpy(np.concatenate(logits)).to(x.device)


def read_sidecar(model_file: Path) -> dict[str, Any]:
    """The JSON that ``src/export.py`` wrote beside ``model_file``."""
    path = sidecar_path(model_file)
    if not path.is_file():
        raise DataNotFoundError(
            f"model_file='{model_file}' has no {path.name} beside it: prediction rebuilds the task's evaluation "
            "transform and class names from that file, which src/export.py writes with the .onnx file. Copy both "
            "together, or export again: python src/export.py ckpt_path=<its checkpoint>."
        )
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptDataError(
            f"'{path}' is not valid JSON ({err}). Export again: python src/export.py ckpt_path=<its checkpoint>."
        ) from None
    if not isinstance(sidecar, dict) or not {"run_config", "class_names"} <= sidecar.keys():
        raise CorruptDataError(
            f"'{path}' lacks run_config or class_names, which prediction needs; it was not written by src/export.py. "
            "Export again: python src/export.py ckpt_path=<its checkpoint>."
        )
    return sidecar


def exported_task(model_file: Path, threads: int | None = None) -> VisionTask:
    """The task of the sidecar's run config, in eval mode, around ``OnnxNet(model_file)``: what
    ``VisionTask.from_checkpoint`` gives for the checkpoint, with ONNX Runtime as its network."""
    sidecar = read_sidecar(model_file)
    return VisionTask.from_config(sidecar["run_config"], sidecar["class_names"], net=OnnxNet(model_file, threads))
