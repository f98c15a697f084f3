"""Semantic segmentation from image/mask pairs: PASCAL VOC2012 in its real on-disk layout (and
``shapes_seg`` in the same), and any dataset given as folders of pairs (``layout``).

VOC: ``<root>/VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
ImageSets/Segmentation/<split>.txt}``; masks are palette PNGs whose pixel values *are* the class
indices (0 = background, 1..20 = objects, 255 = void border), so they are read as indices and
never converted to RGB. The SBD-augmented ``train_aug`` split reads ``SegmentationClassAug/``.
The other layouts (``LAYOUTS``) only list pairs differently; everything after the listing is shared.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import VOCSegmentation
from torchvision.transforms import v2

from visionbench.data.atomic import file_lock
from visionbench.data.base import VisionDataModule
from visionbench.data.batch_augment import SegmentationBatchTransform
from visionbench.data.cache import MEAN_PIXEL, ImageCache, build_cache, cache_key, check_pipeline, files_digest
from visionbench.data.images import IMAGE_SUFFIXES, load_rgb, unreadable_reason
from visionbench.data.seg_transforms import (
    SegAugment,
    SegmentationTransform,
    eval_transform,
    pad_collate,
    train_steps,
    train_transform,
)
from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError
from visionbench.masks import IGNORE_INDEX

log = logging.getLogger(__name__)

VOC_DIR = Path("VOCdevkit") / "VOC2012"
SPLITS_DIR = Path("ImageSets") / "Segmentation"
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
TORCHVISION_SPLITS = ("train", "trainval", "val")  # what torchvision's VOCSegmentation accepts
MASK_DIRS = {"train_aug": "SegmentationClassAug"}  # split -> mask folder; default SegmentationClass
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"

Pair = tuple[Path, Path]  # (image, mask)


def _missing_root(root: Path) -> DataNotFoundError:
    return DataNotFoundError(
        f"PASCAL VOC2012 not found: '{root / VOC_DIR}' does not exist. Download the VOC2012 trainval "
        f"archive (VOCtrainval_11-May-2012.tar, 1.9 GB) from the official site ({VOC_URL}) and extract "
        f"it under '{root}' (`tar -xf VOCtrainval_11-May-2012.tar -C {root}`), so that "
        f"'{root / VOC_DIR / 'JPEGImages'}' exists; or set task.data.root / paths.data_dir. "
        "`task=shapes_seg` trains on the built-in dataset in the same layout, which needs no download."
    )


def _read_ids(list_file: Path) -> list[str]:
    """Image ids of a split list; lines of the form ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``
    (the common SBD ``train_aug.txt``) are reduced to their id ``x``."""
    return [Path(line.split()[0]).stem for line in list_file.read_text().splitlines() if line.strip()]


def voc_pairs(root: Path, split: str) -> list[Pair]:
    """(image, mask) paths of ``split``: torchvision's reader for VOC's own lists, the same
    layout with ``SegmentationClassAug/`` masks for ``train_aug``."""
    voc_root = root / VOC_DIR
    if not voc_root.is_dir():
        raise _missing_root(root)
    list_file = voc_root / SPLITS_DIR / f"{split}.txt"
    if not list_file.is_file():
        hint = (
            "train_aug comes from the SBD augmented set: put SegmentationClassAug/ and "
            "ImageSets/Segmentation/train_aug.txt into VOC2012/, or use task.data.train_split=train."
            if split in MASK_DIRS
            else "Re-extract the VOC2012 trainval archive, or pick an existing list with task.data.{train,val,test}_split."
        )
        raise DataNotFoundError(f"The split list '{list_file}' for split '{split}' does not exist. {hint}")
    if split in TORCHVISION_SPLITS:
        voc = VOCSegmentation(str(root), year="2012", image_set=split, download=False)
        return [(Path(i), Path(m)) for i, m in zip(voc.images, voc.masks)]
    mask_dir = voc_root / MASK_DIRS.get(split, "SegmentationClass")
    return [(voc_root / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in _read_ids(list_file)]


def _pairs_by_stem(image_dir: Path, mask_dir: Path, split: str, layout: str) -> list[Pair]:
    """Images of ``image_dir`` matched to the ``<stem>.png`` masks of ``mask_dir``, sorted by stem.

    A file without its partner is an error rather than a silent drop: a dropped image would
    quietly change what the numbers are measured on.
    """
    images: dict[str, Path] = {}
    for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if path.stem in images:
            raise CorruptDataError(
                f"'{images[path.stem]}' and '{path}' (split '{split}') share the name '{path.stem}', so neither "
                f"can be paired with the mask '{mask_dir / path.stem}.png'. Rename or remove one of them."
            )
        images[path.stem] = path
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    unpaired = [(images[s], mask_dir / f"{s}.png") for s in sorted(images.keys() - masks.keys())]
    unpaired += [(masks[s], image_dir / f"{s}.<ext>") for s in sorted(masks.keys() - images.keys())]
    if not images:
        raise DataNotFoundError(
            f"'{image_dir}' (split '{split}', task.data.layout={layout}) holds no images ({', '.join(IMAGE_SUFFIXES)}). "
            "Put the split's images there, or check task.data.root and task.data.{train,val,test}_split."
        )
    if unpaired:
        found, expected = unpaired[0]
        raise DataNotFoundError(
            f"'{found}' (split '{split}') has no partner: '{expected}' does not exist "
            f"({len(unpaired)} unpaired file(s) in this split). Images and masks are paired by file name "
            f"(task.data.layout={layout}): add the missing file, remove the unpaired one, or check "
            "task.data.root and task.data.{train,val,test}_split."
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def _missing_split_dir(root: Path, split: str, layout: str, expected: str) -> DataNotFoundError:
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    where = f"'{root}' holds {present}" if root.is_dir() else f"'{root}' does not exist"
    return DataNotFoundError(
        f"No split '{split}' for task.data.layout={layout}: expected {expected}, but {where}. "
        "Point task.data.root at the dataset, set task.data.{train,val,test}_split to splits it has, "
        "or pick the task.data.layout it is in (voc, folders, camvid)."
    )


def folder_pairs(root: Path, split: str) -> list[Pair]:
    """``<root>/images/<split>/`` + ``<root>/masks/<split>/``, or ``<root>/<split>/{images,masks}/``."""
    for image_dir, mask_dir in ((root / "images" / split, root / "masks" / split), (root / split / "images", root / split / "masks")):
        if image_dir.is_dir() and mask_dir.is_dir():
            return _pairs_by_stem(image_dir, mask_dir, split, "folders")
    expected = f"'{root}/images/{split}/' with '{root}/masks/{split}/' (or '{root}/{split}/images|masks/')"
    raise _missing_split_dir(root, split, "folders", expected)


def camvid_pairs(root: Path, split: str) -> list[Pair]:
    """SegNet's CamVid layout: ``<root>/<split>/`` images, ``<root>/<split>annot/`` index masks."""
    image_dir, mask_dir = root / split, root / f"{split}annot"
    if not (image_dir.is_dir() and mask_dir.is_dir()):
        raise _missing_split_dir(root, split, "camvid", f"'{image_dir}/' with '{mask_dir}/'")
    return _pairs_by_stem(image_dir, mask_dir, split, "camvid")


