"""What a segmentation mask's values mean, shared by the data readers, the losses and metrics,
and the drawings: the void value and PASCAL VOC's colour map (the palette its PNG masks carry)."""

from __future__ import annotations

IGNORE_INDEX = 255  # VOC's "void" label (object borders, difficult regions); no loss or metric counts it


def voc_palette() -> list[int]:
    """VOC's colour map as a flat 768-entry PIL palette (index 255, the border, is cream)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette
