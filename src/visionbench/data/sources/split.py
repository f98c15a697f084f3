"""Deterministic, disjoint, auditable splits of a class-folder dataset (the Kaggle Simpsons layout,
or any ``<root>/<class>/<image>`` folder, or one already split into ``train/ val/ [test/]`` folders).

The split is a pure function of the files' names and contents and of ``SplitSpec``; it is
written to a CSV manifest (path, class, split, sha1) so any number in a table can be traced
back to the exact images it was computed on. The manifest's key is the spec and the listing (every
candidate file's name, size and mtime): a split folder, class or image added later remakes it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from visionbench.data.storage.atomic import write_text_atomic
from visionbench.data.storage.cache import files_digest
from visionbench.data.storage.readers import is_image_name, unreadable_reason
from visionbench.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

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
    presplit: str = "auto"  # auto: a root holding train/, val/ (and test/) folders of class folders keeps that split; or never


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
    listing: str  # ``Listing.digest`` of the files the split was made from, taken before they were read


def find_class_dir(root: Path) -> Path:
    """The folder holding the class folders: ``root/simpsons_dataset`` if present, else ``root``."""
    if not root.is_dir():
        raise DataNotFoundError(
            f"Dataset folder '{root}' does not exist. Put the Kaggle 'The Simpsons Characters Data' "
            f"there (class folders such as '{root}/{TRAIN_DIR}/homer_simpson/pic_0000.jpg'), e.g. with "
            "`python src/prepare.py task=simpsons source=/path/to/archive.zip`, or set paths.data_dir; "
            "`task=shapes` trains on the built-in dataset instead, which needs no download. With "
            "`task=folder`, check task.data.root: it must hold class folders ('<root>/<class>/<image>')."
        )
    nested = root / TRAIN_DIR
    return nested if nested.is_dir() else root


def _class_folders(class_dir: Path) -> list[Path]:
    """Class folders, skipping the Kaggle archive's nested duplicate ``simpsons_dataset/simpsons_dataset``."""
    return sorted(p for p in class_dir.iterdir() if p.is_dir() and p.name != TRAIN_DIR and not p.name.startswith("."))


def given_split_folders(root: Path, spec: SplitSpec) -> dict[str, Path]:
    """The dataset's own split folders (``train``, ``val``, optionally ``test``), or ``{}`` when the
    split is to be made: only ``presplit="auto"`` and a ``root/train`` folder select them."""
    if spec.presplit not in ("auto", "never"):
        raise ConfigError(
            f"task.data.split.presplit={spec.presplit!r} is not one of auto, never. Set it to auto (keep a dataset's "
            "own train/ val/ test/ folders when it has them) or never (always make the split from the class folders)."
        )
    if spec.presplit == "never" or not (root / "train").is_dir():
        return {}
    if not (root / "val").is_dir():
        raise DataNotFoundError(
            f"'{root}' has a train/ folder but no val/ folder beside it. Add '{root}/val/<class>/<image>' (the "
            "validation images), or set task.data.split.presplit=never if 'train' is the name of a class."
        )
    if spec.test_source == "kaggle":
        raise ConfigError(
            f"task.data.split.test_source=kaggle chooses the test split of a split that is made, but '{root}' "
            "has its own train/ and val/ folders. Remove the override, or put the test images in its test/ folder."
        )
    return {split: root / split for split in SPLITS if (root / split).is_dir()}


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _kaggle_test_label(name: str) -> str:
    """``homer_simpson_12.jpg`` -> ``homer_simpson``."""
    return re.sub(r"_\d+$", "", Path(name).stem)


Usable = dict[str, list[tuple[str, str]]]  # class -> [(path, sha1)], in name order


