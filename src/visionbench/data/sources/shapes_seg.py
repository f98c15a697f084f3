"""The built-in segmentation dataset: overlapping shapes, written in the PASCAL VOC2012 layout.

It exists so that segmentation runs offline (tests, the demo) through exactly the VOC code
path: JPEG images, palette PNG masks with VOC's colour map, a void (255) band along every
object outline as VOC draws it, and ``ImageSets/Segmentation/{train,val}.txt``. Objects
overlap (later ones occlude earlier ones), may be cut by the image border, and sit on
textured backgrounds with clutter that is *not* labelled. Each class has its own hue band (as
real classes have typical colours, which lets a network trained for a few CPU minutes get
clearly above chance) but backgrounds and clutter take any colour, so colour alone does not
segment: shape and texture have to be used too.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from visionbench.data.sources import builtin
from visionbench.data.sources.pair_layouts import SPLITS_DIR, VOC_DIR
from visionbench.data.sources.shapes import SUPERSAMPLE, _background, photographed, shape_mask
from visionbench.masks import IGNORE_INDEX, voc_palette

SEG_CLASSES = ("background", "circle", "square", "triangle", "star", "cross", "ring")


def void_border(labels: np.ndarray, width: int) -> np.ndarray:
    """``labels`` with every pixel within ``width`` px of a label change set to 255 (VOC's void band)."""
    if width <= 0:
        return labels.copy()
    size = 2 * width + 1
    image = Image.fromarray(labels)
    edge = np.asarray(image.filter(ImageFilter.MaxFilter(size))) != np.asarray(image.filter(ImageFilter.MinFilter(size)))
    out = labels.copy()
    out[edge] = IGNORE_INDEX
    return out


def class_colour(rng: np.random.Generator, index: int) -> tuple[int, int, int]:
    """A colour in class ``index``'s hue band, with random saturation and brightness."""
    hue = ((index - 1) / (len(SEG_CLASSES) - 1) + rng.uniform(-0.05, 0.05)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def render_scene(rng: np.random.Generator, height: int, width: int, max_objects: int, border: int) -> tuple[Image.Image, np.ndarray]:
    """One image and its (H, W) uint8 mask: textured background, unlabelled clutter, 1..max_objects shapes."""
    h, w = height * SUPERSAMPLE, width * SUPERSAMPLE
    canvas = Image.fromarray(np.clip(_background(rng, max(h, w))[:h, :w], 0, 255).astype(np.uint8))
    labels = Image.new("L", (w, h), 0)
    draw, ldraw = ImageDraw.Draw(canvas), ImageDraw.Draw(labels)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        x1, y1 = x0 + rng.uniform(-w / 3, w / 3), y0 + rng.uniform(-h / 3, h / 3)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)) * SUPERSAMPLE)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        index = int(rng.integers(1, len(SEG_CLASSES)))
        r = min(h, w) * rng.uniform(0.2, 0.4)
        cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        angle = rng.uniform(0, 2 * np.pi)
        shape = shape_mask(SEG_CLASSES[index], (w, h), cx, cy, r, angle)
        canvas.paste(Image.new("RGB", (w, h), class_colour(rng, index)), mask=shape)
        ldraw.bitmap((0, 0), shape, fill=index)
    image = photographed(canvas, rng, width, height, max_noise=12)
    mask = np.asarray(labels.resize((width, height), Image.Resampling.NEAREST))
    return image, void_border(mask, border)


def save_palette_mask(mask: np.ndarray, path: Path) -> None:
    """Write class indices as a palette PNG with VOC's colour map, as VOC's SegmentationClass/."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette(voc_palette())
    image.save(path)


def generate_shapes_seg(
    root: Path | str,
    num_train: int = 400,
    num_val: int = 100,
    height: int = 96,
    width: int = 128,
    max_objects: int = 3,
    border: int = 1,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """The dataset under ``root/VOCdevkit/VOC2012``, generated once (``builtin.build_once``).

    Deterministic: image ``i`` depends only on (seed, i).
    """

    def write(staging: Path) -> None:
        voc = staging / VOC_DIR.relative_to(VOC_DIR.parts[0])
        for folder in ("JPEGImages", "SegmentationClass", SPLITS_DIR):
            (voc / folder).mkdir(parents=True)
        ids = [f"shapes_{i:05d}" for i in range(num_train + num_val)]
        for i, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, i])
            image, mask = render_scene(rng, height, width, max_objects, border)
            image.save(voc / "JPEGImages" / f"{image_id}.jpg", quality=int(rng.integers(75, 96)))
            save_palette_mask(mask, voc / "SegmentationClass" / f"{image_id}.png")
        (voc / SPLITS_DIR / "train.txt").write_text("".join(f"{i}\n" for i in ids[:num_train]))
        (voc / SPLITS_DIR / "val.txt").write_text("".join(f"{i}\n" for i in ids[num_train:]))

    root = Path(root)
    recipe = {
        "dataset": "shapes_seg",
        "num_train": num_train,
        "num_val": num_val,
        "height": height,
        "width": width,
        "max_objects": max_objects,
        "border": border,
        "seed": seed,
    }
    return builtin.build_once(root, root / VOC_DIR.parts[0], recipe, write, log)
