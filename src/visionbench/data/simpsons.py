"""The Simpsons classification data (and the built-in ``shapes`` data in the same layout)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from visionbench.data.atomic import file_lock
from visionbench.data.base import VisionDataModule
from visionbench.data.batch_augment import ClassificationBatchTransform
from visionbench.data.cache import (
    ImageCache,
    build_cache,
    cache_key,
    check_pipeline,
    decode_resized,
    file_digest,
    files_digest,
    image_tensor,
)
from visionbench.data.images import load_rgb
from visionbench.data.split import (
    EXCLUDED,
    MANIFEST,
    Entry,
    SplitSpec,
    build_split,
    manifest_is_current,
    read_manifest,
    write_manifest,
)
from visionbench.data.transforms import Augment, batch_mix, classification_transform
from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError

log = logging.getLogger(__name__)


@contextmanager
def _readable(root: Path, path: Path) -> Iterator[None]:
    """Turn a vanished or undecodable listed file into the error that says how to fix it."""
    try:
        yield
    except FileNotFoundError as err:
        raise DataNotFoundError(
            f"'{path}' is listed in {root / MANIFEST} but no longer exists. Restore the file, or delete "
            "the manifest so it is rebuilt from the files present."
        ) from err
    except OSError as err:
        raise CorruptDataError(
            f"'{path}' changed since the manifest was built and no longer decodes ({err}). Delete "
            f"{root / MANIFEST} to rebuild the split (unreadable files are then excluded and listed)."
        ) from err


class ManifestImageDataset(Dataset):
    """The images of one split as listed in the manifest, labelled by class index."""

    def __init__(self, root: Path, entries: list[Entry], class_to_idx: dict[str, int], transform: Callable[[Any], Tensor]) -> None:
        self.root = root
        self.entries = entries
        self.class_to_idx = class_to_idx
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        entry = self.entries[index]
        path = self.root / entry.path
        with _readable(self.root, path):
            image = load_rgb(path)
        return self.transform(image), self.class_to_idx[entry.label]


class CachedImageDataset(Dataset):
    """The same split served from the uint8 cache: (3, S, S) uint8 images, augmented and
    normalised as whole batches on the device (``ClassificationBatchTransform``)."""

    def __init__(self, cache: ImageCache, labels: list[int]) -> None:
        self.cache = cache
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return image_tensor(self.cache, index), self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """A whole batch in one read (the DataLoader calls this instead of ``__getitem__`` per
        index, then ``collate_batch``): every image is ``image_size``², so no crop is needed."""
        images = torch.from_numpy(self.cache.images.read_many(indices))
        return images, torch.tensor([self.labels[i] for i in indices])


def collate_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The collate step of ``CachedImageDataset``: its ``__getitems__`` already returns a batch."""
    return batch


