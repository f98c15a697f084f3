"""What every visionbench network shares: the task kind it serves and auxiliary-output handling."""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor

TaskKind = Literal["classification", "segmentation"]


class AuxOutput(NamedTuple):
    """Training-mode output of a network with auxiliary classifiers (e.g. Inception v1).

    The task adds ``aux_weight * loss(aux_i)`` for every auxiliary head; in eval mode such
    networks return plain logits, so evaluation and export never see the auxiliary heads.
    """

    logits: Tensor
    aux: tuple[Tensor, ...]
    aux_weight: float
