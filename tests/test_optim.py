"""Optimisers and learning-rate schedules come from the top-level ``optimizer``/``scheduler`` config
groups; schedules are stepped per optimizer step, with a linear warmup counted in epochs."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionbench.config_checks import check_numeric_knobs
from visionbench.errors import ConfigError
from visionbench.tasks.classification import ClassificationTask
from visionbench.tasks.optim import Horizon, optimization_arguments, step_schedule


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def tiny_task(cfg: DictConfig) -> ClassificationTask:
    """The task ``build_task`` makes from ``cfg``'s optimizer and scheduler, on a tiny network."""
    return ClassificationTask(tiny_net(), num_classes=2, **optimization_arguments(cfg))


class LearningRates(Callback):
    """The learning rate of each optimizer step, as the optimizer holds it when the step's batch starts."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit_lrs(task: ClassificationTask, batches: int, *callbacks: Callback, validate: bool = False, **trainer_args: Any) -> list[float]:
    """Fit ``task`` on ``batches`` random batches per epoch (validated on them when ``validate``) and
    return each step's lr."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(2 * batches, 3, 8, 8), torch.randint(0, 2, (2 * batches,))), batch_size=2)
    recorder = LearningRates()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[recorder, *callbacks],
        **{"max_epochs": 1, "limit_val_batches": 1.0 if validate else 0, **trainer_args},
    )
    trainer.fit(task, train_dataloaders=data, val_dataloaders=data if validate else None)
    return recorder.lrs


def test_cosine_warms_up_linearly_then_anneals_to_zero_within_one_epoch(compose_cfg) -> None:
    cfg = compose_cfg(["optimizer=sgd", "optimizer.lr=0.1", "scheduler=cosine", "scheduler.warmup_epochs=0.5"])
    lrs = fit_lrs(tiny_task(cfg), batches=8)  # half an epoch of warmup = 4 of the 8 steps
    warmup = [0.1 * (0.01 + 0.99 * k / 4) for k in range(4)]  # from 1 % of the lr
    cosine = [0.1 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]  # over the 4 steps left
    assert lrs == pytest.approx(warmup + cosine, rel=1e-6)
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 4


def test_step_schedule_keeps_epoch_milestones_while_stepping_per_step(compose_cfg) -> None:
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"])
    lrs = fit_lrs(tiny_task(cfg), batches=3, max_epochs=3)
    assert lrs == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3)


