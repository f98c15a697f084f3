"""Type checks of the numeric config knobs, before anything is built.

Hydra passes ``trainer.max_epochs=abc`` through as the string ``"abc"``; Lightning, PyTorch or
a DataLoader would then fail much later with a message that names none of our keys. Checking
here turns every such typo into one paragraph naming the key, the value and a valid example.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionbench.errors import ConfigError
from visionbench.tasks.optim import check_scheduler


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_devices(value: Any) -> bool:
    """What Lightning accepts for ``devices``: a count, ``-1``, ``"auto"``, a list of ids or ``"0,1"``."""
    if _is_int(value):
        return value >= -1
    if isinstance(value, (list, ListConfig)):
        return len(value) > 0 and all(_is_int(v) and v >= 0 for v in value)
    return isinstance(value, str) and (value == "auto" or re.fullmatch(r"-1|\d+(,\d+)*,?", value) is not None)


@dataclass(frozen=True)
class Knob:
    key: str
    accepts: Callable[[Any], bool]
    expected: str
    example: str


KNOBS = (
    Knob("seed", _is_int, "an integer", "seed=42"),
    Knob("trainer.max_epochs", lambda v: _is_int(v) and v >= -1, "an integer >= 1 (-1: no limit)", "trainer.max_epochs=10"),
    Knob("trainer.min_epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0", "trainer.min_epochs=1"),
    Knob("trainer.devices", _is_devices, "a device count, -1, auto, or a list of device ids", "trainer.devices=2"),
    Knob("trainer.num_nodes", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "trainer.num_nodes=2"),
    Knob("trainer.log_every_n_steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "trainer.log_every_n_steps=10"),
    Knob("trainer.check_val_every_n_epoch", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "trainer.check_val_every_n_epoch=1"),
    Knob("task.data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1", "task.data.batch_size=32"),
    Knob("task.data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0", "task.data.num_workers=2"),
    Knob("task.data.image_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (pixels)", "task.data.image_size=128"),
    Knob("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0", "optimizer.lr=0.001"),
    Knob("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0", "optimizer.weight_decay=1e-4"),
    Knob("optimizer.norm_weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0 (or null: as weight_decay)",
         "optimizer.norm_weight_decay=0.0"),
    Knob("optimizer.momentum", lambda v: _is_number(v) and v >= 0, "a number >= 0", "optimizer.momentum=0.9"),
    Knob("ema_decay", lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1 (or null: no averaging)", "ema_decay=0.999"),
    Knob("ema_warmup", lambda v: isinstance(v, bool), "true or false", "ema_warmup=true"),
    Knob("scheduler.warmup_epochs", lambda v: _is_number(v) and v >= 0, "a number of epochs >= 0 (fractions allowed)",
         "scheduler.warmup_epochs=0.5"),
    Knob("model.net.bn_momentum", lambda v: _is_number(v) and 0 < v <= 1,
         "a number in (0, 1]: each batch's share of the running statistics (Keras' momentum 0.99 is 0.01)",
         "model.net.bn_momentum=0.01"),
    Knob("model.net.bn_eps", lambda v: _is_number(v) and v > 0, "a number > 0", "model.net.bn_eps=1e-3"),
)  # fmt: skip


def check_numeric_knobs(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first knob whose value has the wrong type or range.

    Absent or null keys are fine (e.g. ``image_size`` on segmentation tasks, ``max_epochs: null``).
    The ``scheduler`` node (its target, keys, and a budget's ``trainer.max_time``) is checked here
    too, before any data is prepared.
    """
    for knob in KNOBS:
        value = OmegaConf.select(cfg, knob.key, default=None)
        if value is None or knob.accepts(value):
            continue
        raise ConfigError(
            f"Config key {knob.key} is {value!r} ({type(value).__name__}), but it must be {knob.expected}. "
            f"Fix the override on the command line or in the config file, e.g. `{knob.example}`."
        )
    if cfg.get("ema_warmup") and cfg.get("ema_decay") is None:
        raise ConfigError(
            "ema_warmup=true warms up an exponential moving average of the weights, but ema_decay is null, so "
            "there is none: set one too, e.g. `ema_decay=0.999 ema_warmup=true`, or drop ema_warmup."
        )
    check_scheduler(cfg)
