"""Readers: an image decoded as RGB whatever its mode, a mask as class indices, and one paragraph
naming the file (and the fix) when either cannot be used."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from visionbench.errors import CorruptDataError, DataNotFoundError
from visionbench.masks import IGNORE_INDEX

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def load_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully and convert to RGB.

    Grayscale, CMYK, palette and alpha images all become 3-channel RGB (alpha is composited
    on black by ``convert``), so every model sees the same input layout.
    """
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def decode_resized(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) uint8 of ``path`` squash-resized to ``size`` = (H, W), as the per-image path does it.

    JPEGs are decoded at the smallest DCT scale still at least ``size`` (``Image.draft``, ~1.6x
    faster), then resized with the same antialiased bilinear resize as ``classification_transform``,
    which keeps the result within about a grey level of the full decode.
    """
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size[1], size[0]))
        image.load()
        rgb = image.convert("RGB")
    return TF.resize(TF.to_image(rgb), list(size), antialias=True).numpy()


def unreadable_reason(path: Path) -> str | None:
    """Return why ``path`` cannot be used as an image, or ``None`` when it decodes completely.

    A full decode (not ``Image.verify``) is needed: verify accepts truncated JPEGs. JPEGs are
    decoded at a reduced DCT scale (``draft``), which still reads every byte of the stream.
    """
    if path.stat().st_size == 0:
        return "zero-byte file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        return f"cannot be decoded ({err})"
    return None


def missing_listed_file(path: Path, split: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"'{path}' is listed in split '{split}' (ImageSets/Segmentation/{split}.txt) but does not exist. "
        "Re-extract the dataset archive, or remove the id from the list."
    )


def image_size(path: Path, split: str) -> tuple[int, int]:
    """(height, width) from the header alone."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except FileNotFoundError as err:
        raise missing_listed_file(path, split) from err


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
        raise missing_listed_file(path, split) from err
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


def check_same_size(image_path: Path, image_hw: tuple[int, int], mask_path: Path, mask_hw: tuple[int, int]) -> None:
    """Image and mask must match pixel for pixel; sizes are (height, width)."""
    if image_hw != mask_hw:
        raise CorruptDataError(
            f"Image '{image_path}' is {image_hw[1]}x{image_hw[0]} but its mask '{mask_path}' is "
            f"{mask_hw[1]}x{mask_hw[0]} (width x height); they must match pixel for pixel. "
            "Re-extract both from the dataset archive."
        )


def load_pair(image_path: Path, mask_path: Path, num_classes: int, split: str, ignore_index: int) -> tuple[Image.Image, np.ndarray]:
    """An RGB image and its checked index mask."""
    try:
        image = load_rgb(image_path)
    except FileNotFoundError as err:
        raise missing_listed_file(image_path, split) from err
    except OSError as err:
        raise CorruptDataError(f"Image '{image_path}' cannot be decoded ({err}). Re-extract it from the dataset archive.") from err
    mask = load_mask(mask_path, num_classes, split, ignore_index)
    check_same_size(image_path, (image.height, image.width), mask_path, mask.shape)
    return image, mask
