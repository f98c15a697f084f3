"""Build a run from its composed config and execute it (the logic behind src/train.py and src/eval.py)."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from visionbench.callbacks.interrupt import INTERRUPTED_CHECKPOINT
from visionbench.callbacks.progress import epochs_trained
from visionbench.callbacks.time_to_target import TimeToTarget
from visionbench.callbacks.wall_clock import WallClock
from visionbench.checkpoint import load_checkpoint
from visionbench.config_checks import check_numeric_knobs
from visionbench.data.atomic import write_text_atomic
from visionbench.data.base import VisionDataModule
from visionbench.errors import ConfigError
from visionbench.measure import count_parameters
from visionbench.seeding import stream_seed
from visionbench.tasks.base import VisionTask
from visionbench.tasks.optim import optimization_arguments
from visionbench.tasks.segmentation import class_pixels

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
    counts: dict[str, Any] = {}
    if cfg.task.kind == "classification" and cfg.task.module.get("class_weights") is not None:
        # The weights of the training loss come from the training split's class counts.
        labels = torch.tensor(datamodule.train_labels(), dtype=torch.long)
        counts["class_counts"] = torch.bincount(labels, minlength=datamodule.num_classes).tolist()
    if cfg.task.kind == "segmentation" and cfg.task.module.get("class_weights") is not None:
        # Median-frequency weights come from the training split's masks, read once.
        counts["class_pixels"] = class_pixels(datamodule.train_masks(), datamodule.num_classes)  # type: ignore[attr-defined]
    task: VisionTask = instantiate(
        cfg.task.module,
        net=net,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        **counts,
        channels_last=cfg.get("channels_last", False),
        compile=cfg.get("compile", False),
        **optimization_arguments(cfg),  # the top-level optimizer/scheduler groups
        _convert_="partial",
    )
    # Set after instantiation: the config holds `_target_` nodes that instantiate would build.
    task.run_config = OmegaConf.to_container(cfg, resolve=True)
    if not cfg.get("compile", False):  # a compiled net would compile again for the summary's eval forward
        # One image through the network at start-up: the model summary gets its shapes and FLOPs columns.
        task.example_input_array = torch.zeros(1, 3, *input_size(cfg.task))
    return task


class NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines from a user's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def tidy_lightning_output() -> None:
    """``import lightning`` gives the ``lightning`` logger a console handler of its own, and its
    records also reach the root logger, which Hydra sends to the console and ``train.log``: every
    Lightning line was printed twice. The root's handlers alone now print them, without the
    advertisements for Lightning's cloud services. Lightning 2.6's
    own use of a pytree API that torch 2.14 deprecates warns at every fit; nothing a user can fix."""
    logging.getLogger("lightning").handlers.clear()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoAdvertisements) for f in logger.filters):
            logger.addFilter(NoAdvertisements())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


class EpochSeed(Callback):
    """Reseed the global RNGs (batch augmentation, dropout) from (seed, epoch, rank) at every
    training epoch.

    Lightning checkpoints do not hold RNG states, so without this a run resumed at epoch k
    would continue from the RNG state of a fresh start, not from the straight run's state. The
    rank is part of the key: with one seed on every process, batch position k would get the
    same augmentation and dropout mask on every GPU, and the global batch would vary less than
    the single-process run it stands for. Loader workers seed each sample from (seed, epoch,
    index) themselves (``SeededSamples``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = stream_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        L.seed_everything(seed % 2**32, workers=True, verbose=False)


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """``trainer=gpu``/``ddp`` on a machine without CUDA: say so before any data is prepared."""
    if trainer_cfg.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={trainer_cfg.accelerator} needs a CUDA GPU, and PyTorch sees none here "
            "(torch.cuda.is_available() is False). Use trainer=cpu, or trainer=ddp_cpu for 2 processes on CPU."
        )


