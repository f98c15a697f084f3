"""What a run cost in wall-clock seconds, over every process that trained it."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class WallClock(Callback):
    """Seconds since ``start`` (the process's start of the run, data preparation included), plus the
    seconds of the processes before a resume, which every checkpoint carries.

    A resumed run's ``epochs``, ``steps`` and time to target count every process; its ``wall_time_s``
    must too, or the cost of a preempted run is understated. A process's seconds after the checkpoint
    it was resumed from (its test, or the work lost to a kill) are not counted: the resume redoes them.
    Only a fit resumes the clock: the test after training restores the best checkpoint's callbacks too,
    and must not rewind this process's count to that checkpoint's.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.before = 0.0  # seconds of the processes before this one (resume)
        self._fitting = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"  # setup runs before Lightning restores a checkpoint

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fitting:
            self.before = state_dict["wall_time_s"]