def test_a_step_schedule_whose_lr_overflows_reaches_inf_as_torchs_steplr_does() -> None:
    """A sweep may try gamma=1e30 (the nan tests do): the run must stop on its non-finite loss, not on an OverflowError."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = step_schedule(optimizer, Horizon(total_steps=100, steps_per_epoch=1), step_size=1, gamma=1e30)
    for _ in range(12):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == math.inf


def test_poly_decays_to_zero_at_the_last_step_after_a_fractional_warmup(compose_cfg) -> None:
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=poly", "scheduler.power=1.0", "scheduler.warmup_epochs=0.25"])
    lrs = fit_lrs(tiny_task(cfg), batches=4, max_epochs=2)  # 8 steps: 1 of warmup, then 7 of linear decay
    assert lrs == pytest.approx([0.001] + [0.1 * (1 - k / 7) for k in range(7)], rel=1e-6)


def test_onecycle_rises_from_lr_over_div_factor_to_lr_over_its_warmup(compose_cfg) -> None:
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=onecycle", "scheduler.warmup_epochs=0.5"])
    lrs = fit_lrs(tiny_task(cfg), batches=8)
    assert lrs[0] == pytest.approx(0.1 / 25) and max(lrs) == pytest.approx(0.1)
    assert lrs[:4] == sorted(lrs[:4]) and lrs[3:] == sorted(lrs[3:], reverse=True)


def test_sgd_with_momentum_and_nesterov_from_the_command_line(compose_cfg) -> None:
    cfg = compose_cfg(["optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9", "optimizer.nesterov=true"])
    optimizer = tiny_task(cfg).configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"], optimizer.defaults["nesterov"]) == (0.1, 0.9, True)


def test_norm_weight_decay_zero_exempts_norm_weights_and_biases(compose_cfg) -> None:
    cfg = compose_cfg(["optimizer=adamw", "optimizer.weight_decay=0.05", "optimizer.norm_weight_decay=0.0"])
    task = tiny_task(cfg)
    conv, norm, linear = task.net[0], task.net[1], task.net[5]
    decayed, exempt = task.configure_optimizers().param_groups
    assert {id(p) for p in decayed["params"]} == {id(conv.weight), id(linear.weight)} and decayed["weight_decay"] == 0.05
    assert {id(p) for p in exempt["params"]} == {id(conv.bias), id(norm.weight), id(norm.bias), id(linear.bias)}
    assert exempt["weight_decay"] == 0.0


def test_norm_weight_decay_null_keeps_one_group_with_the_optimizers_weight_decay(compose_cfg) -> None:
    task = tiny_task(compose_cfg(["optimizer=adamw", "optimizer.weight_decay=0.05"]))
    [group] = task.configure_optimizers().param_groups
    assert len(group["params"]) == len(list(task.parameters())) and group["weight_decay"] == 0.05


@pytest.mark.parametrize(
    ("task", "reference"),
    [
        ("simpsons", torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.001, weight_decay=0.0)),
        ("shapes", torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.001, weight_decay=0.0)),
        ("voc", torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.001, weight_decay=0.001)),
        ("shapes_seg", torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.001, weight_decay=0.0)),
    ],
)
def test_each_task_keeps_its_reference_optimizer_and_no_schedule(compose_cfg, task: str, reference: torch.optim.Optimizer) -> None:
    """The settings each task had before the optimizer became a config group, so a seed gives the same numbers."""
    optimizer = tiny_task(compose_cfg([f"task={task}"])).configure_optimizers()  # an optimizer alone: no schedule
    assert type(optimizer) is type(reference) and optimizer.defaults == reference.defaults
    assert len(optimizer.param_groups) == 1


def test_the_users_optimizer_wins_over_the_tasks(compose_cfg) -> None:
    cfg = compose_cfg(["task=voc", "optimizer=adamw"])
    assert cfg.optimizer._target_ == "torch.optim.AdamW"


def test_budget_without_max_time_is_a_config_error_naming_the_key(compose_cfg) -> None:
    cfg = compose_cfg(["task=shapes", "scheduler=budget"])
    with pytest.raises(ConfigError, match=r"scheduler=budget .*trainer\.max_time=00:00:15:00"):
        check_numeric_knobs(cfg)  # at config time, before any data is prepared
    with pytest.raises(ConfigError, match=r"trainer\.max_time=00:00:15:00"):
        fit_lrs(tiny_task(cfg), batches=2)  # and where the schedule is built


class Clock:
    """A monotonic clock the test moves: each optimizer step takes ``step_seconds``."""

    def __init__(self, step_seconds: float) -> None:
        self.now = 1000.0
        self.step_seconds = step_seconds

    def __call__(self) -> float:
        return self.now


class StepTakes(Callback):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.clock.now += self.clock.step_seconds


def test_budget_decays_the_lr_linearly_with_elapsed_time_and_the_budget_ends_the_run(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(step_seconds=90)  # 10 steps fill the 15-minute budget
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time", SimpleNamespace(monotonic=clock))
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=budget", "trainer.max_time=00:00:15:00", "trainer.max_epochs=-1"])
    check_numeric_knobs(cfg)
    lrs = fit_lrs(tiny_task(cfg), 12, StepTakes(clock), max_time=cfg.trainer.max_time, max_epochs=-1)
    assert lrs == pytest.approx([0.1 * (1 - 90 * k / 900) for k in range(10)])  # step k starts k x 90 s in


def test_a_budget_shorter_than_an_epoch_ends_the_run_at_the_budget(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default trainer sets no min_epochs, which would train on past max_time at lr 0 to finish the epoch."""
    clock = Clock(step_seconds=90)
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time", SimpleNamespace(monotonic=clock))
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=budget", "trainer.max_time=00:00:15:00", "trainer.max_epochs=-1"])
    lrs = fit_lrs(tiny_task(cfg), 20, StepTakes(clock), max_time=cfg.trainer.max_time, max_epochs=-1, min_epochs=cfg.trainer.min_epochs)
    assert len(lrs) == 10 and min(lrs) > 0


class Validations(Callback):
    """The optimizer step at which each validation ran."""

    def __init__(self) -> None:
        self.at_steps: list[int] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.at_steps.append(trainer.global_step)


