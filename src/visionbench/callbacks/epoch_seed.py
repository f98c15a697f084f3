"""Per-epoch reseeding of the global random number generators, so a resumed run draws what a straight one draws."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionbench.seeding import stream_seed


class EpochSeed(Callback):
    """Reseed the global RNGs (batch augmentation, dropout) from (seed, epoch, rank) at every
    training epoch.

    Lightning checkpoints do not hold RNG states, so without this a run resumed at epoch k
    would continue from the RNG state of a fresh start, not from the straight run's state. The
    rank is part of the key: with one seed on every process, batch position k would get the
    same augmentation and dropout mask on every GPU, and the global batch would vary less than
    the single-process run it stands for. Loader workers seed each sample from (seed, epoch,
    index) themselves (``SeededSamples``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = stream_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        L.seed_everything(seed % 2**32, workers=True, verbose=False)
