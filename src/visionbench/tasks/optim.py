"""The optimiser and learning-rate schedule of a run, from the ``optimizer``/``scheduler`` config groups.

The built-in schedules (``cosine``, ``poly``, ``step``, ``onecycle``, ``budget``) are stepped once
per optimizer step, so a warmup is smooth and the decay ends exactly at the last step. Each is a
pure function of the optimizer step and the run's *current* ``Horizon`` (its length in steps, Lightning's
estimated stepping batches, and its time budget), and its checkpointed state is the step
alone (``StepFunctionLR``). So a run resumed with a larger ``trainer.max_epochs`` follows the
schedule of its new length from the checkpoint's step on, and one resumed with the same length is
bit-identical to a straight run; torch's scheduler objects would restore the old length with their
state. The configs count in epochs (``warmup_epochs``, fractional allowed; ``step_size``) and the
builders convert.

``scheduler=torch`` plugs in any ``torch.optim.lr_scheduler`` class by ``_target_``, stepped per
epoch or per optimizer step (``scheduler.interval``); ``ReduceLROnPlateau`` follows ``task.monitor``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, cast

import lightning as L
from hydra.utils import get_object, instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from visionbench.errors import ConfigError

log = logging.getLogger(__name__)


class MonitoredTask(Protocol):
    """What a schedule reads of its task (``tasks.base.VisionTask``, which imports this module): the
    trainer, for the run's length, and the monitored metric, for plateau schedulers."""

    @property
    def trainer(self) -> L.Trainer: ...

    monitor: str
    monitor_mode: str


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
TORCH_EXAMPLE = "scheduler=torch scheduler._target_=torch.optim.lr_scheduler.StepLR +scheduler.step_size=30"
INTERVALS = ("step", "epoch")
Rate = Callable[[float, int], float]  # (the optimizer's lr, optimizer step) -> the lr of that step


def optimization_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The task's ``optimizer``, ``scheduler``, ``norm_weight_decay`` and ``head_lr_mult`` arguments from
    the run's top-level groups; ``{}`` for a run config written before those groups existed (its
    ``task.module`` holds its own optimizer nodes, and evaluation never calls them)."""
    if "optimizer" not in cfg:
        return {}
    optimizer_cfg = cfg.optimizer.copy()
    with open_dict(optimizer_cfg):
        norm_weight_decay = optimizer_cfg.pop("norm_weight_decay", None)
        head_lr_mult = optimizer_cfg.pop("head_lr_mult", None)
    scheduler_cfg = cfg.get("scheduler")
    return {
        "optimizer": instantiate(optimizer_cfg, _convert_="all"),
        "scheduler": schedule_of(scheduler_cfg) if scheduler_cfg else None,
        "norm_weight_decay": norm_weight_decay,
        "head_lr_mult": head_lr_mult,
    }


def parameter_groups(
    module: nn.Module, norm_weight_decay: float | None = None, head_lr_mult: float | None = None, lr: float = 0.0
) -> list[dict[str, Any]]:
    """Up to four groups, in this order: the trunk's decayed parameters, the trunk's norm-layer
    parameters and biases (with ``norm_weight_decay``, when set), then the same two of the head at
    ``lr x head_lr_mult`` (when set). The trunk is every parameter inside a submodule named
    ``backbone`` (the ResNet trunk of FCN, FCN-8s and FPN); the head is the rest, the decoder
    that a pretrained trunk's recipes train faster. Empty groups are left out."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(h, e): [] for h in (False, True) for e in (False, True)}
    seen: set[int] = set()
    for layer_name, layer in module.named_modules():
        for name, param in layer.named_parameters(recurse=False):
            if id(param) in seen:  # a shared parameter belongs to one group only
                continue
            seen.add(id(param))
            exempt = norm_weight_decay is not None and (isinstance(layer, NORM_LAYERS) or name == "bias")
            head = head_lr_mult is not None and "backbone" not in layer_name.split(".")
            groups[(head, exempt)].append(param)
    out = []
    for (head, exempt), params in groups.items():
        group: dict[str, Any] = {"params": params}
        if exempt:
            group["weight_decay"] = norm_weight_decay
        if head and head_lr_mult is not None:
            group["lr"] = lr * head_lr_mult
        out.append(group)
    return [group for group in out if group["params"]]


