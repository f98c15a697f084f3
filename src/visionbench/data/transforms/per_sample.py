"""The per-sample path (torchvision.transforms.v2): the reference implementation of the
augmentation (``augment``) for one image, or one image and its mask, then normalisation; and
``pad_collate``, which batches samples of different sizes.

Classification warps with the batch path's own code on a batch of one (``RandomAffineWarp``), not
torchvision's ``RandomAffine``: that one only fills a constant, and with bilinear interpolation it
weights the outer ring of pixels by their coverage twice (up to 60 grey levels darker than a plain
bilinear warp with zero fill).

Segmentation: v2 applies one set of random parameters to every input of a call, so the image and
its mask are always cropped, scaled and flipped identically; masks are resized with
nearest-neighbour interpolation only, so a mask never gains a value that was not in it (no 7.5
between 5 and 10). Images are normalised *before* any padding, so padded image pixels are 0, i.e.
the ImageNet mean, and padded mask pixels are ``IGNORE_INDEX``: neither the loss nor the metrics
see them. The cached pipeline runs the same ``train_steps`` on uint8 images, padding with ``MEAN_PIXEL``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from visionbench.data.transforms.augment import Augment, BatchAffine, SegAugment, auto_augmentation, random_erasing
from visionbench.masks import IGNORE_INDEX
from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD, MEAN_PIXEL


class RandomAffineWarp(v2.Transform):
    """``BatchAffine`` as a v2 transform of one uint8 image (the per-image pipeline's affine);
    rounds back to uint8 as torchvision's affine does."""

    def __init__(self, aug: Augment) -> None:
        super().__init__()
        self.affine = BatchAffine(aug)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return {"affine": self.affine.draw((1, 3, height, width), torch.device("cpu"))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        levels = inpt.as_subclass(Tensor).unsqueeze(0).float()
        theta = self.affine.theta(params["affine"], levels, torch.zeros(1, dtype=torch.bool))
        warped = self.affine.warp(levels, theta).round_().clamp_(0, 255).to(inpt.dtype)[0]
        return tv_tensors.wrap(warped, like=inpt)


def brightness_jitter(aug: Augment) -> v2.ColorJitter:
    """The brightness step; the batch path draws its factors with this transform's own ``make_params``."""
    return v2.ColorJitter(brightness=tuple(aug.brightness))


def augmentation(aug: Augment) -> list[v2.Transform]:
    """Affine -> brightness -> horizontal flip -> ``auto_augment`` policy, on uint8 images."""
    if not aug.enabled:
        return []
    steps = [RandomAffineWarp(aug), brightness_jitter(aug), v2.RandomHorizontalFlip(aug.hflip)]
    policy = auto_augmentation(aug)
    return [*steps, policy] if policy is not None else steps


def normalize() -> list[v2.Transform]:
    """uint8 -> float in [0, 1] -> ImageNet statistics (what pretrained trunks expect)."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def classification_transform(image_size: int, aug: Augment | None) -> v2.Compose:
    """Squash-resize to ``image_size``² (as Keras' ``target_size``), augment (train only), normalise,
    then random erasing (train only)."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if aug is not None:
        steps += augmentation(aug)
    steps += normalize()
    erasing = random_erasing(aug) if aug is not None else None
    return v2.Compose([*steps, erasing] if erasing is not None else steps)


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


class SegmentationTransform:
    """(PIL image, index mask) -> (normalised float image (3, H, W), int64 mask (H, W))."""

    def __init__(self, steps: list[v2.Transform]) -> None:
        self.pipeline = v2.Compose(normalize() + steps)

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        img, target = self.pipeline(TF.to_image(image), tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))
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
        low, high = aug.scale_range
        steps.append(RandomScale((low, high)))
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
    multiple of ``size_divisor`` (the networks' output stride): normalised images with 0 and uint8
    ones with ``MEAN_PIXEL`` (the mean either way), masks with ``IGNORE_INDEX`` so padded pixels never count."""
    height = math.ceil(max(img.shape[-2] for img, _ in batch) / size_divisor) * size_divisor
    width = math.ceil(max(img.shape[-1] for img, _ in batch) / size_divisor) * size_divisor
    dtype = batch[0][0].dtype
    fill = MEAN_PIXEL if dtype == torch.uint8 else (0.0, 0.0, 0.0)
    images = torch.tensor(fill, dtype=dtype).view(1, 3, 1, 1).repeat(len(batch), 1, height, width)
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=batch[0][1].dtype)
    for i, (image, mask) in enumerate(batch):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks
