"""Feature Pyramid Network (Lin et al. 2017) on a ResNet trunk, and the semantic-FPN head.

The semantic head is the one of Panoptic FPN (Kirillov et al. 2019): every pyramid level is
brought to stride 4 by conv3×3-GN-ReLU(-×2 upsample) stages, the levels are summed, and a
1×1 conv predicts classes, upsampled bilinearly to the input size.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

from visionbench.models.base import TaskKind
from visionbench.models.resnet import ResNetTrunk

LEVELS = ("p2", "p3", "p4", "p5")


class FPNTrunk(nn.Module):
    """ResNet C2..C5 → top-down pathway with lateral 1×1 convs → P2..P5 (strides 4/8/16/32)."""

    def __init__(self, depth: int = 50, in_channels: int = 3, out_channels: int = 256, pretrained: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(depth, in_channels=in_channels, pretrained=pretrained)
        self.fpn = FeaturePyramidNetwork(list(self.backbone.out_channels), out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pyramid = self.fpn(OrderedDict(zip(LEVELS, self.backbone(x), strict=True)))
        return pyramid["p2"], pyramid["p3"], pyramid["p4"], pyramid["p5"]


class ConvGNReLU(nn.Sequential):
    """conv3×3 → GroupNorm(32) → ReLU; GroupNorm because segmentation batches here are 2–8 images."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(32, out_channels),
            nn.ReLU(inplace=True),
        )


class ScaleHead(nn.Module):
    """One pyramid level → stride 4: ``max(1, n_upsamples)`` conv stages, each but P2's followed by ×2."""

    def __init__(self, in_channels: int, channels: int, n_upsamples: int) -> None:
        super().__init__()
        self.n_upsamples = n_upsamples
        self.convs = nn.ModuleList(ConvGNReLU(in_channels if i == 0 else channels, channels) for i in range(max(1, n_upsamples)))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < self.n_upsamples:
                # The last ×2 goes to P2's exact size: with inputs that are not multiples of 32
                # the pyramid sizes are rounded and a plain ×2 could be off by one.
                target = size if i == self.n_upsamples - 1 else (2 * x.shape[-2], 2 * x.shape[-1])
                x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        return x


class SemanticFPN(nn.Module):
    """FPN trunk + Panoptic-FPN semantic head; predicts per-pixel classes at the input size."""

    task_kind: ClassVar[TaskKind] = "segmentation"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 50,
        head_channels: int = 128,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.trunk = FPNTrunk(depth, in_channels=in_channels, pretrained=pretrained)
        self.scale_heads = nn.ModuleList(ScaleHead(self.trunk.out_channels, head_channels, n) for n in range(4))
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        pyramid = self.trunk(x)
        size = pyramid[0].shape[-2:]
        fused = sum(head(p, size) for head, p in zip(self.scale_heads, pyramid, strict=True))
        return F.interpolate(self.classifier(fused), size=x.shape[-2:], mode="bilinear", align_corners=False)
