"""A resumed run follows the schedule of the length it is resumed with: extended to a larger
``trainer.max_epochs`` it continues the new, longer schedule from the checkpoint's step; resumed with
the same length it is bit-identical to a straight run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR, PolynomialLR
from torch.utils.data import DataLoader, TensorDataset

from test_optim import LearningRates, tiny_task

STEPS_PER_EPOCH = 4
LR = 0.1


class StopAfterOneEpoch(Callback):
    """Ends the fit after its first epoch, as a preemption at an epoch end would."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


def fit(task: L.LightningModule, root: Path, max_epochs: int, *callbacks: Callback, ckpt_path: Path | None = None) -> list[float]:
    """Fit ``task`` for ``max_epochs`` of 4 fixed batches, writing ``root/last.ckpt``; each step's lr."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(2 * STEPS_PER_EPOCH, 3, 8, 8), torch.randint(0, 2, (2 * STEPS_PER_EPOCH,))), batch_size=2)
    recorder = LearningRates()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        max_epochs=max_epochs,
        deterministic=True,
        callbacks=[recorder, *callbacks, ModelCheckpoint(dirpath=root, filename="last", enable_version_counter=False)],
    )
    trainer.fit(task, train_dataloaders=data, ckpt_path=ckpt_path, weights_only=True)
    return recorder.lrs


def seeded_task(cfg: DictConfig) -> L.LightningModule:
    """``tiny_task`` with the same initial weights every time, as a run's seed gives them."""
    torch.manual_seed(0)
    return tiny_task(cfg)


def torch_reference(make: Callable[[torch.optim.Optimizer], LRScheduler], steps: int) -> list[float]:
    """The lr of each of ``steps`` steps from torch's own scheduler, stepped straight through."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR, momentum=0.9)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


NEW_TOTAL = 4 * STEPS_PER_EPOCH
SCHEDULES = {
    "cosine": (["scheduler=cosine"], lambda opt: CosineAnnealingLR(opt, T_max=NEW_TOTAL)),
    "poly": (["scheduler=poly"], lambda opt: PolynomialLR(opt, total_iters=NEW_TOTAL, power=0.9)),
    "onecycle": (
        ["scheduler=onecycle", "optimizer=sgd", "optimizer.momentum=0.9"],
        lambda opt: OneCycleLR(opt, max_lr=LR, total_steps=NEW_TOTAL),
    ),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_resuming_to_a_larger_max_epochs_continues_the_longer_schedule_from_the_checkpoints_step(
    compose_cfg, tmp_path: Path, schedule: str
) -> None:
    overrides, reference = SCHEDULES[schedule]
    cfg = compose_cfg([*overrides, f"optimizer.lr={LR}"])
    first = fit(tiny_task(cfg), tmp_path, max_epochs=2)
    extended = fit(tiny_task(cfg), tmp_path, 4, ckpt_path=tmp_path / "last.ckpt")
    assert len(first) == len(extended) == 2 * STEPS_PER_EPOCH
    assert extended == pytest.approx(torch_reference(reference, NEW_TOTAL)[len(first) :], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "poly", "onecycle", "step"])
def test_resuming_with_the_same_length_is_bit_identical_to_a_straight_run(compose_cfg, tmp_path: Path, schedule: str) -> None:
    extra = {
        "onecycle": ["optimizer=sgd", "optimizer.momentum=0.9"],
        "step": ["scheduler.step_size=1", "scheduler.warmup_epochs=0.5"],
    }.get(schedule, ["scheduler.warmup_epochs=0.5"])
    cfg = compose_cfg([f"scheduler={schedule}", f"optimizer.lr={LR}", *extra])
    straight_task = seeded_task(cfg)
    straight = fit(straight_task, tmp_path / "straight", max_epochs=2)
    fit(seeded_task(cfg), tmp_path / "resumed", 2, StopAfterOneEpoch())
    resumed_task = seeded_task(cfg)
    resumed = fit(resumed_task, tmp_path / "resumed", max_epochs=2, ckpt_path=tmp_path / "resumed" / "last.ckpt")
    assert resumed == straight[STEPS_PER_EPOCH:]
    for a, b in zip(straight_task.parameters(), resumed_task.parameters(), strict=True):
        assert torch.equal(a, b)