def build_trainer(cfg: DictConfig, *extra: Callback) -> L.Trainer:
    """The trainer of the config's callbacks and loggers, with ``extra`` callbacks (e.g. a ``WallClock``)."""
    callbacks: list[Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [*extra, EpochSeed(cfg.seed)]
    if cfg.get("ema_decay") is not None:
        # Validation sees the averaged weights, checkpoints hold them, so the test scores them too.
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    label = sweep_label()  # TensorBoard names a sweep's runs by what differs, not by job number alone
    loggers: list[Logger] = [
        instantiate(lg, version=label) if label and lg.get("_target_", "").endswith("TensorBoardLogger") else instantiate(lg)
        for lg in (cfg.get("logger") or {}).values()
        if lg is not None
    ]
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


# What TensorBoard's HParams tab shows, in this order: the choices that decide a number.
KEY_PARAMS = (
    "model.name", "task.name", "seed", "optimizer", "optimizer.lr", "optimizer.weight_decay", "optimizer.momentum",
    "scheduler", "scheduler.warmup_epochs", "task.data.batch_size", "task.data.image_size", "trainer.max_epochs",
    "trainer.max_time", "trainer.precision", "task.module.label_smoothing", "task.module.class_weights", "task.data.sampler",
    "ema_decay", "channels_last", "task.data.pipeline",
)  # fmt: skip


def run_params(cfg: DictConfig, datamodule: VisionDataModule) -> dict[str, Any]:
    """The hyperparameters a run logs: ``KEY_PARAMS``, every augmentation key, every key set on the
    command line, and the number of classes the data really has (``task.num_classes`` is the
    reference split's, for summary.py and the bench). The whole config stays in
    ``.hydra/config.yaml``; logged flat, its ~150 keys buried these under callback targets."""
    flat = flat_params(cfg)
    flat["optimizer"] = _target_name(cfg.get("optimizer"))
    flat["scheduler"] = _target_name(cfg.get("scheduler")).removesuffix("_schedule") or "none"
    overridden = [o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
    keys = [*KEY_PARAMS, *(k for k in flat if k.startswith("task.data.augment.")), *overridden, *(f"{k}.name" for k in overridden)]
    params = {k: flat[k] for k in dict.fromkeys(keys) if k in flat}
    return {**params, "task.num_classes": datamodule.num_classes}


def _target_name(node: Any) -> str:
    """``torch.optim.AdamW`` -> ``AdamW``; '' for a node without a target."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    return str(target).rsplit(".", 1)[-1] if target else ""


def sweep_label() -> str | None:
    """In a multirun, what this job sets differently from the others (``model=resnet_small,seed=2,lr=0.003``),
    from the command line's sweeps and the Optuna search space; ``None`` in a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    parsed = OverridesParser.create().parse_overrides([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    swept |= set((OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}).keys())
    job = dict(o.lstrip("+~").split("=", 1) for o in hydra_cfg.overrides.task if "=" in o)
    parts = [f"{key.rsplit('.', 1)[-1]}={job[key]}" for key in job if key in swept]
    return ",".join(parts) or None


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


def log_hyperparams(trainer: L.Trainer, params: dict[str, Any], declared: list[str]) -> None:
    """Hyperparameters for every logger; TensorBoard's HParams tab also needs the metric tags
    declared up front. Lightning's ``log_hyperparams(params, metrics)`` declares them by logging
    each metric's value at step 0, which drew a 0 that no epoch reached at the start of the
    ``val/acc_best`` and ``test/acc`` curves; the summaries are written without it."""
    for lg in trainer.loggers:
        lg.log_hyperparams(params)  # with default_hp_metric=False, TensorBoard only stores them here
        if isinstance(lg, TensorBoardLogger) and trainer.is_global_zero:
            writer = lg.experiment._get_file_writer()  # what Lightning's own log_hyperparams writes to
            for summary in hparams(params, dict.fromkeys(declared, 0.0)):
                writer.add_summary(summary)


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
                signum.name, trainer.current_epoch, trainer.global_step, resume_command(checkpoint, out_dir),
            )  # fmt: skip
        else:
            log.error("%s stopped the run before any checkpoint was written; start it again.", signum.name)
    return SystemExit(128 + signum)


def resume_command(checkpoint: Path, run_dir: Path) -> str:
    """``python <entry point> <this run's overrides> ckpt_path=... hydra.run.dir=...``."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))] if HydraConfig.initialized() else []
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
            trainer.test(task, datamodule=datamodule, ckpt_path=weights_to_test(trainer, cfg.train, f"{monitor}_best" in metrics), weights_only=True)
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
        if any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers) and not trainer.fast_dev_run:
            log.info("TensorBoard: tensorboard --logdir %s", out_dir)  # fast_dev_run (debug=fdr) logs nothing
    return metrics


def weights_to_test(trainer: L.Trainer, trained: bool, validated: bool) -> str | None:
    """The best checkpoint; the weights in memory (``None``) when no validation ran to pick one."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
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
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
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
