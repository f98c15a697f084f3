"""Finished training runs as data: the runs under a folder (config, overrides, metrics) and a metric
over seeds (mean ± sample std). ``report`` tabulates them, ``bench`` joins them to its speed rows.
Imports no torch."""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visionbench.targets import TIME_TO

SEED = "seed"
TRAIN, DEBUG, EVAL = "train", "debug", "eval"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    path: Path
    overrides: dict[str, str]  # "model" -> "cnn", "+trainer.limit_val_batches" -> "2"
    config: dict[str, Any]
    metrics: dict[str, float]

    def group_name(self, group: str) -> str | None:
        """The ``name`` of a config group the run used (``model``, ``task``), if any."""
        node = self.config.get(group)
        return node.get("name") if isinstance(node, dict) else None

    @property
    def seed(self) -> int | None:
        seed = self.config.get(SEED)
        return seed if isinstance(seed, int) else None

    @property
    def monitor(self) -> str:
        task = self.config.get("task")
        return str(task.get("monitor", "")) if isinstance(task, dict) else ""

    @property
    def finished_at(self) -> float:
        return (self.path / "metrics.json").stat().st_mtime

    @property
    def kind(self) -> str:
        """``eval`` (an eval config has no model: it comes from the checkpoint), ``debug`` or ``train``."""
        if self.group_name("model") is None:
            return EVAL
        trainer = self.config.get("trainer")
        fast_dev_run = trainer.get("fast_dev_run") if isinstance(trainer, dict) else None
        debug_group = any(k.lstrip("+~") == "debug" for k in self.overrides)
        return DEBUG if fast_dev_run or debug_group else TRAIN


def _parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    return {key: value for key, _, value in (line.partition("=") for line in lines)}


def find_runs(root: Path) -> list[Run]:
    """Every folder under ``root`` with ``.hydra/config.yaml`` and ``metrics.json`` (finished runs only).

    Folders without metrics (crashed or bench runs) are not runs, nor are runs stopped by a
    signal (``metrics.json`` marked ``interrupted``) until resumed; folders whose files cannot be
    read are skipped with a warning that counts and names them, so a half-populated ``logs/``
    never breaks a report or the benchmark.
    """
    runs, unreadable, interrupted = [], [], []
    for config_path in sorted(Path(root).rglob(".hydra/config.yaml")):
        run_dir = config_path.parent.parent
        metrics_path, overrides_path = run_dir / "metrics.json", run_dir / ".hydra" / "overrides.yaml"
        if not metrics_path.is_file():
            continue
        try:
            metrics = json.loads(metrics_path.read_text())
            config = yaml.safe_load(config_path.read_text()) or {}
            overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
        except (OSError, yaml.YAMLError, json.JSONDecodeError):
            unreadable.append(run_dir)
            continue
        if not isinstance(metrics, dict) or not isinstance(config, dict):
            unreadable.append(run_dir)
            continue
        if metrics.get("interrupted"):  # stopped by a signal: its numbers are not a finished run's
            interrupted.append(run_dir)
            continue
        runs.append(
            Run(
                path=run_dir,
                overrides=_parse_overrides(overrides or []),
                config=config,
                metrics={
                    k: math.nan if v is None else float(v)  # a target never reached is null: NaN, not absent
                    for k, v in metrics.items()
                    if (isinstance(v, (int, float)) and not isinstance(v, bool)) or (v is None and k.startswith(TIME_TO))
                },
            )
        )
    if unreadable:
        log.warning("%d run folder(s) under %s skipped (unreadable config or metrics.json): %s", len(unreadable), root, unreadable)
    if interrupted:
        log.warning("%d interrupted run(s) under %s skipped until resumed: %s", len(interrupted), root, interrupted)
    return runs


@dataclass(frozen=True)
class Stat:
    """A metric over the seeds of one row; ``std`` is the sample standard deviation (None for one seed)."""

    mean: float
    std: float | None
    missing: int = 0  # runs of the row that never reached the value (time to target: NaN)
    runs: int = 1

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Over the runs that have a value; a time to target that some seeds never reached is not
        averaged as if they had: the cell says how many reached it."""
        present = [v for v in values if not math.isnan(v)]
        if not present:
            return cls(math.nan, None, len(values), len(values))
        std = statistics.stdev(present) if len(present) > 1 else None
        return cls(statistics.fmean(present), std, len(values) - len(present), len(values))

    def format(self, digits: int, count: bool = False) -> str:
        """``mean ± std``; a ``count`` (parameters, epochs, seconds to a target) that agrees across
        seeds shows no ``± 0``."""
        if math.isnan(self.mean):
            return "not reached"
        text = f"{self.mean:.{digits}f}"
        text = text if self.std is None or (count and self.std == 0) else f"{text} ± {self.std:.{digits}f}"
        return f"{text} ({self.runs - self.missing}/{self.runs} reached)" if self.missing else text
