"""One table per task of the training runs under a folder: what was overridden, and what came out.

Runs that differ only in ``seed`` are one row (mean ± sample std over the seeds), so a
``-m model=a,b seed=1,2,3`` sweep becomes one row per model; an Optuna search becomes one row
per trial. Overrides shared by every run of a task are stated once above its table instead of
as columns. Tasks get separate tables because their metrics differ (accuracy vs mIoU). Debug
and eval runs are left out and counted, and failed sweep jobs (``failed_jobs.txt``) are
listed, so that what is absent from a table is said rather than silent. Output: one Markdown
file (for the README), and per task a CSV (raw numbers), a PNG of the test metric and a PNG of
the monitored validation metric against training time (each run's ``history.csv``: which network
wins at equal cost; runs trained before the history was recorded are left out and counted).
Imports no torch, so it runs in about a second.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visionbench.errors import DataNotFoundError
from visionbench.results import DEBUG, EVAL, SEED, TRAIN, Run, Stat, find_runs
from visionbench.sweep import FAILED_JOB_LINE, FAILED_JOBS
from visionbench.targets import TIME_TO

NOT_A_SETTING = {SEED, "ckpt_path"}  # a resumed job (ckpt_path=..., same folder) is still its sweep's job
HISTORY_FILE = "history.csv"  # each run's validation history (callbacks.history in conf/callbacks/default.yaml)
SEGNET_FIGURES = ("pixel_acc", "class_acc", "miou")  # SegNet's order: global, class-average accuracy, mIoU
SKIPPED_WHY = {
    DEBUG: "smoke tests (`debug=...` or `trainer.fast_dev_run`), not results",
    EVAL: "`src/eval.py` re-tests a checkpoint; the tables compare training runs",
}
log = logging.getLogger(__name__)


def config_value(config: dict[str, Any], key: str) -> str:
    """The value a run used for an override key it did not set; a config group shows its ``name``."""
    node: Any = config
    for part in key.lstrip("+~").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node = node.get("name")
    return "" if node is None else str(node)


@dataclass
class Row:
    settings: dict[str, str]  # varying override -> value
    runs: list[Run]
    stats: dict[str, Stat]

    @property
    def seeds(self) -> list[str]:
        """Distinct seeds: the same command run twice is one seed."""
        return list(dict.fromkeys(str(r.config.get(SEED, "?")) for r in self.runs))

    @property
    def seeds_cell(self) -> str:
        """``1,2,3``, or ``42 (2 runs)`` when a seed repeats: the std is then not one over seeds."""
        seeds = ",".join(self.seeds)
        return seeds if len(self.seeds) == len(self.runs) else f"{seeds} ({len(self.runs)} runs)"

    @property
    def label(self) -> str:
        return ", ".join(short(v) for v in self.settings.values()) or "all runs"


def short(value: str) -> str:
    """Sampled floats (Optuna) to 4 significant digits for display; the CSV keeps them exact."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value and "e" not in value.lower() else f"{number:.4g}"


@dataclass
class Table:
    """The training runs of one task (a classification task's metrics are not a segmentation task's)."""

    task: str
    common: dict[str, str]  # overrides with the same value in every run
    metrics: list[str]  # columns, in display order
    primary: str  # the test metric of the plot and the sort order
    rows: list[Row]
    monitor: str = ""  # the validation metric of the curves
    without_history: int = 0  # runs trained before history.csv was written: not in the curves

    @property
    def curve_runs(self) -> int:
        return sum(len(row.runs) for row in self.rows) - self.without_history


@dataclass
class Report:
    root: Path
    tables: list[Table]  # one per task, by name
    best: str  # the sweeper's best trial (Optuna's optimization_results.yaml), if any
    notes: list[str]  # what no table shows: skipped runs, failed sweep jobs (Markdown)


def _best_trial(root: Path) -> str:
    path = root / "optimization_results.yaml"
    if not path.is_file():
        return ""
    result = yaml.safe_load(path.read_text()) or {}
    params = " ".join(f"`{k}={short(str(v))}`" for k, v in (result.get("best_params") or {}).items())
    return f"Best trial ({result.get('name', 'sweeper')}): value {result.get('best_value')} with {params}"


def _reported_metrics(runs: Sequence[Run]) -> list[str]:
    """SegNet's three test figures in its order (segmentation), best validation and test scores (not
    per-class entries such as ``test/iou/cat``), then cost."""
    names = {k for r in runs for k in r.metrics if k.count("/") == 1}
    segnet = [f"test/{name}" for name in SEGNET_FIGURES if f"test/{name}" in names]
    best = sorted(k for k in names if k.startswith("val/") and k.endswith("_best"))
    test = sorted(k for k in names if k.startswith("test/") and k not in segnet)
    cost = [k for k in ("params", "epochs", "wall_time_s") if any(k in r.metrics for r in runs)]
    targets = sorted({k for r in runs for k in r.metrics if k.startswith(TIME_TO)}, key=lambda k: float(k.rsplit("@", 1)[1]))
    return segnet + best + test + cost + targets


