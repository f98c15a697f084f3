"""The loaders' samplers: training orders that depend only on (seed, epoch), and evaluation
sharding that sees every sample exactly once, whatever the number of processes.

Lightning's default ``DistributedSampler`` pads the last batch by repeating samples when the
split size is not divisible by the world size, so synced metrics differ from the 1-process
value (pytorch#25162, Lightning#4732). Disjoint shards (rank r takes r::world) are exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Sampler

from visionbench.seeding import stream_seed

EVAL_ORDER_SEED = 0


def fixed_order(num_samples: int) -> list[int]:
    """One shuffled order of ``range(num_samples)``, the same in every run and process."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(EVAL_ORDER_SEED)).tolist()


class EvalShardSampler(Sampler[int]):
    """Every rank's shard (positions ``rank, rank + world, ...``) of one fixed shuffled order:
    disjoint across ranks, together exactly ``range(n)``.

    Splits are stored class by class, so in storage order ``limit_val_batches`` or
    ``limit_test_batches`` (``debug=limit``, quick sweeps) would score the first class or two
    alone. The order is shuffled once with a constant seed instead: a limited evaluation samples
    every class, and runs (and ``eval.py``) with the same number of processes evaluate the same subset.
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.indices = fixed_order(num_samples)[rank::world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochShuffleSampler(Sampler[int]):
    """This rank's share of a random permutation that depends only on (seed, epoch).

    A ``RandomSampler`` with a seeded generator draws epoch k's order from the generator's
    state after k epochs, so a run resumed at epoch k (fresh generator) would replay epoch 0's
    order. The permutation is seeded with ``stream_seed(seed, epoch)`` rather than
    ``seed + epoch`` (what ``DistributedSampler`` does), so seed 1's epoch 1 is not seed 2's
    epoch 0. Under DDP rank r takes positions r, r + world, ... of the permutation, padded by
    wrapping around (as ``DistributedSampler``) so every rank runs the same number of steps;
    a few training samples are then seen twice per epoch, which is harmless for training.
    The fit loop calls ``set_epoch`` before every epoch, straight or resumed.
    """

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self, generator: torch.Generator) -> list[int]:
        """The epoch's order over all ranks: a permutation of ``range(num_samples)``."""
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def draws(self) -> list[tuple[int, int]]:
        """This rank's (index, repeat) pairs of the epoch: ``repeat`` counts the earlier draws of the
        same index in the whole (padded) epoch order, over all ranks, so every draw is told apart
        whatever the batch size, worker count or rank that reads it."""
        order = self.draw(torch.Generator().manual_seed(stream_seed(self.seed, self.epoch)))
        total = len(self) * self.world_size
        order += (order * (total // max(len(order), 1) + 1))[: total - len(order)]
        seen: Counter[int] = Counter()
        numbered = []
        for index in order:
            numbered.append((index, seen[index]))
            seen[index] += 1
        return numbered[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return (index for index, _ in self.draws())

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)


class ClassBalancedSampler(EpochShuffleSampler):
    """``task.data.sampler=balanced``: each epoch draws ``len(labels)`` indices with replacement,
    each sample weighted 1 / (its class's count), so every class is drawn about equally often.

    For training sets far more imbalanced than the (class-balanced) test split, e.g. Simpsons'
    homer 1,398 frames and maggie 42. Rare classes' samples repeat within an epoch and frequent
    ones are left out; the epoch keeps its length, so schedules and step counts are unchanged.
    The draw depends only on ``stream_seed(seed, epoch)`` and ranks share it exactly as
    ``EpochShuffleSampler``'s permutation (positions r, r + world, ..., same padding), so it is
    resumable and DDP runs draw one epoch between them.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(len(labels), seed, rank, world_size)
        counts = Counter(labels)
        self.weights: Tensor = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)

    def draw(self, generator: torch.Generator) -> list[int]:
        """``num_samples`` indices drawn with replacement, with probability proportional to ``weights``."""
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()


class Draw(NamedTuple):
    """One training draw: the dataset's ``item`` drawn in ``epoch``, for the ``repeat``-th time that
    epoch (0: the first). Its augmentation stream is keyed by all three (``base.SeededSamples``), so
    repeats (``sampler=balanced`` draws with replacement; DDP padding wraps around) differ."""

    epoch: int
    item: int  # its index in the dataset
    repeat: int = 0


class EpochTaggedSampler(Sampler[Draw]):
    """Yields a ``Draw`` for each draw of ``sampler``: the worker process that reads a training
    sample learns its epoch and repeat from the draw itself (persistent workers hold their own
    copy of the dataset and never see ``set_epoch``)."""

    def __init__(self, sampler: EpochShuffleSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Draw]:
        return (Draw(self.epoch, index, repeat) for index, repeat in self.sampler.draws())

    def __len__(self) -> int:
        return len(self.sampler)
