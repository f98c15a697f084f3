"""VGG-19 (Simonyan & Zisserman 2015, configuration E), optionally with BatchNorm after every conv.

Built from a table so the five blocks read like the paper's Table 1; module indices
(``features.N``, ``classifier.N``) follow torchvision's ``vgg19``/``vgg19_bn`` so their
checkpoints load strictly.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from visionbench.models.base import TaskKind
from visionbench.models.pretrained import load_torchvision_weights

# (width, number of 3×3 convs) per block; a 2×2/2 max-pool closes each block.
VGG19_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


class VGG19(nn.Module):
    """16 conv3×3 layers in five blocks, then 4096-4096-classes fully connected with dropout.

    The adaptive 7×7 average pool keeps the 512·7·7 classifier input of the 224-pixel original at
    any input size. 143,667,240 parameters at 1000 classes (143,678,248 with BatchNorm).
    """

    task_kind: ClassVar[TaskKind] = "classification"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out, n in VGG19_BLOCKS:
            for _ in range(n):
                layers.append(nn.Conv2d(width, out, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
                width = out
            layers.append(nn.MaxPool2d(2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(width * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()
        if pretrained:
            load_torchvision_weights(self, "vgg19_bn" if batch_norm else "vgg19", head_prefixes=("classifier.6.",))

    def _init_weights(self) -> None:
        """torchvision's scheme (He-normal convs, N(0, 0.01) linears) so from-scratch runs compare."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
