"""Per-image transforms (torchvision.transforms.v2) reproducing the reference augmentation.

The Simpsons article used Keras' ``ImageDataGenerator(rotation_range=40, width_shift_range=0.2,
height_shift_range=0.2, shear_range=0.2, zoom_range=0.1, brightness_range=[0.8, 1.2],
horizontal_flip=True)``. Keras' shear is in degrees, so 0.2 here is 0.2 degrees too.
Keras fills uncovered pixels with the nearest edge; torchvision's affine fills with 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (``task.data.augment.*``); ``enabled: false`` turns all off."""

    enabled: bool = True
    degrees: float = 40.0
    translate: float = 0.2
    shear: float = 0.2
    zoom: float = 0.1
    brightness: tuple[float, float] = (0.8, 1.2)
    hflip: float = 0.5


def augmentation(aug: Augment) -> list[v2.Transform]:
    if not aug.enabled:
        return []
    return [
        v2.RandomAffine(
            degrees=aug.degrees,
            translate=(aug.translate, aug.translate),
            scale=(1 - aug.zoom, 1 + aug.zoom),
            shear=aug.shear,
            interpolation=v2.InterpolationMode.BILINEAR,  # Keras' default (order 1)
        ),
        v2.ColorJitter(brightness=tuple(aug.brightness)),
        v2.RandomHorizontalFlip(aug.hflip),
    ]


def normalize() -> list[v2.Transform]:
    """uint8 -> float in [0, 1] -> ImageNet statistics (what pretrained trunks expect)."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def classification_transform(image_size: int, aug: Augment | None) -> v2.Compose:
    """Squash-resize to ``image_size``² (as Keras' ``target_size``), augment (train only), normalise."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if aug is not None:
        steps += augmentation(aug)
    return v2.Compose(steps + normalize())
