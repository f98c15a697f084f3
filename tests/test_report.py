"""report.py: one table per task, one row per setting with mean ± std over seeds, from real multiruns and an
Optuna search; debug and eval runs counted, not tabled; failed sweep jobs listed."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from conftest import REPO, STEP_LR, TINY, run_cli
from visionbench.errors import ConfigError, DataNotFoundError
from visionbench.report import build_report, markdown, read_history, write_report
from visionbench.sweep import FailedJobs


def _search_override() -> str:
    """``hparams_search=...``, or ``+hparams_search=...`` while train.yaml does not declare the group."""
    defaults = yaml.safe_load((REPO / "conf" / "train.yaml").read_text())["defaults"]
    declared = any(isinstance(d, dict) and "hparams_search" in d for d in defaults)
    return ("" if declared else "+") + "hparams_search=simpsons_optuna"


def test_report_of_two_models_by_two_seeds_has_two_rows_with_mean_and_std(multirun: Path) -> None:
    out = run_cli("src/report.py", str(multirun)).stdout
    table = [line for line in out.splitlines() if line.startswith("| cnn") or line.startswith("| resnet_small")]
    assert len(table) == 2 and all("±" in line for line in table)
    with open(multirun / "report_shapes.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"cnn", "resnet_small"}
    for model, row in rows.items():
        runs = [
            json.loads((d / "metrics.json").read_text())
            for d in multirun.iterdir()
            if (d / "metrics.json").is_file() and yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["model"]["name"] == model
        ]
        values = [r["test/acc"] for r in runs]
        assert row["n_runs"] == row["n_seeds"] == "2" and sorted(row["seeds"].split()) == ["1", "2"]
        assert float(row["test/acc_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["test/acc_std"]) == pytest.approx(statistics.stdev(values))
        assert float(row["val/acc_best_mean"]) >= 0 and float(row["wall_time_s_mean"]) > 0
    assert (multirun / "report.md").read_text() in out
    assert (multirun / "report_shapes.png").stat().st_size > 0


def _fake_run(path: Path, overrides: list[str], config: dict, metrics: dict) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metrics.json").write_text(json.dumps(metrics))


def test_rows_group_runs_that_differ_only_in_seed_and_fill_unset_keys_from_config(tmp_path: Path) -> None:
    config = {"task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "resnet_small"}, "seed": 1}
    _fake_run(tmp_path / "a", ["model=cnn", "seed=1"], {**config, "model": {"name": "cnn"}}, {"test/acc": 0.5, "test/iou/x": 1.0})
    _fake_run(tmp_path / "b", ["model=cnn", "seed=2"], {**config, "model": {"name": "cnn"}, "seed": 2}, {"test/acc": 0.7})
    _fake_run(tmp_path / "c", ["seed=1"], config, {"test/acc": 0.9})  # default model, no override
    (tmp_path / "crashed" / ".hydra").mkdir(parents=True)  # no metrics.json: not a finished run
    (tmp_path / "crashed" / ".hydra" / "config.yaml").write_text("seed: 3\n")
    report = build_report(tmp_path)
    [table] = report.tables
    assert [r.settings for r in table.rows] == [{"model": "resnet_small"}, {"model": "cnn"}]  # sorted by test/acc
    cnn = table.rows[1].stats["test/acc"]
    assert cnn.mean == pytest.approx(0.6) and cnn.std == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert table.rows[0].stats["test/acc"].std is None and "test/iou/x" not in table.metrics
    assert "| cnn | 1,2 | 0.6000 ± 0.1414 |" in markdown(report)


def test_report_of_a_folder_without_finished_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="No finished run"):
        build_report(tmp_path)


def _composed_run(
    path: Path, compose_cfg: Callable[[list[str], str], DictConfig], overrides: list[str], metrics: dict, config_name: str = "train"
) -> None:
    """A run folder as the entry point leaves it: the real composed config (saved without ``hydra``)."""
    cfg = compose_cfg(overrides, config_name)
    with open_dict(cfg):
        del cfg["hydra"]
    _fake_run(path, overrides, OmegaConf.to_container(cfg), metrics)


def test_each_task_gets_its_own_table_and_files_and_debug_and_eval_runs_are_only_counted(
    tmp_path: Path, compose_cfg: Callable[[list[str], str], DictConfig]
) -> None:
    logs = tmp_path / "logs"
    accuracy = {"val/acc_best": 0.5, "test/acc": 0.4, "params": 10}
    iou = {"val/miou_best": 0.3, "test/miou": 0.2, "test/pixel_acc": 0.6, "params": 20}
    _composed_run(logs / "train/runs/a_shapes_cnn", compose_cfg, ["task=shapes", "model=cnn"], accuracy)
    _composed_run(logs / "train/runs/b_shapes_seg_fcn", compose_cfg, ["task=shapes_seg", "model=fcn"], iou)
    _composed_run(logs / "debug/runs/c_shapes_cnn", compose_cfg, ["task=shapes", "model=cnn", "debug=limit"], accuracy)
    _composed_run(logs / "train/runs/d_shapes_cnn", compose_cfg, ["task=shapes", "model=cnn", "trainer.fast_dev_run=true"], accuracy)
    checkpoint = logs / "train/runs/a_shapes_cnn/checkpoints/last.ckpt"
    _composed_run(logs / "eval/runs/e_ckpt_eval", compose_cfg, [f"ckpt_path={checkpoint}"], {"test/acc": 0.4}, "eval")

    report, files = write_report(logs)
    assert [(t.task, [row.runs[0].path.name for row in t.rows]) for t in report.tables] == [
        ("shapes", ["a_shapes_cnn"]),
        ("shapes_seg", ["b_shapes_seg_fcn"]),
    ]
    assert sorted(files) == ["report.md", "report_shapes.csv", "report_shapes.png", "report_shapes_seg.csv", "report_shapes_seg.png"]
    columns = {}
    for task in ("shapes", "shapes_seg"):
        with open(files[f"report_{task}.csv"], newline="") as f:
            columns[task] = csv.DictReader(f).fieldnames or []
    assert "test/acc_mean" in columns["shapes"] and "test/miou_mean" not in columns["shapes"]
    assert "test/miou_mean" in columns["shapes_seg"] and "test/acc_mean" not in columns["shapes_seg"]
    text = files["report.md"].read_text()
    assert "2 debug run(s) skipped" in text and "1 eval run(s) skipped" in text
    assert "## shapes: 1 run(s), sorted by test/acc" in text and "## shapes_seg: 1 run(s), sorted by test/miou" in text


def test_a_seed_run_twice_is_one_seed_of_two_runs(tmp_path: Path) -> None:
    config = {"task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "cnn"}, "seed": 42}
    _fake_run(tmp_path / "a", ["model=cnn", "seed=1"], {**config, "seed": 1}, {"test/acc": 0.6})
    for name, acc in (("b", 0.5), ("c", 0.7)):  # the same command twice: a new run folder each time
        _fake_run(tmp_path / name, ["model=cnn"], config, {"test/acc": acc})
    report, files = write_report(tmp_path)
    assert "| 1,42 (3 runs) | 0.6000 ± 0.1000 |" in markdown(report)
    with open(files["report_shapes.csv"], newline="") as f:
        [row] = csv.DictReader(f)
    assert (row["n_runs"], row["n_seeds"], row["seeds"]) == ("3", "2", "1 42")


def test_a_sweep_job_resumed_in_its_folder_stays_in_its_models_row(tmp_path: Path) -> None:
    config = {"task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "cnn"}}
    _fake_run(tmp_path / "0", ["model=cnn", "seed=1"], {**config, "seed": 1}, {"test/acc": 0.6})
    _fake_run(tmp_path / "1", ["model=cnn", "seed=2", "ckpt_path=/s/1/checkpoints/last.ckpt"], {**config, "seed": 2}, {"test/acc": 0.8})
    report, _ = write_report(tmp_path)
    assert "| 1,2 | 0.7000 ± 0.1414 |" in markdown(report) and "ckpt_path" not in markdown(report)


def _fail_job(sweep: Path, num: int, overrides: list[str]) -> None:
    """A failed job recorded by the sweep's own callback, so that the report reads the format sweeps write."""
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "job": {"num": num}, "sweep": {"dir": str(sweep)}}})
    failed = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=ConfigError("Bad config."))
    FailedJobs().on_job_end(config, failed)


