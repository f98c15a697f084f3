"""How a run ends when it does not end normally: a signal leaves a resumable checkpoint, a
resume line and a non-zero status; a run cut before any validation still tests what it has;
every epoch leaves a line a log file can show."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor

from conftest import REPO, TINY, TINY_SEG_DATA
from visionbench.callbacks.progress import EpochProgressLog, epochs_trained
from visionbench.callbacks.throughput import TrainingThroughput
from visionbench.callbacks.time_to_target import TimeToTarget
from visionbench.callbacks.wall_clock import WallClock
from visionbench.errors import ConfigError
from visionbench.run import evaluate, train

EPOCH_LINE = re.compile(
    r"epoch (\d+)/2 \| train/loss [\d.]+ \| val/acc [\d.]+ \(best [\d.]+\) \| [\d.]+ img/s \| elapsed \d+:\d\d:\d\d \| left ~\d+:\d\d:\d\d"
)


def _wait_for(path: Path, pattern: str, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.is_file() and pattern in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"'{pattern}' never appeared in {path}")


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_a_resume_line_and_status_143_and_the_resume_finishes(tmp_path: Path) -> None:
    """SIGTERM to the whole process group, loader workers included, as SLURM (scancel, preemption,
    the time limit) and ``pkill -f`` send it: a worker killed first used to end the run with
    "DataLoader worker is killed by signal" and no checkpoint."""
    run_dir = tmp_path / "run"
    args = [
        "src/train.py",
        "task=shapes",
        "model=resnet_small",
        *TINY,
        "task.data.num_workers=1",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=60",
        "trainer.limit_val_batches=3",
        "callbacks.figures=null",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.Popen(
        [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    _wait_for(run_dir / "train.log", "epoch 1/2", process)
    os.killpg(process.pid, signal.SIGTERM)  # what SLURM sends at preemption or the time limit, to every process
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["interrupted"] == "SIGTERM" and 1 <= metrics["epochs"] <= 2
    resume = re.search(r"Resume with: (.+)", stdout + stderr)
    assert resume is not None, stdout[-2000:]
    command = shlex.split(resume.group(1))
    checkpoint = Path(next(w for w in command if w.startswith("ckpt_path=")).split("=", 1)[1])
    assert checkpoint.is_file() and checkpoint.parent == run_dir / "checkpoints"
    log_lines = EPOCH_LINE.findall((run_dir / "train.log").read_text())
    assert log_lines and EPOCH_LINE.search(stdout)  # stdout is a pipe here, as under SLURM or tee
    assert "💡" not in stdout + stderr  # no advertisements in a user's log

    assert command[:2] == ["python", "src/train.py"]
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    finished = json.loads((run_dir / "metrics.json").read_text())
    assert "interrupted" not in finished and finished["epochs"] == 2 and finished["steps"] == 2 * 60
    assert EPOCH_LINE.findall((run_dir / "train.log").read_text())[-1] == "2"


def test_a_run_cut_before_any_validation_ends_cleanly_and_tests_the_weights_it_has(compose_cfg, tmp_path: Path, caplog) -> None:
    cfg = compose_cfg(["task=shapes", "model=cnn", *TINY, "trainer.limit_train_batches=5", "trainer.max_steps=3", "callbacks.figures=null"])
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    with caplog.at_level("WARNING"):
        metrics = train(cfg)
    assert metrics["steps"] == 3 and metrics["epochs"] == pytest.approx(3 / 5)  # not "1 epoch"
    assert "val/acc_best" not in metrics and "test/acc" in metrics
    assert "No validation ran" in caplog.text
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "val/acc_best" not in events.Tags()["scalars"]  # no placeholder 0 at step 0 either


def test_time_to_target_in_metrics_json_null_for_thresholds_never_reached(compose_cfg) -> None:
    cfg = compose_cfg(
        ["task=shapes", "model=resnet_small", *TINY, "trainer.max_epochs=2", "callbacks.figures=null", "task.targets=[0.0,1.01]"]
    )
    with open_dict(cfg):
        del cfg["hydra"]
    metrics = train(cfg)
    assert 0 < metrics["time_to/val/acc@0"] <= metrics["wall_time_s"]
    assert metrics["epochs_to/val/acc@0"] == pytest.approx(1.0)  # reached at the first validation, after epoch 1
    assert metrics["images_to/val/acc@0"] == 2 * 4  # limit_train_batches=2 of batch 4
    assert {metrics[f"{kind}_to/val/acc@1.01"] for kind in ("time", "epochs", "images")} == {None}  # accuracy never exceeds 1


def _train(cfg: DictConfig) -> dict[str, Any]:
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    return train(cfg)


SEG_TINY = [
    "task=shapes_seg",
    "model=fcn",
    *TINY,
    *TINY_SEG_DATA,
    "test=false",
    "callbacks.figures=null",
    "callbacks.model_checkpoint=null",
]


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 2])
def test_segmentation_time_to_target_is_the_validation_that_reached_it(compose_cfg, tmp_path: Path, epochs: int) -> None:
    """``val/miou`` is computed in the task's own epoch-end hook, which Lightning runs after the callbacks':
    the first validation (after epoch 1) reaches mIoU 0 and must be the one recorded, whatever the length."""
    cfg = compose_cfg([*SEG_TINY, f"task.data.root={tmp_path / 'shapes_seg'}", f"trainer.max_epochs={epochs}", "task.targets=[0.0]"])
    metrics = _train(cfg)
    assert metrics["epochs_to/val/miou@0"] == 1.0
    assert metrics["images_to/val/miou@0"] == 2 * 2  # limit_train_batches=2 of batch 2


def test_time_to_target_keeps_the_first_pass_reaching_each_threshold_and_is_monotone() -> None:
    logged: dict[str, float] = {}
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.update(metrics))
    callback = TimeToTarget("val/acc", "max", [0.9, 0.5, 0.8, 0.99])
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        num_training_batches=10,
        accumulate_grad_batches=1,
        world_size=2,
        is_global_zero=True,
        loggers=[logger],
    )
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    for epoch, score in enumerate([0.3, 0.6, 0.5, 0.95], start=1):
        for _ in range(10):
            callback.on_train_batch_end(trainer, None, None, (None, [0] * 4), 0)  # type: ignore[arg-type]
        trainer.global_step, trainer.current_epoch, trainer.callback_metrics = 10 * epoch, epoch, {"val/acc": score}
        callback.on_validation_end(trainer, None)  # type: ignore[arg-type]
    results = callback.results()
    assert [results[f"epochs_to/val/acc@{t}"] for t in ("0.5", "0.8", "0.9", "0.99")] == [2.0, 4.0, 4.0, None]
    assert [results[f"images_to/val/acc@{t}"] for t in ("0.5", "0.8")] == [2 * 10 * 4 * 2, 4 * 10 * 4 * 2]  # both ranks' images
    times = [results[f"time_to/val/acc@{t}"] for t in ("0.5", "0.8", "0.9")]
    assert times == sorted(times) and logged["epochs_to/val/acc@0.5"] == 2.0


@pytest.mark.parametrize(
    ("batches", "accumulate", "steps", "epochs"),
    [(5, 1, 10, 2.0), (5, 2, 6, 2.0), (5, 2, 4, 1 + 2 / 5), (6, 4, 3, 1 + 4 / 6), (6, 4, 2, 1.0)],
)
def test_epochs_trained_counts_the_short_last_accumulation_of_an_epoch_as_one_step(
    batches: int, accumulate: int, steps: int, epochs: float
) -> None:
    """Lightning steps the optimizer at the last batch of an epoch even when fewer than
    ``accumulate_grad_batches`` batches were accumulated: an epoch is ceil(batches / accumulate) steps."""
    trainer = SimpleNamespace(num_training_batches=batches, accumulate_grad_batches=accumulate, global_step=steps)
    assert epochs_trained(trainer) == pytest.approx(epochs, abs=1e-4)  # type: ignore[arg-type]


@pytest.mark.slow
def test_epochs_and_epochs_to_target_with_an_accumulation_that_does_not_divide_the_epoch(compose_cfg) -> None:
    cfg = compose_cfg(
        [
            "task=shapes",
            "model=cnn",
            *TINY,
            "task.data.image_size=32",
            "trainer.limit_train_batches=5",
            "trainer.accumulate_grad_batches=2",
            "trainer.max_epochs=2",
            "callbacks.figures=null",
            "task.targets=[0.0]",
            "test=false",
        ]
    )
    metrics = _train(cfg)
    assert metrics["steps"] == 6 and metrics["epochs"] == 2.0
    assert metrics["epochs_to/val/acc@0"] == 1.0


class StopDuringValidation(Callback):
    """Sends this process SIGTERM at the first batch of the fit's first validation, and records the
    weights the module held before that validation and the ones the validation scored."""

    seen: ClassVar[dict[str, dict[str, Tensor]]] = {}

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seen["trained"] = {k: v.clone() for k, v in pl_module.state_dict().items() if k.startswith("net.")}

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if not trainer.sanity_checking:
            self.seen["validated"] = {k: v.clone() for k, v in pl_module.state_dict().items() if k.startswith("net.")}
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning raises SIGTERMException before the next batch


def test_an_interruption_during_ema_validation_checkpoints_the_average_as_weights_and_the_trained_ones_as_the_model(
    compose_cfg, tmp_path: Path
) -> None:
    """Validation runs on the averaged weights swapped into the module; the interruption checkpoint must
    hold them as they are outside validation: the average in ``state_dict`` (what eval, predict and the
    test read), the trained weights in ``current_model_state`` (what a resume trains on)."""
    cfg = compose_cfg(
        [
            "task=shapes",
            "model=resnet_small",
            *TINY,
            "callbacks.figures=null",
            "ema_decay=0.5",
            "+callbacks.stop._target_=test_run_ends.StopDuringValidation",
        ]
    )
    with pytest.raises(SystemExit) as stop:
        _train(cfg)
    assert stop.value.code == 128 + signal.SIGTERM
    checkpoint = torch.load(tmp_path / "checkpoints" / "interrupted.ckpt", map_location="cpu", weights_only=True)
    trained, validated = StopDuringValidation.seen["trained"], StopDuringValidation.seen["validated"]
    assert any(not torch.equal(trained[k], validated[k]) for k in trained if trained[k].is_floating_point())
    assert all(torch.equal(checkpoint["current_model_state"][k], trained[k]) for k in trained)
    assert all(torch.equal(checkpoint["state_dict"][k], validated[k]) for k in validated)


@pytest.mark.slow
def test_wall_time_of_a_resumed_run_counts_the_processes_before_the_resume(compose_cfg, tmp_path: Path) -> None:
    """The first process's seconds up to its last checkpoint travel in the checkpoint, as its epochs,
    steps and time to target do; the resumed process adds its own."""
    overrides = ["task=shapes", "model=cnn", *TINY, "task.data.image_size=32", "callbacks.figures=null", "task.targets=[0.0]"]
    first = _train(compose_cfg([*overrides, "test=false"]))
    started = time.perf_counter()
    resumed = _train(compose_cfg([*overrides, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"]))
    this_process = time.perf_counter() - started
    assert resumed["epochs"] == 2.0 and resumed["time_to/val/acc@0"] == first["time_to/val/acc@0"]
    assert resumed["wall_time_s"] > this_process + first["time_to/val/acc@0"]  # fit time of process 1 up to its first validation


def test_ema_weights_are_the_ones_checkpointed_and_tested(compose_cfg, tmp_path: Path) -> None:
    """The test after training scores the averaged weights, the ones validated and checkpointed (Lightning's
    WeightAveraging reloads a checkpoint's raw weights whenever its average model exists, as after a fit),
    so the logged test numbers are eval.py's of the same checkpoint."""
    cfg = compose_cfg(["task=shapes", "model=resnet_small", *TINY, "trainer.max_epochs=2", "callbacks.figures=null", "ema_decay=0.5"])
    with open_dict(cfg):
        del cfg["hydra"]
    logged = train(cfg)
    [best] = (tmp_path / "checkpoints").glob("epoch_*.ckpt")  # the best validation's (save_top_k 1)
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    weights = [k for k in averaged if k.startswith("net.") and averaged[k].is_floating_point()]
    assert weights and any(not torch.equal(averaged[k], current[k]) for k in weights)  # the average, not the raw weights
    evaluated = evaluate(compose_cfg([f"ckpt_path={best}", "trainer.limit_test_batches=2"], config_name="eval"))
    assert evaluated["test/loss"] == pytest.approx(logged["test/loss"], rel=1e-5)
    assert evaluated["test/acc"] == pytest.approx(logged["test/acc"])


def test_training_throughput_does_not_count_a_mid_epoch_validation_as_training_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 2.0, 100.0, 101.0])  # batch ends at 0, 1, 2; validation; batch ends at 100, 101
    monkeypatch.setattr("visionbench.callbacks.throughput.time.perf_counter", lambda: next(clock))
    callback = TrainingThroughput(warmup_steps=0)
    callback.flops_per_image, callback.peak_flops = 1.0, 1.0
    module = SimpleNamespace(device=torch.device("cpu"), log_dict=lambda *a, **k: None)
    batch = (torch.zeros(4, 3, 8, 8), torch.zeros(4))
    for step in range(5):
        if step == 3:
            callback.on_validation_end(None, module)  # type: ignore[arg-type]
        callback.on_train_batch_end(None, module, None, batch, step)  # type: ignore[arg-type]
    assert callback._images / callback._seconds == 4.0  # 3 one-second gaps of 4 images; not the 98 s validation


