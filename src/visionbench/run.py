"""Execute a run from its composed config: train then test, or evaluate a checkpoint (the logic
behind src/train.py and src/eval.py); metrics.json, resume checks and the exit of an interrupted run.
The parts are built by ``visionbench.compose``."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from visionbench.callbacks.interrupt import INTERRUPTED_CHECKPOINT
from visionbench.callbacks.progress import epochs_trained
from visionbench.callbacks.time_to_target import TimeToTarget
from visionbench.callbacks.wall_clock import WallClock
from visionbench.checkpoint import load_checkpoint
from visionbench.compose import build_datamodule, build_task, build_trainer, check_accelerator, check_model_task
from visionbench.config_checks import check_numeric_knobs
from visionbench.console import tidy_lightning_output
from visionbench.data.storage.atomic import write_text_atomic
from visionbench.errors import ConfigError
from visionbench.hparams import log_hyperparams, run_params
from visionbench.measure import count_parameters
from visionbench.tasks.base import VisionTask

log = logging.getLogger(__name__)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def check_resume(cfg: DictConfig) -> None:
    """A resumed run must continue the checkpoint's network and task in the checkpoint's own run
    folder: in a new folder Lightning cannot restore the best score (it warns "dirpath has
    changed") and the test after training would pick the wrong "best" checkpoint."""
    if not cfg.get("ckpt_path") or not cfg.train:
        return
    ckpt_path = Path(cfg.ckpt_path)
    trained = load_checkpoint(ckpt_path)["visionbench_config"]
    for group in ("model", "task"):
        if trained[group]["name"] != cfg[group].name:
            raise ConfigError(
                f"'{ckpt_path}' was trained with {group}={trained[group]['name']}, but this run has "
                f"{group}={cfg[group].name}. Resume with the checkpoint's own overrides (its run folder's "
                ".hydra/overrides.yaml lists them)."
            )
    run_dir = ckpt_path.parent.resolve().parent  # last.ckpt may be a link into an archive: its folder counts
    if run_dir != Path(cfg.paths.output_dir).resolve():
        raise ConfigError(
            f"Resuming from '{ckpt_path}' must continue in its run folder: add hydra.run.dir={run_dir} (same "
            "overrides as before; trainer.max_epochs is the new total). A new folder would lose the best "
            "checkpoint's score, and the test after training would pick the wrong checkpoint."
        )


def interrupted_exit(cfg: DictConfig, trainer: L.Trainer, stop: BaseException, metrics: dict[str, Any]) -> SystemExit:
    """The exit of a run ended by a signal: ``metrics.json`` marked interrupted, one line with
    the command that resumes it, and status 128 + signal number (143 SIGTERM, 130 Ctrl-C), so a
    scheduler or a sweep never reads an interruption as success."""
    signum = signal.SIGTERM if isinstance(stop, SIGTERMException) else signal.SIGINT
    out_dir = Path(cfg.paths.output_dir)
    checkpoint = out_dir / "checkpoints" / f"{INTERRUPTED_CHECKPOINT}.ckpt"
    if not checkpoint.is_file():
        checkpoint = out_dir / "checkpoints" / "last.ckpt"
    metrics["interrupted"] = signum.name
    if trainer.is_global_zero:
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        if checkpoint.is_file():
            log.error(
                "%s stopped the run at epoch %d, step %d; the point reached is saved. Resume with: %s",
                signum.name,
                trainer.current_epoch,
                trainer.global_step,
                resume_command(checkpoint, out_dir),
            )
        else:
            log.error("%s stopped the run before any checkpoint was written; start it again.", signum.name)
    return SystemExit(128 + signum)


def resume_command(checkpoint: Path, run_dir: Path) -> str:
    """``python <entry point> <this run's overrides> ckpt_path=... hydra.run.dir=...``."""
    overrides = (
        [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
        if HydraConfig.initialized()
        else []
    )
    words = ["python", sys.argv[0], *overrides, f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(w) for w in words)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; write ``metrics.json`` into the run folder."""
    clock = WallClock(start=time.perf_counter())
    tidy_lightning_output()
    check_numeric_knobs(cfg)
    check_model_task(cfg.model, cfg.task)  # before any data is generated or read
    check_accelerator(cfg.trainer)
    check_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    trainer = build_trainer(cfg, clock)
    out_dir = Path(cfg.paths.output_dir)
    monitor = cfg.task.monitor
    log_hyperparams(trainer, run_params(cfg, datamodule), [f"{monitor}_best", f"test/{monitor.split('/', 1)[1]}"])
    metrics: dict[str, Any] = {}
    try:
        if cfg.train:
            trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
            metrics.update(_scalars(trainer.callback_metrics))
        if cfg.test:
            weights = weights_to_test(trainer, cfg.train, f"{monitor}_best" in metrics)
            trainer.test(task, datamodule=datamodule, ckpt_path=weights, weights_only=True)
            metrics.update(_scalars(trainer.callback_metrics))
    except SystemExit as stop:  # Lightning's SIGTERMException, or its exit after Ctrl-C
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        metrics.update(_scalars(trainer.callback_metrics))
        metrics.update(run_extent(trainer, task, clock))
        raise interrupted_exit(cfg, trainer, stop, metrics) from None
    metrics.update(run_extent(trainer, task, clock))
    if trainer.is_global_zero:
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        log.info("Run folder: %s", out_dir)
        if any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers) and not trainer.fast_dev_run:  # type: ignore[attr-defined]  # set by Lightning, undeclared
            log.info("TensorBoard: tensorboard --logdir %s", out_dir)  # fast_dev_run (debug=fdr) logs nothing
    return metrics


def weights_to_test(trainer: L.Trainer, trained: bool, validated: bool) -> str | None:
    """The best checkpoint; the weights in memory (``None``) when no validation ran to pick one."""
    best = trainer.checkpoint_callback.best_model_path if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else ""
    if best:
        return best
    if trained and not validated:
        log.warning(
            "No validation ran (training ended after %d step(s), before the first validation: max_steps, max_time "
            "or limit_val_batches=0), so there is no best checkpoint; testing the weights at the end of training.",
            trainer.global_step,
        )
    elif trained:
        log.warning("No best checkpoint was saved (fast_dev_run); testing the weights at the end of training.")
    return None


def run_extent(trainer: L.Trainer, task: VisionTask, clock: WallClock) -> dict[str, float | None]:
    """How far the run got, over every process that trained it (resume): parameters trained, seconds,
    epochs, optimizer steps, and the time to each target (null for a threshold never reached)."""
    extent: dict[str, float | None] = {
        "params": count_parameters(task.net),
        "wall_time_s": clock.elapsed(),
        "epochs": epochs_trained(trainer),
        "steps": trainer.global_step,
    }
    for callback in trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning, undeclared
        if isinstance(callback, TimeToTarget):
            extent.update(callback.results())
    return extent


def optimized_value(metrics: dict[str, float], key: str | None) -> float | None:
    """The value a sweeper optimises (``optimized_metric``); a key the run did not log is a config
    mistake that would otherwise reach Optuna as a bare ``None``."""
    if not key:
        return None
    if key not in metrics:
        raise ConfigError(
            f"optimized_metric '{key}' is not among this run's metrics ({', '.join(sorted(metrics))}). Set "
            "optimized_metric to one of them, e.g. val/acc_best (classification) or val/miou_best (segmentation)."
        )
    return metrics[key]


def eval_task(trained: DictConfig, trained_data_dir: str, given: DictConfig | None, data_dir: str) -> DictConfig:
    """The task a checkpoint is evaluated on.

    ``task=<name>`` on the command line is another task config, used as given. Otherwise it is
    the checkpoint's own task (its split settings included) with its data root moved from the
    training run's ``paths.data_dir`` to this run's, so a checkpoint evaluates on another machine
    or after the data moved (a root set outside the data dir stays), and with any
    ``+task.data.num_workers=...``-style settings merged over it.
    """
    if given is not None and "name" in given:
        return given
    task = trained.copy()
    if Path(task.data.root).is_relative_to(trained_data_dir):
        task.data.root = str(Path(data_dir) / Path(task.data.root).relative_to(trained_data_dir))
    # Merged into a DictConfig, the result is one (OmegaConf types any merge as a DictConfig or a ListConfig).
    return cast(DictConfig, OmegaConf.merge(task, given)) if given is not None else task


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test (or validate) a checkpoint. The network comes from the checkpoint's own config, the
    task from ``eval_task``."""
    tidy_lightning_output()
    check_numeric_knobs(cfg)
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split={cfg.split} is not a split eval.py evaluates: use split=test (default) or split=val.")
    checkpoint = load_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(checkpoint["visionbench_config"])
    run_cfg.task = eval_task(run_cfg.task, run_cfg.paths.data_dir, cfg.get("task"), cfg.paths.data_dir)
    run_cfg.trainer = cfg.trainer
    run_cfg.logger = cfg.get("logger")
    run_cfg.callbacks = None
    run_cfg.compile = False
    check_model_task(run_cfg.model, run_cfg.task)
    check_accelerator(run_cfg.trainer)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(run_cfg)
    task = build_task(run_cfg, datamodule)
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ConfigError(
            f"The weights in '{cfg.ckpt_path}' do not fit model={run_cfg.model.name} on task={run_cfg.task.name} "
            f"({datamodule.num_classes} classes): {str(err).splitlines()[0]} Evaluate on the task the checkpoint "
            "was trained on (omit task=)."
        ) from None
    trainer = build_trainer(run_cfg)
    results = trainer.validate(task, datamodule=datamodule) if cfg.split == "val" else trainer.test(task, datamodule=datamodule)
    metrics = _scalars(results[0]) if results else {}
    if trainer.is_global_zero:
        write_text_atomic(Path(cfg.paths.output_dir) / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        log.info("Metrics of %s on its %s split written to %s", cfg.ckpt_path, cfg.split, Path(cfg.paths.output_dir) / "metrics.json")
    return metrics
