"""What every visionbench DataModule shares: the one choice between reading samples from their files
and from the uint8 cache (``storage``), loaders whose sharding is exact under DDP, and training
samples that depend only on their draw (seed, epoch, index, repeat). A task's DataModule adds its source and transforms."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.accelerators import CPUAccelerator
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler, Subset, default_collate

from visionbench.data.sampler import (
    ClassBalancedSampler,
    Draw,
    EpochShuffleSampler,
    EpochTaggedSampler,
    EvalShardSampler,
    fixed_order,
)
from visionbench.data.storage.samples import FileSamples, Items, check_pipeline
from visionbench.data.transforms.augment import Augment, SampleStreams
from visionbench.data.transforms.batch import BatchTransform
from visionbench.errors import ConfigError
from visionbench.seeding import stream_seed

SAMPLERS = ("shuffle", "balanced")
STAGES = ("train", "val", "test")
ItemsT = TypeVar("ItemsT", bound=Items)  # a DataModule's listing of a split


def start_loader_worker(worker_id: int) -> None:
    """Lightning's worker seeding, and SIGTERM left to the main process.

    SLURM (scancel, preemption, the time limit) and ``pkill -f`` signal every process of the job,
    loader workers included. A worker killed by it made the main process fail with "DataLoader
    worker is killed by signal" before Lightning could write ``interrupted.ckpt``; ignoring it
    here lets the main process checkpoint and then shut its workers down itself.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id)


class SeededSamples(Dataset):
    """Training samples whose randomness depends only on the draw: (seed, epoch, index, repeat).

    Per-sample augmentation (torchvision v2 transforms, random crops) draws from torch's global
    RNG in whichever process reads the sample. Each worker's stream depends on the worker count
    and restarts with the workers, so a resumed run would see other augmentations than a
    straight one. Seeding every draw from (seed, epoch, index, repeat) instead (``SampleStreams``)
    gives the same samples for any ``num_workers``, batch size and resume, and a sample drawn
    twice in an epoch (``sampler=balanced``, DDP padding) two augmentations. A first draw's key
    (repeat 0) hashes as (seed, epoch, index): the shuffle sampler's streams are what they were.
    """

    def __init__(self, dataset: Dataset, seed: int, batch_transform: BatchTransform | None = None) -> None:
        self.dataset = dataset
        self.seed = seed
        self.batch_transform = batch_transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__; a split has one

    def streams(self, draws: list[Draw]) -> SampleStreams:
        """About 30 us per sample (the hash), against milliseconds to decode and augment it."""
        return SampleStreams([stream_seed(self.seed, *draw) for draw in draws])

    def __getitem__(self, draw: Draw) -> Any:
        with self.streams([draw]).drawing(0):
            return self.dataset[draw.item]

    def __getitems__(self, draws: list[Draw]) -> Any:
        """Whole-batch reads (the cache's) draw no random numbers, but ``batch_transform`` (given when
        the loader augments) draws each sample's from its own stream; other datasets go sample by sample."""
        read_batch = getattr(self.dataset, "__getitems__", None)
        if read_batch is None:
            return [self[draw] for draw in draws]
        batch = read_batch([draw.item for draw in draws])
        if self.batch_transform is None:
            return batch
        return self.batch_transform(batch, train=True, streams=self.streams(draws))


class LoaderNormalises:
    """A loader's collate, then ``batch_transform``'s normalisation of what is still uint8 (training
    batches read whole arrive augmented and normalised from ``SeededSamples``)."""

    def __init__(self, collate: Callable[[Any], Any] | None, batch_transform: BatchTransform) -> None:
        self.collate = collate or default_collate
        self.batch_transform = batch_transform

    def __call__(self, samples: Any) -> Any:
        return self.batch_transform(self.collate(samples), train=False)


