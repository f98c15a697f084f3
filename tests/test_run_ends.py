"""How a run ends when it does not end normally: a signal leaves a resumable checkpoint, a
resume line and a non-zero status; a run cut before any validation still tests what it has;
every epoch leaves a line a log file can show."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, TINY
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from visionbench.callbacks.throughput import TrainingThroughput
from visionbench.callbacks.time_to_target import TimeToTarget
from visionbench.errors import ConfigError
from visionbench.run import train

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
    run_dir = tmp_path / "run"
    args = [
        "src/train.py", "task=shapes", "model=resnet_small", *TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=60",
        "trainer.limit_val_batches=3", "callbacks.figures=null", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "train.log", "epoch 1/2", process)
    process.send_signal(signal.SIGTERM)  # what SLURM sends at preemption or the time limit
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
    cfg = compose_cfg(["task=shapes", "model=resnet_small", *TINY, "trainer.max_epochs=2", "callbacks.figures=null", "task.targets=[0.0,1.01]"])
    with open_dict(cfg):
        del cfg["hydra"]
    metrics = train(cfg)
    assert 0 < metrics["time_to/val/acc@0"] <= metrics["wall_time_s"]
    assert metrics["epochs_to/val/acc@0"] == pytest.approx(1.0)  # reached at the first validation, after epoch 1
    assert metrics["images_to/val/acc@0"] == 2 * 4  # limit_train_batches=2 of batch 4
    assert {metrics[f"{kind}_to/val/acc@1.01"] for kind in ("time", "epochs", "images")} == {None}  # accuracy never exceeds 1


def test_time_to_target_keeps_the_first_pass_reaching_each_threshold_and_is_monotone() -> None:
    logged: dict[str, float] = {}
    module = SimpleNamespace(log=lambda key, value, **_: logged.__setitem__(key, value))
    callback = TimeToTarget("val/acc", "max", [0.9, 0.5, 0.8, 0.99])
    trainer = SimpleNamespace(
        sanity_checking=False, state=SimpleNamespace(fn="fit"), num_training_batches=10, accumulate_grad_batches=1, world_size=2
    )
    callback.on_train_start(trainer, module)  # type: ignore[arg-type]
    for epoch, score in enumerate([0.3, 0.6, 0.5, 0.95], start=1):
        for _ in range(10):
            callback.on_train_batch_end(trainer, module, None, (None, [0] * 4), 0)  # type: ignore[arg-type]
        trainer.global_step, trainer.current_epoch, trainer.callback_metrics = 10 * epoch, epoch, {"val/acc": score}
        callback.on_validation_epoch_end(trainer, module)  # type: ignore[arg-type]
    results = callback.results()
    assert [results[f"epochs_to/val/acc@{t}"] for t in ("0.5", "0.8", "0.9", "0.99")] == [2.0, 4.0, 4.0, None]
    assert [results[f"images_to/val/acc@{t}"] for t in ("0.5", "0.8")] == [2 * 10 * 4 * 2, 4 * 10 * 4 * 2]  # both ranks' images
    times = [results[f"time_to/val/acc@{t}"] for t in ("0.5", "0.8", "0.9")]
    assert times == sorted(times) and logged["epochs_to/val/acc@0.5"] == 2.0


def test_ema_weights_are_the_ones_checkpointed_and_tested(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(["task=shapes", "model=resnet_small", *TINY, "callbacks.figures=null", "ema_decay=0.5"])
    with open_dict(cfg):
        del cfg["hydra"]
    train(cfg)
    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    weights = [k for k in averaged if k.startswith("net.") and averaged[k].is_floating_point()]
    assert weights and any(not torch.equal(averaged[k], current[k]) for k in weights)  # the average, not the raw weights


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


def test_targets_that_are_not_numbers_are_one_paragraph_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"task.targets=\['high'\].*e.g. task.targets=\[0.5,0.8,0.9\]"):
        TimeToTarget("val/acc", "max", ["high"])  # type: ignore[list-item]
