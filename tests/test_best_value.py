"""``<monitor>_best`` is the best over the complete validation passes that ran: straight or
resumed, with validation every epoch, every other epoch, or twice per epoch. Lightning's sanity
check (a couple of batches, run again with the restored weights on resume) never counts."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from visionbench.tasks.base import VisionTask

SANITY_SCORE = 0.99  # what a 2-batch sanity check can read: higher than any full pass here


class ScriptedTask(VisionTask):
    """A tiny task whose validation score is a fixed function of the training step."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(2, 2), 2, partial(torch.optim.SGD, lr=0.1), monitor="val/acc", monitor_mode="max")
        self.full_passes: list[float] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.net(batch[0]).sum()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        score = SANITY_SCORE if self.trainer.sanity_checking else [0.3, 0.6, 0.4, 0.5, 0.2][self.global_step % 5]
        if not self.trainer.sanity_checking:
            self.full_passes.append(score)
        self.log_best(torch.tensor(score))


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=2)


def _fit(root: Path, max_epochs: int, schedule: dict, ckpt_path: Path | None = None) -> tuple[ScriptedTask, L.Trainer]:
    task = ScriptedTask()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True)],
        **schedule,
    )
    trainer.fit(task, _loader(), _loader(), ckpt_path=ckpt_path, weights_only=False)
    return task, trainer


@pytest.mark.parametrize(
    "schedule",
    [{}, {"check_val_every_n_epoch": 2}, {"val_check_interval": 0.5}],
    ids=["every-epoch", "every-other-epoch", "twice-per-epoch"],
)
def test_the_best_is_the_best_complete_validation_pass_straight_and_resumed(tmp_path: Path, schedule: dict) -> None:
    straight, trainer = _fit(tmp_path / "straight", 4, schedule)
    assert float(trainer.callback_metrics["val/acc_best"]) == pytest.approx(max(straight.full_passes))

    first, _ = _fit(tmp_path / "resumed", 2, schedule)
    resumed, trainer = _fit(tmp_path / "resumed", 4, schedule, ckpt_path=tmp_path / "resumed" / "last.ckpt")
    passes = first.full_passes + resumed.full_passes
    assert passes == straight.full_passes  # the resumed run validated exactly where the straight one did
    assert float(trainer.callback_metrics["val/acc_best"]) == pytest.approx(max(passes)) != SANITY_SCORE
