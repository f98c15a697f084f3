"""Fully convolutional networks (Long, Shelhamer & Darrell 2015) on a ResNet trunk.

FCN-32s upsamples the stride-32 class scores in one transposed conv initialised to bilinear
interpolation (the d2l.ai "Fully Convolutional Networks" recipe); FCN-8s fuses scores from the
stride-16 and stride-8 features first (the paper's skip architecture) for finer boundaries.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionbench.models.base import TaskKind
from visionbench.models.resnet import ResNetTrunk

OUTPUT_STRIDE = 32


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
    """Transposed-conv weight (in, out, k, k) that performs bilinear upsampling channel by channel.

    With ``kernel_size = 2s``, ``stride = s`` and ``padding = s // 2`` it reproduces
    ``F.interpolate(scale_factor=s, mode="bilinear", align_corners=False)`` away from the
    border. Only the diagonal (channel i → channel i) is non-zero, so ``in_channels`` must
    equal ``out_channels`` for every channel to be upsampled.
    """
    if in_channels != out_channels:
        raise ValueError(f"bilinear_kernel upsamples channel-wise: in_channels ({in_channels}) must equal out_channels ({out_channels})")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt_1d = 1 - torch.abs(og - center) / factor
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    weight[range(in_channels), range(out_channels)] = filt_1d[:, None] * filt_1d[None, :]
    return weight


class Fp32ConvTranspose2d(nn.ConvTranspose2d):
    """A transposed conv that computes in its weights' precision under any autocast (fp32: autocast
    leaves weights fp32): oneDNN's bf16 kernel for FCN-32s' 64×64 stride-32 upsampler took 14× the
    fp32 time on a Xeon with AMX (x8: 1.4×; x2 is faster in bf16), and the op is a small share of the
    network's FLOPs in fp32. Weights converted to another precision (``bf16-true``) are followed."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        with torch.autocast(device_type=input.device.type, enabled=False):
            return super().forward(input.to(self.weight.dtype), output_size)


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable ×``factor`` transposed conv that starts out as exact bilinear upsampling; ×8 and
    larger compute in fp32 (``Fp32ConvTranspose2d``)."""
    conv = Fp32ConvTranspose2d if factor >= 8 else nn.ConvTranspose2d
    up = conv(channels, channels, 2 * factor, stride=factor, padding=factor // 2)
    assert up.bias is not None  # built with one
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, channels, 2 * factor))
        up.bias.zero_()
    return up


def class_scorer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """1×1 conv from features to per-class scores, Xavier-initialised."""
    score = nn.Conv2d(in_channels, num_classes, 1)
    assert score.bias is not None  # built with one
    nn.init.xavier_uniform_(score.weight)
    nn.init.zeros_(score.bias)
    return score


class _FCN(nn.Module):
    """Trunk plus the pad-to-stride / crop-back logic shared by FCN-32s and FCN-8s."""

    task_kind: ClassVar[TaskKind] = "segmentation"

    def __init__(self, depth: int, in_channels: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(depth, in_channels=in_channels, pretrained=pretrained)

    def forward(self, x: Tensor) -> Tensor:
        # The transposed convs map a stride-32 grid back onto pixels exactly only when the input
        # is a multiple of 32; otherwise the trunk's rounded-up feature maps make the upsampled
        # scores misaligned with (and a different size from) the image, and the FCN-8s skip maps
        # no longer line up 2:1. Zero-padding bottom/right keeps pixel (0, 0) anchored, so
        # cropping the padding off afterwards returns scores aligned with the input.
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % OUTPUT_STRIDE, 0, -h % OUTPUT_STRIDE))
        return self._scores(*self.backbone(x))[..., :h, :w]

    def _scores(self, c2: Tensor, c3: Tensor, c4: Tensor, c5: Tensor) -> Tensor:
        raise NotImplementedError


class FCN32s(_FCN):
    """ResNet trunk → 1×1 class scores at stride 32 → one ×32 transposed conv.

    12,993,642 parameters with the ResNet-18 trunk and 21 classes (PASCAL VOC).
    ``upsample_init="xavier"`` is the ablation against the bilinear initialisation.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        depth: int = 18,
        pretrained: bool = False,
        upsample_init: Literal["bilinear", "xavier"] = "bilinear",
    ) -> None:
        super().__init__(depth, in_channels, pretrained)
        self.score = class_scorer(self.backbone.out_channels[-1], num_classes)
        self.upsample = bilinear_upsampler(num_classes, OUTPUT_STRIDE)
        if upsample_init == "xavier":
            nn.init.xavier_uniform_(self.upsample.weight)
        elif upsample_init != "bilinear":
            raise ValueError(f"upsample_init must be 'bilinear' or 'xavier', got {upsample_init!r}")

    def _scores(self, c2: Tensor, c3: Tensor, c4: Tensor, c5: Tensor) -> Tensor:
        return self.upsample(self.score(c5))


class FCN8s(_FCN):
    """FCN-32s scores fused with 1×1 scores of the stride-16 and stride-8 features, then ×8.

    score(C5) ×2 + score(C4) → ×2 + score(C3) → ×8, each upsampling a bilinear-initialised
    transposed conv. The skip scorers start at zero, as in the paper, so training starts from
    the coarse prediction and the skips learn only the refinement.
    """

    def __init__(self, num_classes: int = 21, in_channels: int = 3, depth: int = 18, pretrained: bool = False) -> None:
        super().__init__(depth, in_channels, pretrained)
        _, c3, c4, c5 = self.backbone.out_channels
        self.score = class_scorer(c5, num_classes)
        self.score_c4 = nn.Conv2d(c4, num_classes, 1)
        self.score_c3 = nn.Conv2d(c3, num_classes, 1)
        for skip in (self.score_c4, self.score_c3):
            assert skip.bias is not None  # built with one
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)
        self.upsample_32_to_16 = bilinear_upsampler(num_classes, 2)
        self.upsample_16_to_8 = bilinear_upsampler(num_classes, 2)
        self.upsample_8_to_1 = bilinear_upsampler(num_classes, 8)

    def _scores(self, c2: Tensor, c3: Tensor, c4: Tensor, c5: Tensor) -> Tensor:
        s16 = self.upsample_32_to_16(self.score(c5)) + self.score_c4(c4)
        s8 = self.upsample_16_to_8(s16) + self.score_c3(c3)
        return self.upsample_8_to_1(s8)