def build_optimizer(
    factory: Callable[..., Optimizer], module: nn.Module, norm_weight_decay: float | None = None, head_lr_mult: float | None = None
) -> Optimizer:
    """``factory`` (a ``_partial_`` optimizer) over ``module``'s parameters; one group unless
    ``norm_weight_decay`` (null: norm layers and biases decay like the rest) or ``head_lr_mult``
    (null: the head learns at the trunk's rate) is set."""
    if norm_weight_decay is None and head_lr_mult is None:
        return factory(params=module.parameters())
    lr = 0.0
    if head_lr_mult is not None:
        if not (isinstance(head_lr_mult, (int, float)) and head_lr_mult > 0):
            raise ConfigError(f"optimizer.head_lr_mult={head_lr_mult} must be a number > 0 (e.g. 10), or null: the head at the trunk's lr.")
        if not any("backbone" in name.split(".") for name, _ in module.named_modules()):
            net = getattr(module, "net", module)
            raise ConfigError(
                f"optimizer.head_lr_mult={head_lr_mult} multiplies the lr of the parameters outside the network's "
                f"trunk (a submodule named 'backbone'), and {type(net).__name__} has none: set optimizer.head_lr_mult=null, "
                "or use a network with a backbone (model=fcn, fcn8s or fpn)."
            )
        lr = float(factory.keywords["lr"])  # type: ignore[attr-defined]  # a Hydra partial: every optimizer config sets lr
    return factory(params=parameter_groups(module, norm_weight_decay, head_lr_mult, lr))


@dataclass(frozen=True)
class Horizon:
    """How long the fit runs, which a step-wise schedule needs and the config cannot know."""

    total_steps: float  # optimizer steps of the whole fit; inf when only a time budget ends it
    steps_per_epoch: int
    elapsed_fraction: Callable[[], float] | None = None  # of trainer.max_time; None without one
    limit: str = ""  # the trainer setting that sets total_steps, e.g. "trainer.max_epochs=10"

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
    """The ``Horizon`` of ``trainer``'s fit; call from ``configure_optimizers``. On resume it is the
    whole fit's, ``trainer.max_epochs`` being the new total."""
    total = trainer.estimated_stepping_batches
    if trainer.train_dataloader is None:  # max_epochs=-1: Lightning did not load the data to estimate
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches)) if math.isfinite(batches) else 1
    limit = f"trainer.max_steps={trainer.max_steps}" if trainer.max_steps == total else f"trainer.max_epochs={trainer.max_epochs}"
    return Horizon(total, steps_per_epoch, time_budget_fraction(trainer), limit)


