"""Classification from class folders: the Kaggle Simpsons layout, ``task=folder`` and ``task=shapes``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from visionbench.data.base import VisionDataModule
from visionbench.data.sources.class_folders import ClassFolders, LabelledImages
from visionbench.data.sources.split import SplitSpec
from visionbench.data.storage.samples import CachedImages, whole_batch
from visionbench.data.transforms.augment import Augment, batch_mix
from visionbench.data.transforms.per_sample import classification_transform
from visionbench.errors import ConfigError


class ClassFolderDataModule(VisionDataModule[LabelledImages]):
    """Class folders -> deterministic manifest (``ClassFolders``) -> images for the model.

    ``pipeline="pil"`` decodes, resizes, augments and normalises every image in the loader
    (torchvision v2, the reference). ``pipeline="cached"`` decodes and resizes each split once
    into ``<root>/.cache/`` (rebuilt when the manifest or ``image_size`` changes), serves uint8
    batches, and augments and normalises whole batches with ``batch_transform``. Either
    pipeline's training batches are then mixed (``batch_mix``) when ``augment.mixup``/``augment.cutmix`` is on.
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
        self.augment = Augment(**(augment or {}))
        super().__init__(batch_size, num_workers, seed, sampler, pipeline, self.augment)
        if root is None:  # task=folder's default: Hydra cannot make a key inherited from simpsons.yaml mandatory (???)
            raise ConfigError(
                "task.data.root is not set: task=folder trains on your own images and needs their folder. Add "
                "task.data.root=/path/to/data to the command line; it holds class folders ('<root>/<class>/<image>'), "
                "or train/ and val/ (and optionally test/) folders of class folders."
            )
        self.root = Path(root)
        self.image_size = image_size
        self.source = ClassFolders(self.root, SplitSpec(**(split or {})), generator)

    def prepare_data(self) -> None:
        self.source.prepare()

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names

    def train_labels(self) -> list[int]:
        """From the manifest, in the order both pipelines store the training split: available
        before ``setup`` (``build_task`` counts them without building the cache)."""
        return self.items("train").labels

    def excluded_files(self) -> list[tuple[str, str]]:
        return self.source.excluded_files()

    def items(self, stage: str) -> LabelledImages:
        return self.source.split(stage)

    def sample_transform(self, stage: str) -> Callable[[Any, Any], tuple[Any, Any]]:
        return classification_transform(self.image_size, self.augment if stage == "train" else None)

    def cached(self, items: LabelledImages, stage: str) -> Dataset:
        return CachedImages(items.cache((self.image_size, self.image_size)), items.labels)

    def setup(self, stage: str | None = None) -> None:
        self.batch_mix = batch_mix(self.augment, self.num_classes)  # needs the classes: set here, not in __init__
        super().setup(stage)

    def collate_fn(self, split: str) -> Callable[[Any], Any] | None:
        return whole_batch if self.pipeline == "cached" else None
