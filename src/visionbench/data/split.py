"""Deterministic, disjoint, auditable splits of a class-folder dataset (the Kaggle Simpsons layout).

The split is a pure function of the files' names and contents and of ``SplitSpec``; it is
written to a CSV manifest (path, class, split, sha1) so any number in a table can be traced
back to the exact images it was computed on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from visionbench.data.atomic import write_text_atomic
from visionbench.data.images import is_image_name, unreadable_reason
from visionbench.errors import DataNotFoundError

TRAIN_DIR = "simpsons_dataset"
KAGGLE_TEST_DIR = "kaggle_simpson_testset"
MANIFEST = "manifest.csv"
EXCLUDED = "excluded.csv"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    """The reference procedure's knobs (defaults reproduce the published Simpsons split)."""

    min_images: int = 100  # keep classes with MORE than this many usable images
    test_per_class: int = 50  # the last N images (sorted by name) of each class form the test set
    val_fraction: float = 0.2  # of the rest, stratified per class
    seed: int = 0
    test_source: str = "holdout"  # or "kaggle": use kaggle_simpson_testset/ as the test split


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the dataset root, POSIX separators
    label: str
    split: str
    sha1: str


@dataclass
class SplitResult:
    entries: list[Entry]
    excluded: list[tuple[str, str]]  # (path, reason)
    dropped_classes: dict[str, int]  # class -> usable images, for classes under the threshold


def find_class_dir(root: Path) -> Path:
    """The folder holding the class folders: ``root/simpsons_dataset`` if present, else ``root``."""
    if not root.is_dir():
        raise DataNotFoundError(
            f"Dataset folder '{root}' does not exist. Put the Kaggle 'The Simpsons Characters Data' "
            f"there (class folders such as '{root}/{TRAIN_DIR}/homer_simpson/pic_0000.jpg'), e.g. with "
            "`python src/prepare.py task=simpsons source=/path/to/archive.zip`, or set paths.data_dir; "
            "`task=shapes` trains on the built-in dataset instead, which needs no download."
        )
    nested = root / TRAIN_DIR
    return nested if nested.is_dir() else root


def _class_folders(class_dir: Path) -> list[Path]:
    """Class folders, skipping the Kaggle archive's nested duplicate ``simpsons_dataset/simpsons_dataset``."""
    return sorted(p for p in class_dir.iterdir() if p.is_dir() and p.name != TRAIN_DIR and not p.name.startswith("."))


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _kaggle_test_label(name: str) -> str:
    """``homer_simpson_12.jpg`` -> ``homer_simpson``."""
    return re.sub(r"_\d+$", "", Path(name).stem)


