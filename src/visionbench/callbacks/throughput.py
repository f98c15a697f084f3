"""Training throughput and MFU of the real run, logged beside its metrics.

The benchmark measures networks in isolation; this measures what ``src/train.py`` actually
achieves, data loading, augmentation, logging and all: wall time between consecutive training
batch ends (after ``warmup_steps``), so a starving loader shows up as lost throughput.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import Any

import lightning as L
import torch

from visionbench.callbacks.base import task_of
from visionbench.measure import TRAIN_FLOPS_PER_FORWARD, forward_flops_per_image, peak_flops, synchronize
from visionbench.tasks.base import VisionTask

log = logging.getLogger(__name__)


def _rng_untouched(device: torch.device) -> AbstractContextManager[None]:
    """Measure without consuming random numbers: a run resumed mid-way must draw the same
    dropout masks and augmentations as a straight run (tests/test_reliability.py)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class TrainingThroughput(L.Callback):
    """Logs ``perf/train_images_per_s`` (all processes), ``perf/train_tflops``, ``perf/train_mfu`` and
    the ``perf/peak_tflops`` it divides by.

    FLOPs: forward FLOPs of one image counted once (2 per multiply-add, eval mode, so auxiliary
    heads are excluded) and tripled for forward + backward. Peak: the best of ``peak_repeats``
    ``peak_size``² matmuls and as many 3×3 convolutions (``visionbench.measure.peak_flops``, as
    ``make bench``) timed at fit start on the same device, in bf16 when the trainer runs in bf16,
    else fp32.

    Lightning's ``ThroughputMonitor`` is not used: it logs per-step ``train|device/...`` keys to the
    logger rather than per-epoch values into the run's metrics, needs ``flops_per_batch`` on the
    LightningModule, has no warm-up exclusion, and sets its peak from a datasheet table (none for CPUs)
    in ``setup``, before a measured one could be given.
    """

    def __init__(self, warmup_steps: int = 3, peak_size: int = 4096, peak_repeats: int = 3) -> None:
        self.warmup_steps = warmup_steps
        self.peak_size = peak_size
        self.peak_repeats = peak_repeats
        self.flops_per_image = 0.0
        self.peak_flops = 0.0
        self.peak_kernel = ""
        self._reset()

    def _reset(self) -> None:
        self._last: float | None = None
        self._seen = 0
        self._images = 0
        self._seconds = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        precision = "bf16" if "bf16" in str(trainer.precision) else "fp32"
        with _rng_untouched(pl_module.device):
            self.peak_flops, self.peak_kernel = peak_flops(pl_module.device, precision, self.peak_size, self.peak_repeats)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        synchronize(pl_module.device)
        now = time.perf_counter()
        images = batch[0]
        if not self.flops_per_image:
            with _rng_untouched(pl_module.device):
                net = task_of(pl_module, VisionTask).net
                self.flops_per_image = forward_flops_per_image(net, tuple(images.shape[-2:]), images.shape[1])
        if self._last is not None and self._seen >= self.warmup_steps:
            self._images += len(images)
            self._seconds += now - self._last
        self._last = now
        self._seen += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A mid-epoch validation (``trainer.val_check_interval``) is not training time: the
        next batch starts a new interval instead of counting the validation in its gap."""
        self._last = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._seconds <= 0:
            return  # too few batches after warm-up to time
        per_process = self._images / self._seconds
        achieved = TRAIN_FLOPS_PER_FORWARD * self.flops_per_image * per_process
        if achieved > self.peak_flops:
            log.warning(
                "perf/train_mfu is %.0f %%: above the peak measured at fit start (%.0f GFLOP/s, %s), which other "
                "processes must have slowed; this epoch's MFU is not trustworthy.",
                100 * achieved / self.peak_flops,
                self.peak_flops / 1e9,
                self.peak_kernel or "matmul",
            )
        pl_module.log_dict(
            {
                "perf/train_images_per_s": per_process * trainer.world_size,
                "perf/train_tflops": achieved * trainer.world_size / 1e12,
                "perf/train_mfu": achieved / self.peak_flops,
                "perf/peak_tflops": self.peak_flops / 1e12,
            },
            on_epoch=True,
            rank_zero_only=True,
        )