@dataclass
class Listing:
    """The files a split is made from, as found on disk: per source (a given split folder, or ``""``
    when the split is made) and class folder, in name order, and the Kaggle test files."""

    sources: dict[str, dict[str, list[Path]]]
    kaggle: list[Path]

    def digest(self) -> str:
        """Names, sizes and mtimes of every listed file: the manifest's key, as a cache's (no reads)."""
        files = [path for classes in self.sources.values() for listed in classes.values() for path in listed]
        return files_digest(files + self.kaggle)


def list_files(root: Path, spec: SplitSpec) -> Listing:
    """Every candidate file of the split folders (or the class folders) and, with
    ``spec.test_source == "kaggle"``, of the Kaggle test folder."""
    sources = given_split_folders(root, spec) or {"": find_class_dir(root)}
    listed: dict[str, dict[str, list[Path]]] = {}
    for split, source in sources.items():
        folders = _class_folders(source)
        if not folders:
            raise DataNotFoundError(
                f"No class folders found in '{source}'. Expected one folder per class with images inside "
                f"(e.g. '{source}/homer_simpson/pic_0000.jpg'). Re-extract the Kaggle archive or run "
                "`python src/prepare.py task=simpsons source=...`; for your own data, check task.data.root."
            )
        listed[split] = {folder.name: sorted(p for p in folder.iterdir() if p.is_file()) for folder in folders}
    kaggle: list[Path] = []
    if spec.test_source == "kaggle":
        test_dir = root / KAGGLE_TEST_DIR
        if (test_dir / KAGGLE_TEST_DIR).is_dir():
            test_dir = test_dir / KAGGLE_TEST_DIR
        if not test_dir.is_dir():
            raise DataNotFoundError(
                f"task.data.split.test_source=kaggle but '{root / KAGGLE_TEST_DIR}' does not exist. Extract the "
                "Kaggle test set there, or use test_source=holdout (the last images of each class)."
            )
        kaggle = sorted(p for p in test_dir.iterdir() if p.is_file() and is_image_name(p))
    return Listing(listed, kaggle)


