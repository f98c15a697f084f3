"""The hyperparameters a run logs for TensorBoard's HParams tab: the choices that decide a number."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from visionbench.data.base import VisionDataModule


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
    "model.name",
    "task.name",
    "seed",
    "optimizer",
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "scheduler",
    "scheduler.warmup_epochs",
    "task.data.batch_size",
    "task.data.image_size",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.precision",
    "task.module.label_smoothing",
    "task.module.class_weights",
    "task.data.sampler",
    "ema_decay",
    "ema_warmup",
    "channels_last",
    "task.data.pipeline",
)


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
