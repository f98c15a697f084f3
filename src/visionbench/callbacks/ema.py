"""The exponential moving average of the weights (``ema_decay``), tested as it was validated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

AverageFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def ema_average(decay: float, warmup: bool = False) -> AverageFn:
    """``AveragedModel``'s ``avg_fn``: keep ``decay`` of the average at each update.

    With ``warmup``, after n updates the next keeps min(decay, (1 + n) / (10 + n)), as TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``: a fixed 0.999 still holds 0.999^700 ~ half of the
    initial weights after 700 steps, which is all a slow network trains in a 15-minute budget.
    """

    def update(average: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        n = num_averaged.to(torch.float32)  # a tensor on the weights' device: no host sync per weight
        keep = ((1 + n) / (10 + n)).clamp(max=decay) if warmup else torch.full_like(n, decay)
        return keep * average + (1 - keep) * current

    return update


class EMAWeights(WeightAveraging):
    """Lightning's weight averaging as an EMA updated after every optimizer step: validation swaps the
    averaged weights in, and checkpoints hold them as ``state_dict`` (the raw weights as
    ``current_model_state``, for resuming). Buffers (BatchNorm statistics) are averaged too.

    Lightning reloads a checkpoint's raw weights whenever its average model exists, which after a fit
    includes ``trainer.test(ckpt_path=best)``: the test after training scored the raw weights of the
    checkpoint that the averaged ones had earned, unlike ``eval.py`` on the same file. Outside a fit, a
    checkpoint is used as saved: the averaged weights, the ones validated and ranked.
    """

    def __init__(self, decay: float, warmup: bool = False) -> None:
        super().__init__(use_buffers=True, avg_fn=ema_average(decay, warmup))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None  # every optimizer step, never at an epoch's end

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # a resume continues both the raw and the averaged weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
