"""Inception v1 / GoogLeNet (Szegedy et al. 2015, "Going deeper with convolutions", Table 1).

The paper's network has LRN in the stem and true 5×5 convs in the third branch, and trains
two auxiliary classifiers (after 4a and 4d) whose losses are added with weight 0.3.
``batch_norm=True`` gives the BN variant (BN after every conv, LRN dropped, as in
Inception v2 and torchvision's ``googlenet``). Module names follow torchvision's ``googlenet``
so its checkpoint can be mapped onto the BN variant (see :func:`googlenet_to_inception_v1`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionbench.errors import ConfigError
from visionbench.models.base import AuxOutput, TaskKind
from visionbench.models.pretrained import StateDict, load_torchvision_weights

# name -> (in, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj), Table 1 of the paper.
INCEPTION_TABLE: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class ConvReLU(nn.Module):
    """conv → (BN) → ReLU; the conv keeps its bias only when there is no BN to absorb it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm)
        # eps=1e-3 as in torchvision's googlenet, whose BN statistics were computed with it.
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches (1×1; 1×1→3×3; 1×1→5×5; maxpool 3×3→1×1) concatenated on channels.

    The 1×1 reductions before the 3×3 and 5×5 convs are what keeps the block cheap.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.branch1 = ConvReLU(in_channels, ch1x1, 1, batch_norm)
        self.branch2 = nn.Sequential(ConvReLU(in_channels, ch3x3red, 1, batch_norm), ConvReLU(ch3x3red, ch3x3, 3, batch_norm, padding=1))
        self.branch3 = nn.Sequential(ConvReLU(in_channels, ch5x5red, 1, batch_norm), ConvReLU(ch5x5red, ch5x5, 5, batch_norm, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvReLU(in_channels, pool_proj, 1, batch_norm))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: avgpool 5×5/3 → conv1×1 128 → FC 1024 → dropout 0.7 → FC classes.

    On the 14×14 maps of a 224 input the paper's 5×5/3 pool gives 4×4; an adaptive 4×4 pool
    gives the same there and keeps the 2048-wide FC valid at any input size.
    """

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = False, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvReLU(in_channels, 128, 1, batch_norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class InceptionV1(nn.Module):
    """GoogLeNet: stem, nine Inception blocks in three stages, global average pool, dropout 0.4, FC.

    In training mode (with ``aux_logits``) the forward returns
    ``AuxOutput(logits, (aux1, aux2), aux_weight)`` so the task adds the auxiliary losses; in
    eval mode it returns plain logits. The max-pools use ceil mode like the Caffe original,
    which is what gives 56/28/14/7 maps at 224.
    """

    task_kind: ClassVar[TaskKind] = "classification"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        aux_logits: bool = True,
        aux_weight: float = 0.3,
        batch_norm: bool = False,
        dropout: float = 0.4,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.aux_weight = aux_weight

        def lrn() -> nn.Module:
            # BN replaces LRN in the BN variant (Ioffe & Szegedy 2015).
            return nn.Identity() if batch_norm else nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

        def inception(name: str) -> Inception:
            return Inception(*INCEPTION_TABLE[name], batch_norm=batch_norm)

        self.conv1 = ConvReLU(in_channels, 64, 7, batch_norm, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = ConvReLU(64, 64, 1, batch_norm)
        self.conv3 = ConvReLU(64, 192, 3, batch_norm, padding=1)
        self.lrn2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = inception("3a")
        self.inception3b = inception("3b")
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception("4a")
        self.inception4b = inception("4b")
        self.inception4c = inception("4c")
        self.inception4d = inception("4d")
        self.inception4e = inception("4e")
        self.maxpool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception5a = inception("5a")
        self.inception5b = inception("5b")
        if aux_logits:
            self.aux1 = InceptionAux(self.inception4a.out_channels, num_classes, batch_norm)
            self.aux2 = InceptionAux(self.inception4d.out_channels, num_classes, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.inception5b.out_channels, num_classes)
        self._init_weights()
        if pretrained:
            if not batch_norm:
                raise ConfigError(
                    "`model.net.pretrained=true` needs `model.net.batch_norm=true` for InceptionV1: the only "
                    "published ImageNet weights (torchvision's googlenet) are for the BatchNorm variant; the "
                    "paper's LRN network has none. Set batch_norm to true or pretrained to false."
                )
            load_torchvision_weights(self, "googlenet", head_prefixes=("fc.", "aux1.fc2.", "aux2.fc2."), convert=googlenet_to_inception_v1)

    def _init_weights(self) -> None:
        """Xavier weights and 0.2 conv biases like the reference Caffe model, so the BN-free net trains."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.2 if isinstance(m, nn.Conv2d) else 0.0)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.training and self.aux_logits
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is None or aux2 is None:
            return logits
        return AuxOutput(logits, (aux1, aux2), self.aux_weight)


def googlenet_to_inception_v1(state: StateDict) -> StateDict:
    """Map torchvision's ``googlenet`` checkpoint onto ``InceptionV1(batch_norm=True)``.

    torchvision's "5×5" branch uses a 3×3 kernel with padding 1 (a bug kept for weight
    compatibility); zero-padding that kernel to 5×5 with padding 2 computes exactly the same
    function, so the mapping is lossless. Two differences remain that weights cannot fix:
    torchvision's ``maxpool4`` is 2×2/2 (the paper's is 3×3/2) and its checkpoint expects
    inputs normalised to mean = std = 0.5 (``transform_input``), so fine-tune after loading.
    """
    return {k: F.pad(v, (1, 1, 1, 1)) if ".branch3.1.conv.weight" in k else v for k, v in state.items()}
