"""What a segmentation mask's values mean, shared by the data readers, the losses and metrics,
and the drawings: the void value, PASCAL VOC's colour map (the palette its PNG masks carry) and
a dataset's own class colours (``task.module.palette``, e.g. CamVid's)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def class_colormap(palette: Sequence[Sequence[int]] | None) -> np.ndarray:
    """The (256, 3) uint8 RGB colour of every mask value. ``palette`` gives one ``[r, g, b]`` per
    class in index order, every other value (void included) is black, as in CamVid's own label
    images; ``None`` is VOC's colour map. Raises ``ValueError`` for a colour that is not 3 values
    in 0..255."""
    if palette is None:
        return np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    colours = np.array([list(colour) for colour in palette], dtype=np.int64).reshape(len(palette), -1)
    if colours.shape[1] != 3 or colours.min(initial=0) < 0 or colours.max(initial=0) > 255 or len(colours) > IGNORE_INDEX:
        raise ValueError(f"a palette is at most {IGNORE_INDEX} [r, g, b] colours with values in 0..255, got {palette}")
    colormap = np.zeros((256, 3), dtype=np.uint8)
    colormap[: len(colours)] = colours
    return colormap
