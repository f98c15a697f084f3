"""Where samples are read from, as datasets: the files themselves (``pipeline=pil``: decoded and
transformed one by one, the reference) or the uint8 cache (``pipeline=cached``: decoded once).
Which of the two a DataModule serves is this one choice; everything else is the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visionbench.data.storage.cache import ImageCache
from visionbench.errors import ConfigError

PIPELINES = ("pil", "cached")


def check_pipeline(pipeline: str) -> str:
    if pipeline not in PIPELINES:
        raise ConfigError(
            f"Unknown task.data.pipeline {pipeline!r}. Use 'cached' (decode once into a uint8 cache, augment whole "
            "batches) or 'pil' (decode and augment every image in the loader: the reference)."
        )
    return pipeline


class Items(Protocol):
    """A source's split: ``read(i)`` decodes item ``i`` from its files as (image, target)."""

    def __len__(self) -> int: ...

    def read(self, index: int) -> tuple[Any, Any]: ...


class FileSamples(Dataset):
    """Every sample decoded from its files and transformed (jointly with its target) at each read."""

    def __init__(self, items: Items, transform: Callable[[Any, Any], tuple[Tensor, Any]]) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        return self.transform(*self.items.read(index))


class CachedImages(Dataset):
    """Labelled images of one size from the cache, read a whole batch at a time: (N, 3, S, S) uint8
    images and their labels, augmented and normalised afterwards as whole batches."""

    def __init__(self, cache: ImageCache, labels: list[int]) -> None:
        self.cache = cache
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.from_numpy(self.cache.images.read(index)), self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """The DataLoader calls this instead of ``__getitem__`` per index, then its collate (the
        identity, ``whole_batch``): one buffer for the batch, 3x the images/s of per-item reads."""
        images = torch.from_numpy(self.cache.images.read_many(indices))
        return images, torch.tensor([self.labels[i] for i in indices])


def whole_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The collate of ``CachedImages``: its ``__getitems__`` already returns a batch."""
    return batch


class CachedPairs(Dataset):
    """Image/mask pairs of their own sizes from the cache: uint8 images and int64 masks.

    Training pairs go through ``transform`` on the uint8 pair at its native size (the per-image
    path's own random scale, pad, crop and flip: the same numbers drawn in the same order, so a
    seeded sample equals the per-image one up to uint8 rounding). The scale runs here and not on
    whole batches because it needs the whole image, not the crop. Evaluation pairs are the full
    native image and mask (``transform`` None).
    """

    def __init__(self, cache: ImageCache, transform: Callable[[Any, Any], tuple[Any, Any]] | None) -> None:
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        assert self.cache.masks is not None
        h, w = self.cache.sizes[index]
        image = torch.from_numpy(self.cache.images.read(index))[:, :h, :w]
        mask = torch.from_numpy(self.cache.masks.read(index))[:h, :w]
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(Tensor), mask.as_subclass(Tensor).long()
