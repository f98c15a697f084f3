"""report.py: one row per setting with mean ± std over seeds, from real multiruns and an Optuna search."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, TINY, run_cli

from visionbench.errors import DataNotFoundError
from visionbench.report import build_report, markdown

def _search_override() -> str:
    """``hparams_search=...``, or ``+hparams_search=...`` while train.yaml does not declare the group."""
    defaults = yaml.safe_load((REPO / "conf" / "train.yaml").read_text())["defaults"]
    declared = any(isinstance(d, dict) and "hparams_search" in d for d in defaults)
    return ("" if declared else "+") + "hparams_search=simpsons_optuna"


def test_report_of_two_models_by_two_seeds_has_two_rows_with_mean_and_std(multirun: Path) -> None:
    out = run_cli("src/report.py", str(multirun)).stdout
    table = [line for line in out.splitlines() if line.startswith("| cnn") or line.startswith("| resnet_small")]
    assert len(table) == 2 and all("±" in line for line in table)
    with open(multirun / "report.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"cnn", "resnet_small"}
    for model, row in rows.items():
        runs = [json.loads((d / "metrics.json").read_text()) for d in multirun.iterdir() if (d / "metrics.json").is_file()
                and yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["model"]["name"] == model]  # fmt: skip
        values = [r["test/acc"] for r in runs]
        assert row["n_seeds"] == "2" and sorted(row["seeds"].split()) == ["1", "2"]
        assert float(row["test/acc_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["test/acc_std"]) == pytest.approx(statistics.stdev(values))
        assert float(row["val/acc_best_mean"]) >= 0 and float(row["wall_time_s_mean"]) > 0
    assert (multirun / "report.md").read_text() in out
    assert (multirun / "report.png").stat().st_size > 0


def _fake_run(path: Path, overrides: list[str], config: dict, metrics: dict) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_rows_group_runs_that_differ_only_in_seed_and_fill_unset_keys_from_config(tmp_path: Path) -> None:
    config = {"task": {"monitor": "val/acc"}, "model": {"name": "resnet_small"}, "seed": 1}
    _fake_run(tmp_path / "a", ["model=cnn", "seed=1"], {**config, "model": {"name": "cnn"}}, {"test/acc": 0.5, "test/iou/x": 1.0})
    _fake_run(tmp_path / "b", ["model=cnn", "seed=2"], {**config, "model": {"name": "cnn"}, "seed": 2}, {"test/acc": 0.7})
    _fake_run(tmp_path / "c", ["seed=1"], config, {"test/acc": 0.9})  # default model, no override
    (tmp_path / "crashed" / ".hydra").mkdir(parents=True)  # no metrics.json: not a finished run
    (tmp_path / "crashed" / ".hydra" / "config.yaml").write_text("seed: 3\n")
    report = build_report(tmp_path)
    assert [r.settings for r in report.rows] == [{"model": "resnet_small"}, {"model": "cnn"}]  # sorted by test/acc
    cnn = report.rows[1].stats["test/acc"]
    assert cnn.mean == pytest.approx(0.6) and cnn.std == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert report.rows[0].stats["test/acc"].std is None and "test/iou/x" not in report.metrics
    assert "| cnn | 1,2 | 0.6000 ± 0.1414 |" in markdown(report)


def test_report_of_a_folder_without_finished_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="No finished run"):
        build_report(tmp_path)


def test_hparams_search_composes_with_every_searched_key_present_in_the_train_config() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[_search_override()], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc_best"
    searched = set(sweeper.params)
    assert {"task.module.optimizer.lr", "task.module.optimizer.weight_decay", "task.data.batch_size"} <= searched
    assert any(key.startswith("task.data.augment.") for key in searched)
    for key in searched:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", f"{key} is not a key of the train config"


@pytest.mark.slow
def test_optuna_search_runs_trials_that_the_report_lists(tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    run_cli(
        "src/train.py", "-m", _search_override(), "task=shapes", "model=cnn", "hydra.sweeper.n_trials=2",
        *TINY, "callbacks.figures=null", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert "best_params" in yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    report = build_report(sweep)
    assert len(report.rows) == 2 and "task.module.optimizer.lr" in report.rows[0].settings
    assert report.best.startswith("Best trial (optuna)")


@pytest.mark.slow
def test_a_diverging_optuna_trial_fails_alone_and_the_search_finishes(tmp_path: Path) -> None:
    """Two trials with the shipped search's failure policy: gamma 1.0 trains, then 1e30 diverges
    (seeded random sampling gives that order; Optuna's GridSampler would end the study itself)."""
    shipped = yaml.safe_load((REPO / "conf" / "hparams_search" / "simpsons_optuna.yaml").read_text())["hydra"]["sweeper"]
    sweeper = {
        "direction": "maximize", "n_trials": 2, "max_failure_rate": shipped["max_failure_rate"], "sampler": {"seed": 0},
        "params": {"task.module.scheduler.gamma": "choice(1e30, 1.0)"},
    }  # fmt: skip
    defaults = [{"override /hydra/sweeper": "optuna"}, {"override /hydra/sweeper/sampler": "random"}]
    step_lr = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 1.0}
    search = {"defaults": defaults, "optimized_metric": "val/acc_best", "task": {"module": {"scheduler": step_lr}},
              "hydra": {"mode": "MULTIRUN", "sweeper": sweeper}}  # fmt: skip
    (tmp_path / "conf" / "hparams_search").mkdir(parents=True)
    (tmp_path / "conf" / "hparams_search" / "diverging.yaml").write_text("# @package _global_\n" + yaml.safe_dump(search))
    sweep = tmp_path / "sweep"
    result = run_cli(
        "src/train.py", "-m", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", _search_override().replace("simpsons_optuna", "diverging"),
        "task=shapes", "model=cnn", *TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=3", "callbacks.figures=null",
        f"hydra.sweep.dir={sweep}", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_params"] == {"task.module.scheduler.gamma": 1.0}
    failed = (sweep / "failed_jobs.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith("job 1 [task.module.scheduler.gamma=1e+30") and "NonFiniteLossError" in failed[0]


def test_an_optimized_metric_the_run_did_not_log_is_named_with_the_ones_it_did() -> None:
    from visionbench.errors import ConfigError
    from visionbench.run import optimized_value

    assert optimized_value({"val/acc_best": 0.5}, "val/acc_best") == 0.5 and optimized_value({}, None) is None
    with pytest.raises(ConfigError, match=r"optimized_metric 'val/miou_best' is not among .*val/acc_best"):
        optimized_value({"val/acc_best": 0.5}, "val/miou_best")


def test_unreadable_run_folders_are_skipped_with_a_counted_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from visionbench.report import find_runs

    for name, metrics in (("good", '{"test/acc": 0.5}'), ("corrupt", "{not json")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 1\nmodel: {name: cnn}\n")
        (tmp_path / name / "metrics.json").write_text(metrics)
    runs = find_runs(tmp_path)
    assert [r.path.name for r in runs] == ["good"] and runs[0].group_name("model") == "cnn" and runs[0].seed == 1
    assert "1 run folder(s)" in caplog.text and "corrupt" in caplog.text
