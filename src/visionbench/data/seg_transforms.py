"""Joint image/mask transforms for segmentation (torchvision.transforms.v2 + ``tv_tensors.Mask``).

v2 applies one set of random parameters to every input of a call, so the image and its mask
are always cropped, scaled and flipped identically; masks are resized with nearest-neighbour
interpolation only, so a mask never gains a value that was not in it (no 7.5 between 5 and 10).
Images are normalised *before* any padding, so padded image pixels are 0, i.e. the ImageNet
mean, and padded mask pixels are ``IGNORE_INDEX``: neither the loss nor the metrics see them.
The cached pipeline runs the same ``train_steps`` on uint8 images, padding with the mean pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from visionbench.data.transforms import normalize
from visionbench.masks import IGNORE_INDEX



@dataclass(frozen=True)
class SegAugment:
    """Training augmentation (``task.data.augment.*``); ``enabled: false`` keeps only crop/pad."""

    enabled: bool = True
    scale_range: tuple[float, float] | None = None  # e.g. (0.5, 2.0); None = keep the image scale
    hflip: float = 0.5


class RandomScale(v2.Transform):
    """Rescale image and mask by one factor drawn uniformly from ``scale_range`` (aspect kept).

    torchvision's ``RandomResize`` draws an absolute shorter-side length instead; a factor
    relative to each image keeps VOC's mix of object sizes.
    """

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        scale = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            # NEAREST samples source pixel floor(i / s), up to half a pixel off the bilinear image;
            # NEAREST_EXACT samples the pixel under the output pixel's centre, as bilinear does.
            return TF.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return TF.resize(inpt, params["size"], antialias=True)


def to_tv_tensors(image: Image.Image, mask: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """PIL RGB image + (H, W) array of class indices -> uint8 tv_tensors, ready for v2."""
    return TF.to_image(image), tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)))


class SegmentationTransform:
    """(PIL image, index mask) -> (normalised float image (3, H, W), int64 mask (H, W))."""

    def __init__(self, steps: list[v2.Transform]) -> None:
        self.pipeline = v2.Compose(normalize() + steps)

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        img, target = self.pipeline(*to_tv_tensors(image, mask))
        return img.as_subclass(Tensor), target.as_subclass(Tensor).to(torch.int64)


def train_steps(crop: tuple[int, int], aug: SegAugment, image_fill: float | Sequence[float]) -> list[v2.Transform]:
    """[random scale] -> pad to at least ``crop`` (image ``image_fill``, mask void) -> random
    ``crop`` -> [random horizontal flip], jointly on a ``tv_tensors`` image and mask.

    Both pipelines run these steps, so one seeded sample draws the same numbers in the same order
    (scale, crop offsets, flip) in either. Padding instead of dropping images smaller than the
    crop: the d2l.ai recipe filters them out, which silently removes 350 of VOC's 1464 training
    images at 320x480.
    """
    steps: list[v2.Transform] = []
    if aug.enabled and aug.scale_range is not None:
        steps.append(RandomScale(tuple(aug.scale_range)))
    fill = {tv_tensors.Image: image_fill, tv_tensors.Mask: IGNORE_INDEX}
    steps.append(v2.RandomCrop(tuple(crop), pad_if_needed=True, fill=fill))
    if aug.enabled and aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    return steps


def train_transform(crop: tuple[int, int], aug: SegAugment) -> SegmentationTransform:
    """``train_steps`` on the normalised image: padding 0.0 is the mean."""
    return SegmentationTransform(train_steps(crop, aug, 0.0))


def eval_transform() -> SegmentationTransform:
    """The full image, unchanged apart from normalisation: metrics are computed on every pixel."""
    return SegmentationTransform([])


def pad_collate(batch: list[tuple[Tensor, Tensor]], size_divisor: int = 32) -> tuple[Tensor, Tensor]:
    """Stack differently sized samples by padding bottom/right to a common size that is a
    multiple of ``size_divisor`` (the networks' output stride): images with 0 (the mean after
    normalisation), masks with ``IGNORE_INDEX`` so padded pixels never count."""
    height = math.ceil(max(img.shape[-2] for img, _ in batch) / size_divisor) * size_divisor
    width = math.ceil(max(img.shape[-1] for img, _ in batch) / size_divisor) * size_divisor
    images = torch.stack([F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]), value=0.0) for img, _ in batch])
    masks = torch.stack(
        [F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]), value=IGNORE_INDEX) for _, m in batch]
    )
    return images, masks