class VisionDataModule(L.LightningDataModule, Generic[ItemsT]):
    """Builds its own samplers (the trainer runs with ``use_distributed_sampler=False``).

    Training shuffles from (seed, epoch) alone, so a resumed run replays the same order
    (``EpochShuffleSampler``, each rank its share; padding under DDP only repeats a few training
    samples per epoch, which is harmless), or with ``sampler="balanced"`` draws every class about
    equally often from (seed, epoch) alone (``ClassBalancedSampler``); each training sample's
    random augmentation is seeded from its draw, (seed, epoch, index, repeat) (``SeededSamples``). Validation and test use
    disjoint shards so every sample is evaluated exactly once and synced metrics equal the
    1-process value.
    """

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        seed: int = 0,
        sampler: str = "shuffle",
        pipeline: str = "pil",
        batch_augment: Augment | None = None,
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ConfigError(
                f"Unknown task.data.sampler {sampler!r}. Use 'shuffle' (every training sample once per epoch, "
                "in a fresh order: the default) or 'balanced' (draw with replacement, every class about equally often)."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.sampler = sampler
        self.pipeline = check_pipeline(pipeline)
        # The cached pipeline's uint8 batch -> augmented (train, with ``batch_augment``), normalised floats.
        self.batch_transform = BatchTransform(batch_augment) if self.pipeline == "cached" else None
        # Set by classification subclasses when MixUp/CutMix is on (``augment.batch_mix``):
        # (normalised images, int labels) -> (mixed images, class probabilities), training only.
        self.batch_mix: Callable[..., Any] | None = None
        self.datasets: dict[str, Dataset] = {}  # "train"/"val"/"test", filled by ``setup``
        self.transforms_in_loader = False  # set as the loaders are made: see ``_loader``

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Cached pipeline on an accelerator: augment (training only) and normalise the uint8 batch
        on the device. Then, in training only, either pipeline's normalised batch is mixed
        (``batch_mix``): after every per-image augmentation, as torchvision's recipe mixes collated
        batches; validation and test keep their integer labels. A bare tensor is the model
        summary's example input, already a float image batch."""
        if isinstance(batch, torch.Tensor):
            return batch
        assert self.trainer is not None  # a batch hook: a trainer runs it
        training = self.trainer.training
        if self.batch_transform is not None and not self.transforms_in_loader:
            batch = self.batch_transform(batch, train=training)
        if self.batch_mix is not None and training:
            batch = self.batch_mix(*batch)
        return batch

    @property
    def class_names(self) -> list[str]:
        """The classes in label order (a mask's values index them); a task's DataModule supplies them."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_labels(self) -> list[int] | None:
        """The class index of each training sample, in dataset order (``sampler="balanced"`` and
        class-weighted losses count them); ``None`` when a sample has no single class (segmentation)."""
        return None

    def train_masks(self) -> Iterator[np.ndarray]:
        """Each training mask, in dataset order (median-frequency class weights count their pixels);
        segmentation DataModules supply them."""
        raise NotImplementedError

    def _training_order(self, num_samples: int, rank: int, world: int) -> EpochShuffleSampler:
        """This rank's share of each epoch's training order, as ``task.data.sampler`` asks."""
        if self.sampler == "shuffle":
            return EpochShuffleSampler(num_samples, self.seed, rank, world)
        labels = self.train_labels()
        if labels is None:
            raise ConfigError(
                f"task.data.sampler=balanced weights each training sample by the size of its class, but "
                f"{type(self).__name__} gives a sample no single class (segmentation labels every pixel). "
                "Use task.data.sampler=shuffle."
            )
        return ClassBalancedSampler(labels, self.seed, rank, world)

    # A task's DataModule supplies its source's listing of a stage (train, val, test), the per-image
    # path's (image, target) -> (normalised tensor, target), and the stage served from the cache.
    def items(self, stage: str) -> ItemsT:
        raise NotImplementedError

    def sample_transform(self, stage: str) -> Callable[[Any, Any], tuple[Any, Any]]:
        raise NotImplementedError

    def cached(self, items: ItemsT, stage: str) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {name: self.dataset(name) for name in STAGES}

    def dataset(self, stage: str) -> Dataset:
        items = self.items(stage)
        return FileSamples(items, self.sample_transform(stage)) if self.pipeline == "pil" else self.cached(items, stage)

    def collate_fn(self, split: str) -> Callable[[Any], Any] | None:
        """How ``split``'s samples become a batch; ``None`` is PyTorch's default collate."""
        return None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], train=True, collate_fn=self.collate_fn("train"))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], train=False, collate_fn=self.collate_fn("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], train=False, collate_fn=self.collate_fn("test"))

    def _loader(self, dataset: Dataset, train: bool, collate_fn: Callable[[Any], Any] | None = None) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        # On a CPU, "on the device" would mean in the training process, on the core it trains on:
        # the cached pipeline's batch transform runs in the loader (its workers) instead.
        self.transforms_in_loader = self.batch_transform is not None and isinstance(getattr(trainer, "accelerator", None), CPUAccelerator)
        batch_transform = self.batch_transform if self.transforms_in_loader else None
        if batch_transform is not None:
            collate_fn = LoaderNormalises(collate_fn, batch_transform)
        size = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__; every split's has one
        sampler: Sampler[int] | Sampler[Draw]
        if trainer is not None and trainer.overfit_batches > 0:  # type: ignore[attr-defined]  # set by Lightning, undeclared
            # Lightning's overfit_batches swaps any other sampler for a SequentialSampler over the
            # dataset, whose storage order is class by class: the few batches it fits (and
            # validates on) would hold one class. It gets a sequential view of a fixed shuffled order.
            fixed = fixed_order(size)
            draws = [Draw(0, index) for index in fixed] if train else fixed
            dataset = Subset(SeededSamples(dataset, self.seed, batch_transform) if train else dataset, draws)  # type: ignore[arg-type]  # SeededSamples is indexed by Draw
            sampler = SequentialSampler(dataset)
        elif train:
            order = self._training_order(size, rank, world)
            sampler = EpochTaggedSampler(order)
            # Workers fetch indices as soon as the loader is iterated, which on resume happens before the
            # fit loop's set_epoch (and while ``current_epoch`` still reads the checkpoint's last finished
            # epoch): start at the epoch the fit loop runs next, as Lightning hands it to ``set_epoch``.
            epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0  # type: ignore[attr-defined]  # typed as its base class
            sampler.set_epoch(epoch)
            dataset = SeededSamples(dataset, self.seed, batch_transform)
        else:
            sampler = EvalShardSampler(size, rank, world)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_fn,
            worker_init_fn=start_loader_worker,
            # Its own generator, so creating an iterator (workers' base seed) draws nothing from
            # the global RNG, which a resumed run creates at a different point than a straight one.
            generator=torch.Generator().manual_seed(self.seed),
        )
