"""What every visionbench network shares: the task kind it serves and auxiliary-output handling."""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor, nn

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
