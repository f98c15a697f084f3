"""Semantic segmentation from image/mask pairs: PASCAL VOC2012 (and ``shapes_seg``) in its real
layout, folders of pairs (``task=seg_folder``) and CamVid (``task=camvid``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from torchvision.transforms import v2

from visionbench.data.base import STAGES, VisionDataModule
from visionbench.data.sources.pair_layouts import LAYOUTS, VOC_CLASSES, ImageMaskPairs, PairLayout
from visionbench.data.storage.readers import load_mask
from visionbench.data.storage.samples import CachedPairs
from visionbench.data.transforms.augment import SegAugment
from visionbench.data.transforms.per_sample import eval_transform, pad_collate, train_steps, train_transform
from visionbench.errors import ConfigError
from visionbench.masks import IGNORE_INDEX
from visionbench.pixels import MEAN_PIXEL

log = logging.getLogger(__name__)


class ImageMaskDataModule(VisionDataModule[ImageMaskPairs]):
    """Image/mask pairs (``layout``: voc, folders, camvid) -> joint transforms -> padded batches.

    ``pipeline="pil"`` (the reference) decodes and transforms every pair in the loader;
    ``pipeline="cached"`` decodes each split once into ``<root>/.cache/`` at native resolution
    (``ImageMaskPairs.cache``), scales, crops and flips the uint8 pairs in the loader with the
    per-image path's steps, and normalises whole batches with ``batch_transform``.

    Training uses random crops (padded when the image is smaller, never dropped); validation
    and test use full images, batched by ``pad_collate``. VOC publishes no test labels, so the
    configs set ``test_split: val``; ``test_split=None`` (``task=seg_folder``) tests on the dataset's
    ``test`` split when it has one, else on the val split. Testing on the val split is said in
    the log unless the config names val and the dataset has no test split (VOC's protocol).
    ``ignore_index`` is the masks' void value on disk; it is read as 255 (``readers.load_mask``).
    """

    def __init__(
        self,
        root: str | Path,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = "val",
        crop: tuple[int, int] = (320, 480),
        augment: dict[str, Any] | None = None,
        size_divisor: int = 32,
        batch_size: int = 32,
        num_workers: int = 2,
        validate: bool = False,
        class_names: list[str] | None = None,
        generator: Callable[[Path], Path] | None = None,
        seed: int = 0,
        pipeline: str = "pil",
        layout: str = "voc",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(batch_size, num_workers, seed, pipeline=pipeline)
        self.root = Path(root)
        self.splits: dict[str, str | None] = dict(zip(STAGES, (train_split, val_split, test_split), strict=True))
        self.crop = (int(crop[0]), int(crop[1]))
        self.augment = SegAugment(**(augment or {}))
        self.size_divisor = size_divisor
        self.validate = validate
        if layout not in LAYOUTS:
            raise ConfigError(f"Unknown task.data.layout '{layout}'; choose one of {', '.join(LAYOUTS)}.")
        if class_names is None and layout != "voc":  # instantiate passes an unset `class_names: ???` as None
            raise ConfigError(
                f"task.data.class_names is not set; task.data.layout={layout} needs the class names in mask-index "
                "order, e.g. 'task.data.class_names=[background,road]' (mask value 0 is the first name)."
            )
        self._class_names = list(class_names or VOC_CLASSES)
        if not self.num_classes <= ignore_index <= 255:
            raise ConfigError(
                f"task.data.ignore_index={ignore_index} must be a mask value that is not a class: "
                f"{self.num_classes}..255 for the {self.num_classes} classes of task.data.class_names."
            )
        self.source = PairLayout(self.root, layout, self.num_classes, ignore_index, generator)
        self.warned = False  # prepare_data runs more than once per run (fit, test)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def prepare_data(self) -> None:
        self.source.prepare([self.split_name(stage) for stage in STAGES], self.validate)
        if not self.warned:
            self.warn_if_tested_on_val()
            self.warned = True

    def split_name(self, stage: str) -> str:
        """The dataset split ``stage`` reads; ``test_split=None``: ``test`` when the dataset has it, else val."""
        name = self.splits[stage]
        if name is None:
            return "test" if self.source.has_split("test") else str(self.splits["val"])
        return name

    def warn_if_tested_on_val(self) -> None:
        """Test numbers on the val split are validation numbers (the checkpoint they score was chosen on them)."""
        val = self.split_name("val")
        if self.split_name("test") != val:
            return
        consequence = "so test/ numbers are validation numbers (the checkpoint they score was chosen on them)"
        if self.splits["test"] is None:
            log.warning(
                "'%s' has no test split: the val split '%s' is the test split too, %s. Add a test split "
                "(for task.data.layout=%s, as the train and val splits are laid out) for an unbiased test.",
                self.root,
                val,
                consequence,
                self.source.layout,
            )
        elif self.source.has_split("test"):
            log.warning(
                "'%s' has a test split, but task.data.test_split=%s tests on the val split, %s. "
                "Set task.data.test_split=test to test on it.",
                self.root,
                val,
                consequence,
            )

    def items(self, stage: str) -> ImageMaskPairs:
        return self.source.split(self.split_name(stage))

    def train_masks(self) -> Iterator[np.ndarray]:
        """Every training mask as training reads it (void as 255): from the uint8 cache with
        ``pipeline="cached"`` (built here if absent, as ``setup`` would), else from its file."""
        items = self.items("train")
        if self.pipeline == "cached":
            cache = items.cache(self.root)
            assert cache.masks is not None
            for index, (height, width) in enumerate(cache.sizes):
                yield cache.masks.read(index)[:height, :width]
        else:
            for _, mask_path in items.pairs:
                yield load_mask(mask_path, items.num_classes, items.split, items.ignore_index)

    def sample_transform(self, stage: str) -> Callable[[Any, Any], tuple[Any, Any]]:
        return train_transform(self.crop, self.augment) if stage == "train" else eval_transform()

    def cached(self, items: ImageMaskPairs, stage: str) -> Dataset:
        steps = v2.Compose(train_steps(self.crop, self.augment, MEAN_PIXEL)) if stage == "train" else None
        return CachedPairs(items.cache(self.root), steps)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        train, val = (self.items(name).pairs for name in ("train", "val"))
        overlap = {p for p, _ in train} & {p for p, _ in val}
        if overlap:
            log.warning(
                "%d image(s) of train split '%s' are also in val split '%s': validation numbers are optimistic.",
                len(overlap),
                self.split_name("train"),
                self.split_name("val"),
            )

    def collate_fn(self, split: str) -> Callable[[Any], Any]:
        return functools.partial(pad_collate, size_divisor=self.size_divisor)