LAYOUTS: dict[str, Callable[[Path, str], list[Pair]]] = {"voc": voc_pairs, "folders": folder_pairs, "camvid": camvid_pairs}


def split_pairs(root: Path, split: str, layout: str = "voc") -> list[Pair]:
    """The (image, mask) pairs of ``split`` of the dataset at ``root`` in ``layout`` (``LAYOUTS``)."""
    return LAYOUTS[layout](root, split)


def _missing_file(path: Path, split: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"'{path}' is listed in split '{split}' (ImageSets/Segmentation/{split}.txt) but does not exist. "
        "Re-extract the dataset archive, or remove the id from the list."
    )


def load_mask(path: Path, num_classes: int, split: str = "?", ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The mask as an (H, W) uint8 array of class indices; any value other than
    ``0..num_classes-1`` and ``ignore_index`` is an error naming the file and the values.

    The dataset's void value ``ignore_index`` (CamVid: 11) is rewritten to ``IGNORE_INDEX`` here,
    so the loss, metrics, padding and figures downstream know a single void value.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise CorruptDataError(
                    f"Mask '{path}' has mode {image.mode}; segmentation masks must be palette (P) or grayscale (L) "
                    "PNGs whose pixel values are class indices, as VOC's SegmentationClass/. A colour (RGB) "
                    "rendering of the labels cannot be used: convert it back to indices."
                )
            mask = np.array(image)
    except FileNotFoundError as err:
        raise _missing_file(path, split) from err
    except OSError as err:
        raise CorruptDataError(f"Mask '{path}' cannot be decoded ({err}). Re-extract it from the dataset archive.") from err
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise CorruptDataError(
            f"Mask '{path}' contains value(s) {bad.tolist()} outside the class indices 0..{num_classes - 1} and "
            f"{ignore_index} (ignore). The file is corrupt or belongs to another label set; re-extract it, or "
            "check task.data.class_names (its length is the number of classes) and task.data.ignore_index."
        )
    if ignore_index != IGNORE_INDEX:
        mask[mask == ignore_index] = IGNORE_INDEX
    return mask


def _check_sizes(image_path: Path, image_size: tuple[int, int], mask_path: Path, mask_size: tuple[int, int]) -> None:
    if image_size != mask_size:
        raise CorruptDataError(
            f"Image '{image_path}' is {image_size[0]}x{image_size[1]} but its mask '{mask_path}' is "
            f"{mask_size[0]}x{mask_size[1]} (width x height); they must match pixel for pixel. "
            "Re-extract both from the dataset archive."
        )


class SegmentationFiles(Dataset):
    """The (image, mask) pairs of one split; each mask is checked as it is loaded (cheap)."""

    def __init__(
        self, pairs: list[Pair], num_classes: int, transform: SegmentationTransform, split: str, ignore_index: int = IGNORE_INDEX
    ) -> None:
        self.pairs = pairs
        self.num_classes = num_classes
        self.transform = transform
        self.split = split
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        try:
            image = load_rgb(image_path)
        except FileNotFoundError as err:
            raise _missing_file(image_path, self.split) from err
        except OSError as err:
            raise CorruptDataError(f"Image '{image_path}' cannot be decoded ({err}). Re-extract it from the dataset archive.") from err
        mask = load_mask(mask_path, self.num_classes, self.split, self.ignore_index)
        _check_sizes(image_path, image.size, mask_path, (mask.shape[1], mask.shape[0]))
        return image, mask

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(*self.load(index))


def validate_pairs(pairs: list[Pair], num_classes: int, split: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Every file of a split exists and decodes, masks hold valid indices, sizes match."""
    for image_path, mask_path in pairs:
        if not image_path.is_file():
            raise _missing_file(image_path, split)
        reason = unreadable_reason(image_path)
        if reason is not None:
            raise CorruptDataError(f"Image '{image_path}' (split '{split}') {reason}. Re-extract it from the dataset archive.")
        mask = load_mask(mask_path, num_classes, split, ignore_index)
        with Image.open(image_path) as image:
            _check_sizes(image_path, image.size, mask_path, (mask.shape[1], mask.shape[0]))


def build_segmentation_cache(root: Path, split: str, files: SegmentationFiles) -> ImageCache:
    """Decode every (image, mask) pair of ``split`` once, at its native resolution.

    Rule: nothing is resized. Each pair is stored top-left on a canvas as large as the split's
    largest image (500x500 for VOC), images padded with ``MEAN_PIXEL`` and masks with 255, and
    its own size is kept. Training crops then see exactly the pixels the PIL path crops from,
    and evaluation runs on the full native image and mask, as the VOC protocol requires (a
    resize would change the metric). Cost: N x H_max x W_max x 4 bytes (VOC train: ~1.5 GB).
    The key covers the split's file names, sizes and mtimes, and the void value read as 255.
    """
    paths = [p for pair in files.pairs for p in pair]
    sizes = []
    for image_path, _ in files.pairs:
        try:
            with Image.open(image_path) as image:
                sizes.append((image.height, image.width))
        except FileNotFoundError as err:
            raise _missing_file(image_path, split) from err
    canvas = (max((h for h, _ in sizes), default=1), max((w for _, w in sizes), default=1))

    def decode(index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = files.load(index)
        return np.asarray(image).transpose(2, 0, 1), mask

    key = cache_key(files_digest(paths), files.num_classes, canvas, files.ignore_index)
    return build_cache(root, f"seg-{split}", key, len(files), canvas, decode, with_masks=True)


class CachedSegmentationFiles(Dataset):
    """A split served from its cache as uint8 images and int64 masks.

    Training samples go through ``train_steps`` on the uint8 pair at its native size, the per-image
    path's own random scale, pad (``MEAN_PIXEL``/void), crop and flip: the same numbers drawn in
    the same order, so a seeded sample equals the per-image one up to uint8 rounding. The scale
    runs here and not on the device because it needs the whole image, not the crop. Evaluation
    samples are the full native image and mask.
    """

    def __init__(self, cache: ImageCache, transform: v2.Compose | None) -> None:
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        assert self.cache.masks is not None
        h, w = self.cache.sizes[index]
        image = torch.from_numpy(self.cache.images.read(index))[:, :h, :w]
        mask = torch.from_numpy(self.cache.masks.read(index))[:h, :w]
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(Tensor), mask.as_subclass(Tensor).long()


def pad_collate_uint8(batch: list[tuple[Tensor, Tensor]], size_divisor: int = 32) -> tuple[Tensor, Tensor]:
    """``pad_collate`` for uint8 images: padding is ``MEAN_PIXEL`` (~0 once normalised), masks void."""
    height = math.ceil(max(img.shape[-2] for img, _ in batch) / size_divisor) * size_divisor
    width = math.ceil(max(img.shape[-1] for img, _ in batch) / size_divisor) * size_divisor
    images = torch.tensor(MEAN_PIXEL, dtype=torch.uint8).view(1, 3, 1, 1).repeat(len(batch), 1, height, width)
    for i, (img, _) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
    masks = torch.stack(
        [F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]), value=IGNORE_INDEX) for _, m in batch]
    )
    return images, masks


class VOCSegmentationDataModule(VisionDataModule):
    """Image/mask pairs (VOC2012 layout, or ``layout``: folders, camvid) -> joint transforms -> padded batches.

    ``pipeline="pil"`` (the reference) decodes and transforms every pair in the loader;
    ``pipeline="cached"`` decodes each split once into ``<root>/.cache/`` at native resolution
    (see ``build_segmentation_cache``), scales, crops and flips the uint8 pairs in the loader with
    the per-image path's steps, and normalises whole batches on the device with
    ``batch_transform`` in ``on_after_batch_transfer``.

    Training uses random crops (padded when the image is smaller, never dropped); validation
    and test use full images, batched by ``pad_collate``. VOC publishes no test labels, so the
    configs set ``test_split: val``. ``generator`` (a Hydra partial) writes a built-in dataset
    in this layout when the root holds none, which is how ``task=shapes_seg`` runs offline.
    ``ignore_index`` is the masks' void value on disk; it is read as 255 (``load_mask``).
    """

    def __init__(
        self,
        root: str | Path,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
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
        super().__init__(batch_size, num_workers, seed)
        self.pipeline = check_pipeline(pipeline)
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.crop = (int(crop[0]), int(crop[1]))
        self.augment = SegAugment(**(augment or {}))
        self.batch_transform = SegmentationBatchTransform() if pipeline == "cached" else None
        self.size_divisor = size_divisor
        self.validate = validate
        if layout not in LAYOUTS:
            raise ConfigError(f"Unknown task.data.layout '{layout}'; choose one of {', '.join(LAYOUTS)}.")
        if class_names is None and layout != "voc":  # instantiate passes an unset `class_names: ???` as None
            raise ConfigError(
                f"task.data.class_names is not set; task.data.layout={layout} needs the class names in mask-index "
                "order, e.g. 'task.data.class_names=[background,road]' (mask value 0 is the first name)."
            )
        self.class_names = list(class_names or VOC_CLASSES)
        self.layout = layout
        if not self.num_classes <= ignore_index <= 255:
            raise ConfigError(
                f"task.data.ignore_index={ignore_index} must be a mask value that is not a class: "
                f"{self.num_classes}..255 for the {self.num_classes} classes of task.data.class_names."
            )
        self.ignore_index = ignore_index
        self.generator = generator
        self.validated = False  # prepare_data runs more than once per run (harness, fit, test)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Generate (built-in data only), check the layout and, with ``validate``, every file."""
        with file_lock(self.root.parent / f".{self.root.name}.lock"):
            if self.generator is not None:
                self.generator(self.root)
            pairs = {split: split_pairs(self.root, split, self.layout) for split in dict.fromkeys(self.splits.values())}
            if self.validate and not self.validated:
                for split, split_files in pairs.items():
                    validate_pairs(split_files, self.num_classes, split, self.ignore_index)
                log.info("validated %d image/mask pairs in %s (%s)", sum(map(len, pairs.values())), self.root, ", ".join(pairs))
                self.validated = True

    def setup(self, stage: str | None = None) -> None:
        pairs = {stage_: split_pairs(self.root, split, self.layout) for stage_, split in self.splits.items()}
        overlap = {p for p, _ in pairs["train"]} & {p for p, _ in pairs["val"]}
        if overlap:
            log.warning(
                "%d image(s) of train split '%s' are also in val split '%s': validation numbers are optimistic.",
                len(overlap), self.splits["train"], self.splits["val"],
            )
        files = {
            stage_: SegmentationFiles(
                stage_pairs,
                self.num_classes,
                train_transform(self.crop, self.augment) if stage_ == "train" else eval_transform(),
                self.splits[stage_],
                self.ignore_index,
            )
            for stage_, stage_pairs in pairs.items()
        }
        if self.pipeline == "pil":
            self.datasets = dict(files)
            return
        self.datasets = {
            stage_: CachedSegmentationFiles(
                build_segmentation_cache(self.root, self.splits[stage_], stage_files),
                v2.Compose(train_steps(self.crop, self.augment, MEAN_PIXEL)) if stage_ == "train" else None,
            )
            for stage_, stage_files in files.items()
        }

    def collate_fn(self, split: str) -> Callable[[Any], Any]:
        collate_fn = pad_collate if self.pipeline == "pil" else pad_collate_uint8
        return functools.partial(collate_fn, size_divisor=self.size_divisor)
