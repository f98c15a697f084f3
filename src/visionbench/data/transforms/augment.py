"""The augmentation, described once (``task.data.augment.*``: strengths and fill) and the pieces
both implementations draw with: the per-image reference path (``transforms``) and whole batches
(``batch_augment``). Tests keep the two implementations equal for the same draws.

The Simpsons article used Keras' ``ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
height_shift_range=0.2, shear_range=0.2, zoom_range=0.1, brightness_range=[0.8, 1.2],
horizontal_flip=True)``. Keras' shear is in degrees, so 0.2 here is 0.2 degrees too; Keras draws the
x and y zoom independently from [1 - zoom, 1 + zoom] (``zoom_independent: true``), torchvision one
factor for both axes.
Keras fills uncovered pixels as its ``fill_mode`` says (default ``nearest``: the edge pixel
repeated); ``fill`` chooses the same. Beyond the article, off by default, in the order of
torchvision's classification reference (``references/classification/presets.py``): an automatic
augmentation policy on the uint8 image after the flip (``auto_augment``), random erasing after
normalisation (``random_erase``), and MixUp/CutMix on the normalised training batch (``batch_mix``;
the DataModule applies it). Segmentation (``SegAugment``) scales, crops and flips image and mask jointly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from visionbench.errors import ConfigError

# Keras' fill_mode -> grid_sample's padding_mode. With align_corners=False ``reflection`` mirrors
# about the outer pixel edge (dcba|abcd), which is Keras' (scipy's) ``reflect``.
FILL_MODES = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}
AUTO_AUGMENT = {"ta_wide": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (``task.data.augment.*``); ``enabled: false`` turns all off."""

    enabled: bool = True
    degrees: float = 40.0
    translate: float = 0.2
    shear: float = 0.2
    zoom: float = 0.1
    zoom_independent: bool = False  # x and y zoom drawn apart (Keras' zoom_range), not one factor (torchvision's)
    brightness: tuple[float, float] = (0.8, 1.2)
    hflip: float = 0.5
    fill: str = "nearest"  # pixels the warp uncovers: nearest (edge repeated), constant (black), reflect
    mixup: float = 0.0  # Beta alpha of MixUp on training batches; 0 = off
    cutmix: float = 0.0  # Beta alpha of CutMix on training batches; 0 = off (both > 0: one of the two per batch)
    auto_augment: str | None = None  # a policy of AUTO_AUGMENT per image, or None
    random_erase: float = 0.0  # probability of erasing a random box of an image (to the mean)

    def __post_init__(self) -> None:
        if self.fill not in FILL_MODES:
            raise ConfigError(
                f"Unknown task.data.augment.fill {self.fill!r}. Use one of {', '.join(map(repr, FILL_MODES))} "
                "(Keras' fill_mode): 'nearest' repeats the edge pixel (Keras' default), 'constant' fills black, "
                "'reflect' mirrors the image at its edge."
            )
        if self.auto_augment is not None and self.auto_augment not in AUTO_AUGMENT:
            raise ConfigError(
                f"Unknown task.data.augment.auto_augment {self.auto_augment!r}. Use null (off) or one of "
                f"{', '.join(map(repr, AUTO_AUGMENT))}: 'ta_wide' is torchvision's TrivialAugmentWide, "
                "'randaugment' its RandAugment (2 ops of magnitude 9)."
            )
        alpha = "a Beta alpha >= 0 (0 turns it off; torchvision's recipe uses 0.2 for mixup, 1.0 for cutmix)"
        _check_number("mixup", self.mixup, alpha, math.inf)
        _check_number("cutmix", self.cutmix, alpha, math.inf)
        _check_number("random_erase", self.random_erase, "a probability in [0, 1] (0 turns it off; the recipe uses 0.25)", 1.0)


