"""Build a run from its composed config and execute it (the logic behind src/train.py and src/eval.py)."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from visionbench.checkpoint import load_checkpoint
from visionbench.config_checks import check_numeric_knobs
from visionbench.data.atomic import write_text_atomic
from visionbench.data.base import VisionDataModule
from visionbench.errors import ConfigError
from visionbench.tasks.base import VisionTask

log = logging.getLogger(__name__)


def check_model_task(model_cfg: DictConfig, task_cfg: DictConfig) -> None:
    """Fail at config time when the network serves another task kind (e.g. fcn on shapes)."""
    target = model_cfg.net._target_
    kind = getattr(get_class(target), "task_kind", None)
    if kind != task_cfg.kind:
        raise ConfigError(
            f"model={model_cfg.name} ({target}) is a {kind} network but task={task_cfg.name} is a "
            f"{task_cfg.kind} task. Pick a {task_cfg.kind} model (see conf/model/), or a task of kind {kind}."
        )


def build_datamodule(cfg: DictConfig) -> VisionDataModule:
    datamodule: VisionDataModule = instantiate(cfg.task.data, _convert_="all")
    datamodule.prepare_data()
    return datamodule


def input_size(task_cfg: DictConfig) -> tuple[int, int]:
    """(H, W) the network sees in training: the image size, or the segmentation crop."""
    if task_cfg.kind == "classification":
        return (task_cfg.data.image_size, task_cfg.data.image_size)
    height, width = task_cfg.data.crop
    return (height, width)


def build_task(cfg: DictConfig, datamodule: VisionDataModule) -> VisionTask:
    net = instantiate(cfg.model.net, num_classes=datamodule.num_classes)
    task: VisionTask = instantiate(
        cfg.task.module,
        net=net,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
        _convert_="partial",
    )
    # Set after instantiation: the config holds `_target_` nodes that instantiate would build.
    task.run_config = OmegaConf.to_container(cfg, resolve=True)
    if not cfg.get("compile", False):  # a compiled net would compile again for the summary's eval forward
        # One image through the network at start-up: the model summary gets its shapes and FLOPs columns.
        task.example_input_array = torch.zeros(1, 3, *input_size(cfg.task))
    return task


def tidy_lightning_output() -> None:
    """``import lightning`` gives the ``lightning`` logger a console handler of its own, and its
    records also reach the root logger, which Hydra sends to the console and ``train.log``: every
    Lightning line was printed twice. The root's handlers alone now print them. Lightning 2.6's
    own use of a pytree API that torch 2.14 deprecates warns at every fit; nothing a user can fix."""
    logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


class EpochSeed(Callback):
    """Reseed the global RNGs (augmentation, dropout) from (seed, epoch) at every training epoch.

    Lightning checkpoints do not hold RNG states, so without this a run resumed at epoch k
    would continue from the RNG state of a fresh start, not from the straight run's state.
    Worker processes kept alive across epochs (``persistent_workers``) keep their own streams.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch_seed = int(np.random.SeedSequence([self.seed, trainer.current_epoch]).generate_state(1)[0])
        L.seed_everything(epoch_seed, workers=True, verbose=False)


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """``trainer=gpu``/``ddp`` on a machine without CUDA: say so before any data is prepared."""
    if trainer_cfg.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={trainer_cfg.accelerator} needs a CUDA GPU, and PyTorch sees none here "
            "(torch.cuda.is_available() is False). Use trainer=cpu, or trainer=ddp_cpu for 2 processes on CPU."
        )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks: list[Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(EpochSeed(cfg.seed))
    loggers: list[Logger] = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to dotted keys, for TensorBoard's HParams tab."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}." if not str(k).startswith("_") else prefix)
        elif not (prefix.endswith("_target_.") or prefix == ""):
            out[prefix.rstrip(".")] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def run_params(cfg: DictConfig, datamodule: VisionDataModule) -> dict[str, Any]:
    """The hyperparameters a run logs: its config, with the number of classes its data really has
    (``task.num_classes`` is the reference split's, for summary.py and the bench)."""
    return {**flat_params(cfg), "task.num_classes": datamodule.num_classes}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; write ``metrics.json`` into the run folder."""
    start = time.perf_counter()
    tidy_lightning_output()
    check_numeric_knobs(cfg)
    check_model_task(cfg.model, cfg.task)  # before any data is generated or read
    check_accelerator(cfg.trainer)
    check_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    trainer = build_trainer(cfg)
    out_dir = Path(cfg.paths.output_dir)
    monitor = cfg.task.monitor
    declared = {f"{monitor}_best": 0.0, f"test/{monitor.split('/', 1)[1]}": 0.0}
    params = run_params(cfg, datamodule)
    for lg in trainer.loggers:
        # Only TensorBoard takes the declared metrics (its hp_metric); CSV and others take params alone.
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(params, declared)
        else:
            lg.log_hyperparams(params)
    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics.update(_scalars(trainer.callback_metrics))
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint was saved (fast_dev_run or no validation); testing the current weights.")
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(_scalars(trainer.callback_metrics))
    metrics["params"] = count_parameters(task.net)
    metrics["wall_time_s"] = time.perf_counter() - start
    metrics["epochs"] = trainer.current_epoch
    if trainer.is_global_zero:
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        log.info("Run folder: %s", out_dir)
        if any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers) and not trainer.fast_dev_run:
            log.info("TensorBoard: tensorboard --logdir %s", out_dir)  # fast_dev_run (debug=fdr) logs nothing
    return metrics


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
    return OmegaConf.merge(task, given) if given is not None else task


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
    if cfg.split == "val":
        results = trainer.validate(task, datamodule=datamodule)
    else:
        results = trainer.test(task, datamodule=datamodule)
    metrics = _scalars(results[0]) if results else {}
    if trainer.is_global_zero:
        write_text_atomic(Path(cfg.paths.output_dir) / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
        log.info("Metrics of %s on its %s split written to %s", cfg.ckpt_path, cfg.split, Path(cfg.paths.output_dir) / "metrics.json")
    return metrics
