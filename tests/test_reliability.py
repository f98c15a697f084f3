"""Runs that can be trusted: resuming equals training straight through, seeds reproduce, a
non-finite loss stops cleanly, manifests are written atomically, checkpoints load weights-only."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, open_dict
from torch import nn

from conftest import STEP_LR, TINY, run_cli
from kaggle_fixture import make_kaggle_download
from visionbench.cli import CONFIG_DIR
from visionbench.data.sampler import EpochShuffleSampler
from visionbench.data.sources.split import MANIFEST, SplitSpec, build_split, manifest_is_current, write_manifest
from visionbench.run import train
from visionbench.tasks.base import NonFiniteLossError, VisionTask

QUICK = [
    "task=shapes",
    "model=cnn",
    "logger=csv",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "task.data.num_workers=0",
    "task.data.batch_size=4",
    "callbacks.rich_progress_bar=null",
    "callbacks.figures=null",
    "callbacks.model_summary_text=null",
    "callbacks.model_summary=null",
]
VOLATILE = {"wall_time_s"}  # metrics that legitimately differ between identical runs


def _train(compose_cfg, overrides: list[str], output_dir: Path) -> dict[str, float]:
    cfg: DictConfig = compose_cfg([*QUICK, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    return train(cfg)


def _stable(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The network's weights in ``last.ckpt`` (loaded weights-only: the checkpoint holds no pickled code)."""
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


@pytest.mark.parametrize(
    "pipeline",
    [
        ["task.data.pipeline=cached", "task.data.num_workers=2"],
        ["task.data.pipeline=pil", "task.data.num_workers=2", "ema_decay=0.9", "ema_warmup=true"],
    ],
    ids=[
        "cached-2-prefetching-workers",
        "per-image-augmentation-in-2-workers-and-an-ema-with-warmup",  # the warmup counts on from the checkpoint
    ],  # cached, no workers: on 2 processes in test_distributed.py
)
@pytest.mark.slow
def test_resuming_from_last_checkpoint_equals_training_straight_through(compose_cfg, tmp_path: Path, pipeline: list[str]) -> None:
    straight = _train(compose_cfg, ["trainer.max_epochs=2", *pipeline], tmp_path / "straight")
    resumed_dir = tmp_path / "resumed"
    _train(compose_cfg, ["trainer.max_epochs=1", "test=false", *pipeline], resumed_dir)
    last = resumed_dir / "checkpoints" / "last.ckpt"
    resumed = _train(compose_cfg, ["trainer.max_epochs=2", f"ckpt_path={last}", *pipeline], resumed_dir)
    assert _stable(resumed) == _stable(straight)
    a, b = _weights(tmp_path / "straight"), _weights(resumed_dir)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.slow
def test_the_same_seed_reproduces_and_another_seed_does_not(compose_cfg, tmp_path: Path) -> None:
    runs = [_train(compose_cfg, ["trainer.max_epochs=1", f"seed={seed}"], tmp_path / str(i)) for i, seed in enumerate((1, 1, 2))]
    assert _stable(runs[0]) == _stable(runs[1])
    assert runs[0]["train/loss_epoch"] != runs[2]["train/loss_epoch"]


def test_shuffle_order_depends_only_on_seed_and_epoch() -> None:
    straight = EpochShuffleSampler(50, seed=3)
    orders = []
    for epoch in range(3):
        straight.set_epoch(epoch)
        orders.append(list(straight))
    resumed = EpochShuffleSampler(50, seed=3)  # a fresh sampler, as after a restart
    resumed.set_epoch(2)
    assert list(resumed) == orders[2] and orders[0] != orders[1] and sorted(orders[1]) == list(range(50))


EXPLODE_AFTER_FIRST_EPOCH = "scheduler.gamma=1e30"