def scan(listing: Listing, root: Path) -> tuple[dict[str, Usable], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Read every listed file once: usable (path, sha1) per given split folder and class (the one
    key ``""`` when the split is to be made), excluded (path, reason), and the Kaggle test files
    (path, sha1, label)."""
    excluded: list[tuple[str, str]] = []
    seen: dict[str, str] = {}

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

    usable: dict[str, Usable] = {split: {} for split in listing.sources}
    for split, classes in listing.sources.items():
        for label, files in classes.items():
            for f in files:
                if not is_image_name(f):
                    excluded.append((f.relative_to(root).as_posix(), "not an image file name"))
            usable[split][label] = [(f.relative_to(root).as_posix(), d) for f in files if is_image_name(f) and (d := admit(f)) is not None]
    kaggle = [(f.relative_to(root).as_posix(), d, _kaggle_test_label(f.name)) for f in listing.kaggle if (d := admit(f)) is not None]
    return usable, excluded, kaggle


def build_split(root: Path, spec: SplitSpec) -> SplitResult:
    """Apply the reference procedure to the files under ``root``.

    Unreadable files and exact duplicates (by SHA-1; the first name wins) are excluded and
    listed, so a duplicated image can never sit in two splits. Classes with ``min_images`` or
    fewer usable images are dropped. The test set is the last ``test_per_class`` names of each
    class (or the Kaggle test folder); the rest is split per class with a seeded permutation.
    A dataset with its own split folders keeps it (``keep_given_split``).
    """
    listing = list_files(root, spec)
    scanned, excluded, kaggle = scan(listing, root)
    if "" not in scanned:
        return keep_given_split(root, scanned, excluded, spec, listing.digest())
    usable = scanned[""]
    kept = {c: files for c, files in usable.items() if len(files) > spec.min_images}
    dropped = {c: len(files) for c, files in usable.items() if c not in kept}
    small = {c: len(files) for c, files in kept.items() if len(files) <= spec.test_per_class}
    if small and spec.test_source != "kaggle":
        raise ConfigError(
            f"Class(es) {small} of '{root}' have no more readable images than task.data.split.test_per_class="
            f"{spec.test_per_class}, which would leave none for training. Lower test_per_class, or drop small "
            "classes with task.data.split.min_images=N (classes with N or fewer images are left out)."
        )
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
        n_val = round(len(rest) * spec.val_fraction)
        val_idx = set(order[:n_val].tolist())
        entries += [Entry(p, label, "val" if i in val_idx else "train", d) for i, (p, d) in enumerate(rest)]
    for path, digest, label in kaggle:
        if label in kept:
            entries.append(Entry(path, label, "test", digest))
        else:
            excluded.append((path, f"class '{label}' is not among the kept classes"))
    return SplitResult(entries, excluded, dropped, listing.digest())


def keep_given_split(root: Path, scanned: dict[str, Usable], excluded: list[tuple[str, str]], spec: SplitSpec, listing: str) -> SplitResult:
    """Every usable file in the split its folder names: the classes are the union over the split
    folders (minus those with ``min_images`` or fewer usable images in all), each of which must
    have training images. Without ``test/``, the validation files are also the test split."""
    totals = Counter({c: 0 for split in scanned.values() for c in split})
    for split in scanned.values():
        totals.update({c: len(files) for c, files in split.items()})
    kept = sorted(c for c, n in totals.items() if n > spec.min_images)
    untrained = [c for c in kept if not scanned["train"].get(c)]
    if untrained:
        raise DataNotFoundError(
            f"Class(es) {untrained} have images in '{root}/val' or '{root}/test' but no readable image in "
            f"'{root}/train', so the network could never learn them. Add their training images under "
            f"'{root}/train/<class>/', or remove them from val/ and test/."
        )
    if "test" not in scanned:
        scanned = {**scanned, "test": scanned["val"]}
    entries = [Entry(p, label, split, d) for label in kept for split in SPLITS for p, d in scanned[split].get(label, [])]
    return SplitResult(entries, excluded, {c: n for c, n in totals.items() if c not in kept}, listing)


def warn_if_tested_on_val(root: Path, spec: SplitSpec) -> None:
    """Every run on given split folders without ``test/`` says that its test numbers are validation numbers."""
    folders = given_split_folders(root, spec)
    if folders and "test" not in folders:
        log.warning(
            "'%s' has no test/ folder: the val/ images are the test split too, so test/ numbers are validation "
            "numbers (the checkpoint they score was chosen on them). Add a test/ folder for an unbiased test.",
            root,
        )


def write_manifest(root: Path, result: SplitResult, spec: SplitSpec) -> None:
    """Write ``excluded.csv``, ``manifest.csv`` and ``split_spec.json`` (the spec and the listing's
    digest: the manifest's key), each atomically.

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
    write_text_atomic(spec_file, json.dumps(_key(spec, result.listing), indent=2, sort_keys=True))


def read_manifest(root: Path) -> list[Entry]:
    with open(root / MANIFEST, newline="") as f:
        return [Entry(r["path"], r["class"], r["split"], r["sha1"]) for r in csv.DictReader(f)]


def _key(spec: SplitSpec, listing: str) -> dict[str, object]:
    return {**asdict(spec), "listing": listing}


def manifest_is_current(root: Path, spec: SplitSpec) -> bool:
    """The manifest was made with ``spec`` from the files listed now (names, sizes, mtimes): a
    folder, class or image added, removed or replaced since makes it stale."""
    spec_file = root / "split_spec.json"
    if not (root / MANIFEST).is_file() or not spec_file.is_file():
        return False
    return json.loads(spec_file.read_text()) == _key(spec, list_files(root, spec).digest())


def count_table(entries: list[Entry]) -> list[tuple[str, int, int, int]]:
    """Per-class (class, train, val, test) counts, for ``prepare`` to print."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        counts[e.label][e.split] += 1
    return [(c, counts[c]["train"], counts[c]["val"], counts[c]["test"]) for c in sorted(counts)]
