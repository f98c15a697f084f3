"""Augmentation and normalisation of whole uint8 batches on the training device.

The cached pipelines' loaders yield uint8 batches; their DataModules call these from
``on_after_batch_transfer`` (after the batch is on the device). The same ``Augment``/``SegAugment``
dataclasses drive both pipelines, with the per-image (PIL) path in
``transforms.py``/``seg_transforms.py`` as the reference:

* classification: affine (rotation, shift, zoom, shear; bilinear, uncovered pixels filled as
  ``Augment.fill`` says: edge, black or mirror) -> brightness factor (multiplicative, clamped to
  the pixel range: torchvision's formula) -> horizontal flip, then normalisation, with
  per-sample parameters drawn and applied for the whole batch at once. The optional
  ``auto_augment`` policy (after the flip, on uint8) and random erasing (after normalisation)
  run sample by sample with the per-image path's own v2 transforms: v2 applies one op to a
  whole batch, and the policies' ops (posterize, equalize, ...) have no batched per-sample
  form. Eval batches are only normalised. MixUp/CutMix come after this, in the DataModule.
* segmentation: only normalisation. Random scale, pad, crop and flip run per sample in the
  loader on the uint8 cache (``voc.CachedSegmentationFiles``), with the per-image path's own
  transforms: a scale must see the whole image, which the batch of crops no longer holds.

The affine parameters and matrices come from ``kornia.augmentation.RandomAffine`` (same
sampling and composition as torchvision's); the warp itself (``transforms.BatchAffine``) is
``grid_sample`` on the ``affine_grid`` of the equivalent normalised matrix, which matches
kornia's own warp to 1e-5 but is ~7x faster on CPU (kornia builds the sampling grid with
full-resolution elementwise ops: 108 ms vs 14 ms for 32x3x128x128 on this machine; its
ColorJitter/RandomHorizontalFlip cost 42/20 ms more). The classification batch then makes as
few full-resolution passes as the algebra allows, because on a CPU each pass costs ~0.5 ms per
32x3x128x128 batch:

* the flip is folded into the warp matrix (a flip after the warp reads column -x: the matrix's
  x column changes sign), so it costs nothing;
* brightness is applied while converting uint8 to float, before the warp: the warp is linear in
  the image for every fill (zeros, border and reflection padding all read a weighted sum of
  image pixels or 0), so ``warp(b * x) == b * warp(x)`` and the clamp after the warp gives
  exactly torchvision's ``clamp(b * image)``;
* ``/255`` and the ImageNet normalisation are one multiply-add per channel.

Measured on this machine (1 thread, 32x3x128x128, one process, same batch): 14-16 ms per
batch before this fusion, 6.5-7 ms after (x2.1). On fresh loader batches, with loader workers
sharing the two cores, it is ~13 ms (``python -m visionbench.bench.data_speed`` reports it as
ms per image beside the per-image pipeline's augmentation cost). The per-sample steps add, on
the same 32x3x128x128 batch (1 thread, median): TrivialAugmentWide 23 ms, RandAugment 46 ms,
random erasing 1.5 ms at p=0.25 (4.6 ms at p=1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from visionbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augment, BatchAffine, auto_augmentation, random_erasing


def _channel_scale_offset(device: torch.device) -> tuple[Tensor, Tensor]:
    """(1/(255 std), -mean/std) per channel: uint8 levels -> ImageNet statistics in one multiply-add."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return 1 / (255 * std), -mean / std


def normalize_levels_(levels: Tensor) -> Tensor:
    """Float images in uint8 levels [0, 255] -> ImageNet statistics, in place."""
    scale, offset = _channel_scale_offset(levels.device)
    return levels.mul_(scale).add_(offset)


def normalize_uint8(images: Tensor) -> Tensor:
    return normalize_levels_(images.float())


@dataclass
class SampledParams:
    """What the last augmented batch drew, per sample (kept for tests and debugging)."""

    affine: dict[str, Tensor]  # kornia's RandomAffine parameters (angle, translations, scale, shear_x, ...)
    brightness: Tensor  # (N,) factors
    flipped: Tensor  # (N,) bool


class ClassificationBatchTransform:
    """(uint8 images, labels) -> (normalised float images, labels); augmented when training."""

    def __init__(self, aug: Augment) -> None:
        self.aug = aug
        self.affine = BatchAffine(aug)
        self.auto_augment = auto_augmentation(aug)
        self.erasing = random_erasing(aug, inplace=True)
        self.last_params: SampledParams | None = None

    def __call__(self, batch: tuple[Tensor, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        images, labels = batch
        if images.dtype != torch.uint8:
            return batch
        if not (train and self.aug.enabled):
            return normalize_uint8(images), labels
        levels = self.augment(images)
        if self.auto_augment is not None:
            levels = self.auto_augment_each(levels.round_().to(torch.uint8)).float()
        normalized = normalize_levels_(levels)
        if self.erasing is not None:
            for image in normalized:  # in place, each sample its own box and coin
                self.erasing(image)
        return normalized, labels

    def auto_augment_each(self, images: Tensor) -> Tensor:
        """The ``auto_augment`` policy on each uint8 image with its own op and magnitude, drawn in
        batch order (~0.7 ms per 128² image for TrivialAugmentWide on this CPU)."""
        assert self.auto_augment is not None
        return torch.stack([self.auto_augment(image) for image in images])

    def augment(self, images: Tensor) -> Tensor:
        """uint8 batch -> warped, brightness-scaled, flipped float batch in levels [0, 255]
        (full-resolution passes: convert, scale, grid, warp, clamp)."""
        n = images.shape[0]
        low, high = self.aug.brightness
        brightness = torch.empty(n, device=images.device).uniform_(low, high)
        flipped = torch.rand(n, device=images.device) < self.aug.hflip
        levels = images.float().mul_(brightness.view(n, 1, 1, 1))
        params = self.affine.draw(levels.shape, levels.device)
        self.last_params = SampledParams(params, brightness, flipped)
        return self.affine.warp(levels, self.affine.theta(params, levels, flipped)).clamp_(0, 255)


class SegmentationBatchTransform:
    """(uint8 images, int64 masks) -> (normalised float images, masks).

    Training samples arrive augmented: ``CachedSegmentationFiles`` scales, pads, crops and flips
    each one in the loader exactly as the per-image path does, because a random scale must see
    the whole image (zooming out shows context beyond the crop) and not only the crop.
    """

    def __call__(self, batch: tuple[Tensor, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        images, masks = batch
        if images.dtype != torch.uint8:
            return batch
        return normalize_uint8(images), masks