def test_failed_sweep_jobs_are_printed_and_written_with_their_overrides(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _fail_job(sweep, 1, ["model=cnn", "seed=2"])
    with pytest.raises(DataNotFoundError, match=r"(?s)No finished run.*1 job\(s\) failed: see .*`model=cnn seed=2`"):
        build_report(sweep)
    config = {"task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "cnn"}, "seed": 1}
    _fake_run(sweep / "0", ["model=cnn", "seed=1"], config, {"test/acc": 0.5})
    _fail_job(sweep, 2, ["model=cnn", "seed=3"])
    out = run_cli("src/report.py", str(sweep)).stdout
    note = (
        f"2 job(s) failed: see {sweep / 'failed_jobs.txt'}\n"
        "- job 1 (ConfigError): `model=cnn seed=2`\n- job 2 (ConfigError): `model=cnn seed=3`\n"
    )
    assert note in out and note in (sweep / "report.md").read_text()


def test_hparams_search_composes_with_every_searched_key_present_in_the_train_config() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[_search_override()], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc_best"
    searched = set(sweeper.params)
    assert {"optimizer.lr", "optimizer.weight_decay", "task.data.batch_size"} <= searched
    assert any(key.startswith("task.data.augment.") for key in searched)
    for key in searched:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", f"{key} is not a key of the train config"


@pytest.mark.slow
def test_the_shipped_optuna_search_runs_a_diverging_trial_fails_alone_and_the_report_lists_the_others(tmp_path: Path) -> None:
    """The shipped search (its sampler, failure policy and space) with one more searched key, a
    step decay of 1.0 or 1e30 (the weights overflow in the first epoch): the seeded sampler draws
    1e30 for some trials and 1.0 for others; the failures are listed, the search finishes, and the
    report and the best parameters hold the trials that trained."""
    sweep = tmp_path / "optuna"
    result = run_cli(
        "src/train.py",
        "-m",
        _search_override(),
        "task=shapes",
        "model=cnn",
        "hydra.sweeper.n_trials=3",
        *STEP_LR,
        "scheduler.gamma=choice(1e30,1.0)",
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "callbacks.figures=null",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failed = (sweep / "failed_jobs.txt").read_text().splitlines()
    assert failed and all("scheduler.gamma=1e+30" in line and "NonFiniteLossError" in line for line in failed)
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_params"]["scheduler.gamma"] == 1.0
    report = build_report(sweep)
    [table] = report.tables
    assert len(table.rows) == 3 - len(failed) and all("optimizer.lr" in {**table.common, **row.settings} for row in table.rows)
    assert report.best.startswith("Best trial (optuna)")


def test_an_optimized_metric_the_run_did_not_log_is_named_with_the_ones_it_did() -> None:
    from visionbench.errors import ConfigError
    from visionbench.run import optimized_value

    assert optimized_value({"val/acc_best": 0.5}, "val/acc_best") == 0.5 and optimized_value({}, None) is None
    with pytest.raises(ConfigError, match=r"optimized_metric 'val/miou_best' is not among .*val/acc_best"):
        optimized_value({"val/acc_best": 0.5}, "val/miou_best")


def test_unreadable_run_folders_are_skipped_with_a_counted_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from visionbench.results import find_runs

    for name, metrics in (("good", '{"test/acc": 0.5}'), ("corrupt", "{not json")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 1\nmodel: {name: cnn}\n")
        (tmp_path / name / "metrics.json").write_text(metrics)
    runs = find_runs(tmp_path)
    assert [r.path.name for r in runs] == ["good"] and runs[0].group_name("model") == "cnn" and runs[0].seed == 1
    assert "1 run folder(s)" in caplog.text and "corrupt" in caplog.text


def test_time_to_target_columns_say_how_many_seeds_reached_a_threshold_instead_of_averaging_the_others_away(tmp_path: Path) -> None:
    for seed, seconds in ((1, 120.0), (2, None), (3, 180.0)):
        run = tmp_path / str(seed)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"seed": seed, "task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "cnn"}})
        )
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", "model=cnn"]))
        (run / "metrics.json").write_text(json.dumps({"test/acc": 0.5, "time_to/val/acc@0.5": seconds, "time_to/val/acc@0.9": None}))
    text = markdown(build_report(tmp_path))
    assert "150 ± 42 (2/3 reached)" in text and "not reached" in text


@pytest.mark.parametrize(
    ("epochs", "cell"),
    [([7.63], "| 7.63 |"), ([2.4, 2.6], "| 2.50 ± 0.14 |"), ([3.0, 3.0], "| 3.00 |"), ([0.6], "| 0.60 |")],
)
def test_fractional_epochs_are_shown_as_trained_not_rounded_to_whole_epochs(tmp_path: Path, epochs: list[float], cell: str) -> None:
    """``trainer.max_time``, budget and ``max_steps`` runs end inside an epoch: 7.63 is not 8, and 2.4 and 2.6 differ."""
    config = {"task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "cnn"}}
    for seed, value in enumerate(epochs, start=1):
        _fake_run(tmp_path / str(seed), [f"seed={seed}"], {**config, "seed": seed}, {"test/acc": 0.5, "epochs": value})
    row = [line for line in markdown(build_report(tmp_path)).splitlines() if line.startswith("|")][-1]  # | seeds | test/acc | epochs |
    assert row.endswith(cell), row


def _copy_results(run: Path, to: Path, history: bool) -> None:
    """A run folder's config, metrics and (if ``history``) history.csv, without its checkpoints."""
    shutil.copytree(run / ".hydra", to / ".hydra")
    for name in ("metrics.json", *(["history.csv"] if history else [])):
        shutil.copy(run / name, to / name)


def test_report_draws_validation_against_time_per_model_and_counts_runs_without_history(multirun: Path, tmp_path: Path) -> None:
    runs = sorted(d for d in multirun.iterdir() if (d / "metrics.json").is_file())
    for i, run in enumerate(runs):
        _copy_results(run, tmp_path / run.name, history=i > 0)  # the first as a run from before history.csv
    report, files = write_report(tmp_path)
    curves = files["report_shapes_curves.png"]
    assert curves == tmp_path / "report_shapes_curves.png" and curves.stat().st_size > 0
    [table] = report.tables
    assert (table.monitor, table.without_history, table.curve_runs) == ("val/acc", 1, len(runs) - 1)
    assert "1 run(s) without history.csv (trained before it was recorded) left out of the curves." in markdown(report)
    assert str(curves) in run_cli("src/report.py", str(tmp_path)).stdout


def test_a_report_of_runs_without_history_draws_no_curves(tmp_path: Path) -> None:
    _fake_run(
        tmp_path / "a",
        ["seed=1"],
        {"task": {"name": "shapes", "monitor": "val/acc"}, "model": {"name": "cnn"}, "seed": 1},
        {"test/acc": 0.5},
    )
    _, files = write_report(tmp_path)
    assert "report_shapes_curves.png" not in files and not (tmp_path / "report_shapes_curves.png").exists()


def test_history_rows_a_kill_cut_short_are_left_out_of_the_curve(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("epoch,step,seconds,val/acc,val/loss\n1.0,4,3.5,0.25,2.0\n2.0,8,7.25,0.5,1.5\n3.0,12,1")
    assert read_history(tmp_path, "val/acc") == ([3.5, 7.25], [0.25, 0.5])


def test_segmentation_tables_lead_with_segnets_three_figures_in_its_order(tmp_path: Path) -> None:
    config = {"task": {"name": "shapes_seg", "monitor": "val/miou"}, "model": {"name": "fcn"}, "seed": 1}
    scores = {"val/miou_best": 0.3, "test/class_acc": 0.4, "test/loss": 1.0, "test/miou": 0.2, "test/pixel_acc": 0.6, "epochs": 2}
    _fake_run(tmp_path / "a", ["seed=1"], config, scores)
    [table] = build_report(tmp_path).tables
    assert table.metrics == ["test/pixel_acc", "test/class_acc", "test/miou", "val/miou_best", "test/loss", "epochs"]
    assert "| seeds | test/pixel_acc | test/class_acc | test/miou | val/miou_best |" in markdown(build_report(tmp_path))


# val/acc after each epoch of the demo's two runs (seed 42, task=shapes), read from their history.csv on 2026-12-07.
DEMO_VAL_ACC = {"cnn": [0.117, 0.177, 0.258, 0.327, 0.447, 0.517], "resnet_small": [0.155, 0.198, 0.302, 0.359, 0.398, 0.440]}


def test_the_demos_targets_are_reached_by_both_models_within_its_epochs(compose_cfg, tmp_path: Path) -> None:
    """Otherwise its time-to columns all read "not reached" and it shows no comparison."""
    sys.path.insert(0, str(REPO / "src"))
    from demo import EPOCHS, train_overrides

    for model, accuracy in DEMO_VAL_ACC.items():
        cfg = compose_cfg(train_overrides(model, EPOCHS, tmp_path))
        assert cfg.trainer.max_epochs == EPOCHS and cfg.task.targets
        assert max(cfg.task.targets) <= max(accuracy[:EPOCHS]) - 0.02, f"{model} reaches {max(accuracy[:EPOCHS])} in {EPOCHS} epochs"
