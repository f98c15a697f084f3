"""Bring a Kaggle Simpsons download into place and build its split manifest."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.table import Table

from visionbench.data.split import KAGGLE_TEST_DIR, TRAIN_DIR, count_table, read_manifest
from visionbench.errors import DataNotFoundError


def _members_under(names: list[str], folder: str) -> tuple[str, list[str]]:
    """The archive path that members are taken relative to, and the members of ``folder/``.

    The Kaggle archive nests both folders once more: ``simpsons_dataset/simpsons_dataset/`` is a
    duplicate of the class folders beside it (skipped), while ``kaggle_simpson_testset/`` holds
    nothing but ``kaggle_simpson_testset/kaggle_simpson_testset/`` (taken, one level up).
    """
    hits = [n for n in names if f"{folder}/" in n and "__MACOSX" not in n]
    if not hits:
        return "", []
    prefix = min((n[: n.index(f"{folder}/")] for n in hits), key=len)
    top, nested = f"{prefix}{folder}/", f"{prefix}{folder}/{folder}/"
    direct = [n for n in hits if n.startswith(top) and not n.startswith(nested)]
    if any(not n.endswith("/") for n in direct):
        return prefix, direct
    return top, [n for n in hits if n.startswith(nested)]


def extract_zip(source: Path, root: Path) -> int:
    """Extract the training (and Kaggle test) folders of the archive into ``root``; returns the file count."""
    with zipfile.ZipFile(source) as archive:
        names = archive.namelist()
        count = 0
        for folder in (TRAIN_DIR, KAGGLE_TEST_DIR):
            prefix, members = _members_under(names, folder)
            for name in members:
                rel = PurePosixPath(name[len(prefix) :])
                if name.endswith("/") or ".." in rel.parts:
                    continue
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
    if count == 0:
        raise DataNotFoundError(
            f"'{source}' contains no '{TRAIN_DIR}/' folder: it is not the Kaggle 'The Simpsons Characters Data' "
            "archive. Download that archive (kaggle datasets download alexattia/the-simpsons-characters-dataset)."
        )
    return count


def link_folder(source: Path, root: Path) -> None:
    """Link an extracted download into ``root`` (no copy of ~1 GB of JPEGs)."""
    candidates = [source / TRAIN_DIR, source] if source.name != TRAIN_DIR else [source]
    train = next((c for c in candidates if c.name == TRAIN_DIR and c.is_dir()), None)
    if train is None:
        raise DataNotFoundError(
            f"'{source}' has no '{TRAIN_DIR}' folder. Pass the extracted Kaggle folder (the one holding "
            f"'{TRAIN_DIR}/homer_simpson/...') or the zip itself as source=."
        )
    root.mkdir(parents=True, exist_ok=True)
    for name, src in ((TRAIN_DIR, train), (KAGGLE_TEST_DIR, train.parent / KAGGLE_TEST_DIR)):
        link = root / name
        if src.is_dir() and not link.exists():
            link.symlink_to(src.resolve(), target_is_directory=True)


def import_source(source: Path, root: Path) -> None:
    if not source.exists():
        raise DataNotFoundError(f"source='{source}' does not exist. Pass the Kaggle zip or its extracted folder.")
    if (root / TRAIN_DIR).exists():
        raise DataNotFoundError(
            f"'{root / TRAIN_DIR}' already exists. Remove it to import '{source}' again, or omit source= "
            "to rebuild the manifest from the data already in place."
        )
    if zipfile.is_zipfile(source):
        extract_zip(source, root)
    else:
        link_folder(source, root)


def print_counts(root: Path, console: Console | None = None) -> None:
    """The per-class count table of the manifest, with totals."""
    console = console or Console()
    rows = count_table(read_manifest(root))
    table = Table(title=f"Split of {root}")
    for col in ("class", "train", "val", "test"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, *counts in rows:
        table.add_row(label, *map(str, counts))
    totals = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    table.add_row(f"[bold]{len(rows)} classes", *(f"[bold]{t}" for t in totals))
    console.print(table)
