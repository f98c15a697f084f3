"""Build a run's parts from its composed config, after the checks that fail fast: the DataModule,
the task (network inside), the trainer with its callbacks and loggers, and the input size the
network sees. Every entry point and the benchmarks assemble runs through these builders."""

from __future__ import annotations

import sys
from typing import Any, cast

import hydra
import lightning as L
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from visionbench.callbacks.ema import EMAWeights
from visionbench.callbacks.epoch_seed import EpochSeed
from visionbench.cli import CONFIG_DIR
from visionbench.data.base import VisionDataModule
from visionbench.errors import ConfigError
from visionbench.tasks.base import VisionTask
from visionbench.tasks.optim import optimization_arguments
from visionbench.tasks.segmentation import class_pixels


def compose_train(overrides: list[str]) -> DictConfig:
    """The train config of ``overrides``, composed as ``src/train.py`` composes it: inside a running
    Hydra app (the bench) with its config search path, elsewhere from the project's ``conf/``.
    A group option that does not exist (``model=nosuchnet``) is one paragraph naming the choices."""
    try:
        if GlobalHydra.instance().is_initialized():
            return hydra.compose("train", overrides=overrides)
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            return hydra.compose("train", overrides=overrides)
    except MissingConfigException as err:
        first, *rest = str(err).splitlines()
        what = first.removeprefix("In 'train': ")
        options = ", ".join(line.strip() for line in rest if line.startswith("\t") and "=" not in line)  # not the search path
        raise ConfigError(f"{' '.join(overrides)}: {what}; the configs there are: {options}.") from None


def check_model_task(model_cfg: DictConfig, task_cfg: DictConfig) -> None:
    """Fail at config time when the network serves another task kind (e.g. fcn on shapes)."""
    target = model_cfg.net._target_
    kind = getattr(get_class(target), "task_kind", None)
    if kind != task_cfg.kind:
        raise ConfigError(
            f"model={model_cfg.name} ({target}) is a {kind} network but task={task_cfg.name} is a "
            f"{task_cfg.kind} task. Pick a {task_cfg.kind} model (see conf/model/), or a task of kind {kind}."
        )


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
        callbacks.append(EMAWeights(decay=cfg.ema_decay, warmup=bool(cfg.get("ema_warmup"))))
    label = sweep_label()  # TensorBoard names a sweep's runs by what differs, not by job number alone
    loggers: list[Logger] = [
        instantiate(lg, version=label) if label and lg.get("_target_", "").endswith("TensorBoardLogger") else instantiate(lg)
        for lg in (cfg.get("logger") or {}).values()
        if lg is not None
    ]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


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
        counts["class_pixels"] = class_pixels(datamodule.train_masks(), datamodule.num_classes)
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
    task.run_config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a DictConfig's container is a dict
    if not cfg.get("compile", False):  # a compiled net would compile again for the summary's eval forward
        # One image through the network at start-up: the model summary gets its shapes and FLOPs columns.
        task.example_input_array = torch.zeros(1, 3, *input_size(cfg.task))
    return task


def sweep_label() -> str | None:
    """In a multirun, what this job sets differently from the others (``model=resnet_small,seed=2,lr=0.003``),
    from the command line's sweeps and the Optuna search space; ``None`` in a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = cast(DictConfig, HydraConfig.get())  # typed as its schema (HydraConf); a DictConfig at run time
    parsed = OverridesParser.create().parse_overrides([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    swept |= set((OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}).keys())
    job = dict(o.lstrip("+~").split("=", 1) for o in hydra_cfg.overrides.task if "=" in o)
    parts = [f"{key.rsplit('.', 1)[-1]}={job[key]}" for key in job if key in swept]
    return ",".join(parts) or None
