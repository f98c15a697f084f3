"""ResNet (He et al. 2016) in torchvision's v1.5 layout, so torchvision checkpoints load strictly.

Attribute names (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample``, ``fc``) are
torchvision's on purpose: ``torchvision.models.resnet50().state_dict()`` loads into
:class:`ResNet50` with ``strict=True`` and gives identical outputs, which is how the
reproduction is checked rather than trusted.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from visionbench.errors import ConfigError
from visionbench.models.base import TaskKind
from visionbench.models.pretrained import load_torchvision_weights


class BasicBlock(nn.Module):
    """Two 3×3 convs plus the shortcut (ResNet-18/34)."""

    expansion: ClassVar[int] = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return _add_shortcut(self, out, x)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 expand (×4) plus the shortcut (ResNet-50 and deeper).

    The stride sits on the 3×3 conv (torchvision's "v1.5"), not on the first 1×1 as in the
    paper: the 1×1/2 conv would discard three quarters of its input, and v1.5 is what the
    published torchvision weights were trained with.
    """

    expansion: ClassVar[int] = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return _add_shortcut(self, out, x)


def _add_shortcut(block: BasicBlock | Bottleneck, out: Tensor, x: Tensor) -> Tensor:
    """``relu(out + shortcut(x))`` written into ``out``, the shortcut projected only after the main branch.

    This is torchvision's order and it is what makes our blocks as fast as theirs on CPU: an
    out-of-place sum allocates a fresh block-sized tensor in every block, and a projection taken
    first stays alive through the whole main branch. In-place is safe for autograd because
    BatchNorm's backward needs its input, not the output the sum overwrites.
    """
    out += x if block.downsample is None else block.downsample(x)
    return block.relu(out)


# depth -> (block, blocks per stage); the torchvision name of the matching ImageNet checkpoint is f"resnet{depth}".
RESNET_LAYOUTS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNetStages(nn.Module):
    """Stem and the four residual stages, without a forward: what the trunk and the classifier share
    (one returns the stages' maps, the other logits). ``out_channels`` is the width of each stage."""

    def __init__(self, depth: int = 50, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ConfigError(
                f"`model.net.depth` is {depth}, but the ResNet trunk is built for depths "
                f"{sorted(RESNET_LAYOUTS)} only (the ones with torchvision ImageNet weights); set one of these."
            )
        block, blocks = RESNET_LAYOUTS[depth]
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._width = 64
        self.layer1 = self._stage(block, 64, blocks[0], stride=1)
        self.layer2 = self._stage(block, 128, blocks[1], stride=2)
        self.layer3 = self._stage(block, 256, blocks[2], stride=2)
        self.layer4 = self._stage(block, 512, blocks[3], stride=2)
        self.out_channels: tuple[int, ...] = tuple(p * block.expansion for p in (64, 128, 256, 512))
        _init_resnet(self)

    def _stage(self, block: type[BasicBlock | Bottleneck], planes: int, n: int, stride: int) -> nn.Sequential:
        """``n`` blocks; the first one changes stride/width and so needs a conv+BN projection shortcut."""
        downsample = None
        if stride != 1 or self._width != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._width, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._width, planes, stride, downsample)]
        self._width = planes * block.expansion
        layers += [block(self._width, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def stem(self, x: Tensor) -> Tensor:
        """7×7/2 conv, BN, ReLU and 3×3/2 max pool: stride 4 before the first stage."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResNetTrunk(ResNetStages):
    """The stages' outputs C2..C5 (strides 4, 8, 16, 32).

    The classifier (pool + fc) is left out so dense-prediction heads (FCN, FPN) can reuse the
    trunk; ``out_channels`` tells them the width of each returned map.
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__(depth=depth, in_channels=in_channels)
        if pretrained:
            load_torchvision_weights(self, f"resnet{depth}", head_prefixes=("fc.",))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


class ResNet(ResNetStages):
    """Stages + global average pool + fc: the ImageNet classifier, valid at any input size."""

    task_kind: ClassVar[TaskKind] = "classification"

    def __init__(self, num_classes: int, depth: int = 50, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__(depth=depth, in_channels=in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.out_channels[-1], num_classes)
        if pretrained:
            load_torchvision_weights(self, f"resnet{depth}", head_prefixes=("fc.",))

    def forward(self, x: Tensor) -> Tensor:
        """Stage after stage, each output freed once the next stage has read it: the trunk's C2..C4,
        kept alive to the end of the forward, would only cost the classifier memory and time."""
        x = self.stem(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet50(ResNet):
    """ResNet-50: bottleneck stages of 3/4/6/3 blocks; 25,557,032 parameters at 1000 classes."""

    def __init__(self, num_classes: int, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__(num_classes, depth=50, in_channels=in_channels, pretrained=pretrained)


def _init_resnet(module: nn.Module) -> None:
    """He-normal (fan-out) convs and unit BatchNorm, as torchvision, so from-scratch runs compare."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
