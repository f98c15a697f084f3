"""What every task shares: optimiser/scheduler from config, performance knobs, the best value of
the monitored metric, the run config stored in each checkpoint, and a clear stop on a non-finite loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torchmetrics import MaxMetric, MinMetric

from visionbench.checkpoint import load_checkpoint
from visionbench.data.transforms.batch import normalize_uint8
from visionbench.errors import ConfigError, VisionbenchError
from visionbench.models.base import AuxOutput
from visionbench.tasks.optim import Schedule, configure

OptimizerFactory = Callable[..., torch.optim.Optimizer]
log = logging.getLogger(__name__)


class NonFiniteLossError(VisionbenchError):
    """The loss became NaN or infinite: the run stops, keeping the last good checkpoint."""


class VisionTask(L.LightningModule):
    """Base LightningModule around a pure ``nn.Module`` network.

    ``optimizer``/``scheduler`` are Hydra partials (``_partial_: true``) so every knob is a
    config key. Subclasses implement ``loss``, ``_evaluate`` and ``prediction`` and report the
    monitored value of each validation epoch to ``log_best`` (logged as ``<monitor>_best``).
    ``run_config`` (the resolved run config) is written into every checkpoint so
    ``eval.py``/``predict.py`` can rebuild the network from the checkpoint alone
    (``from_checkpoint``). A task built without ``optimizer`` serves inference only.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: Schedule | None = None,
        class_names: list[str] | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        channels_last: bool = False,
        compile: bool = False,
        norm_weight_decay: float | None = None,
        head_lr_mult: float | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.norm_weight_decay = norm_weight_decay  # null: norm layers and biases decay like the rest
        self.head_lr_mult = head_lr_mult  # null: the head outside the network's backbone learns at the optimizer's lr
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.channels_last = channels_last
        self.compile_net = compile
        self.run_config: dict[str, Any] = {}  # set by visionbench.compose.build_task
        self.val_best = MaxMetric() if monitor_mode == "max" else MinMetric()
        self.val_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        if self.compile_net:
            self.net.compile()  # in place, so state_dict keys stay those of the plain network
            log.info("compile=true: the first training and evaluation steps compile the network (about a minute each on a CPU)")

    def forward(self, x: Tensor) -> Any:
        # Cached pipelines yield uint8 images, normalised by their DataModule's on_after_batch_transfer;
        # batches that bypass the hook (the figure callbacks' fixed samples) are normalised here.
        if x.dtype == torch.uint8:
            x = normalize_uint8(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def log_best(self, value: Tensor) -> None:
        """Fold one validation pass's monitored value into ``<monitor>_best``.

        The best is over complete validation passes only: Lightning's sanity check scores a
        couple of batches (before training, and again with the restored weights on resume), a
        value no epoch reached, so it is left out. The running best is saved in checkpoints,
        so a resumed run continues it.
        """
        if self.trainer.sanity_checking:
            return
        self.val_best.update(value)
        self.log(f"{self.monitor}_best", self.val_best.compute(), prog_bar=True)

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits as evaluation computes them: validation, test, the figure callbacks and
        ``predict_step`` all call this one method, so they cannot disagree on how an image is seen."""
        return self(x)

    def prediction(self, logits: Tensor) -> Any:
        """What a prediction writer stores for a batch of ``predict_logits``."""
        raise NotImplementedError

    def predict_step(self, batch: Sequence[Any], batch_idx: int) -> Any:
        """``Trainer.predict``'s step: the images are ``batch[0]``, the rest is the writer's (file names)."""
        return self.prediction(self.predict_logits(batch[0]))

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        """Update the ``stage`` metrics with one batch and return its logits (the figure callbacks use them)."""
        raise NotImplementedError

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def _kept_checkpoint(self) -> str:
        callback = self.trainer.checkpoint_callback if self._trainer is not None else None
        path = (callback.last_model_path or callback.best_model_path) if isinstance(callback, ModelCheckpoint) else ""
        return f"the last good checkpoint is kept: {path}" if path else "no checkpoint had been saved yet"

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def training_loss(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(main logits, loss) of a training forward; auxiliary heads (``AuxOutput``, e.g.
        Inception v1) add ``aux_weight`` times their own loss, in training only."""
        out = self(x)
        if isinstance(out, AuxOutput):
            return out.logits, self.loss(out.logits, target) + out.aux_weight * sum(self.loss(a, target) for a in out.aux)
        return out, self.loss(out, target)

    def check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Stop at the first NaN/inf loss: training on would only write checkpoints full of NaN.

        Under DDP all ranks decide together (one all-reduce of a flag per step): a rank stopping
        alone leaves the others in the gradient all-reduce, where NCCL waits for its timeout and
        gloo fails with "Connection closed by peer" instead of this message.
        """
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None and self.trainer.world_size > 1:
            finite_everywhere = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        else:
            finite_everywhere = finite
        if not finite_everywhere:
            value = loss.item() if not finite else "non-finite on another process"
            raise NonFiniteLossError(
                f"The training loss became {value} at epoch {self.current_epoch}, batch {batch_idx} "
                f"(global step {self.global_step}). The run stopped and {self._kept_checkpoint()}. Lower the "
                "learning rate (optimizer.lr), check the inputs, or use trainer.precision=32-true."
            )

    def check_finite_weights(self) -> None:
        """A step with a finite loss can still leave NaN/inf weights (the update overflowed); such
        weights must never reach a checkpoint, so saving refuses them."""
        bad = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(
                f"The weights became non-finite ({len(bad)} tensors, first {bad[0]}) by epoch {self.current_epoch} "
                f"(global step {self.global_step}); no checkpoint was written and {self._kept_checkpoint()}. "
                "Lower the learning rate (optimizer.lr) or use trainer.precision=32-true."
            )

    def configure_optimizers(self) -> Any:
        """The optimizer and its schedule, stepped per optimizer step (``visionbench.tasks.optim``)."""
        if self.optimizer_factory is None:
            raise ConfigError(
                "This task was built for inference (VisionTask.from_checkpoint, or without an optimizer) and cannot "
                "train. To continue training a checkpoint, run: python src/train.py <its overrides> ckpt_path=<checkpoint> "
                "hydra.run.dir=<its run folder>."
            )
        return configure(self, self.optimizer_factory, self.scheduler_factory, self.norm_weight_decay, self.head_lr_mult)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> VisionTask:
        """The trained task of a visionbench checkpoint, in eval mode, for inference: the network
        rebuilt from the run config stored inside and its weights loaded (``weights_only``: no code
        runs while reading), the class names the checkpoint carries, ``run_config`` the checkpoint's.
        No optimizer, scheduler or training-loss weights are built (those need the training split)."""
        checkpoint = load_checkpoint(path)
        config = checkpoint["visionbench_config"]
        names = checkpoint.get("visionbench_class_names") or _class_names_from_data(path, config)
        task = cls.from_config(config, names)
        task.net.load_state_dict({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")})
        return task

    @classmethod
    def from_config(cls, config: dict[str, Any], class_names: Sequence[str], net: nn.Module | None = None) -> VisionTask:
        """The task of a saved run config, in eval mode, for inference: around ``net`` (the network the
        config describes, untrained, when ``None``), without optimizer, scheduler or training-loss
        weights. ``from_checkpoint`` loads its weights into it; an exported file brings its own ``net``."""
        names = list(class_names)
        module = {key: value for key, value in config["task"]["module"].items() if key not in _TRAINING_ONLY}
        net = net if net is not None else instantiate(config["model"]["net"], num_classes=len(names))
        task = instantiate(module, net=net, num_classes=len(names), class_names=names, _convert_="partial")
        if not isinstance(task, cls):
            raise ConfigError(f"The run config holds a {type(task).__name__}, not a {cls.__name__}: load it with VisionTask.")
        task.run_config = config
        return task.eval()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite_weights()  # raised before Lightning writes the file
        checkpoint["visionbench_config"] = self.run_config
        checkpoint["visionbench_class_names"] = list(self.class_names)


# Module keys of a run config that only training uses: the loss's class weights need the training
# split's counts, and old run configs held their optimizer nodes inside the module.
_TRAINING_ONLY = ("class_weights", "optimizer", "scheduler")


def _class_names_from_data(path: str | Path, config: dict[str, Any]) -> list[str]:
    """Class names of a checkpoint written before they travelled inside it: its training data, in
    the order training read them, if that data is still where the run found it."""
    try:
        return list(instantiate(config["task"]["data"], _convert_="all").class_names)
    except VisionbenchError as err:
        raise ConfigError(
            f"'{path}' was written before checkpoints carried their class names, and its training data cannot be "
            f"read to recover them ({str(err).splitlines()[0]}). Put the data back at task.data.root="
            f"{config['task']['data'].get('root')} (or retrain): the class order is that of the training split."
        ) from None
