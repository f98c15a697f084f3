"""The small pre-activation ResNet of the Simpsons reference article (two residual units)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from visionbench.models.base import InitScheme, Pixels, TaskKind, init_weights, input_pixels


class PreActUnit(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus a shortcut (He et al. 2016, "identity mappings").

    When the unit widens, the second conv changes the width and a 1×1 conv projects the
    shortcut, which is the layout that reproduces the article's parameter count.
    """

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, in_channels, 3, padding=1),
            nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
        )
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class SmallResNet(nn.Module):
    """conv32 7×7/2 → unit(32) → conv32 3×3/2 → unit(32→64) → flatten → dense.

    1,157,011 trainable parameters at 128×128 with 19 classes; the Keras summary's 1,157,267
    also counts the 256 BatchNorm running statistics, which are buffers here.
    ``init``/``zero_head``: see ``init_weights`` (``keras`` is the article's). ``bn_momentum`` and
    ``bn_eps`` are PyTorch's (the share of each batch in the running statistics); Keras'
    BatchNormalization is ``bn_momentum=0.01, bn_eps=1e-3``.
    """

    task_kind: ClassVar[TaskKind] = "classification"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 128,
        width: int = 32,
        init: InitScheme = "keras",
        zero_head: bool = False,
        pixels: Pixels = "imagenet",
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.pixels = input_pixels(pixels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2),
            PreActUnit(width, width, bn_momentum, bn_eps),
            nn.Conv2d(width, width, 3, stride=2),
            PreActUnit(width, 2 * width, bn_momentum, bn_eps),
        )
        with torch.no_grad():
            flat = self.features.eval()(torch.zeros(1, in_channels, image_size, image_size)).numel()
        self.features.train()
        head = nn.Linear(flat, num_classes)
        self.classifier = nn.Sequential(nn.Flatten(), head)
        init_weights(self, init, zero_head=head if zero_head else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.pixels(x)))
