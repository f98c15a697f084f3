"""The image/mask-pair source: how each layout lists a split's pairs (PASCAL VOC2012 and the
built-in ``shapes_seg`` in its real layout, folders of pairs, SegNet's CamVid), and the split as
the per-image path reads it and the uint8 cache stores it. Everything after the listing is shared.

VOC: ``<root>/VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
ImageSets/Segmentation/<split>.txt}``; masks are palette PNGs whose pixel values *are* the class
indices (0 = background, 1..20 = objects, 255 = void border), so they are read as indices and
never converted to RGB. The SBD-augmented ``train_aug`` split reads ``SegmentationClassAug/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import VOCSegmentation

from visionbench.data.storage.atomic import file_lock
from visionbench.data.storage.cache import ImageCache, build_cache, cache_key, files_digest
from visionbench.data.storage.readers import IMAGE_SUFFIXES, image_size, load_pair
from visionbench.errors import CorruptDataError, DataNotFoundError
from visionbench.masks import IGNORE_INDEX

log = logging.getLogger(__name__)

VOC_DIR = Path("VOCdevkit") / "VOC2012"
SPLITS_DIR = Path("ImageSets") / "Segmentation"
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
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
        return [(Path(i), Path(m)) for i, m in zip(voc.images, voc.masks, strict=True)]
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


def _folder_dirs(root: Path, split: str) -> tuple[Path, Path] | None:
    """(images, masks) folders of ``split`` in the folders layout, or None when it has none."""
    for image_dir, mask_dir in ((root / "images" / split, root / "masks" / split), (root / split / "images", root / split / "masks")):
        if image_dir.is_dir() and mask_dir.is_dir():
            return image_dir, mask_dir
    return None


def folder_pairs(root: Path, split: str) -> list[Pair]:
    """``<root>/images/<split>/`` + ``<root>/masks/<split>/``, or ``<root>/<split>/{images,masks}/``."""
    dirs = _folder_dirs(root, split)
    if dirs is not None:
        return _pairs_by_stem(*dirs, split, "folders")
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


def has_split(root: Path, split: str, layout: str) -> bool:
    """Whether the dataset holds a labelled ``split`` (its image and mask folders; for VOC its list
    file and the first listed image's mask: VOC2012's test list comes without masks)."""
    if layout == "voc":
        list_file = root / VOC_DIR / SPLITS_DIR / f"{split}.txt"
        ids = _read_ids(list_file)[:1] if list_file.is_file() else []
        return bool(ids) and (root / VOC_DIR / MASK_DIRS.get(split, "SegmentationClass") / f"{ids[0]}.png").is_file()
    if layout == "camvid":
        return (root / split).is_dir() and (root / f"{split}annot").is_dir()
    return _folder_dirs(root, split) is not None


@dataclass
class ImageMaskPairs:
    """The (image, mask) pairs of one split; each mask is checked as it is read (cheap)."""

    pairs: list[Pair]
    num_classes: int
    split: str
    ignore_index: int = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[Image.Image, np.ndarray]:
        return load_pair(*self.pairs[index], self.num_classes, self.split, self.ignore_index)

    def validate(self) -> None:
        """Every file exists and decodes, masks hold valid indices, sizes match: every pair is read."""
        for index in range(len(self)):
            self.read(index)

    def cache(self, root: Path) -> ImageCache:
        """Decode every pair once, at its native resolution.

        Rule: nothing is resized. Each pair is stored top-left on a canvas as large as the split's
        largest image (500x500 for VOC), images padded with ``MEAN_PIXEL`` and masks with 255, and
        its own size is kept. Training crops then see exactly the pixels the per-image path crops
        from, and evaluation runs on the full native image and mask, as the VOC protocol requires (a
        resize would change the metric). Cost: N x H_max x W_max x 4 bytes (VOC train: ~1.5 GB).
        The key covers the split's file names, sizes and mtimes, and the void value read as 255.
        """
        sizes = [image_size(image_path, self.split) for image_path, _ in self.pairs]
        canvas = (max((h for h, _ in sizes), default=1), max((w for _, w in sizes), default=1))

        def decode(index: int) -> tuple[np.ndarray, np.ndarray]:
            image, mask = self.read(index)
            return np.asarray(image).transpose(2, 0, 1), mask

        key = cache_key(files_digest(p for pair in self.pairs for p in pair), self.num_classes, canvas, self.ignore_index)
        return build_cache(root, f"seg-{self.split}", key, len(self), canvas, decode, with_masks=True)


class PairLayout:
    """The dataset at ``root`` in ``layout``, (generated and) checked once, then listed split by split.

    ``generator`` (a Hydra partial) writes a built-in dataset in this layout when the root holds
    none, which is how ``task=shapes_seg`` runs offline.
    """

    def __init__(
        self, root: Path, layout: str, num_classes: int, ignore_index: int, generator: Callable[[Path], Path] | None = None
    ) -> None:
        self.root = root
        self.layout = layout
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.generator = generator
        self.validated = False  # prepare runs more than once per run (harness, fit, test)

    def split(self, name: str) -> ImageMaskPairs:
        return ImageMaskPairs(split_pairs(self.root, name, self.layout), self.num_classes, name, self.ignore_index)

    def has_split(self, name: str) -> bool:
        return has_split(self.root, name, self.layout)

    def prepare(self, splits: list[str], validate: bool) -> None:
        """Generate (built-in data only), check the layout of ``splits`` and, with ``validate``, every file."""
        with file_lock(self.root.parent / f".{self.root.name}.lock"):
            if self.generator is not None:
                self.generator(self.root)
            listed = [self.split(name) for name in dict.fromkeys(splits)]
            if validate and not self.validated:
                for split in listed:
                    split.validate()
                log.info(
                    "validated %d image/mask pairs in %s (%s)",
                    sum(map(len, listed)),
                    self.root,
                    ", ".join(s.split for s in listed),
                )
                self.validated = True
