"""The exponential moving average of the weights (``ema_decay``), tested as it was validated."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMAWeights(EMAWeightAveraging):
    """Lightning's EMA callback: validation swaps the averaged weights in, and checkpoints hold them as
    ``state_dict`` (the raw weights as ``current_model_state``, for resuming).

    Lightning reloads a checkpoint's raw weights whenever its average model exists, which after a fit
    includes ``trainer.test(ckpt_path=best)``: the test after training scored the raw weights of the
    checkpoint that the averaged ones had earned, unlike ``eval.py`` on the same file. Outside a fit, a
    checkpoint is used as saved: the averaged weights, the ones validated and ranked.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # a resume continues both the raw and the averaged weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
