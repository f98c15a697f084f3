"""Reading images as RGB whatever their mode, with one-line reasons for unreadable files."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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
