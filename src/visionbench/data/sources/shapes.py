"""The built-in classification dataset: rendered shapes, written in the Kaggle Simpsons layout.

It exists so that everything (tests, the demo, CI) runs offline through exactly the code
path of the real data: ``<root>/simpsons_dataset/<class>/pic_0000.jpg``. Colour, position,
scale, rotation, textured backgrounds, clutter, JPEG artefacts and noise vary per image, and
some classes look alike at low resolution (circle/hexagon/ellipse, square/frame), so models
separate without all reaching 100 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from visionbench.data.sources import builtin
from visionbench.data.sources.split import TRAIN_DIR

Polygon = list[tuple[float, float]]
SUPERSAMPLE = 2


def _regular(n: int, phase: float = 0.0) -> Polygon:
    return [(math.cos(2 * math.pi * k / n + phase), math.sin(2 * math.pi * k / n + phase)) for k in range(n)]


def _star(points: int, inner: float) -> Polygon:
    return [
        ((1.0 if k % 2 == 0 else inner) * math.cos(math.pi * k / points), (1.0 if k % 2 == 0 else inner) * math.sin(math.pi * k / points))
        for k in range(2 * points)
    ]


_CROSS: Polygon = [
    (-0.3, -1),
    (0.3, -1),
    (0.3, -0.3),
    (1, -0.3),
    (1, 0.3),
    (0.3, 0.3),
    (0.3, 1),
    (-0.3, 1),
    (-0.3, 0.3),
    (-1, 0.3),
    (-1, -0.3),
    (-0.3, -0.3),
]
_ARROW: Polygon = [(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)]
_SQUARE: Polygon = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]


def _ellipse(rx: float, ry: float, n: int = 48) -> Polygon:
    return [(rx * math.cos(2 * math.pi * k / n), ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


# Each class: (outer polygon, optional hole polygon, x offset of the hole in shape units).
ShapeSpec = tuple[Polygon, Polygon | None, float]
CLASSES: dict[str, ShapeSpec] = {
    "circle": (_ellipse(1, 1), None, 0.0),
    "ring": (_ellipse(1, 1), _ellipse(0.55, 0.55), 0.0),
    "ellipse": (_ellipse(1, 0.55), None, 0.0),
    "crescent": (_ellipse(1, 1), _ellipse(0.85, 0.85), 0.45),
    "square": (_SQUARE, None, 0.0),
    "frame": (_SQUARE, [(x * 0.6, y * 0.6) for x, y in _SQUARE], 0.0),
    "triangle": (_regular(3, -math.pi / 2), None, 0.0),
    "pentagon": (_regular(5, -math.pi / 2), None, 0.0),
    "hexagon": (_regular(6), None, 0.0),
    "star": (_star(5, 0.45), None, 0.0),
    "cross": (_CROSS, None, 0.0),
    "arrow": (_ARROW, None, 0.0),
}


def _place(poly: Polygon, cx: float, cy: float, r: float, angle: float, dx: float = 0.0) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * ((x + dx) * c - y * s), cy + r * ((x + dx) * s + y * c)) for x, y in poly]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gradient between two random colours, a low-contrast stripe or checker texture and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, 2 * math.pi)
    t = (xx * math.cos(theta) + yy * math.sin(theta) + 1) / 2
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = a * (1 - t[..., None]) + b * t[..., None]
    freq = rng.uniform(4, 14)
    texture = np.sin(2 * math.pi * freq * (xx if rng.random() < 0.5 else yy))
    if rng.random() < 0.5:
        texture = texture * np.sin(2 * math.pi * freq * yy)
    img += rng.uniform(5, 30) * texture[..., None]
    return img


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray, min_distance: float = 90.0) -> tuple[int, int, int]:
    """A random colour at least ``min_distance`` (RGB Euclidean) from the mean background, so the
    class is always visible: the difficulty should come from shape, not from invisibility."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - background) >= min_distance:
            return (int(colour[0]), int(colour[1]), int(colour[2]))


def render(label: str, rng: np.random.Generator, image_size: int = 64) -> Image.Image:
    """Render one image of class ``label``: textured background, clutter, the shape, noise."""
    size = image_size * SUPERSAMPLE
    canvas = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 5))):  # clutter: short lines and dots
        x0, y0 = rng.uniform(0, size, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            x1, y1 = x0 + rng.uniform(-size / 3, size / 3), y0 + rng.uniform(-size / 3, size / 3)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 4)) * SUPERSAMPLE)
        else:
            rad = rng.uniform(1, 4) * SUPERSAMPLE
            draw.ellipse([x0 - rad, y0 - rad, x0 + rad, y0 + rad], fill=colour)
    r = size * rng.uniform(0.25, 0.4)
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    angle = rng.uniform(0, 2 * math.pi)
    mask = shape_mask(label, (size, size), cx, cy, r, angle)
    colour = _contrasting_colour(rng, np.asarray(canvas, dtype=np.float32).mean(axis=(0, 1)))
    canvas.paste(Image.new("RGB", (size, size), colour), mask=mask)
    return photographed(canvas, rng, image_size, image_size, max_noise=14)


def shape_mask(label: str, size: tuple[int, int], cx: float, cy: float, r: float, angle: float) -> Image.Image:
    """The (width, height) "L" mask of class ``label``'s shape (255 inside, holes cut out)."""
    outer, hole, hole_dx = CLASSES[label]
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(_place(outer, cx, cy, r, angle), fill=255)
    if hole is not None:
        draw.polygon(_place(hole, cx, cy, r, angle, hole_dx), fill=0)
    return mask


def photographed(canvas: Image.Image, rng: np.random.Generator, width: int, height: int, max_noise: float) -> Image.Image:
    """The supersampled ``canvas`` downsampled to (width, height), sometimes blurred, with sensor noise."""
    image = canvas.resize((width, height), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, max_noise), (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def generate_shapes(
    root: Path | str,
    num_classes: int = 12,
    per_class: int = 600,
    image_size: int = 48,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """The dataset under ``root/simpsons_dataset``, generated once (``builtin.build_once``).

    Deterministic: image ``i`` of class ``c`` depends only on (seed, c, i).
    """
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"shapes supports 2..{len(CLASSES)} classes, got num_classes={num_classes}")

    def write(staging: Path) -> None:
        for c, label in enumerate(list(CLASSES)[:num_classes]):
            folder = staging / label
            folder.mkdir()
            for i in range(per_class):
                rng = np.random.default_rng([seed, c, i])
                render(label, rng, image_size).save(folder / f"pic_{i:04d}.jpg", quality=int(rng.integers(75, 96)))

    root = Path(root)
    recipe = {"dataset": "shapes", "num_classes": num_classes, "per_class": per_class, "image_size": image_size, "seed": seed}
    return builtin.build_once(root, root / TRAIN_DIR, recipe, write, log)
