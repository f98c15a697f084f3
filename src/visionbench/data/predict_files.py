"""The files a prediction reads: every image under an input path, decoded and transformed exactly as
its task's evaluation split is, in batches for ``Trainer.predict``.

A file that does not decode is not an error here: it travels in its batch as ``Unreadable`` with a
one-line reason, so the writer can list and count it beside the images that were predicted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from visionbench.data.storage.readers import load_rgb, unreadable_reason
from visionbench.data.transforms.per_sample import classification_transform, eval_transform, pad_collate
from visionbench.errors import DataNotFoundError

# PIL's errors for non-images and broken files
DECODE_ERRORS = (OSError, ValueError, SyntaxError)


class ImageFile(NamedTuple):
    """A decoded input file; ``position`` is its place in the sorted listing, the order of the CSV."""

    position: int
    path: Path
    name: str  # relative to the input folder, as a POSIX path: every output file is named after it
    image: np.ndarray  # (H, W, 3) uint8 RGB as decoded, for figures and overlays


class Unreadable(NamedTuple):
    position: int
    path: Path
    reason: str


class PredictBatch(NamedTuple):
    """One forward pass: ``images`` row i is ``files[i]``; no rows when every file was unreadable."""

    images: Tensor  # (N, 3, H, W) normalised, as the evaluation transform makes them (padded: segmentation)
    files: list[ImageFile]
    unreadable: list[Unreadable]


def input_files(path: Path, output_dir: Path | None = None) -> list[Path]:
    """The file itself, or every non-hidden file under the folder, sorted; files under
    ``output_dir`` (an earlier run's figures, when it lies inside the input folder) are outputs, not inputs."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataNotFoundError(f"input='{path}' does not exist. Pass an image file or a folder of images.")
    outputs = output_dir.resolve() if output_dir is not None else None
    nested_outputs = outputs if outputs is not None and outputs != path.resolve() and outputs.is_relative_to(path.resolve()) else None
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not (nested_outputs is not None and p.resolve().is_relative_to(nested_outputs))
    )
    if not files:
        raise DataNotFoundError(f"input='{path}' holds no files (hidden ones are ignored). Pass an image file or a folder of images.")
    return files


class PredictBatches(Dataset):
    """Item ``i`` is the ``i``-th batch, decoded and collated: the batches are chosen up front
    (``padded_size_batches`` for segmentation), so the loader only reads them."""

    def __init__(
        self,
        files: list[Path],
        input_path: Path,
        batches: list[list[int]],
        transform: Callable[[Image.Image], Any],
        stack: Callable[[list[Any]], Tensor],
        empty: Tensor,
    ) -> None:
        self.files, self.batches, self.transform, self.stack, self.empty = files, batches, transform, stack, empty
        self.names = [(p.relative_to(input_path) if input_path.is_dir() else Path(p.name)).as_posix() for p in files]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, batch: int) -> PredictBatch:
        inputs, decoded, unreadable = [], [], []
        for index in self.batches[batch]:
            path = self.files[index]
            try:
                image = load_rgb(path)
            except DECODE_ERRORS as err:
                unreadable.append(Unreadable(index, path, unreadable_reason(path) or str(err)))
                continue
            inputs.append(self.transform(image))
            decoded.append(ImageFile(index, path, self.names[index], np.asarray(image)))
        return PredictBatch(self.stack(inputs) if inputs else self.empty, decoded, unreadable)


def padded_size_batches(files: list[Path], size_divisor: int, batch_size: int) -> list[list[int]]:
    """Batches of files whose images pad to the same size, so that each image is padded (and its
    mask predicted) exactly as when predicted alone, whatever else the folder holds.

    Sizes come from the file headers (no decoding); a file without a readable header is batched
    with the others like it and reported unreadable when its batch decodes it.
    """
    groups: dict[tuple[int, int] | None, list[int]] = defaultdict(list)
    for index, path in enumerate(files):
        try:
            with Image.open(path) as image:
                width, height = image.size
            groups[(math.ceil(height / size_divisor), math.ceil(width / size_divisor))].append(index)
        except DECODE_ERRORS:
            groups[None].append(index)
    return [group[start : start + batch_size] for group in groups.values() for start in range(0, len(group), batch_size)]


def _segmentation_sample(image: Image.Image) -> tuple[Tensor, Tensor]:
    """The evaluation transform of the image and an all-background mask it needs as its pair."""
    return eval_transform()(image, np.zeros((image.height, image.width), dtype=np.uint8))


def _padded_images(pairs: list[tuple[Tensor, Tensor]], size_divisor: int) -> Tensor:
    return pad_collate(pairs, size_divisor)[0]


def _as_read(batch: PredictBatch) -> PredictBatch:
    """The batch as the dataset made it (the default would turn the decoded arrays into tensors)."""
    return batch


def predict_loader(files: list[Path], input_path: Path, kind: str, data: Mapping[str, Any], batch_size: int) -> DataLoader:
    """``files`` in batches of ``batch_size`` for a ``kind`` task whose ``task.data`` config is ``data``:
    classification resizes to ``data.image_size``; segmentation keeps each image's size, padded to
    a multiple of ``data.size_divisor`` within batches of one padded size (``padded_size_batches``)."""
    if kind == "segmentation":
        divisor = int(data.get("size_divisor", 32))
        batches = PredictBatches(
            files,
            input_path,
            padded_size_batches(files, divisor, batch_size),
            _segmentation_sample,
            partial(_padded_images, size_divisor=divisor),
            torch.zeros(0, 3, divisor, divisor),
        )
    else:
        size = int(data["image_size"])
        chunks = [list(range(start, min(start + batch_size, len(files)))) for start in range(0, len(files), batch_size)]
        batches = PredictBatches(
            files, input_path, chunks, classification_transform(size, None), torch.stack, torch.zeros(0, 3, size, size)
        )
    return DataLoader(batches, batch_size=None, collate_fn=_as_read)  # type: ignore[arg-type]  # unbatched: collate_fn gets each item
