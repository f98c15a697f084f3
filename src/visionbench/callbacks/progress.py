"""One line per training epoch in the log, for runs nobody watches on a terminal.

The rich progress bar draws only on a terminal: under SLURM, ``nohup``, CI or ``| tee`` a run
printed its model summary and then nothing for hours. This callback logs (Hydra sends it to
``train.log`` and stdout) the epoch, the training loss, the monitored metric and its best, the
training images/s, the elapsed time (of the whole run: a resumed run counts the processes before it)
and an estimate of the time left (at this process's pace).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Timer

from visionbench.callbacks.wall_clock import WallClock

log = logging.getLogger(__name__)


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of ``batches``: Lightning also steps at an epoch's last batch when
    fewer than ``accumulate`` batches were accumulated, so the epoch is ceil(batches / accumulate)."""
    return math.ceil(batches / accumulate)


def epochs_trained(trainer: L.Trainer) -> float:
    """Epochs of training the weights have seen, fractional when the last one was cut short
    (max_steps, max_time, a signal): Lightning's epoch counter counts a cut epoch as a whole one.

    Whole epochs are counted in optimizer steps (``steps_per_epoch``), the part epoch in the batches
    its steps consumed, so 5 batches accumulated by 2 make 3 steps an epoch and 6 steps 2.0 epochs.
    """
    batches = trainer.num_training_batches
    if not trainer.global_step or not isinstance(batches, int) or batches <= 0:
        return float(trainer.fit_loop.epoch_progress.current.completed)
    whole, steps = divmod(trainer.global_step, steps_per_epoch(batches, trainer.accumulate_grad_batches))
    return round(whole + steps * trainer.accumulate_grad_batches / batches, 4)


def clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class EpochProgressLog(Callback):
    """Logs ``epoch 3/10 | train/loss 0.812 | val/acc 0.642 (best 0.671) | 142 img/s | elapsed 0:04:12 | left ~0:09:48``."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self._fit_start = 0.0
        self._mark = 0.0  # the end of the last batch or validation: the next batch's time runs from here
        self._train_time = 0.0
        self._images = 0
        self._epochs_run = 0
        self._validated = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._epochs_run = 0
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch gets no epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = time.perf_counter()
        self._train_time, self._images, self._validated = 0.0, 0, False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        self._images += len(batch[1]) * trainer.world_size
        self._train_time += now - self._mark
        self._mark = now

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A validation (mid-epoch with ``trainer.val_check_interval``) is not training time, as for
        ``perf/train_images_per_s``: the next batch's time starts after it."""
        self._mark = time.perf_counter()
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epochs_run += 1
        if trainer.is_global_zero:
            log.info(self.line(trainer))

    def line(self, trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {trainer.current_epoch + 1}{epochs}"]
        loss = metrics.get("train/loss_epoch", metrics.get("train/loss"))
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4f}")
        best = metrics.get(f"{self.monitor}_best")
        if self._validated and self.monitor in metrics:
            parts.append(f"{self.monitor} {float(metrics[self.monitor]):.4f}" + (f" (best {float(best):.4f})" if best is not None else ""))
        else:
            parts.append("no validation this epoch")
        if self._train_time > 0:
            parts.append(f"{self._images / self._train_time:.1f} img/s")
        this_process = time.perf_counter() - self._fit_start
        wall_clock = next((c for c in trainer.callbacks if isinstance(c, WallClock)), None)  # type: ignore[attr-defined]  # set by Lightning, undeclared
        parts.append(f"elapsed {clock(wall_clock.elapsed() if wall_clock else this_process)}")  # a resumed run's whole time
        left = self.time_left(trainer, this_process)  # at this process's pace
        if left is not None:
            parts.append(f"left ~{clock(left)}")
        return " | ".join(parts)

    def time_left(self, trainer: L.Trainer, elapsed: float) -> float | None:
        """Seconds to the nearest end the trainer knows (max_epochs, max_steps, max_time), at the pace of the
        ``elapsed`` seconds this process took for its epochs."""
        per_epoch = elapsed / max(self._epochs_run, 1)
        remaining = []
        if trainer.max_epochs and trainer.max_epochs > 0:
            remaining.append(per_epoch * max(trainer.max_epochs - trainer.current_epoch - 1, 0))
        if trainer.max_steps > 0 and isinstance(trainer.num_training_batches, int) and trainer.num_training_batches > 0:
            steps = steps_per_epoch(trainer.num_training_batches, trainer.accumulate_grad_batches)
            remaining.append(per_epoch * max(trainer.max_steps - trainer.global_step, 0) / steps)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]  # set by Lightning, undeclared
        budget_left = timer.time_remaining() if timer is not None else None
        if budget_left is not None:
            remaining.append(max(budget_left, 0.0))
        return min(remaining) if remaining else None
