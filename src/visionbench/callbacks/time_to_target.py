"""Time to accuracy: what a run paid (seconds, epochs, training images) to first reach each
threshold of its monitored metric, the figure that compares recipes and models on cost."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionbench.callbacks.progress import epochs_trained
from visionbench.errors import ConfigError
from visionbench.targets import target_key


class TimeToTarget(Callback):
    """Records, at the end of the first complete validation pass whose monitored value reaches
    each threshold (``>=`` when maximised, ``<=`` when minimised), the training wall-clock
    seconds since fit start, the epochs (fractional: optimizer steps / steps per epoch) and the
    training images seen. The clock, the images and the records are saved in checkpoints, so a
    resumed run continues counting where it stopped. ``results`` lists every key, ``None`` for
    a threshold not reached, for ``metrics.json``.
    """

    def __init__(self, monitor: str, mode: str, thresholds: list[float]) -> None:
        if mode not in ("max", "min") or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in thresholds):
            raise ConfigError(
                f"task.targets={list(thresholds)} (monitor {monitor}, mode {mode}) must be a list of numbers, the values "
                "of the monitored metric whose time to reach is recorded, e.g. task.targets=[0.5,0.8,0.9]."
            )
        self.monitor = monitor
        self.mode = mode
        self.thresholds = sorted(float(t) for t in thresholds)
        self.reached: dict[float, dict[str, float]] = {}
        self.images = 0
        self.elapsed_before = 0.0  # seconds trained before this process's fit (resume)
        self._fit_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.images += len(batch[1]) * trainer.world_size

    def elapsed(self) -> float:
        """Seconds of fit so far, this process's and those before a resume."""
        return self.elapsed_before + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Read at validation end, as ``ModelCheckpoint`` reads its monitor: a task may compute the
        monitored value in its own ``on_validation_epoch_end`` (segmentation's ``val/miou``), which
        Lightning runs after the callbacks' epoch-end hooks, so reading there would see the previous
        pass. Lightning allows no ``self.log`` here; the record goes to the loggers directly, one
        point at the step it was reached."""
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or trainer.state.fn != "fit" or value is None:
            return
        epochs = epochs_trained(trainer)
        for threshold in self.thresholds:
            hit = float(value) >= threshold if self.mode == "max" else float(value) <= threshold
            if hit and threshold not in self.reached:
                self.reached[threshold] = {"time": self.elapsed(), "epochs": epochs, "images": float(self.images)}
                if trainer.is_global_zero:
                    record = {target_key(kind, self.monitor, threshold): n for kind, n in self.reached[threshold].items()}
                    for logger in trainer.loggers:
                        logger.log_metrics(record, step=trainer.global_step)

    def results(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for threshold in self.thresholds:
            record = self.reached.get(threshold)
            for kind in ("time", "epochs", "images"):
                out[target_key(kind, self.monitor, threshold)] = None if record is None else record[kind]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"reached": {str(t): r for t, r in self.reached.items()}, "images": self.images, "elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reached = {float(t): r for t, r in state_dict["reached"].items()}
        self.images = state_dict["images"]
        self.elapsed_before = state_dict["elapsed"]