def test_a_network_slower_than_the_budget_is_still_validated_where_the_budget_stopped_it(
    compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an equal-cost sweep VGG19 may not finish one epoch: its one validation (its point on the
    accuracy-against-time figure, and the checkpoint its test scores) comes where the budget ends."""
    clock = Clock(step_seconds=90)
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time", SimpleNamespace(monotonic=clock))
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=budget", "trainer.max_time=00:00:15:00", "trainer.max_epochs=-1"])
    validations = Validations()
    lrs = fit_lrs(tiny_task(cfg), 20, StepTakes(clock), validations, validate=True, max_time=cfg.trainer.max_time, max_epochs=-1)
    assert len(lrs) == 10 and validations.at_steps == [10]


def test_budget_with_a_min_epochs_is_a_config_error(compose_cfg) -> None:
    cfg = compose_cfg(["scheduler=budget", "trainer.max_time=00:00:15:00", "trainer.max_epochs=-1", "trainer.min_epochs=1"])
    with pytest.raises(ConfigError, match=r"trainer\.min_epochs=1 .*lr 0.*trainer\.min_epochs=null"):
        check_numeric_knobs(cfg)


def test_budget_with_an_epoch_limit_decays_to_zero_by_whichever_end_comes_first_and_says_so(
    compose_cfg, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(step_seconds=90)  # 10 steps fill the budget; the epoch limit ends the run after 4
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time", SimpleNamespace(monotonic=clock))
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=budget", "trainer.max_time=00:00:15:00", "trainer.max_epochs=1"])
    with caplog.at_level(logging.WARNING, logger="visionbench"):
        lrs = fit_lrs(tiny_task(cfg), 4, StepTakes(clock), max_time=cfg.trainer.max_time, max_epochs=1)
    assert lrs == pytest.approx([0.1 * (1 - k / 4) for k in range(4)])
    assert "trainer.max_epochs=1" in caplog.text and "trainer.max_epochs=-1" in caplog.text


def test_budget_with_an_epoch_limit_still_ends_at_the_budget_when_it_comes_first(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(step_seconds=90)
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time", SimpleNamespace(monotonic=clock))
    cfg = compose_cfg(["optimizer.lr=0.1", "scheduler=budget", "trainer.max_time=00:00:15:00", "trainer.max_epochs=2"])
    lrs = fit_lrs(tiny_task(cfg), 20, StepTakes(clock), max_time=cfg.trainer.max_time, max_epochs=2)
    assert lrs == pytest.approx([0.1 * min(1 - k / 10, 1 - k / 40) for k in range(10)])


STEP_LR_BY_TARGET = ["optimizer.lr=0.1", "scheduler=torch", "scheduler._target_=torch.optim.lr_scheduler.StepLR"]


def test_any_torch_scheduler_plugs_in_by_target_and_steps_per_epoch_by_default(compose_cfg) -> None:
    cfg = compose_cfg([*STEP_LR_BY_TARGET, "+scheduler.step_size=1"])
    check_numeric_knobs(cfg)
    assert fit_lrs(tiny_task(cfg), 3, max_epochs=3) == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 3)


def test_a_torch_scheduler_steps_per_optimizer_step_with_interval_step(compose_cfg) -> None:
    cfg = compose_cfg([*STEP_LR_BY_TARGET, "scheduler.interval=step", "+scheduler.step_size=2", "+scheduler.gamma=0.5"])
    assert fit_lrs(tiny_task(cfg), 6) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_reduce_on_plateau_follows_the_tasks_monitored_metric(compose_cfg) -> None:
    cfg = compose_cfg(
        [
            "optimizer.lr=0.1",
            "scheduler=torch",
            "scheduler._target_=torch.optim.lr_scheduler.ReduceLROnPlateau",
            "+scheduler.factor=0.5",
            "+scheduler.patience=0",
            "+scheduler.threshold=10",
            "+scheduler.threshold_mode=abs",
        ]
    )  # no epoch after the first counts as an improvement
    task = tiny_task(cfg)  # classification monitors val/acc, mode max
    lrs = fit_lrs(task, 2, max_epochs=3, validate=True)
    [config] = task.trainer.lr_scheduler_configs
    assert (config.monitor, config.scheduler.mode, config.interval) == ("val/acc", "max", "epoch")
    assert lrs == pytest.approx([0.1] * 4 + [0.05] * 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scheduler=cosine", "+scheduler.step_size=1"],
            r"scheduler\.step_size is not a key of scheduler=cosine\. Its keys: warmup_epochs, warmup_start_factor, eta_min\.",
        ),
        (
            [*STEP_LR_BY_TARGET, "+scheduler.step_sise=1"],
            r"scheduler\.step_sise is not an argument of torch\.optim\.lr_scheduler\.StepLR\. Its arguments: step_size, gamma, last_epoch"
            r".*Did you mean scheduler\.step_size\?",
        ),
        (
            ["scheduler=torch"],
            r"scheduler\._target_, and none was given: e\.g\. `scheduler=torch scheduler\._target_=torch\.optim\.lr_scheduler\.StepLR",
        ),
        ([*STEP_LR_BY_TARGET, "+scheduler.step_size=1", "scheduler.interval=batch"], r"scheduler\.interval=batch .*step or epoch"),
        (["scheduler=torch", "scheduler._target_=torch.optim.SGD"], r"torch\.optim\.SGD is not a learning-rate scheduler"),
    ],
    ids=["group-key", "torch-argument", "no-target", "interval", "not-a-scheduler"],
)
def test_a_key_the_scheduler_does_not_have_is_one_paragraph_listing_the_keys_it_has(
    compose_cfg, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_numeric_knobs(compose_cfg(overrides))  # at config time, before any data is prepared
