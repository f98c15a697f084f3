"""What every visionbench network shares: the task kind it serves and auxiliary-output handling."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD

TaskKind = Literal["classification", "segmentation"]


class AuxOutput(NamedTuple):
    """Training-mode output of a network with auxiliary classifiers (e.g. Inception v1).

    The task adds ``aux_weight * loss(aux_i)`` for every auxiliary head; in eval mode such
    networks return plain logits, so evaluation and export never see the auxiliary heads.
    """

    logits: Tensor
    aux: tuple[Tensor, ...]
    aux_weight: float


InitScheme = Literal["he", "keras"]
Pixels = Literal["imagenet", "unit"]


def input_pixels(pixels: Pixels) -> nn.Module:
    """The network's first op: ``imagenet`` keeps the data's ImageNet statistics, ``unit`` maps
    them back to [0, 1], what Keras' ``rescale=1/255`` fed the Simpsons article's networks.

    Undoing the normalisation inside the network leaves one data pipeline (and the cache, exports
    and drawings) for every network, and adds no parameters or state_dict entries.
    """
    if pixels == "imagenet":
        return nn.Identity()
    if pixels == "unit":
        return _UnitPixels()
    raise ValueError(f"Unknown pixels {pixels!r}: use 'imagenet' (the data's statistics) or 'unit' ([0, 1], Keras' rescale).")


class _UnitPixels(nn.Module):
    std: Tensor
    mean: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


def init_weights(module: nn.Module, scheme: InitScheme = "he", zero_head: nn.Linear | None = None) -> None:
    """Initialise every conv/linear layer of ``module``; biases start at zero.

    ``he``: He-normal (fan-in, ReLU gain), which keeps the signal's scale through deep plain
    stacks. ``keras``: Glorot-uniform, the Keras default the Simpsons article's networks were
    trained with; on these shallow networks with a wide flatten it starts the logits near zero
    (the first loss near ln(classes)) where He-normal starts them at a standard deviation of ~5.
    ``zero_head``: that layer's weights start at zero, so the first prediction is uniform
    whatever the scheme (Goyal et al. 2017 zero the last layer for the same reason).
    """
    if scheme not in ("he", "keras"):
        raise ValueError(f"Unknown init {scheme!r}: use 'he' (He-normal) or 'keras' (Glorot-uniform, the Keras default).")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_head is not None:
        nn.init.zeros_(zero_head.weight)
