"""Shared test plumbing: one session-wide data and log folder, in-process config composition,
and a CLI runner for the few tests that must go through the real entry points."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SESSION_DIR = Path(tempfile.mkdtemp(prefix="visionbench-tests-"))
# Generated datasets are shared by every test (and CLI subprocess) of the session; nothing
# is written into the repository's data/ or logs/.
os.environ["VISIONBENCH_DATA_DIR"] = str(SESSION_DIR / "data")
os.environ["VISIONBENCH_LOG_DIR"] = str(SESSION_DIR / "logs")
os.environ["VISIONBENCH_ROOT"] = str(REPO)
os.environ.setdefault("PYTHONWARNINGS", "ignore")
# `make test` runs two workers on a 2-core machine, and each CLI test starts its own Python: with
# torch's default of one thread per core, every process's OpenMP threads would spin on cores the
# other worker is using. One thread each (subprocesses inherit it) keeps each worker on its core.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's generated data and logs (~150 MB) after a green run; keep them to
    inspect after a red one. Pytest's own ``tmp_path`` folders follow ``tmp_path_retention_policy``."""
    if exitstatus == 0:
        shutil.rmtree(SESSION_DIR, ignore_errors=True)
    else:
        session.config.get_terminal_writer().line(f"visionbench test data and logs kept in {SESSION_DIR}")


# Smallest settings that still run train, val and test through the real pipeline.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "task.data.num_workers=0",
    "task.data.batch_size=4",
    "callbacks.rich_progress_bar=null",
    "callbacks.throughput.warmup_steps=0",
    "callbacks.throughput.peak_size=256",
]
# A few 48x64 frames of the built-in segmentation data (the default set is 500 frames), generated into the
# test's own task.data.root, with one validation batch.
TINY_SEG_DATA = [
    "task.data.generator.num_train=8",
    "task.data.generator.num_val=2",
    "task.data.generator.height=48",
    "task.data.generator.width=64",
    "task.data.crop=[32,64]",
    "task.data.batch_size=2",
    "trainer.limit_val_batches=1",
]
# lr x ``scheduler.gamma`` after each epoch; with ``scheduler.gamma=1e30`` the weights overflow early in epoch 1.
STEP_LR = ("scheduler=step", "scheduler.step_size=1")


def run_cli(*args: str, check: bool = True, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` from the repository root, as a user would (``env`` adds variables)."""
    environment = {**os.environ, **(env or {})}
    result = subprocess.run([PY, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=environment)
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose a config in-process exactly as the entry point would (with hydra.* resolvable)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[object]:
    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        return compose_config(config_name, overrides, tmp_path)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def multirun() -> Path:
    """``-m model=cnn,resnet_small seed=1,2`` on the built-in shapes, a few batches per job;
    trained once per session and shared by the report, dashboard, predict and CLI tests."""
    sweep = SESSION_DIR / "multirun"
    run_cli(
        "src/train.py",
        "-m",
        "task=shapes",
        "model=cnn,resnet_small",
        "seed=1,2",
        *TINY,
        "callbacks.figures.num_images=2",
        "callbacks.figures.num_train_images=8",
        f"hydra.sweep.dir={sweep}",
    )
    return sweep