def _check_number(key: str, value: Any, expected: str, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ConfigError(
            f"task.data.augment.{key} is {value!r}, but it must be {expected}. Fix it on the command line "
            f"(e.g. task.data.augment.{key}=0) or in the task config's augment block."
        )


@dataclass(frozen=True)
class SegAugment:
    """Segmentation training augmentation (``task.data.augment.*``); ``enabled: false`` keeps only crop/pad."""

    enabled: bool = True
    scale_range: tuple[float, float] | None = None  # e.g. (0.5, 2.0); None = keep the image scale
    hflip: float = 0.5


class BatchAffine:
    """Per-sample random affine warps (rotation, shift, zoom, shear) of a batch, drawn by kornia and
    applied with ``grid_sample``; both pipelines warp with it for edge fills (a single image is a batch of one)."""

    def __init__(self, aug: Augment) -> None:
        self.padding_mode = FILL_MODES[aug.fill]
        zoom = (1 - aug.zoom, 1 + aug.zoom)
        self.augmentation = K.RandomAffine(
            degrees=aug.degrees,
            translate=(aug.translate, aug.translate),
            scale=(*zoom, *zoom) if aug.zoom_independent else zoom,  # kornia: 4 values = x, y apart
            shear=aug.shear,
            padding_mode=self.padding_mode,
            p=1.0,
        )

    def draw(self, shape: torch.Size | tuple[int, ...], device: torch.device) -> dict[str, Tensor]:
        """kornia's parameters (angle, translations, scale, shear_x, ...) for a batch of ``shape``."""
        params = self.augmentation.forward_parameters(torch.Size(shape))
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in params.items()}

    def theta(self, params: dict[str, Tensor], images: Tensor, flipped: Tensor) -> Tensor:
        """The ``affine_grid`` matrices (output -> input, normalised, align_corners=False) of the
        warp followed by a horizontal flip of the ``flipped`` samples."""
        dtype = images.dtype
        pixel_matrix = self.augmentation.compute_transformation(images, params, self.augmentation.flags).to(images.device, dtype)
        height, width = images.shape[-2:]
        to_normalised = torch.tensor(
            [[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]], dtype=dtype, device=images.device
        )
        theta = (to_normalised @ torch.linalg.inv(pixel_matrix) @ torch.linalg.inv(to_normalised))[:, :2]
        theta[:, :, 0] *= torch.where(flipped, -1.0, 1.0).view(-1, 1)  # output x -> -x before the warp
        return theta

    def warp(self, images: Tensor, theta: Tensor) -> Tensor:
        """Bilinear (Keras' default order 1) warp of float ``images``."""
        grid = affine_grid(theta, *images.shape[-2:])
        return F.grid_sample(images, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)


def affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta, (N, C, height, width), align_corners=False)`` as the sum of a
    per-column and a per-row term: the same grid (to 1 ulp) in 1.1 ms instead of 2.4 ms for
    32x128x128 on this CPU, where ``affine_grid``'s (N, HW, 3) @ (N, 3, 2) matmul is slow."""
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    columns = theta[:, None, None, :, 0] * xs.view(1, 1, width, 1)
    rows = theta[:, None, None, :, 1] * ys.view(1, height, 1, 1) + theta[:, None, None, :, 2]
    return columns + rows


def auto_augmentation(aug: Augment) -> v2.Transform | None:
    """The ``auto_augment`` policy for one uint8 image (bilinear, as torchvision's recipe). v2's
    policies only fill a constant: black, which is ``fill: constant``; with ``nearest``/``reflect``
    their rotations and shifts also fill black, as no edge fill is available there."""
    if not aug.enabled or aug.auto_augment is None:
        return None
    return AUTO_AUGMENT[aug.auto_augment](interpolation=v2.InterpolationMode.BILINEAR, fill=0)


def random_erasing(aug: Augment, inplace: bool = False) -> v2.Transform | None:
    """Erasing of one normalised image with probability ``random_erase``; value 0 is the mean colour."""
    if not aug.enabled or aug.random_erase == 0:
        return None
    return v2.RandomErasing(p=aug.random_erase, value=0, inplace=inplace)


def batch_mix(aug: Augment, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix of a normalised training batch: (images, int labels) -> (images, (N,
    num_classes) class probabilities). Both on: one of the two per batch, as torchvision's recipe.
    Costs 13-19 ms per 32x3x128² batch on this CPU (1 thread; torchvision's out-of-place blend)."""
    if not aug.enabled:
        return None
    alphas = ((v2.MixUp, aug.mixup), (v2.CutMix, aug.cutmix))
    mixes = [mix(alpha=alpha, num_classes=num_classes) for mix, alpha in alphas if alpha > 0]
    if len(mixes) > 1:
        return v2.RandomChoice(mixes)
    return mixes[0] if mixes else None


class SampleStreams:
    """One random stream per sample on torch's CPU generator, started from each sample's seed: every
    ``drawing(i)`` block continues sample ``i``'s stream and leaves the process's own stream as it was.

    Draws that depend only on the sample's seed are the same whichever process, worker or batch
    neighbours the sample has, so a resumed run and any ``num_workers`` see the same augmentation.
    ``torch.manual_seed`` would also visit every accelerator (60-70 us more per sample).
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.states: list[int | Tensor] = list(seeds)

    @contextmanager
    def drawing(self, index: int) -> Iterator[None]:
        generator = torch.default_generator
        outer = generator.get_state()
        state = self.states[index]
        if isinstance(state, int):
            generator.manual_seed(state)
        else:
            generator.set_state(state)
        try:
            yield
        finally:
            self.states[index] = generator.get_state()
            generator.set_state(outer)
