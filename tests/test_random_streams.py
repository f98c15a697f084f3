"""Random streams that make independent repetitions: every shuffle, augmentation and dropout
stream derives from a hash of (seed, epoch[, rank][, index]), never from ``seed + epoch``."""

from __future__ import annotations

import itertools

import pytest
import torch

from visionbench.callbacks.epoch_seed import EpochSeed
from visionbench.data.sampler import EpochShuffleSampler
from visionbench.seeding import stream_seed


def _order(seed: int, epoch: int, rank: int = 0, world: int = 1, n: int = 50) -> list[int]:
    sampler = EpochShuffleSampler(n, seed=seed, rank=rank, world_size=world)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_one_seeds_later_epoch_is_not_another_seeds_earlier_epoch() -> None:
    assert _order(seed=1, epoch=1) != _order(seed=2, epoch=0)
    assert _order(seed=2, epoch=1) != _order(seed=1, epoch=2)


def test_stream_seeds_of_neighbouring_seeds_epochs_ranks_and_indices_all_differ() -> None:
    seeds = [stream_seed(s, e, r) for s, e, r in itertools.product(range(4), range(4), range(4))]
    assert len(set(seeds)) == len(seeds)
    assert stream_seed(1, 1, 0) != stream_seed(1, 0, 1)  # rank and epoch do not trade places


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_one_permutation_and_run_the_same_number_of_steps(world: int) -> None:
    shards = [_order(seed=7, epoch=3, rank=r, world=world, n=101) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal lengths, or DDP would hang at the last step
    assert set().union(*shards) == set(range(101))  # every sample seen, a few twice (padding)
    merged = [i for step in zip(*shards, strict=True) for i in step][:101]
    assert merged == _order(seed=7, epoch=3, n=101)  # rank r takes positions r, r + world, ...


def test_epoch_seed_gives_each_rank_its_own_augmentation_and_dropout_stream() -> None:
    class Trainer:  # what EpochSeed reads of Lightning's trainer
        def __init__(self, rank: int) -> None:
            self.current_epoch, self.global_rank = 4, rank

    draws = []
    for rank in (0, 1, 0):
        EpochSeed(seed=42).on_train_epoch_start(Trainer(rank), None)  # type: ignore[arg-type]
        draws.append(torch.rand(3))
    assert not torch.equal(draws[0], draws[1])  # rank 1 draws other numbers at the same batch position
    assert torch.equal(draws[0], draws[2])  # and a restart of rank 0 at that epoch draws the same ones
