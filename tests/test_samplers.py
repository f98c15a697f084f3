"""Evaluation order: every sample exactly once across ranks; limited evaluations and overfitting sample every class."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.utils.data import SequentialSampler

from visionbench.data.sampler import EvalShardSampler
from visionbench.data.shapes import generate_shapes
from visionbench.data.simpsons import SimpsonsDataModule


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


@pytest.mark.parametrize("pipeline", ["cached", "pil"])
def test_overfitting_fits_and_validates_on_batches_that_mix_the_classes(tmp_path: Path, pipeline: str) -> None:
    """``debug=overfit`` (Lightning's ``overfit_batches``) reads its loaders sequentially; they must not be class-ordered."""
    generate_shapes(tmp_path / "shapes", num_classes=4, per_class=20, image_size=16, log=lambda _: None)
    dm = SimpsonsDataModule(tmp_path / "shapes", image_size=16, batch_size=8, num_workers=0, split={"min_images": 5, "test_per_class": 2}, pipeline=pipeline)
    dm.prepare_data()
    dm.setup("fit")
    dm.trainer = SimpleNamespace(overfit_batches=2, global_rank=0, world_size=1)  # type: ignore[assignment]
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert isinstance(loader.sampler, SequentialSampler)  # Lightning keeps it (no "turning off shuffling")
        assert len(set(next(iter(loader))[1].tolist())) >= 3