def _primary_metric(runs: Sequence[Run], metrics: Sequence[str]) -> str:
    """``test/<monitored name>`` (val/acc -> test/acc), else the first test metric."""
    monitor = str(runs[0].config.get("task", {}).get("monitor", ""))
    candidate = "test/" + monitor.split("/", 1)[-1]
    return candidate if candidate in metrics else next((m for m in metrics if m.startswith("test/")), metrics[0])


def _table(task: str, runs: Sequence[Run]) -> Table:
    keys = sorted({k for r in runs for k in r.overrides if k not in NOT_A_SETTING})
    values = {k: [r.overrides.get(k, config_value(r.config, k)) for r in runs] for k in keys}
    common = {k: v[0] for k, v in values.items() if len(set(v)) == 1}
    varying = [k for k in keys if k not in common]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(tuple(values[k][i] for k in varying), []).append(run)
    metrics = _reported_metrics(runs)
    rows = [
        Row(
            settings=dict(zip(varying, setting, strict=True)),
            runs=group,
            stats={m: Stat.of([r.metrics[m] for r in group if m in r.metrics]) for m in metrics if any(m in r.metrics for r in group)},
        )
        for setting, group in groups.items()
    ]
    primary = _primary_metric(runs, metrics)
    rows.sort(key=lambda row: -row.stats[primary].mean if primary in row.stats else math.inf)
    without_history = sum(not (r.path / HISTORY_FILE).is_file() for r in runs)
    return Table(task, common, metrics, primary, rows, runs[0].monitor, without_history)


def _skipped(runs: Sequence[Run]) -> list[str]:
    counts = Counter(r.kind for r in runs if r.kind != TRAIN)
    return [f"{n} {kind} run(s) skipped: {SKIPPED_WHY[kind]}." for kind, n in sorted(counts.items())]


def _failed_jobs(root: Path) -> list[str]:
    """A failed sweep job leaves no metrics.json, so no row: list it from the sweep's ``failed_jobs.txt``."""
    notes = []
    for path in sorted(Path(root).rglob(FAILED_JOBS)):
        jobs = [line for line in path.read_text().splitlines() if line.strip()]
        if jobs:
            listing = [_failed_job(line) for line in jobs]
            notes.append("\n".join([f"{len(jobs)} job(s) failed: see {path}", *listing]))
    return notes


def _failed_job(line: str) -> str:
    """``- job 1 (NonFiniteLossError): `overrides```; the line as written if it is not in that format."""
    match = FAILED_JOB_LINE.match(line)
    return f"- job {match['num']} ({match['error']}): `{match['overrides']}`" if match else f"- {line}"


def build_report(root: Path) -> Report:
    """One table per task of the training runs under ``root``; debug and eval runs are only counted."""
    runs = find_runs(root)
    notes = _skipped(runs) + _failed_jobs(root)
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        if run.kind == TRAIN:
            by_task.setdefault(run.group_name("task") or "?", []).append(run)
    if not by_task:
        raise DataNotFoundError(
            f"No finished run under '{root}' (a folder with .hydra/config.yaml and metrics.json). Pass a run, "
            "multirun or logs folder, e.g. logs/train/multiruns/<time>." + "".join(f"\n{note}" for note in notes)
        )
    return Report(root, [_table(task, by_task[task]) for task in sorted(by_task)], _best_trial(root), notes)


def _is_count(metric: str) -> bool:
    return metric in ("params", "epochs") or metric.startswith(TIME_TO)


def _digits(metric: str) -> int:
    """Epochs to 2 decimals: ``trainer.max_time``, budget and ``max_steps`` runs end inside an epoch."""
    if metric == "epochs":
        return 2
    return 0 if _is_count(metric) else 1 if metric == "wall_time_s" else 4


def write_csv(table: Table, path: Path) -> None:
    """Raw numbers: mean and std columns per metric, and the run folders behind each row."""
    setting_keys = list(table.rows[0].settings)
    stat_columns = [f"{m}_{part}" for m in table.metrics for part in ("mean", "std")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*setting_keys, "n_runs", "n_seeds", "seeds", *stat_columns, "run_dirs"])
        for row in table.rows:
            stats = [getattr(row.stats.get(m), part, None) for m in table.metrics for part in ("mean", "std")]
            writer.writerow(
                [
                    *row.settings.values(),
                    len(row.runs),
                    len(row.seeds),
                    " ".join(row.seeds),
                    *("" if v is None else v for v in stats),
                    ";".join(str(r.path) for r in row.runs),
                ]
            )