def time_budget_fraction(trainer: L.Trainer) -> Callable[[], float] | None:
    """Elapsed fraction of ``trainer.max_time`` as Lightning's ``Timer`` (which stops the run at
    the budget, and keeps its count across a resume) counts it, taken on rank 0 so every process
    steps the same learning rate."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)  # type: ignore[attr-defined]  # set by Lightning, undeclared
    remaining = timer.time_remaining() if timer is not None else None
    if timer is None or remaining is None:
        return None
    budget = timer.time_elapsed() + remaining  # exact before the fit starts: the clock is not running yet

    def fraction() -> float:
        elapsed = trainer.strategy.broadcast(timer.time_elapsed(), src=0)
        return min(max(elapsed / budget, 0.0), 1.0)

    return fraction


class StepFunctionLR(LRScheduler):
    """lr = ``rate(base lr, step)`` and, for a one-cycle schedule, momentum (or Adam's beta1) =
    ``momentum(step)``: a pure function of the optimizer step.

    Its state is the step alone, so loading a checkpoint sets the lr of the checkpoint's step under
    *this* run's ``rate``, which knows the run's current length. Any torch scheduler's state has that
    step as ``last_epoch``, so checkpoints written with torch's schedulers resume too. ``rate`` is a
    closure, never pickled into a checkpoint.
    """

    def __init__(self, optimizer: Optimizer, rate: Rate, momentum: Callable[[int], float] | None = None) -> None:
        self.rate = rate
        self.momentum = momentum
        super().__init__(optimizer)

    def get_lr(self) -> list[float | Tensor]:
        if self.momentum is not None:
            value = self.momentum(self.last_epoch)
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (value, *group["betas"][1:])
                else:
                    group["momentum"] = value
        return [self.rate(float(base), self.last_epoch) for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue at the checkpoint's step; Lightning restores the optimizer first, whose lr this replaces."""
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict.get("_step_count", self.last_epoch + 1)
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


def _warmup_steps(horizon: Horizon, warmup_epochs: float, schedule: str) -> int:
    warmup = max(horizon.steps(warmup_epochs), 0)
    if warmup > 0 and warmup >= horizon.total_steps:
        raise ConfigError(
            f"scheduler.warmup_epochs={warmup_epochs} is {warmup} optimizer steps, but the whole run is "
            f"{horizon.total_steps:g} steps ({horizon.steps_per_epoch} per epoch): lower scheduler.warmup_epochs "
            f"or train longer (trainer.max_epochs). scheduler={schedule}"
        )
    return warmup


def _warmup_then(warmup: int, start_factor: float, main: Rate) -> Rate:
    """Linear warmup from ``start_factor`` x lr over ``warmup`` steps (torch's LinearLR), then
    ``main`` counting its steps from the warmup's end (as torch's SequentialLR)."""

    def rate(base: float, step: int) -> float:
        if step < warmup:
            return base * (start_factor + (1.0 - start_factor) * step / warmup)
        return main(base, step - warmup)

    return rate


def cosine_schedule(
    optimizer: Optimizer, horizon: Horizon, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01, eta_min: float = 0.0
) -> LRScheduler:
    """Warmup, then cosine annealing to ``eta_min`` at the end of the run (torch's CosineAnnealingLR)."""
    warmup = _warmup_steps(horizon, warmup_epochs, "cosine")
    span = horizon.finite_total("cosine") - warmup

    def anneal(base: float, step: int) -> float:
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * min(step, span) / span)) / 2

    return StepFunctionLR(optimizer, _warmup_then(warmup, warmup_start_factor, anneal))


