"""A signal mid-run (SIGTERM from SLURM or ``kill``, Ctrl-C) leaves a checkpoint of the point reached."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

INTERRUPTED_CHECKPOINT = "interrupted"


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Lightning's ``OnExceptionCheckpoint``, for interruptions only.

    Lightning turns SIGTERM into ``SIGTERMException`` at the next step and Ctrl-C into
    ``KeyboardInterrupt``; both reach ``on_exception``. Other exceptions (a NaN loss, a bad
    file) are not checkpointed here: their weights are not a point worth resuming from, and
    ``last.ckpt`` already holds the last good epoch.
    """

    def __init__(self, dirpath: str, filename: str = INTERRUPTED_CHECKPOINT) -> None:
        super().__init__(dirpath, filename)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit":
            super().on_exception(trainer, pl_module, exception)
