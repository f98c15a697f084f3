"""Masks drawn in the PASCAL VOC colour map, so predictions look like the dataset's own PNGs.

VOC stores masks as palette images (``visionbench.masks.voc_palette``; 255, the void
border, is cream). Drawing ours the same way makes predictions comparable with the ground
truth at a glance, in TensorBoard, in ``predict.py`` output and in any image viewer.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from visionbench.masks import IGNORE_INDEX, voc_palette

VOC_COLORMAP = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-index mask ``(H, W)`` -> RGB ``(H, W, 3)`` uint8; 255 keeps VOC's boundary colour."""
    return VOC_COLORMAP[np.asarray(mask, dtype=np.uint8)]


def palette_image(mask: np.ndarray) -> Image.Image:
    """A mode ``P`` image with the VOC palette: same file format as ``SegmentationClass/*.png``."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(VOC_COLORMAP.flatten().tolist())
    return image


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured mask over an RGB uint8 image; background (0) and ignored pixels stay clear."""
    blended = image.astype(np.float32)
    labelled = (mask != 0) & (mask != IGNORE_INDEX)
    blended[labelled] = (1 - alpha) * blended[labelled] + alpha * colorize(mask)[labelled]
    return blended.round().astype(np.uint8)