def _table_markdown(table: Table) -> list[str]:
    n_runs = sum(len(row.runs) for row in table.rows)
    lines = [f"## {table.task}: {n_runs} run(s), sorted by {table.primary}", ""]
    if table.common:
        lines += ["Common overrides: " + " ".join(f"`{k}={v}`" for k, v in table.common.items()), ""]
    header = [*table.rows[0].settings, "seeds", *table.metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.rows:
        cells = [
            *(short(v) for v in row.settings.values()),
            row.seeds_cell,
            *(row.stats[m].format(_digits(m), _is_count(m)) if m in row.stats else "" for m in table.metrics),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if table.without_history:
        lines += [f"{table.without_history} run(s) without {HISTORY_FILE} (trained before it was recorded) left out of the curves.", ""]
    return lines


def markdown(report: Report) -> str:
    lines = [f"Training runs under `{report.root}`, one table per task: mean ± sample std over the runs of a row.", ""]
    for note in filter(None, [report.best, *report.notes]):
        lines += [note, ""]
    for table in report.tables:
        lines += _table_markdown(table)
    return "\n".join(lines)


def plot(table: Table, path: Path) -> None:
    """The primary test metric per row (best on top), with the standard deviation over seeds as error bars."""
    rows = [r for r in table.rows if table.primary in r.stats]
    figure = Figure(figsize=(7.0, 0.45 * len(rows) + 1.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    stats = [r.stats[table.primary] for r in rows]
    ax.barh(range(len(rows)), [s.mean for s in stats], xerr=[s.std or 0.0 for s in stats], capsize=4, color="tab:blue")
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(table.primary)
    settings = " / ".join(k.rsplit(".", 1)[-1] for k in table.rows[0].settings)
    ax.set_title(f"{table.task}: {settings} (error bars: std over seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def read_history(run_dir: Path, monitor: str) -> tuple[list[float], list[float]]:
    """Training seconds and the monitored value of each validation pass in ``history.csv``; a row a
    kill cut short (the last line, half written) is left out."""
    seconds, values = [], []
    with (run_dir / HISTORY_FILE).open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                point = float(row["seconds"]), float(row[monitor])
            except (KeyError, TypeError, ValueError):
                continue
            seconds.append(point[0])
            values.append(point[1])
    return seconds, values


def plot_curves(table: Table, path: Path) -> None:
    """The monitored validation metric against training wall-clock time: one line per run, the runs of
    a row (its seeds) in the row's colour (each seed validates at its own times, so they are drawn
    rather than averaged); dotted lines at the task's targets, where the time-to columns are read."""
    figure = Figure(figsize=(8.5, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    curves = [
        (i, read_history(run.path, table.monitor))
        for i, row in enumerate(table.rows)
        for run in row.runs
        if (run.path / HISTORY_FILE).is_file()
    ]
    longest = max((max(seconds, default=0.0) for _, (seconds, _) in curves), default=0.0)
    unit, scale = ("min", 60.0) if longest >= 600 else ("s", 1.0)
    labelled: set[int] = set()
    for i, (seconds, values) in curves:
        colour = f"C{i % 10}"
        label = None if i in labelled else table.rows[i].label
        labelled.add(i)
        ax.plot([s / scale for s in seconds], values, marker=".", color=colour, label=label)
    task = table.rows[0].runs[0].config.get("task")
    for target in (task.get("targets") if isinstance(task, dict) else None) or []:
        ax.axhline(float(target), color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"training time ({unit})")
    ax.set_ylabel(table.monitor)
    ax.grid(alpha=0.3)
    # beside the axes: inside, it hid the early points of a slow starter's curve
    ax.legend(fontsize=8, title="one line per run;\nseeds share a colour", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{table.task}: {table.monitor} against training time", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def write_report(root: Path, out_dir: Path | None = None) -> tuple[Report, dict[str, Path]]:
    """Write ``report.md`` (every table and note) and, per task, ``report_<task>.csv``, ``report_<task>.png``
    and, when its runs have a history, ``report_<task>_curves.png`` into ``out_dir`` (default: ``root``);
    the files are returned by name."""
    report = build_report(root)
    out_dir = out_dir or root
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.md"]
    paths[0].write_text(markdown(report))
    for table in report.tables:
        paths += [out_dir / f"report_{table.task}.csv", out_dir / f"report_{table.task}.png"]
        write_csv(table, paths[-2])
        plot(table, paths[-1])
        if table.curve_runs:
            paths.append(out_dir / f"report_{table.task}_curves.png")
            plot_curves(table, paths[-1])
    return report, {p.name: p for p in paths}