def test_progress_line_images_per_second_leave_out_a_mid_epoch_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``perf/train_images_per_s``: 2 batches of 4 images, a 98 s validation, 2 more batches, one second each."""
    now = [0.0]
    monkeypatch.setattr("visionbench.callbacks.progress.time.perf_counter", lambda: now[0])
    callback = EpochProgressLog("val/acc")
    trainer = SimpleNamespace(
        sanity_checking=False, world_size=1, callback_metrics={}, max_epochs=1, current_epoch=0, max_steps=-1, callbacks=[]
    )
    batch = (torch.zeros(4, 3, 8, 8), torch.zeros(4))
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    for step in range(4):
        if step == 2:
            callback.on_validation_start(trainer, None)  # type: ignore[arg-type]
            now[0] += 98.0
            callback.on_validation_end(trainer, None)  # type: ignore[arg-type]
        now[0] += 1.0
        callback.on_train_batch_end(trainer, None, None, batch, step)  # type: ignore[arg-type]
    assert "| 4.0 img/s |" in callback.line(trainer)  # type: ignore[arg-type]


def test_progress_line_of_a_resumed_run_counts_the_time_before_the_resume_and_paces_on_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An hour ran before the resume (the checkpoint's WallClock); this process trained epoch 6 of 10 in 60 s."""
    now = [1000.0]
    monkeypatch.setattr("visionbench.callbacks.progress.time.perf_counter", lambda: now[0])
    monkeypatch.setattr("visionbench.callbacks.wall_clock.time.perf_counter", lambda: now[0])
    wall_clock = WallClock(start=now[0])
    wall_clock.before = 3600.0
    callback = EpochProgressLog("val/acc")
    trainer = SimpleNamespace(
        sanity_checking=False,
        world_size=1,
        callback_metrics={},
        max_epochs=10,
        current_epoch=5,
        max_steps=-1,
        callbacks=[wall_clock],
        is_global_zero=False,
    )
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    now[0] += 60.0
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    assert "| elapsed 1:01:00 | left ~0:04:00" in callback.line(trainer)  # type: ignore[arg-type]


def test_targets_that_are_not_numbers_are_one_paragraph_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"task.targets=\['high'\].*e.g. task.targets=\[0.5,0.8,0.9\]"):
        TimeToTarget("val/acc", "max", ["high"])  # type: ignore[list-item]
