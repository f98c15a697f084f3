"""Evaluation order: every sample exactly once across ranks, and limited evaluations that sample every class."""

from __future__ import annotations

import pytest

from visionbench.data.sampler import EvalShardSampler


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_shards_are_disjoint_and_cover_the_split_exactly_once(world: int) -> None:
    shards = [list(EvalShardSampler(101, rank, world)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(101))
    assert [len(s) for s in shards] == [len(range(rank, 101, world)) for rank in range(world)]


def test_a_limited_evaluation_samples_every_class_of_a_class_ordered_split() -> None:
    labels = [i // 10 for i in range(120)]  # 12 classes stored one after the other, as the manifests are
    first_two_batches = list(EvalShardSampler(len(labels)))[:16]
    assert len({labels[i] for i in first_two_batches}) >= 8  # storage order: 2 classes
    assert list(EvalShardSampler(len(labels))) == list(EvalShardSampler(len(labels)))  # the same subset every run
