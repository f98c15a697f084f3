"""src/train.py and src/eval.py as a user runs them: one folder per run, exact re-evaluation,
one folder per multirun job, every classification network trainable, clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from conftest import TINY, run_cli
from visionbench.hparams import run_params
from visionbench.run import eval_task

# cnn and resnet_small train through train.py in the session's multirun fixture and many tests.
CLASSIFIERS = ["resnet50", "vgg19", "inception_v1"]


@pytest.mark.slow
def test_every_classification_network_trains_a_fast_dev_run_through_train_py(tmp_path: Path) -> None:
    """One sweep (one interpreter start-up) over the networks; each job is a whole train.py run."""
    result = run_cli(
        "src/train.py",
        "-m",
        "task=shapes",
        f"model={','.join(CLASSIFIERS)}",
        "debug=fdr",
        "task.data.batch_size=2",
        "callbacks.rich_progress_bar=null",
        f"hydra.sweep.dir={tmp_path}",
        env={"PYTHONWARNINGS": "default"},
    )
    output = result.stdout + result.stderr
    for job, model in enumerate(CLASSIFIERS):
        metrics = json.loads((tmp_path / str(job) / "metrics.json").read_text())
        assert {"train/loss", "val/acc", "test/acc", "params"} <= set(metrics), model
    assert output.count("GPU available:") == len(CLASSIFIERS)  # Lightning's lines are printed once per run
    assert "tensorboard --logdir" not in output  # fast_dev_run writes no events
    assert "LeafSpec" not in result.stderr  # Lightning's own deprecation warning, nothing a user can act on
    assert len(re.findall(r"^Total FLOPs: [1-9]", result.stdout, re.MULTILINE)) == len(CLASSIFIERS)  # the summary ran an example input


def test_a_run_folder_holds_config_events_checkpoints_and_metrics(multirun: Path) -> None:
    run = multirun / "0"
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["model"]["name"] == "cnn" and config["task"]["name"] == "shapes"
    assert list((run / "tensorboard" / "model=cnn,seed=1").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "checkpoints").glob("epoch_*.ckpt"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/acc_best" in metrics
    assert all(0 <= metrics[f"train/{key}"] <= 1 for key in ("acc", "acc_macro", "acc_top5"))  # logged at epoch end


def test_multirun_writes_one_folder_per_job_with_its_own_config(multirun: Path) -> None:
    jobs = sorted(p for p in multirun.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    settings = set()
    for job in jobs:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        settings.add((cfg["model"]["name"], cfg["seed"]))
        assert (job / "metrics.json").is_file()
    assert settings == {("cnn", 1), ("cnn", 2), ("resnet_small", 1), ("resnet_small", 2)}


@pytest.mark.slow
def test_eval_of_the_best_checkpoint_reproduces_the_logged_test_metrics(multirun: Path, tmp_path: Path) -> None:
    run = multirun / "2"  # resnet_small: BatchNorm statistics must round-trip too
    logged = json.loads((run / "metrics.json").read_text())
    best = next((run / "checkpoints").glob("epoch_*.ckpt"))
    run_cli(
        "src/eval.py",
        f"ckpt_path={best}",
        "task=shapes",
        "trainer.limit_test_batches=2",
        "task.data.num_workers=0",
        "task.data.batch_size=4",
        f"hydra.run.dir={tmp_path}",
    )
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["test/acc"] == logged["test/acc"]
    assert evaluated["test/loss"] == pytest.approx(logged["test/loss"], rel=1e-6)


@pytest.mark.slow
def test_eval_without_task_reads_the_checkpoints_split_under_this_machines_data_dir(multirun: Path, tmp_path: Path) -> None:
    moved = tmp_path / "data"  # the data as another machine holds it: no cache yet
    shutil.copytree(Path(os.environ["VISIONBENCH_DATA_DIR"]) / "shapes", moved / "shapes", ignore=shutil.ignore_patterns(".cache"))
    ckpt = multirun / "0" / "checkpoints" / "last.ckpt"
    result = run_cli(
        "src/eval.py",
        f"ckpt_path={ckpt}",
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path / 'eval'}",
        env={"VISIONBENCH_DATA_DIR": str(moved)},
    )
    assert (moved / "shapes" / ".cache").is_dir()  # the test split was read (and cached) from there
    assert f"test split written to {tmp_path / 'eval' / 'metrics.json'}" in result.stdout
    assert "test/acc" in json.loads((tmp_path / "eval" / "metrics.json").read_text())


def test_eval_task_is_the_checkpoints_own_with_plus_task_settings_over_it_or_the_one_given(compose_cfg) -> None:
    trained = OmegaConf.create({"name": "shapes", "data": {"root": "/old/data/shapes", "batch_size": 32, "split": {"seed": 7}}})
    loader = compose_cfg(["ckpt_path=x.ckpt", "+task.data.batch_size=3"], config_name="eval").task
    task = eval_task(trained, "/old/data", loader, "/new/data")
    assert (task.data.root, task.data.batch_size, task.data.split.seed) == ("/new/data/shapes", 3, 7)
    assert eval_task(trained, "/old/data", None, "/new/data").data.batch_size == 32
    given = compose_cfg(["ckpt_path=x.ckpt", "task=shapes_seg"], config_name="eval").task
    assert eval_task(trained, "/old/data", given, "/new/data") == given


@pytest.mark.slow
def test_eval_needs_an_existing_checkpoint(tmp_path: Path) -> None:
    result = run_cli("src/eval.py", f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path}", check=False)
    assert result.returncode == 1 and "missing.ckpt' does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_missing_simpsons_data_stops_with_where_how_and_the_built_in_alternative(tmp_path: Path) -> None:
    result = run_cli("src/train.py", "task=simpsons", f"paths.data_dir={tmp_path}", *TINY, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "simpsons") in result.stderr and "prepare.py" in result.stderr and "task=shapes" in result.stderr


def test_runs_log_their_training_throughput_and_mfu(multirun: Path) -> None:
    metrics = json.loads((multirun / "0" / "metrics.json").read_text())
    assert metrics["perf/train_images_per_s"] > 0 and metrics["perf/train_tflops"] > 0
    # Against the peak measured in the same run (the test's tiny kernels are far from the device's best, so
    # no bound on the MFU itself holds on every CPU): the logged MFU is the logged FLOP/s over the logged peak.
    assert metrics["perf/peak_tflops"] > 0
    assert metrics["perf/train_mfu"] == pytest.approx(metrics["perf/train_tflops"] / metrics["perf/peak_tflops"], rel=1e-3)


def test_runs_log_the_number_of_classes_their_data_has(compose_cfg) -> None:
    cfg = compose_cfg(["task=simpsons"])  # the reference split's 19 in the config
    with open_dict(cfg):
        del cfg["hydra"]  # as the task function receives it
    assert run_params(cfg, SimpleNamespace(num_classes=3))["task.num_classes"] == 3  # type: ignore[arg-type]