def poly_schedule(
    optimizer: Optimizer, horizon: Horizon, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01, power: float = 0.9
) -> LRScheduler:
    """Warmup, then lr x (1 - t/T)^power to zero at the end of the run (torch's PolynomialLR)."""
    warmup = _warmup_steps(horizon, warmup_epochs, "poly")
    span = horizon.finite_total("poly") - warmup

    def decay(base: float, step: int) -> float:
        return base * (1.0 - min(step, span) / span) ** power

    return StepFunctionLR(optimizer, _warmup_then(warmup, warmup_start_factor, decay))


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
    warmup = _warmup_steps(horizon, warmup_epochs, "step")

    def staircase(base: float, step: int) -> float:
        try:
            return base * gamma ** (step // step_steps)
        except OverflowError:  # a float power raises where torch's StepLR multiplies on to inf
            return math.inf

    return StepFunctionLR(optimizer, _warmup_then(warmup, warmup_start_factor, staircase))


def _anneal(strategy: str) -> Callable[[float, float, float], float]:
    """OneCycleLR's interpolation from ``start`` to ``end`` at fraction ``pct``."""
    if strategy == "cos":
        return lambda start, end, pct: end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    if strategy == "linear":
        return lambda start, end, pct: (end - start) * pct + start
    raise ConfigError(f"scheduler.anneal_strategy={strategy!r} is not one of cos, linear: e.g. scheduler.anneal_strategy=linear.")


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
    """torch's ``OneCycleLR`` peaking at the optimizer's lr; its rising phase is the warmup. The
    peak is at ``pct_start`` of the current horizon, or after ``warmup_epochs`` whatever the length."""
    total = horizon.finite_total("onecycle")
    if warmup_epochs is not None:
        pct_start = horizon.steps(warmup_epochs) / total
    if not 0 <= pct_start <= 1:
        raise ConfigError(
            f"scheduler=onecycle rises over {pct_start:g} of the run (scheduler.pct_start, or scheduler.warmup_epochs "
            "over the run's epochs), which must be between 0 and 1: lower it or train longer (trainer.max_epochs)."
        )
    if cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
        raise ConfigError(
            f"scheduler.cycle_momentum=true cycles the optimizer's momentum, and {type(optimizer).__name__} has none: "
            "set scheduler.cycle_momentum=false or use optimizer=sgd / adam / adamw."
        )
    anneal = _anneal(anneal_strategy)
    peak, end = pct_start * total - 1, total - 1  # OneCycleLR's phase ends, in steps

    def cycle(step: int, start: float, top: float, last: float) -> float:
        step = min(step, end)
        if step <= peak:
            return anneal(start, top, step / peak if peak > 0 else 1.0)
        return anneal(top, last, (step - peak) / (end - peak))

    def rate(base: float, step: int) -> float:
        return cycle(step, base / div_factor, base, base / div_factor / final_div_factor)

    def momentum(step: int) -> float:
        return cycle(step, max_momentum, base_momentum, max_momentum)

    return StepFunctionLR(optimizer, rate, momentum if cycle_momentum else None)


def budget_schedule(optimizer: Optimizer, horizon: Horizon, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01) -> LRScheduler:
    """Linear decay to zero over the wall-clock budget (Li et al., "Budgeted Training", ICLR 2020).

    A run with a step or epoch limit too ends at whichever comes first, so the decay follows the
    nearer end: lr x min(1 - elapsed/budget, 1 - step/steps), and it says so at the start.
    """
    fraction = horizon.elapsed_fraction
    if fraction is None:
        raise ConfigError(budget_without_max_time())
    warmup = _warmup_steps(horizon, warmup_epochs, "budget")
    span = horizon.total_steps - warmup  # inf when only the budget ends the run
    if math.isfinite(span) and rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning, undeclared
        log.warning(
            "scheduler=budget with %s: the run ends at whichever comes first, the time budget (trainer.max_time) or "
            "%d optimizer steps, and the learning rate decays to 0 at that end. If the steps end first, the run spends "
            "less than its budget (wall_time_s in metrics.json says how much) and is no equal-budget comparison: "
            "set trainer.max_epochs=-1 (and no trainer.max_steps) so that the budget alone ends it.",
            horizon.limit,
            horizon.total_steps,
        )

    def remaining(base: float, step: int) -> float:
        return base * min(1.0 - fraction(), 1.0 - min(step, span) / span)

    return StepFunctionLR(optimizer, _warmup_then(warmup, warmup_start_factor, remaining))


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


def _is_builder(target: Any) -> bool:
    """A schedule builder of this module's kind: it takes the run's ``horizon``."""
    return inspect.isfunction(target) and "horizon" in inspect.signature(target).parameters


def _is_torch_scheduler(target: Any) -> TypeGuard[type[LRScheduler | ReduceLROnPlateau]]:
    return isinstance(target, type) and issubclass(target, (LRScheduler, ReduceLROnPlateau))


def check_scheduler(cfg: DictConfig) -> None:
    """One paragraph for a ``scheduler`` node that cannot work, said before any data is prepared:
    no or a wrong ``_target_``, a key its target does not take (listing those it does), a missing
    argument, a bad ``interval``; and a budget without ``trainer.max_time`` or with a
    ``trainer.min_epochs`` (which would train on past the budget at lr 0)."""
    node = cfg.get("scheduler")
    if not node:
        return
    if OmegaConf.is_missing(node, "_target_"):
        raise ConfigError(
            "scheduler=torch plugs in any torch.optim.lr_scheduler class by its scheduler._target_, and none was "
            f"given: e.g. `{TORCH_EXAMPLE}` (arguments are added with +scheduler.<name>=...)."
        )
    name = node.get("_target_")
    try:
        target = get_object(name)
    except ImportError:
        target = None
    if not (_is_builder(target) or _is_torch_scheduler(target)):
        raise ConfigError(
            f"scheduler._target_={name} is not a learning-rate scheduler: give a torch.optim.lr_scheduler class "
            f"(or a subclass of its LRScheduler or ReduceLROnPlateau), e.g. `{TORCH_EXAMPLE}`."
        )
    _check_keys(node, name, target)
    if uses_time_budget(node):
        _check_budget(cfg)


def _check_keys(node: DictConfig, name: str, target: Any) -> None:
    builder = _is_builder(target)
    params = inspect.signature(target).parameters
    own = [p for p in params.values() if p.name not in ("optimizer", "horizon", "self") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    allowed = [p.name for p in own] + ([] if builder else ["interval"])
    given = [str(key) for key in node if not str(key).startswith("_")]
    if builder:
        what, listed = f"a key of scheduler={name.rsplit('.', 1)[-1].removesuffix('_schedule')}", "Its keys"
    else:
        what, listed = f"an argument of {name}", "Its arguments"
    for key in given:
        if key in allowed or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" Did you mean scheduler.{close[0]}?" if close else ""
        extra = "" if builder else " (and scheduler.interval: step or epoch)"
        raise ConfigError(
            f"scheduler.{key} is not {what}. {listed}: {', '.join(p.name for p in own)}{extra}.{hint} "
            f"Correct or remove the override scheduler.{key}=..., or pick the scheduler that has it (conf/scheduler/)."
        )
    missing = [p.name for p in own if p.default is p.empty and p.name not in given]
    if missing:
        raise ConfigError(f"{name} needs scheduler.{missing[0]}: add +scheduler.{missing[0]}=... to the command line.")
    interval = node.get("interval", "step")
    if interval not in INTERVALS:
        raise ConfigError(
            f"scheduler.interval={interval} is not one of {' or '.join(INTERVALS)}: the scheduler is stepped once per "
            "optimizer step (step) or once per epoch (epoch), e.g. scheduler.interval=epoch."
        )


def _check_budget(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "trainer.max_time", default=None) is None:
        raise ConfigError(budget_without_max_time())
    min_epochs = OmegaConf.select(cfg, "trainer.min_epochs", default=None)
    if min_epochs:
        raise ConfigError(
            f"scheduler=budget ends the learning rate at 0 at trainer.max_time, and trainer.min_epochs={min_epochs} "
            "would train on past the budget at lr 0 when it is shorter than that many epochs (Lightning lets "
            "min_epochs override max_time). Remove it: trainer.min_epochs=null."
        )


def schedule_of(node: DictConfig) -> Schedule:
    """The ``Schedule`` of a ``scheduler`` group node; ``interval`` is ours, not the scheduler's."""
    node = node.copy()
    with open_dict(node):
        interval = node.pop("interval", "step")
    return Schedule(instantiate(node, _convert_="all"), interval)


class Schedule:
    """A ``scheduler`` node, built: the scheduler's partial, and whether Lightning steps it per
    optimizer ``step`` or per ``epoch``. A plain class, not a dataclass: ``hydra.utils.instantiate``
    would turn a dataclass argument of the task into a config node."""

    def __init__(self, build: functools.partial[Any], interval: str = "step") -> None:
        self.build = build
        self.interval = interval

    def __call__(self, task: MonitoredTask, optimizer: Optimizer) -> dict[str, Any]:
        """Lightning's ``lr_scheduler`` config for ``optimizer``: a builder of this module gets the
        run's horizon; a plateau scheduler watches ``task.monitor``, in ``task.monitor_mode`` unless
        the node sets its own ``mode``."""
        arguments: dict[str, Any] = {}
        if _is_builder(self.build.func):
            arguments["horizon"] = horizon_of(task.trainer)
        plateau = _is_torch_scheduler(self.build.func) and issubclass(self.build.func, ReduceLROnPlateau)
        if plateau and "mode" not in self.build.keywords:
            arguments["mode"] = task.monitor_mode
        config = {"scheduler": self.build(optimizer=optimizer, **arguments), "interval": self.interval, "frequency": 1}
        if plateau:
            config["monitor"] = task.monitor
        return config


def configure(
    task: L.LightningModule,
    factory: Callable[..., Optimizer],
    schedule: Schedule | None,
    norm_weight_decay: float | None = None,
    head_lr_mult: float | None = None,
) -> Any:
    """What ``configure_optimizers`` returns: the optimizer, and its schedule as Lightning steps it."""
    optimizer = build_optimizer(factory, task, norm_weight_decay, head_lr_mult)
    if schedule is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": schedule(cast(MonitoredTask, task), optimizer)}
