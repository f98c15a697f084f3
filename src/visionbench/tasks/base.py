"""What every task shares: optimiser/scheduler from config, performance knobs, the run config
stored in each checkpoint, and a clear stop on a non-finite loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from visionbench.errors import VisionbenchError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class NonFiniteLossError(VisionbenchError):
    """The loss became NaN or infinite: the run stops, keeping the last good checkpoint."""


class VisionTask(L.LightningModule):
    """Base LightningModule around a pure ``nn.Module`` network.

    ``optimizer``/``scheduler`` are Hydra partials (``_partial_: true``) so every knob is a
    config key. ``run_config`` (the resolved run config) is written into every checkpoint so
    ``eval.py``/``predict.py`` can rebuild the network from the checkpoint alone.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.channels_last = channels_last
        self.compile_net = compile
        self.run_config: dict[str, Any] = {}  # set by visionbench.run.build_task
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        if self.compile_net:
            self.net.compile()  # in place, so state_dict keys stay those of the plain network

    def forward(self, x: Tensor) -> Any:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def check_finite(self, loss: Tensor, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} "
                f"(global step {self.global_step}). The run stopped; the last good checkpoint is kept in the run's "
                "checkpoints folder. Lower the learning rate (task.module.optimizer.lr), check the inputs, or "
                "use trainer.precision=32."
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["visionbench_config"] = self.run_config
        checkpoint["visionbench_class_names"] = list(getattr(self, "class_names", []))
