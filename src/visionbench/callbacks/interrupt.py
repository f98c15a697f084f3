"""A signal mid-run (SIGTERM from SLURM or ``kill``, Ctrl-C) leaves a checkpoint of the point reached."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException

INTERRUPTED_CHECKPOINT = "interrupted"


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Lightning's ``OnExceptionCheckpoint``, for interruptions only.

    Lightning turns SIGTERM into ``SIGTERMException`` at the next step and Ctrl-C into
    ``KeyboardInterrupt``; both reach ``on_exception``. Other exceptions (a NaN loss, a bad
    file) are not checkpointed here: their weights are not a point worth resuming from, and
    ``last.ckpt`` already holds the last good epoch.

    Weight averaging (``ema_decay``, Lightning's ``WeightAveraging``) swaps the averaged weights
    into the module for each validation epoch and back at its end. An interruption inside that
    window ends the averaging callback's validation epoch first, so the file holds the average as
    ``state_dict`` and the trained weights as ``current_model_state``, as every other checkpoint does.
    """

    def __init__(self, dirpath: str, filename: str = INTERRUPTED_CHECKPOINT) -> None:
        super().__init__(dirpath, filename)
        self._validating = False  # inside a validation epoch: averaged weights may be swapped in

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validating = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validating = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)) or trainer.state.fn != "fit":
            return
        if self._validating:
            self._validating = False
            for callback in trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning, undeclared
                if isinstance(callback, WeightAveraging):
                    callback.on_validation_epoch_end(trainer, pl_module)  # swaps the trained weights back
        super().on_exception(trainer, pl_module, exception)
