"""history.csv: one row per validation pass against training seconds, continued (not duplicated) by a
resume, and the monitored metric against seconds in TensorBoard."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY
from visionbench.callbacks.history import ValidationHistory
from visionbench.errors import ConfigError
from visionbench.run import train

# Four batches an epoch, validated every two: passes at 0.5 and 1.0 epochs of each epoch.
HALVES = [
    "task=shapes",
    "model=cnn",
    *TINY,
    "task.data.image_size=32",
    "trainer.limit_train_batches=4",
    "trainer.val_check_interval=2",
    "callbacks.figures=null",
    "test=false",
]


def _train(cfg: DictConfig) -> dict[str, Any]:
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    return train(cfg)


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_history_has_one_row_per_validation_pass_with_fractional_epochs_steps_and_rising_seconds(compose_cfg, tmp_path: Path) -> None:
    metrics = _train(compose_cfg([*HALVES, "trainer.max_epochs=2"]))
    rows = _history(tmp_path)
    assert [float(r["epoch"]) for r in rows] == [0.5, 1.0, 1.5, 2.0]  # the sanity check is not a row
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds[0] > 0 and seconds == sorted(seconds) and seconds[-1] <= metrics["wall_time_s"]
    assert list(rows[0])[:4] == ["epoch", "step", "seconds", "val/acc"] and {"val/acc_macro", "val/loss"} <= set(rows[0])
    assert float(rows[-1]["val/acc"]) == pytest.approx(metrics["val/acc"]) and float(rows[-1]["epoch"]) == metrics["epochs"]
    curve = EventAccumulator(str(tmp_path / "tensorboard")).Reload().Scalars("val/acc_vs_seconds")
    assert [e.step for e in curve] == [round(s) for s in seconds]


@pytest.mark.slow
def test_a_resume_from_an_earlier_checkpoint_rewrites_the_epochs_it_reruns_instead_of_duplicating_them(compose_cfg, tmp_path: Path) -> None:
    keep_all = ["trainer.val_check_interval=1.0", "+callbacks.model_checkpoint.save_top_k=-1"]
    _train(compose_cfg([*HALVES, *keep_all, "trainer.max_epochs=2"]))
    first = _history(tmp_path)
    assert [r["epoch"] for r in first] == ["1.0", "2.0"]
    _train(compose_cfg([*HALVES, *keep_all, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'checkpoints' / 'epoch_000.ckpt'}"]))
    resumed = _history(tmp_path)
    assert [r["epoch"] for r in resumed] == ["1.0", "2.0"] and resumed[0] == first[0]
    assert float(resumed[1]["seconds"]) > float(first[0]["seconds"])


class StopAtStep(Callback):
    """SIGTERM after the third optimizer step: between the validations at steps 2 and 4."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning raises SIGTERMException before the next batch


@pytest.mark.slow
def test_a_resume_from_a_mid_epoch_interruption_continues_the_history(compose_cfg, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _train(compose_cfg([*HALVES, "+callbacks.stop._target_=test_history.StopAtStep"]))
    assert [r["step"] for r in _history(tmp_path)] == ["2"]
    _train(compose_cfg([*HALVES, f"ckpt_path={tmp_path / 'checkpoints' / 'interrupted.ckpt'}"]))
    rows = _history(tmp_path)
    assert [(r["epoch"], r["step"]) for r in rows] == [("0.5", "2"), ("1.0", "4")]
    assert float(rows[0]["seconds"]) < float(rows[1]["seconds"])


def test_history_without_the_time_to_target_clock_names_both_callbacks() -> None:
    trainer = SimpleNamespace(callbacks=[])
    with pytest.raises(ConfigError, match=r"callbacks.time_to_target.*callbacks.history=null"):
        ValidationHistory("history.csv", "val/acc").setup(trainer, None, "fit")  # type: ignore[arg-type]
