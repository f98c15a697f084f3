"""What an input pixel means: every network here is fed RGB in ImageNet statistics (the data
pipelines normalise to them, drawings and exports undo or record them)."""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pixel value of padding in uint8 images: the ImageNet mean, so padding normalises to ~0 as in
# the float path (which pads after normalising, with exactly 0); off by at most half a grey level.
MEAN_PIXEL = tuple(round(m * 255) for m in IMAGENET_MEAN)
