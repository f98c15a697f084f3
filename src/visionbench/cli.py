"""Shared plumbing of the thin entry points in src/: repository root, clean user-facing errors."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from visionbench.errors import ConfigError, VisionbenchError

if TYPE_CHECKING:
    from omegaconf import DictConfig

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO_ROOT / "conf")


def set_repo_root() -> None:
    """Make ``paths.root_dir`` default to the repository, wherever the command is run from."""
    os.environ.setdefault("VISIONBENCH_ROOT", str(REPO_ROOT))


def start_command(config_name: str) -> None:
    """What a Hydra entry point does before Hydra reads the command line: the repository root, and one
    paragraph (exit status 1) for a key the composed config does not have."""
    set_repo_root()
    try:
        check_override_keys(config_name, sys.argv[1:])
    except ConfigError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def user_message(err: VisionbenchError) -> str:
    """The paragraph of ``err``, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception in the main process as the same type whose message
    is "Caught X in DataLoader worker process N. Original Traceback ..."; the paragraph we wrote
    is the text after the traceback's last ``module.X: `` line.
    """
    text = str(err)
    marker = f"{type(err).__module__}.{type(err).__qualname__}: "
    if text.startswith(f"Caught {type(err).__name__} ") and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text


def report_errors(fn: Callable[[], T]) -> T:
    """Run ``fn``; a ``VisionbenchError`` (bad data or config) prints its paragraph, not a traceback.

    A single run then exits with status 1. A job of a Hydra multirun (``-m``) instead hands the
    error to Hydra, which records the job as failed and goes on with the others (one diverging
    seed or Optuna trial must not throw away the rest of the sweep): ``visionbench.sweep.FailedJobs``
    appends it to ``<sweep dir>/failed_jobs.txt``; the basic sweeper exits with status 1 after
    the last job, Optuna marks the trial FAIL. A distributed job still exits: its other ranks
    may be waiting in a collective, and only ending this process releases them.
    """
    try:
        return fn()
    except Exception as raised:  # only user errors are handled, the rest re-raised as is
        err = user_error(raised)
        if err is None:
            raise
        message = user_message(err)
        log_to_files(f"{type(err).__name__}: {message}")
        print(f"\nerror: {message}", file=sys.stderr)
        if in_multirun_job() and not in_distributed_job():
            raise err from None
        remove_stub_run_folder()
        raise SystemExit(1) from None


def remove_stub_run_folder() -> None:
    """A single run that failed before writing anything but Hydra's saved config and its log
    leaves no folder: the paragraph was printed, and each typo would otherwise add a stub to
    ``logs/<task>/runs/``. A folder holding anything else (checkpoints, events) stays, and so
    do sweep jobs' folders (their logs are how a sweep is read)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    if not HydraConfig.initialized():
        return
    hydra_cfg = cast(DictConfig, HydraConfig.get())  # typed as its schema (HydraConf); a DictConfig at run time
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir", throw_on_missing=False)
    if not output_dir:  # composed without running (tests, tools)
        return
    folder = Path(output_dir).resolve()
    if not folder.is_dir() or folder == Path.cwd().resolve():
        return
    entries = list(folder.iterdir())
    if any(p.suffix == ".log" for p in entries) and all(p.name == ".hydra" or p.suffix == ".log" for p in entries):
        shutil.rmtree(folder, ignore_errors=True)


