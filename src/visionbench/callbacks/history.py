"""The validation history of a run against training wall-clock time: ``history.csv`` in the run folder,
the data of the report's accuracy-against-time curves (which network wins at equal cost)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionbench.callbacks.base import tensorboard_writer
from visionbench.callbacks.progress import epochs_trained
from visionbench.callbacks.time_to_target import TimeToTarget
from visionbench.data.storage.atomic import write_text_atomic
from visionbench.errors import ConfigError

FIXED_COLUMNS = ("epoch", "step", "seconds")


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


class ValidationHistory(Callback):
    """One row per complete validation pass of a fit (not the sanity check): the epochs trained
    (fractional, as ``metrics.json`` counts them), the optimizer step, the training seconds, the
    monitored metric and the pass's other validation scalars (``val/loss``, ``val/acc_macro``,
    ``val/pixel_acc``, ...; not the per-class ones nor ``*_best``). TensorBoard gets the monitored
    metric against seconds too, as ``<monitor>_vs_seconds`` at step = rounded seconds.

    The seconds are ``TimeToTarget``'s clock (fit time, carried across resumes in checkpoints), so a
    curve crosses a threshold where the report's time-to-target column says. Rows are appended one
    flushed line at a time (rank 0), so a kill leaves every completed row readable. The number of rows
    travels in checkpoints: a resumed fit (from ``last.ckpt``, a best checkpoint or a mid-epoch
    ``interrupted.ckpt``) keeps the rows written up to its checkpoint and drops those the killed
    process wrote after it, which the resume re-runs; ``ModelCheckpoint`` runs after this callback, so
    a checkpoint saved at validation end counts that pass's row. A fresh fit starts a fresh file.
    Read at validation end for the reason ``TimeToTarget`` gives (segmentation's ``val/miou``).
    """

    def __init__(self, path: str, monitor: str) -> None:
        self.path = Path(path)
        self.monitor = monitor
        self.rows = 0  # rows of this run's history, this process's and those before a resume
        self._clock: TimeToTarget | None = None
        self._fitting = False
        self._resumed = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"  # setup runs before Lightning restores a checkpoint
        self._resumed = False
        self._clock = next((c for c in trainer.callbacks if isinstance(c, TimeToTarget)), None)  # type: ignore[attr-defined]  # set by Lightning, undeclared
        if self._fitting and self._clock is None:
            raise ConfigError(
                "callbacks.history reads the training seconds from callbacks.time_to_target, which is off in this "
                "run. Keep callbacks.time_to_target (task.targets=[] records no targets), or turn the history off "
                "with callbacks.history=null."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Only a fit resumes the history: the test after training restores the best checkpoint's
        callbacks too, and must not shorten the file to that checkpoint's rows."""
        if self._fitting:
            self.rows = state_dict["rows"]
            self._resumed = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._resumed:
            self.rows = 0
        if trainer.is_global_zero:
            self._keep_rows(self.rows)

    def _keep_rows(self, rows: int) -> None:
        """The file cut to its header and first ``rows`` rows (none: no file), replaced atomically."""
        if rows == 0 or not self.path.is_file():
            self.path.unlink(missing_ok=True)
            return
        lines = self.path.read_text().splitlines(keepends=True)
        write_text_atomic(self.path, "".join(lines[: rows + 1]))

    def _columns(self, metrics: dict[str, float]) -> list[str]:
        """The header of the existing file, else the fixed columns, the monitor and the other scalars, sorted."""
        if self.path.is_file():
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                return header
        others = sorted(k for k in metrics if k != self.monitor)
        return [*FIXED_COLUMNS, self.monitor, *others]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self._clock is None:
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and k.count("/") == 1 and not k.endswith("_best") and v.numel() == 1
        }
        if self.monitor not in metrics:
            return
        self.rows += 1
        if not trainer.is_global_zero:
            return
        seconds = self._clock.elapsed()
        row = {"epoch": epochs_trained(trainer), "step": trainer.global_step, "seconds": round(seconds, 3), **metrics}
        columns = self._columns(metrics)
        line = _csv_line([row.get(c, "") for c in columns])
        if not self.path.is_file():
            write_text_atomic(self.path, _csv_line(columns) + line)
        else:
            with self.path.open("a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_scalar(f"{self.monitor}_vs_seconds", metrics[self.monitor], global_step=round(seconds))
