"""Reading the checkpoints src/train.py writes: eval.py, predict.py and resumed runs rebuild their
network from the run config stored inside (``visionbench_config``)."""

from __future__ import annotations

import pickle
import re
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
        # mmap: only the tensors used are read (a resume reads the config, then Lightning the rest).
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if not str(err).startswith("Weights only load failed"):
            raise CorruptDataError(f"'{path}' is not a readable checkpoint ({_first_line(err)}): it is truncated or corrupt.") from None
        raise ConfigError(
            f"'{path}' holds objects other than tensors and plain containers, so it is not loaded: visionbench "
            "reads checkpoints with weights_only=True so that no pickled code runs. Use a checkpoint written by "
            f"src/train.py. ({_first_line(str(err).split('WeightsUnpickler error:')[-1].split('. Please')[0])})"
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        detail = "not a zip archive" if "mmap can only be used" in str(err) else _first_line(err)
        raise CorruptDataError(
            f"'{path}' is not a readable checkpoint ({detail}): it is truncated (a "
            "copy or a run that was killed mid-write) or not a PyTorch checkpoint. Use another epoch_*.ckpt or "
            "last.ckpt from the run's checkpoints/ folder."
        ) from None
    if not isinstance(checkpoint, dict) or not checkpoint.get("visionbench_config"):
        raise ConfigError(
            f"'{path}' has no visionbench_config (the run config): it was not written by src/train.py, so the "
            "network cannot be rebuilt from it. Use a checkpoint from a visionbench run folder's checkpoints/."
        )
    checkpoint["visionbench_config"] = _moved(checkpoint["visionbench_config"])
    return checkpoint


# Classes and functions a run config names (``_target_``) that have moved since checkpoints began
# carrying their config: an older checkpoint still evaluates, predicts and resumes.
MOVED_TARGETS = {
    "visionbench.data.simpsons.SimpsonsDataModule": "visionbench.data.classification.ClassFolderDataModule",
    "visionbench.data.voc.VOCSegmentationDataModule": "visionbench.data.segmentation.ImageMaskDataModule",
    "visionbench.data.shapes.generate_shapes": "visionbench.data.sources.shapes.generate_shapes",
    "visionbench.data.shapes_seg.generate_shapes_seg": "visionbench.data.sources.shapes_seg.generate_shapes_seg",
}


def _moved(node: Any) -> Any:
    """``node`` with every ``_target_`` of ``MOVED_TARGETS`` at its current place."""
    if isinstance(node, dict):
        return {k: MOVED_TARGETS.get(v, v) if k == "_target_" else _moved(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_moved(v) for v in node]
    return node


def _first_line(message: object) -> str:
    """The first line of an error, without the terminal colour codes torch adds, at most 200 characters."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(message)).strip().splitlines()[0][:200]