def user_error(err: BaseException) -> VisionbenchError | None:
    """The user error behind ``err``, if it is one: ours, ours wrapped (at any depth) by
    ``hydra.utils.instantiate`` (e.g. a pretrained-weights file missing while the network is
    built), a misspelt added key, or a required config value left unset (``ckpt_path: ???``)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    while isinstance(err, InstantiationException) and isinstance(err.__cause__, (InstantiationException, VisionbenchError)):
        err = err.__cause__
    if isinstance(err, InstantiationException):
        return unknown_argument(err)
    if isinstance(err, MissingMandatoryValue):
        key = err.full_key or "a required value"
        return ConfigError(f"{key} has no value and this command needs one: add {key}=... to the command line.")
    return err if isinstance(err, VisionbenchError) else None


def unknown_argument(err: BaseException) -> ConfigError | None:
    """``+trainer.max_epoch=1`` (Hydra's own advice for a key the config lacks) reaches the class as
    an unexpected keyword: name the config key and the closest argument the class takes.

    Only when the target itself (or a base class it forwards ``**kwargs`` to) refused the keyword:
    a bad call inside its ``__init__`` is a bug and keeps its traceback. Keys of ``_partial_``
    nodes (optimizers) fail later, when the partial is called, and keep theirs too.
    """
    from hydra.utils import get_object

    refused = re.search(r"([\w.]+)\(\) got an unexpected keyword argument '(\w+)'", str(err.__cause__))
    target = re.search(r"target '([\w.]+)'", str(err))
    if refused is None or target is None:
        return None
    try:
        callee = get_object(target[1])
    except ImportError:
        return None
    refusers = {f"{c.__qualname__}.__init__" for c in getattr(callee, "__mro__", ())} | {getattr(callee, "__qualname__", "")}
    if refused[1] not in refusers:
        return None
    argument = refused[2]
    node = re.search(r"full_key: (\S+)", str(err))
    key = f"{node[1]}.{argument}" if node else argument
    try:
        accepted = list(inspect.signature(callee).parameters)
    except (ValueError, TypeError):
        accepted = []
    close = difflib.get_close_matches(argument, accepted, n=1)
    hint = f" Did you mean {f'{node[1]}.' if node else ''}{close[0]}?" if close else ""
    return ConfigError(f"{key} is not a setting of {target[1]}.{hint} Correct or remove the override +{key}=...")


def log_to_files(message: str) -> None:
    """Record ``message`` in the run's log file (``train.log``) only: the console gets the
    ``error:`` paragraph once, on stderr."""
    record = logging.LogRecord("visionbench", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def in_multirun_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_distributed_job() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def check_override_keys(config_name: str, argv: list[str]) -> None:
    """Answer a command-line key that the composed config does not have with one paragraph listing the
    keys its node does have, before Hydra answers "Key 'x' is not in struct" without them.

    Group choices (``model=cnn``, the first value of a sweep) are composed once, then every other plain
    ``a.b.c=value`` or top-level ``key=value`` override (not ``+``/``~``, not ``hydra.*``) is looked up in
    the result, so a misspelt top-level key (``sede=3``) is answered too.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except HydraException:
        return  # Hydra's own parser error says what is wrong with the syntax
    plain = [o for o in overrides if o.is_force_add() is False and o.is_add() is False and o.is_delete() is False]
    plain = [o for o in plain if not o.key_or_group.startswith("hydra.") and o.key_or_group != "hydra"]
    if not plain:
        return
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            top_groups = set(GlobalHydra.instance().config_loader().list_groups(""))
            groups = [o for o in plain if "." not in o.key_or_group and o.package is None and o.key_or_group in top_groups]
            choices = [
                f"{o.key_or_group}={next(iter(o.sweep_string_iterator()), '') if o.is_sweep_override() else o.value()}" for o in groups
            ]
            cfg = compose(config_name, overrides=choices)
    except HydraException:
        return  # an unknown group option: Hydra's message lists the available ones
    finally:
        GlobalHydra.instance().clear()
    for key in [o.key_or_group for o in plain if o not in groups]:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None, throw_on_missing=False) if parent else cfg
        if node is None:  # e.g. eval's task: null (the checkpoint's task is read at run time)
            raise ConfigError(
                f"{key}: {parent} is not set in the {config_name} config, so it has no key {leaf} to override. "
                f"A setting is added with a +: +{key}=..."
            )
        if not isinstance(node, DictConfig) or leaf in node.keys():  # noqa: SIM118  # keys(): a ??? value counts, `in` skips it
            continue
        raise ConfigError(unknown_key_message(key, node, config_name))


def unknown_key_message(key: str, node: DictConfig, config_name: str = "train") -> str:
    """The paragraph for ``key``, a key its node (the ``config_name`` config itself for a top-level key) does not have."""
    parent, _, leaf = key.rpartition(".")
    group = parent.split(".", 1)[0]
    options = [str(k) for k in node if not str(k).startswith("_")]
    close = difflib.get_close_matches(leaf, options, n=1)
    target = node.get("_target_")
    has = f"It has: {', '.join(map(str, options))}." if options else "It has no keys of its own."
    hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    extra = (
        f" A setting that {target} takes but the config does not list is added with a +: +{key}=..."
        if target
        else f" A new key is added with a +: +{key}=..."
    )
    if group == "scheduler":
        extra += (
            " Any torch scheduler plugs in as scheduler=torch scheduler._target_=torch.optim.lr_scheduler.StepLR "
            "+scheduler.step_size=1 (conf/scheduler/torch.yaml)."
        )
    where = parent or f"the {config_name} config"
    return f"{key} is not a key of {where}.{hint} {has}{extra}"