def scan(root: Path, spec: SplitSpec) -> tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Read every candidate file once: usable (path, sha1) per class, excluded (path, reason),
    and the Kaggle test files (path, sha1, label) when ``spec.test_source == "kaggle"``."""
    class_dir = find_class_dir(root)
    folders = _class_folders(class_dir)
    if not folders:
        raise DataNotFoundError(
            f"No class folders found in '{class_dir}'. Expected one folder per character with JPEGs "
            f"inside (e.g. '{class_dir}/homer_simpson/pic_0000.jpg'). Re-extract the Kaggle archive "
            "or run `python src/prepare.py task=simpsons source=...`."
        )
    excluded: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    usable: dict[str, list[tuple[str, str]]] = {}

    def admit(path: Path) -> str | None:
        rel = path.relative_to(root).as_posix()
        reason = unreadable_reason(path)
        if reason is not None:
            excluded.append((rel, reason))
            return None
        digest = _sha1(path)
        if digest in seen:
            excluded.append((rel, f"duplicate content of {seen[digest]}"))
            return None
        seen[digest] = rel
        return digest

    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        for f in files:
            if not is_image_name(f):
                excluded.append((f.relative_to(root).as_posix(), "not an image file name"))
        usable[folder.name] = [
            (f.relative_to(root).as_posix(), d) for f in files if is_image_name(f) and (d := admit(f)) is not None
        ]
    kaggle: list[tuple[str, str, str]] = []
    if spec.test_source == "kaggle":
        test_dir = root / KAGGLE_TEST_DIR
        if (test_dir / KAGGLE_TEST_DIR).is_dir():
            test_dir = test_dir / KAGGLE_TEST_DIR
        if not test_dir.is_dir():
            raise DataNotFoundError(
                f"task.data.split.test_source=kaggle but '{root / KAGGLE_TEST_DIR}' does not exist. Extract the "
                "Kaggle test set there, or use test_source=holdout (the last images of each class)."
            )
        for f in sorted(p for p in test_dir.iterdir() if p.is_file() and is_image_name(p)):
            if (d := admit(f)) is not None:
                kaggle.append((f.relative_to(root).as_posix(), d, _kaggle_test_label(f.name)))
    return usable, excluded, kaggle


def build_split(root: Path, spec: SplitSpec) -> SplitResult:
    """Apply the reference procedure to the files under ``root``.

    Unreadable files and exact duplicates (by SHA-1; the first name wins) are excluded and
    listed, so a duplicated image can never sit in two splits. Classes with ``min_images`` or
    fewer usable images are dropped. The test set is the last ``test_per_class`` names of each
    class (or the Kaggle test folder); the rest is split per class with a seeded permutation.
    """
    usable, excluded, kaggle = scan(root, spec)
    kept = {c: files for c, files in usable.items() if len(files) > spec.min_images}
    dropped = {c: len(files) for c, files in usable.items() if c not in kept}
    rng = np.random.default_rng(spec.seed)
    entries: list[Entry] = []
    for label in sorted(kept):
        files = kept[label]
        if spec.test_source == "kaggle":
            rest = files
        else:
            rest, test = files[: len(files) - spec.test_per_class], files[len(files) - spec.test_per_class :]
            entries += [Entry(p, label, "test", d) for p, d in test]
        order = rng.permutation(len(rest))
        n_val = int(round(len(rest) * spec.val_fraction))
        val_idx = set(order[:n_val].tolist())
        entries += [Entry(p, label, "val" if i in val_idx else "train", d) for i, (p, d) in enumerate(rest)]
    for path, digest, label in kaggle:
        if label in kept:
            entries.append(Entry(path, label, "test", digest))
        else:
            excluded.append((path, f"class '{label}' is not among the kept classes"))
    return SplitResult(entries, excluded, dropped)


def write_manifest(root: Path, result: SplitResult, spec: SplitSpec) -> None:
    """Write ``excluded.csv``, ``manifest.csv`` and ``split_spec.json``, each atomically.

    The spec is the commit marker: it is removed first and written last, so a rewrite that
    fails half-way never leaves an old manifest beside a new spec that would vouch for it.
    """
    spec_file = root / "split_spec.json"
    spec_file.unlink(missing_ok=True)
    excl = io.StringIO()
    w = csv.writer(excl)
    w.writerow(["path", "reason"])
    w.writerows(result.excluded)
    write_text_atomic(root / EXCLUDED, excl.getvalue())
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["path", "class", "split", "sha1"])
    w.writerows((e.path, e.label, e.split, e.sha1) for e in result.entries)
    write_text_atomic(root / MANIFEST, out.getvalue())
    write_text_atomic(spec_file, json.dumps(asdict(spec), indent=2, sort_keys=True))


def read_manifest(root: Path) -> list[Entry]:
    with open(root / MANIFEST, newline="") as f:
        return [Entry(r["path"], r["class"], r["split"], r["sha1"]) for r in csv.DictReader(f)]


def manifest_is_current(root: Path, spec: SplitSpec) -> bool:
    spec_file = root / "split_spec.json"
    if not (root / MANIFEST).is_file() or not spec_file.is_file():
        return False
    return json.loads(spec_file.read_text()) == asdict(spec)


def count_table(entries: list[Entry]) -> list[tuple[str, int, int, int]]:
    """Per-class (class, train, val, test) counts, for ``prepare`` to print."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        counts[e.label][e.split] += 1
    return [(c, counts[c]["train"], counts[c]["val"], counts[c]["test"]) for c in sorted(counts)]
