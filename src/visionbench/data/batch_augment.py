"""Augmentation and normalisation of whole uint8 batches on the training device.

The cached pipelines' loaders yield uint8 batches; their DataModules call these from
``on_after_batch_transfer`` (after the batch is on the device), so per-sample random parameters are drawn and applied for the
whole batch at once on the device instead of image by image in loader workers. The same
``Augment``/``SegAugment`` dataclasses drive both pipelines, with the per-image (PIL) path in
``transforms.py``/``seg_transforms.py`` as the reference:

* classification: affine (rotation, shift, zoom, shear; bilinear, zero fill) -> brightness
  factor (multiplicative, clamped to the pixel range: torchvision's formula) -> horizontal flip,
  then normalisation. Eval batches are only normalised.
* segmentation: [random scale] and horizontal flip applied jointly to image and mask, the mask
  with nearest-neighbour; mask pixels that come from outside the image are ``IGNORE_INDEX``.

The affine parameters and matrices come from ``kornia.augmentation.RandomAffine`` (same
sampling and composition as torchvision's); the warp itself is ``grid_sample`` on the
``affine_grid`` of the equivalent normalised matrix, which matches kornia's own warp to 1e-5
but is ~7x faster on CPU (kornia builds the sampling grid with full-resolution elementwise ops:
108 ms vs 14 ms for 32x3x128x128 on this machine; its ColorJitter/RandomHorizontalFlip cost
42/20 ms more). The classification batch then makes as few full-resolution passes as the
algebra allows, because on a CPU each pass costs ~0.5 ms per 32x3x128x128 batch:

* the flip is folded into the warp matrix (a flip after the warp reads column -x: the matrix's
  x column changes sign), so it costs nothing;
* brightness is applied while converting uint8 to float, before the warp: the warp is linear and
  fills with 0, so ``warp(b * x) == b * warp(x)`` and the clamp after the warp gives exactly
  torchvision's ``clamp(b * image)``;
* ``/255`` and the ImageNet normalisation are one multiply-add per channel.

Measured on this machine (1 thread, 32x3x128x128, one process, same batch): 14-16 ms per
batch before this fusion, 6.5-7 ms after (x2.1). On fresh loader batches, with loader workers
sharing the two cores, it is ~13 ms (``python -m visionbench.bench.data_speed`` reports it as
ms per image beside the per-image pipeline's augmentation cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor

from visionbench.data.seg_transforms import IGNORE_INDEX, SegAugment
from visionbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augment


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

    affine: dict[str, Tensor]  # kornia's RandomAffine parameters (angle, scale, translations, shear_x, ...)
    brightness: Tensor  # (N,) factors
    flipped: Tensor  # (N,) bool


class BatchAffine:
    """Per-sample random affine warps of a batch, drawn by kornia and applied with ``grid_sample``."""

    def __init__(self, augmentation: K.RandomAffine) -> None:
        self.augmentation = augmentation

    def sample(self, images: Tensor, flipped: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Parameters and the ``affine_grid`` matrices (output -> input, normalised, align_corners=False)
        of the warp followed by a horizontal flip of the ``flipped`` samples."""
        params = self.augmentation.forward_parameters(images.shape)
        params = {k: v.to(images.device) if isinstance(v, Tensor) else v for k, v in params.items()}
        dtype = images.dtype
        pixel_matrix = self.augmentation.compute_transformation(images, params, self.augmentation.flags).to(images.device, dtype)
        height, width = images.shape[-2:]
        to_normalised = torch.tensor(
            [[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]], dtype=dtype, device=images.device
        )
        theta = (to_normalised @ torch.linalg.inv(pixel_matrix) @ torch.linalg.inv(to_normalised))[:, :2]
        theta[:, :, 0] *= torch.where(flipped, -1.0, 1.0).view(-1, 1)  # output x -> -x before the warp
        return params, theta

    @staticmethod
    def warp(images: Tensor, theta: Tensor, mode: str) -> Tensor:
        return F.grid_sample(images, affine_grid(theta, *images.shape[-2:]), mode=mode, padding_mode="zeros", align_corners=False)


def affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta, (N, C, height, width), align_corners=False)`` as the sum of a
    per-column and a per-row term: the same grid (to 1 ulp) in 1.1 ms instead of 2.4 ms for
    32x128x128 on this CPU, where ``affine_grid``'s (N, HW, 3) @ (N, 3, 2) matmul is slow."""
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    columns = theta[:, None, None, :, 0] * xs.view(1, 1, width, 1)
    rows = theta[:, None, None, :, 1] * ys.view(1, height, 1, 1) + theta[:, None, None, :, 2]
    return columns + rows


def _flip(images: Tensor, flipped: Tensor) -> Tensor:
    view = flipped.view(-1, *([1] * (images.dim() - 1)))
    return torch.where(view, images.flip(-1), images)


class ClassificationBatchTransform:
    """(uint8 images, labels) -> (normalised float images, labels); augmented when training."""

    def __init__(self, aug: Augment) -> None:
        self.aug = aug
        self.affine = BatchAffine(
            K.RandomAffine(
                degrees=aug.degrees,
                translate=(aug.translate, aug.translate),
                scale=(1 - aug.zoom, 1 + aug.zoom),
                shear=aug.shear,
                p=1.0,
            )
        )
        self.last_params: SampledParams | None = None

    def __call__(self, batch: tuple[Tensor, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        images, labels = batch
        if images.dtype != torch.uint8:
            return batch
        if train and self.aug.enabled:
            return normalize_levels_(self.augment(images)), labels
        return normalize_uint8(images), labels

    def augment(self, images: Tensor) -> Tensor:
        """uint8 batch -> warped, brightness-scaled, flipped float batch in levels [0, 255]
        (full-resolution passes: convert, scale, grid, warp, clamp)."""
        n = images.shape[0]
        low, high = self.aug.brightness
        brightness = torch.empty(n, device=images.device).uniform_(low, high)
        flipped = torch.rand(n, device=images.device) < self.aug.hflip
        levels = images.float().mul_(brightness.view(n, 1, 1, 1))
        params, theta = self.affine.sample(levels, flipped)
        self.last_params = SampledParams(params, brightness, flipped)
        return BatchAffine.warp(levels, theta, "bilinear").clamp_(0, 255)


class SegmentationBatchTransform:
    """(uint8 images, int64 masks) -> (normalised float images, masks); jointly augmented when training.

    The mask is warped as ``mask + 1`` with zero fill and nearest-neighbour sampling, so 0 after
    the warp marks pixels from outside the image; they become ``IGNORE_INDEX``.
    """

    def __init__(self, aug: SegAugment) -> None:
        self.aug = aug
        scale = aug.scale_range if aug.enabled else None
        self.affine = BatchAffine(K.RandomAffine(degrees=0.0, scale=tuple(scale), p=1.0)) if scale is not None else None
        self.last_params: SampledParams | None = None

    def __call__(self, batch: tuple[Tensor, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        images, masks = batch
        if images.dtype != torch.uint8:
            return batch
        levels = images.float()
        if train and self.aug.enabled:
            levels, masks = self.augment(levels, masks)
        return normalize_levels_(levels), masks

    def augment(self, levels: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        n = levels.shape[0]
        flipped = torch.rand(n, device=levels.device) < self.aug.hflip
        self.last_params = SampledParams({}, torch.ones(n, device=levels.device), flipped)
        if self.affine is None:
            return _flip(levels, flipped), _flip(masks, flipped)
        self.last_params.affine, theta = self.affine.sample(levels, flipped)
        levels = BatchAffine.warp(levels, theta, "bilinear")
        shifted = BatchAffine.warp((masks.unsqueeze(1) + 1).to(levels.dtype), theta, "nearest").squeeze(1).long()
        return levels, torch.where(shifted == 0, IGNORE_INDEX, shifted - 1)