@pytest.mark.slow
def test_nan_loss_stops_the_cli_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    result = run_cli(
        "src/train.py",
        "task=shapes",
        "model=cnn",
        *TINY,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        "callbacks.figures=null",
        *STEP_LR,
        EXPLODE_AFTER_FIRST_EPOCH,
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    error = result.stderr.split("\nerror: ", 1)[1]
    assert "Traceback" not in result.stderr and len(error.strip().splitlines()) == 1
    assert "at epoch 1, batch" in error and "global step" in error and "optimizer.lr" in error
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    kept = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert kept["epoch"] == 0 and all(torch.isfinite(v).all() for v in kept["state_dict"].values())
    assert [p.name for p in checkpoints] == ["epoch_000.ckpt", "last.ckpt"]  # nothing written after the NaN


@pytest.mark.slow
def test_a_diverging_job_fails_alone_and_the_sweep_lists_it(tmp_path: Path) -> None:
    """``-m``: job 0 diverges, job 1 still runs; the sweep exits 1 and names job 0 in failed_jobs.txt."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "src/train.py",
        "-m",
        "task=shapes",
        "model=cnn",
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "callbacks.figures=null",
        *STEP_LR,
        "scheduler.gamma=1e30,1.0",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert (sweep / "1" / "metrics.json").is_file() and not (sweep / "0" / "metrics.json").exists()
    failed = (sweep / "failed_jobs.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith("job 0 [") and "gamma=1e+30" in failed[0]
    assert "NonFiniteLossError: The training loss became nan at epoch 1" in failed[0]
    assert result.stderr.rstrip().endswith(f"1 job(s) of this sweep failed; each failure is listed in {sweep / 'failed_jobs.txt'}")


def test_non_finite_weights_are_refused_before_a_checkpoint_is_written() -> None:
    task = VisionTask(nn.Linear(2, 2), num_classes=2, optimizer=torch.optim.SGD)
    with torch.no_grad():
        task.net.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"net\.weight"):
        task.on_save_checkpoint({})


def _fail_mid_write(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make writing ``name`` (through its temporary file) stop half-way, like a full disk or a kill."""
    real = Path.write_text

    def write_text(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if self.name.startswith(f".{name}."):
            real(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_a_failure_while_writing_the_manifest_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_kaggle_download(tmp_path / "simpsons", kaggle_test=False)
    spec = SplitSpec()
    result = build_split(root, spec)
    _fail_mid_write(monkeypatch, MANIFEST)
    with pytest.raises(OSError):
        write_manifest(root, result, spec)
    assert not (root / MANIFEST).exists() and not manifest_is_current(root, spec)
    assert not list(root.glob(".*.tmp"))  # no half-written temporary file is left behind
    monkeypatch.undo()
    write_manifest(root, result, spec)
    assert manifest_is_current(root, spec)


def test_a_failed_rewrite_for_a_new_spec_is_not_taken_as_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_kaggle_download(tmp_path / "simpsons", kaggle_test=False)
    write_manifest(root, build_split(root, SplitSpec()), SplitSpec())
    new_spec = SplitSpec(seed=7)
    _fail_mid_write(monkeypatch, MANIFEST)
    with pytest.raises(OSError):
        write_manifest(root, build_split(root, new_spec), new_spec)
    assert not manifest_is_current(root, new_spec)


def test_slurm_launcher_config_follows_the_trainer_nodes_and_devices() -> None:
    GlobalHydra.instance().clear()
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "task=shapes"]
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.timeout_min > 0


def test_trainer_slurm_requeues_through_lightnings_slurm_environment_on_sigusr1() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=["trainer=slurm", "task=shapes"])
    GlobalHydra.instance().clear()
    environment = instantiate(cfg.trainer.plugins[0])
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert environment.requeue_signal == signal.SIGUSR1 and cfg.trainer.strategy.process_group_backend == "nccl"


def test_the_data_preparation_lock_makes_another_process_wait(tmp_path: Path) -> None:
    import subprocess
    import sys

    from visionbench.data.storage.atomic import file_lock

    lock_path = tmp_path / "data" / ".shapes.lock"
    probe = (
        "from pathlib import Path\nfrom filelock import Timeout\nfrom visionbench.data.storage.atomic import file_lock\n"
        f"try:\n    file_lock(Path({str(lock_path)!r})).acquire(timeout=0.3)\n    print('acquired')\n"
        "except Timeout:\n    print('waited')\n"
    )
    with file_lock(lock_path):
        held = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout.strip()
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout.strip()
    assert (held, free) == ("waited", "acquired")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_atomically_written_files_get_the_umasks_permissions_not_mkstemps_private_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int, mode: int
) -> None:
    from visionbench.data.storage import atomic

    monkeypatch.setattr(atomic, "UMASK", umask)
    atomic.write_text_atomic(tmp_path / "manifest.csv", "path,label\n")
    assert stat.S_IMODE((tmp_path / "manifest.csv").stat().st_mode) == mode  # 0o644: readable by a shared filesystem's other users
