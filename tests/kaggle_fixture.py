"""A miniature of the Kaggle Simpsons download, in its exact on-disk layout and with its warts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

# usable images per class; "more than 100" keeps bart, homer and lisa only
CLASS_SIZES = {"bart_simpson": 105, "homer_simpson": 110, "lisa_simpson": 102, "nelson_muntz": 100, "rare_guy": 30}
BAD_FILES = {
    "homer_simpson/pic_9990.jpg": "truncated",
    "homer_simpson/pic_9991.jpg": "zero-byte",
    "homer_simpson/pic_9992.jpg": "text",
}
DUPLICATE = ("lisa_simpson/pic_9999.jpg", "bart_simpson/pic_0001.jpg")  # same bytes, two names
ODD_MODES = {"bart_simpson/pic_0002.jpg": "L", "bart_simpson/pic_0003.jpg": "CMYK", "lisa_simpson/pic_0004.png": "RGBA"}


def _image(seed: int, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return image.convert(mode) if mode != "RGB" else image


def make_kaggle_download(base: Path, kaggle_test: bool = True) -> Path:
    """Write ``base/simpsons_dataset/<class>/pic_NNNN.jpg`` plus the archive's nested duplicate
    ``simpsons_dataset/simpsons_dataset/`` and (optionally) the Kaggle test folder, nested as in the archive
    (``kaggle_simpson_testset/kaggle_simpson_testset/<class>_<i>.jpg``)."""
    train = base / "simpsons_dataset"
    seed = 0
    for label, n in CLASS_SIZES.items():
        folder = train / label
        folder.mkdir(parents=True)
        for i in range(n):
            seed += 1
            name = f"pic_{i:04d}.jpg"
            mode = ODD_MODES.get(f"{label}/{name}", "RGB")
            _image(seed, mode).save(folder / name, quality=90)
    for rel, mode in ODD_MODES.items():
        if rel.endswith(".png"):  # an RGBA PNG replaces one JPEG of the class
            (train / rel.replace(".png", ".jpg")).unlink()
            _image(10_000, mode).save(train / rel)
    full = (train / "homer_simpson" / "pic_0000.jpg").read_bytes()
    (train / "homer_simpson" / "pic_9990.jpg").write_bytes(full[: len(full) // 2])
    (train / "homer_simpson" / "pic_9991.jpg").write_bytes(b"")
    (train / "homer_simpson" / "pic_9992.jpg").write_text("this is not a jpeg\n")
    shutil.copy(train / DUPLICATE[1], train / DUPLICATE[0])
    (train / "homer_simpson" / "notes.txt").write_text("not an image name")
    shutil.copytree(train, base / "simpsons_dataset_copy")
    (base / "simpsons_dataset_copy").rename(train / "simpsons_dataset")
    if kaggle_test:
        test = base / "kaggle_simpson_testset" / "kaggle_simpson_testset"
        test.mkdir(parents=True)
        for label in ("bart_simpson", "homer_simpson", "lisa_simpson", "nelson_muntz"):
            for i in range(3):
                seed += 1
                _image(seed).save(test / f"{label}_{i}.jpg", quality=90)
    return base


def flat_copy(download: Path, target: Path, nested_duplicate: bool = False) -> Path:
    """The class folders of ``download`` copied without their parent (``target/homer_simpson/pic_0000.jpg``),
    as many users hold the data after unpacking or copying it; with or without the archive's nested duplicate."""
    ignore = None if nested_duplicate else shutil.ignore_patterns("simpsons_dataset")
    shutil.copytree(download / "simpsons_dataset", target, ignore=ignore)
    return target
