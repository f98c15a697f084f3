"""Reading the checkpoints src/train.py writes: eval.py, predict.py and resumed runs rebuild their
network from the run config stored inside (``visionbench_config``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a visionbench checkpoint with ``weights_only=True`` (no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"Checkpoint '{path}' does not exist. Pass ckpt_path=<run folder>/checkpoints/last.ckpt "
            "(or an epoch_*.ckpt) of a finished training run."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise CorruptDataError(
            f"'{path}' is not a readable checkpoint ({str(err).splitlines()[0][:200]}): it is truncated (a "
            "copy or a run that was killed mid-write) or not a PyTorch checkpoint. Use another epoch_*.ckpt or "
            "last.ckpt from the run's checkpoints/ folder."
        ) from None
    if not isinstance(checkpoint, dict) or not checkpoint.get("visionbench_config"):
        raise ConfigError(
            f"'{path}' has no visionbench_config (the run config): it was not written by src/train.py, so the "
            "network cannot be rebuilt from it. Use a checkpoint from a visionbench run folder's checkpoints/."
        )
    return checkpoint
