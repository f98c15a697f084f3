"""What every visionbench DataModule shares: loaders whose sharding is exact under DDP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from visionbench.data.sampler import EvalShardSampler


class VisionDataModule(L.LightningDataModule):
    """Builds its own samplers (the trainer runs with ``use_distributed_sampler=False``).

    Training shuffles with a ``DistributedSampler`` under DDP (padding there only repeats a few
    training samples per epoch, which is harmless); validation and test use disjoint shards
    so every sample is evaluated exactly once and synced metrics equal the 1-process value.
    """

    def __init__(self, batch_size: int, num_workers: int, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, dataset: Dataset, train: bool, collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
        rank, world = self._rank_world()
        if train:
            sampler = (
                DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
                if world > 1
                else RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
            )
        else:
            sampler = EvalShardSampler(len(dataset), rank, world)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_fn,
        )
