"""Evaluation order: every sample exactly once across ranks; limited evaluations and overfitting sample every class.
Training draws: a sample drawn twice in an epoch (balanced sampling, DDP padding) is augmented twice, and
an epoch's samples depend on neither the batch size nor the number of loader workers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from torch import Tensor
from torch.utils.data import SequentialSampler

from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sampler import EvalShardSampler
from visionbench.data.sources.shapes import generate_shapes


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
    dm = ClassFolderDataModule(
        tmp_path / "shapes", image_size=16, batch_size=8, num_workers=0, split={"min_images": 5, "test_per_class": 2}, pipeline=pipeline
    )
    dm.prepare_data()
    dm.setup("fit")
    dm.trainer = SimpleNamespace(overfit_batches=2, global_rank=0, world_size=1)  # type: ignore[assignment]
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert isinstance(loader.sampler, SequentialSampler)  # Lightning keeps it (no "turning off shuffling")
        assert len(set(next(iter(loader))[1].tolist())) >= 3


def _cpu_trainer(rank: int = 0, world: int = 1) -> SimpleNamespace:
    """What ``VisionDataModule._loader`` reads of Lightning's trainer on a CPU (where the cached
    pipeline augments in the loader, each sample from its own stream)."""
    progress = SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=0)))
    return SimpleNamespace(global_rank=rank, world_size=world, overfit_batches=0, fit_loop=progress, accelerator=CPUAccelerator())


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_classes=3, per_class=8, image_size=16, log=lambda _: None)


def training_epoch(
    root: Path, pipeline: str, sampler: str = "balanced", batch_size: int = 4, workers: int = 0, rank: int = 0, world: int = 1
) -> tuple[list[int], list[Tensor]]:
    """Epoch 1's training indices and the augmented, normalised images the model receives, in order."""
    dm = ClassFolderDataModule(
        root,
        image_size=16,
        batch_size=batch_size,
        num_workers=workers,
        seed=3,
        sampler=sampler,
        pipeline=pipeline,
        split={"min_images": 1, "test_per_class": 2},  # 15 training samples: odd
    )
    dm.prepare_data()
    dm.setup("fit")
    dm.trainer = _cpu_trainer(rank, world)  # type: ignore[assignment]
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
    indices = list(loader.sampler.sampler)  # type: ignore[attr-defined]
    images = [image for batch, _ in loader for image in batch]
    assert all(image.is_floating_point() for image in images)  # augmented and normalised in the loader
    return indices, images


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
def test_each_repeat_of_a_sample_within_a_balanced_epoch_is_augmented_anew(shapes_root: Path, pipeline: str) -> None:
    indices, images = training_epoch(shapes_root, pipeline)
    drawn: dict[int, list[Tensor]] = defaultdict(list)
    for index, image in zip(indices, images, strict=True):
        drawn[index].append(image)
    repeated = {index: copies for index, copies in drawn.items() if len(copies) > 1}
    assert len(repeated) >= 3  # drawing with replacement repeats some samples
    for index, copies in repeated.items():
        for i in range(len(copies)):
            for j in range(i):
                assert not torch.equal(copies[i], copies[j]), f"draws {j} and {i} of sample {index} are augmented identically"


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
def test_a_balanced_epoch_does_not_depend_on_batch_size_or_loader_workers(shapes_root: Path, pipeline: str) -> None:
    indices, images = training_epoch(shapes_root, pipeline, batch_size=4, workers=0)
    other_indices, other_images = training_epoch(shapes_root, pipeline, batch_size=5, workers=2)
    assert other_indices == indices
    for a, b in zip(images, other_images, strict=True):
        assert torch.allclose(a, b, atol=1e-5)  # the same draws; only a batched kernel's summation order may differ


def test_a_sample_that_ddp_padding_repeats_is_augmented_anew(shapes_root: Path) -> None:
    """An odd training split on 2 ranks: rank 1's last draw wraps around to rank 0's first sample."""
    (first, *_), (first_image, *_) = training_epoch(shapes_root, "pil", sampler="shuffle", rank=0, world=2)
    indices, images = training_epoch(shapes_root, "pil", sampler="shuffle", rank=1, world=2)
    assert indices[-1] == first  # the padding
    assert not torch.equal(images[-1], first_image)
