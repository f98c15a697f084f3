"""The optimiser and learning-rate schedule of a run, from the ``optimizer``/``scheduler`` config groups.

Schedules are stepped once per optimizer step (Lightning ``interval: step``), so a warmup is smooth
and the decay ends exactly at the last step. How long a run is in steps is known only once the
Trainer has its data (``Horizon``, from ``trainer.estimated_stepping_batches``): the configs count
in epochs (``warmup_epochs``, fractional allowed; ``step_size``) and the builders below convert.
Each builder composes torch's own schedulers (LinearLR warmup + SequentialLR) rather than its own
arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    PolynomialLR,
    SequentialLR,
    StepLR,
)

from visionbench.errors import ConfigError

# Layers whose weights are scales and shifts, not filters: torchvision's references exempt them
# (and biases) from weight decay with --norm-weight-decay 0.
NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
MAX_TIME_EXAMPLE = "trainer.max_time=00:00:15:00"


def optimization_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The task's ``optimizer``, ``scheduler`` and ``norm_weight_decay`` arguments from the run's
    top-level groups; ``{}`` for a run config written before those groups existed (its
    ``task.module`` holds its own optimizer nodes, and evaluation never calls them)."""
    if "optimizer" not in cfg:
        return {}
    optimizer_cfg = cfg.optimizer.copy()
    with open_dict(optimizer_cfg):
        norm_weight_decay = optimizer_cfg.pop("norm_weight_decay", None)
    scheduler_cfg = cfg.get("scheduler")
    return {
        "optimizer": instantiate(optimizer_cfg, _convert_="all"),
        "scheduler": instantiate(scheduler_cfg, _convert_="all") if scheduler_cfg else None,
        "norm_weight_decay": norm_weight_decay,
    }


def parameter_groups(module: nn.Module, norm_weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: the rest (the optimizer's own weight decay), then norm-layer parameters and
    every bias with ``norm_weight_decay``. Empty groups are left out."""
    decayed: list[nn.Parameter] = []
    exempt: list[nn.Parameter] = []
    seen: set[int] = set()
    for layer in module.modules():
        for name, param in layer.named_parameters(recurse=False):
            if id(param) in seen:  # a shared parameter belongs to one group only
                continue
            seen.add(id(param))
            (exempt if isinstance(layer, NORM_LAYERS) or name == "bias" else decayed).append(param)
    groups = [{"params": decayed}, {"params": exempt, "weight_decay": norm_weight_decay}]
    return [group for group in groups if group["params"]]


def build_optimizer(factory: Callable[..., Optimizer], module: nn.Module, norm_weight_decay: float | None = None) -> Optimizer:
    """``factory`` (a ``_partial_`` optimizer) over ``module``'s parameters; one group unless
    ``norm_weight_decay`` is set (null: norm layers and biases decay like the rest)."""
    if norm_weight_decay is None:
        return factory(params=module.parameters())
    return factory(params=parameter_groups(module, norm_weight_decay))


@dataclass(frozen=True)
class Horizon:
    """How long the fit runs, which a step-wise schedule needs and the config cannot know."""

    total_steps: float  # optimizer steps of the whole fit; inf when only a time budget ends it
    steps_per_epoch: int
    elapsed_fraction: Callable[[], float] | None = None  # of trainer.max_time; None without one

    def steps(self, epochs: float) -> int:
        return round(epochs * self.steps_per_epoch)

    def finite_total(self, schedule: str) -> int:
        if math.isinf(self.total_steps):
            raise ConfigError(
                f"scheduler={schedule} decays over the run's number of optimizer steps, and this run has no "
                "step or epoch limit (trainer.max_epochs=-1 without trainer.max_steps). Set trainer.max_epochs "
                f"or trainer.max_steps, or decay over a wall-clock budget: scheduler=budget {MAX_TIME_EXAMPLE}."
            )
        return int(self.total_steps)


def horizon_of(trainer: L.Trainer) -> Horizon:
    """The ``Horizon`` of ``trainer``'s fit; call from ``configure_optimizers``."""
    total = trainer.estimated_stepping_batches
    if trainer.train_dataloader is None:  # max_epochs=-1: Lightning did not load the data to estimate
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches)) if math.isfinite(batches) else 1
    return Horizon(total, steps_per_epoch, time_budget_fraction(trainer))