class SimpsonsDataModule(VisionDataModule):
    """Kaggle Simpsons layout (or any class-folder dataset: ``task=folder``) -> deterministic manifest -> images for the model.

    ``pipeline="pil"`` decodes, resizes, augments and normalises every image in the loader
    (torchvision v2, the reference). ``pipeline="cached"`` decodes and resizes each split once
    into ``<root>/.cache/`` (rebuilt when the manifest or ``image_size`` changes), serves uint8
    batches, and augments and normalises whole batches on the device with ``batch_transform``
    in ``on_after_batch_transfer``. Either pipeline's training batches are then mixed there
    (``batch_mix``) when ``augment.mixup``/``augment.cutmix`` is on.

    ``generator`` (a Hydra partial) creates a built-in dataset in the same layout when the
    root holds none, which is how ``task=shapes`` runs offline through this exact code path.
    """

    def __init__(
        self,
        root: str | Path | None,
        image_size: int = 128,
        batch_size: int = 32,
        num_workers: int = 2,
        split: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        generator: Callable[[Path], Path] | None = None,
        seed: int = 0,
        pipeline: str = "pil",
        sampler: str = "shuffle",
    ) -> None:
        super().__init__(batch_size, num_workers, seed, sampler)
        if root is None:  # task=folder's default: Hydra cannot make a key inherited from simpsons.yaml mandatory (???)
            raise ConfigError(
                "task.data.root is not set: task=folder trains on your own images and needs their folder. Add "
                "task.data.root=/path/to/data to the command line; it holds class folders ('<root>/<class>/<image>'), "
                "or train/ and val/ (and optionally test/) folders of class folders."
            )
        self.root = Path(root)
        self.image_size = image_size
        self.spec = SplitSpec(**(split or {}))
        self.augment = Augment(**(augment or {}))
        self.generator = generator
        self.pipeline = check_pipeline(pipeline)
        self.batch_transform = ClassificationBatchTransform(self.augment) if pipeline == "cached" else None
        self.entries: list[Entry] | None = None

    def prepare_data(self) -> None:
        """Generate (built-in data only) and build the manifest once; later calls reuse it."""
        with file_lock(self.root.parent / f".{self.root.name}.lock"):
            if self.generator is not None:
                self.generator(self.root)
            if manifest_is_current(self.root, self.spec):
                return
            result = build_split(self.root, self.spec)
            if not result.entries:
                raise DataNotFoundError(
                    f"No class in '{self.root}' has more than {self.spec.min_images} readable images "
                    f"(found: {dict(sorted(result.dropped_classes.items())) or 'none'}). Lower "
                    "task.data.split.min_images or add images."
                )
            write_manifest(self.root, result, self.spec)
            if result.excluded:
                log.warning(
                    "%d file(s) excluded from %s (unreadable or duplicate content); the list is in %s",
                    len(result.excluded), self.root, self.root / EXCLUDED,
                )
            if result.dropped_classes:
                log.warning(
                    "%d class(es) with %d or fewer readable images dropped: %s",
                    len(result.dropped_classes), self.spec.min_images, result.dropped_classes,
                )  # fmt: skip

    def _entries(self) -> list[Entry]:
        if self.entries is None:
            if not (self.root / MANIFEST).is_file():
                self.prepare_data()
            self.entries = read_manifest(self.root)
        return self.entries

    @property
    def class_names(self) -> list[str]:
        return sorted({e.label for e in self._entries()})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_labels(self) -> list[int]:
        """From the manifest, in the order both pipelines store the training split: available
        before ``setup`` (``build_task`` counts them without building the cache)."""
        class_to_idx = {c: i for i, c in enumerate(self.class_names)}
        return [class_to_idx[e.label] for e in self._entries() if e.split == "train"]

    def excluded_files(self) -> list[tuple[str, str]]:
        with open(self.root / EXCLUDED, newline="") as f:
            return [(r["path"], r["reason"]) for r in csv.DictReader(f)]

    def split_dataset(self, split: str, train_transform: bool = False) -> ManifestImageDataset:
        class_to_idx = {c: i for i, c in enumerate(self.class_names)}
        transform = classification_transform(self.image_size, self.augment if train_transform else None)
        return ManifestImageDataset(self.root, [e for e in self._entries() if e.split == split], class_to_idx, transform)

    def cached_dataset(self, split: str) -> CachedImageDataset:
        """The split from its uint8 cache, built first if the manifest, a file or the size changed."""
        class_to_idx = {c: i for i, c in enumerate(self.class_names)}
        entries = [e for e in self._entries() if e.split == split]
        size = (self.image_size, self.image_size)

        def decode(index: int) -> tuple[Any, None]:
            path = self.root / entries[index].path
            with _readable(self.root, path):
                return decode_resized(path, size), None

        try:  # the files' sizes and mtimes: an image replaced under its name gives a new key
            files = files_digest(self.root / e.path for e in entries)
        except FileNotFoundError as err:
            with _readable(self.root, Path(err.filename)):
                raise
        key = cache_key(file_digest(self.root / MANIFEST), files, split, size)
        cache = build_cache(self.root, split, key, len(entries), size, decode)
        return CachedImageDataset(cache, [class_to_idx[e.label] for e in entries])

    def setup(self, stage: str | None = None) -> None:
        self.batch_mix = batch_mix(self.augment, self.num_classes)  # needs the classes: set here, not in __init__
        if self.pipeline == "cached":
            self.datasets = {split: self.cached_dataset(split) for split in ("train", "val", "test")}
            return
        self.datasets = {
            "train": self.split_dataset("train", train_transform=True),
            "val": self.split_dataset("val"),
            "test": self.split_dataset("test"),
        }

    def collate_fn(self, split: str) -> Callable[[Any], Any] | None:
        return collate_batch if self.pipeline == "cached" else None
