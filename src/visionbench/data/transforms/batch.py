"""Augmentation and normalisation of whole uint8 batches (the cached pipelines).

Where: on an accelerator, in ``on_after_batch_transfer`` on the device, drawing from the process's
global RNG; on a CPU, in the loader (``base.SeededSamples`` and ``base.LoaderNormalises``), each
draw from its own (seed, epoch, index, repeat) stream, so the training process only trains. There
each sample draws its parameters as the per-image path does (``BatchTransform.draw_sample``), so
for the same seed both pipelines train on the same batches, up to uint8 rounding.
The ``augment.Augment`` description drives this and the per-image path (``transforms``), the reference:

* classification: affine (rotation, shift, zoom, shear; bilinear, uncovered pixels filled as
  ``Augment.fill`` says) -> brightness factor (multiplicative, clamped: torchvision's formula) ->
  horizontal flip, then normalisation, with per-sample parameters applied to the whole batch at
  once. The optional ``auto_augment`` policy (after the flip, on uint8) and random erasing (after
  normalisation) run sample by sample with the per-image path's own v2 transforms: their ops
  (posterize, equalize, ...) have no batched per-sample form. MixUp/CutMix come after, in the DataModule.
* segmentation: only normalisation. Scale, pad, crop and flip run per sample on the uint8 cache
  (``storage.CachedPairs``): a scale must see the whole image, which a batch of crops no longer holds.

The affine parameters come from ``kornia.augmentation.RandomAffine`` (torchvision's sampling); the
warp (``augment.BatchAffine``) is ``grid_sample``, ~7x faster on CPU than kornia's own (108 vs 14 ms
for 32x3x128x128). Each full-resolution pass costs ~0.5 ms per such batch on a CPU, so the batch
makes as few as the algebra allows: the flip is folded into the warp matrix (x column negated);
brightness is applied while converting to float, before the warp, which is linear in the image
for every fill, so the clamp after it gives exactly torchvision's ``clamp(b * image)``; ``/255``
and the ImageNet normalisation are one multiply-add per channel. ~7 ms per batch on one thread;
``python -m visionbench.bench.data_speed`` reports it beside the per-image path's cost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from visionbench.data.transforms.augment import Augment, BatchAffine, SampleStreams, auto_augmentation, random_erasing
from visionbench.data.transforms.per_sample import brightness_jitter
from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD


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


class BatchTransform:
    """(uint8 images, targets) -> (normalised float images, targets), augmented when training with
    an ``aug``; segmentation passes none (its pairs arrive augmented, see the module note)."""

    def __init__(self, aug: Augment | None = None) -> None:
        self.aug = aug if aug is not None and aug.enabled else None
        if self.aug is not None:
            self.affine = BatchAffine(self.aug)
            self.jitter = brightness_jitter(self.aug)
            self.auto_augment = auto_augmentation(self.aug)
            self.erasing = random_erasing(self.aug, inplace=True)
        self.last_params: SampledParams | None = None

    def __call__(self, batch: tuple[Tensor, Tensor], train: bool, streams: SampleStreams | None = None) -> tuple[Tensor, Tensor]:
        """``streams``: each sample draws from its own (the loader's case); without, the batch draws
        from the process's global RNG (the device's case)."""
        images, targets = batch
        if images.dtype != torch.uint8:
            return batch
        if not train or self.aug is None:
            return normalize_uint8(images), targets
        each = functools.partial(_each, streams)
        levels = self.augment(images, streams)
        if self.auto_augment is not None:
            levels = torch.stack(each(self.auto_augment, levels.round_().to(torch.uint8))).float()
        normalized = normalize_levels_(levels)
        if self.erasing is not None:
            each(self.erasing, normalized)  # in place, each sample its own box and coin
        return normalized, targets

    def augment(self, images: Tensor, streams: SampleStreams | None = None) -> Tensor:
        """uint8 batch -> warped, brightness-scaled, flipped float batch in levels [0, 255]
        (full-resolution passes: convert, scale, grid, warp, clamp)."""
        assert self.aug is not None
        n, device = images.shape[0], images.device
        if streams is None:
            brightness, flipped, params = self.draw(n, images.shape, device)
        else:
            drawn = []
            for i in range(n):
                with streams.drawing(i):
                    drawn.append(self.draw_sample(images.shape, device))
            brightness, flipped = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
            params = {key: torch.cat([d[2][key] for d in drawn]) for key in drawn[0][2] if key != "forward_input_shape"}
        levels = images.float().mul_(brightness.view(n, 1, 1, 1))
        self.last_params = SampledParams(params, brightness, flipped)
        return self.affine.warp(levels, self.affine.theta(params, levels, flipped)).clamp_(0, 255)

    def draw_sample(self, shape: torch.Size, device: torch.device) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One sample's brightness factor, flip and affine parameters, drawn as the per-image path
        (``transforms.augmentation``) draws them, in its order and with its transforms' own draws:
        the warp's, ColorJitter's (an op order, then the factor), the flip's coin. From one sample
        stream both pipelines then augment alike, up to uint8 rounding."""
        assert self.aug is not None
        affine = self.affine.draw((1, *shape[1:]), device)
        factor = self.jitter.make_params([])["brightness_factor"]  # None when the range is (1, 1)
        flipped = torch.rand(1) < self.aug.hflip  # v2.RandomHorizontalFlip's coin
        return torch.tensor([1.0 if factor is None else factor], device=device), flipped.to(device), affine

    def draw(self, n: int, shape: torch.Size, device: torch.device) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Brightness factors, flips and affine parameters of ``n`` images of ``shape``'s size, from
        the process's RNG on the device (the accelerator's case: whole batches, no sample streams)."""
        assert self.aug is not None
        low, high = self.aug.brightness
        brightness = torch.empty(n, device=device).uniform_(low, high)
        flipped = torch.rand(n, device=device) < self.aug.hflip
        return brightness, flipped, self.affine.draw((n, *shape[1:]), device)


def _each(streams: SampleStreams | None, transform: Callable[[Tensor], Tensor], images: Tensor) -> list[Tensor]:
    """``transform`` on each image with its own op and draws, in batch order (or each sample's stream);
    v2 would apply one op to a whole batch (~0.7 ms per 128² image for TrivialAugmentWide on this CPU)."""
    if streams is None:
        return [transform(image) for image in images]
    out = []
    for i, image in enumerate(images):
        with streams.drawing(i):
            out.append(transform(image))
    return out