def time_budget_fraction(trainer: L.Trainer) -> Callable[[], float] | None:
    """Elapsed fraction of ``trainer.max_time`` as Lightning's ``Timer`` (which stops the run at
    the budget) counts it, taken on rank 0 so every process steps the same learning rate."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if timer is None or remaining is None:
        return None
    budget = timer.time_elapsed() + remaining  # exact before the fit starts: the clock is not running yet

    def fraction() -> float:
        elapsed = trainer.strategy.broadcast(timer.time_elapsed(), src=0)
        return min(max(elapsed / budget, 0.0), 1.0)

    return fraction


def _warmup_then(
    optimizer: Optimizer,
    horizon: Horizon,
    warmup_epochs: float,
    warmup_start_factor: float,
    main: Callable[[int], LRScheduler],
    schedule: str,
) -> LRScheduler:
    """Linear warmup from ``warmup_start_factor`` x lr over ``warmup_epochs``, then ``main(warmup_steps)``."""
    warmup = horizon.steps(warmup_epochs)
    if warmup <= 0:
        return main(0)
    if warmup >= horizon.total_steps:
        raise ConfigError(
            f"scheduler.warmup_epochs={warmup_epochs} is {warmup} optimizer steps, but the whole run is "
            f"{horizon.total_steps:g} steps ({horizon.steps_per_epoch} per epoch): lower scheduler.warmup_epochs "
            f"or train longer (trainer.max_epochs). scheduler={schedule}"
        )
    ramp = LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main(warmup)], milestones=[warmup])


def cosine_schedule(
    optimizer: Optimizer, horizon: Horizon, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01, eta_min: float = 0.0
) -> LRScheduler:
    total = horizon.finite_total("cosine")
    return _warmup_then(
        optimizer, horizon, warmup_epochs, warmup_start_factor,
        lambda warmup: CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min), "cosine",
    )  # fmt: skip


def poly_schedule(
    optimizer: Optimizer, horizon: Horizon, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01, power: float = 0.9
) -> LRScheduler:
    total = horizon.finite_total("poly")
    return _warmup_then(
        optimizer, horizon, warmup_epochs, warmup_start_factor,
        lambda warmup: PolynomialLR(optimizer, total_iters=total - warmup, power=power), "poly",
    )  # fmt: skip


def step_schedule(
    optimizer: Optimizer,
    horizon: Horizon,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    step_size: float = 30,
    gamma: float = 0.1,
) -> LRScheduler:
    """lr x ``gamma`` every ``step_size`` epochs (counted after the warmup, as torchvision does)."""
    step_steps = horizon.steps(step_size)
    if step_steps < 1:
        raise ConfigError(
            f"scheduler.step_size={step_size} epochs is less than one optimizer step ({horizon.steps_per_epoch} "
            "per epoch): use a larger scheduler.step_size (in epochs)."
        )
    return _warmup_then(
        optimizer, horizon, warmup_epochs, warmup_start_factor,
        lambda warmup: StepLR(optimizer, step_size=step_steps, gamma=gamma), "step",
    )  # fmt: skip


def onecycle_schedule(
    optimizer: Optimizer,
    horizon: Horizon,
    warmup_epochs: float | None = None,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> LRScheduler:
    """torch's ``OneCycleLR`` peaking at the optimizer's lr; its rising phase is the warmup."""
    total = horizon.finite_total("onecycle")
    if warmup_epochs is not None:
        pct_start = horizon.steps(warmup_epochs) / total
    return OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total, pct_start=pct_start,
        div_factor=div_factor, final_div_factor=final_div_factor, anneal_strategy=anneal_strategy,
        cycle_momentum=cycle_momentum, base_momentum=base_momentum, max_momentum=max_momentum,
    )  # fmt: skip


def budget_schedule(optimizer: Optimizer, horizon: Horizon, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01) -> LRScheduler:
    """Linear decay to zero over the wall-clock budget (Li et al., "Budgeted Training", ICLR 2020)."""
    fraction = horizon.elapsed_fraction
    if fraction is None:
        raise ConfigError(budget_without_max_time())

    def remaining(_step: int) -> float:  # a function, not an object: LambdaLR then leaves it out of checkpoints
        return 1.0 - fraction()

    return _warmup_then(optimizer, horizon, warmup_epochs, warmup_start_factor, lambda _: LambdaLR(optimizer, remaining), "budget")


def budget_without_max_time() -> str:
    return (
        "scheduler=budget decays the learning rate linearly to zero over the wall-clock budget trainer.max_time, "
        f"and this run has none. Set it (DD:HH:MM:SS), e.g. `{MAX_TIME_EXAMPLE}` for 15 minutes, and lift the epoch "
        "limit with trainer.max_epochs=-1 so that the budget ends the run; or pick another scheduler (conf/scheduler/)."
    )


def uses_time_budget(scheduler_cfg: Any) -> bool:
    """Whether a ``scheduler`` config node is ``scheduler=budget``."""
    target = f"{budget_schedule.__module__}.{budget_schedule.__qualname__}"
    return isinstance(scheduler_cfg, (DictConfig, dict)) and scheduler_cfg.get("_target_") == target


def configure(
    module: L.LightningModule,
    factory: Callable[..., Optimizer],
    scheduler: Callable[..., LRScheduler] | None,
    norm_weight_decay: float | None = None,
) -> Any:
    """What ``configure_optimizers`` returns: the optimizer, and its schedule stepped per optimizer step."""
    optimizer = build_optimizer(factory, module, norm_weight_decay)
    if scheduler is None:
        return optimizer
    schedule = scheduler(optimizer=optimizer, horizon=horizon_of(module.trainer))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}

