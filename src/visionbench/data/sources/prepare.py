"""Bring a Kaggle Simpsons download into place, build its split manifest, clean its caches."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.table import Table

from visionbench.data.base import VisionDataModule
from visionbench.data.sources.split import KAGGLE_TEST_DIR, TRAIN_DIR, count_table, read_manifest
from visionbench.data.storage.cache import CACHE_DIR, human_size, planned_caches, remove_caches
from visionbench.data.storage.readers import is_image_name
from visionbench.errors import ConfigError, DataNotFoundError

LAYOUTS = (
    f"the Kaggle zip (archive.zip), the extracted Kaggle folder (holding '{TRAIN_DIR}/homer_simpson/pic_0000.jpg'), "
    "or a folder holding the class folders directly ('homer_simpson/pic_0000.jpg')"
)


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


def _holds_class_folders(folder: Path) -> bool:
    """A sub-folder (not the Kaggle test set or the archive's nested duplicate) holds an image."""
    if not folder.is_dir():
        return False
    skipped = (TRAIN_DIR, KAGGLE_TEST_DIR)
    subs = [p for p in folder.iterdir() if p.is_dir() and p.name not in skipped and not p.name.startswith(".")]
    return any(is_image_name(f) for sub in subs for f in sub.iterdir())


def class_folders_of(source: Path) -> Path:
    """The folder of an extracted download that holds the class folders: ``source`` itself when
    the class folders were unpacked or copied without their parent, else ``source/simpsons_dataset``."""
    folder = next((c for c in (source, source / TRAIN_DIR) if _holds_class_folders(c)), None)
    if folder is None:
        raise DataNotFoundError(
            f"'{source}' is neither a zip nor a folder of class folders of images, so it is not a Simpsons "
            f"download. source= takes {LAYOUTS}. Point source= at the zip, or at the folder that holds "
            f"'homer_simpson/' or '{TRAIN_DIR}/'."
        )
    return folder


def link_folder(source: Path, root: Path) -> None:
    """Link an extracted download into ``root`` as ``root/simpsons_dataset`` (no copy of ~1 GB of
    JPEGs), with the Kaggle test set beside it when the download has one."""
    train = class_folders_of(source)
    root.mkdir(parents=True, exist_ok=True)
    for name, src in ((TRAIN_DIR, train), (KAGGLE_TEST_DIR, train.parent / KAGGLE_TEST_DIR)):
        link = root / name
        if src.is_dir() and not link.exists():
            link.symlink_to(src.resolve(), target_is_directory=True)


def import_source(source: Path, root: Path) -> None:
    if not source.exists():
        raise DataNotFoundError(f"source='{source}' does not exist. Pass {LAYOUTS}.")
    if (root / TRAIN_DIR).exists():
        raise DataNotFoundError(
            f"'{root / TRAIN_DIR}' already exists. Remove it to import '{source}' again, or omit source= "
            "to rebuild the manifest from the data already in place."
        )
    if zipfile.is_zipfile(source):
        extract_zip(source, root)
    else:
        link_folder(source, root)


def clean_cache(root: Path, mode: bool | str, datamodule: VisionDataModule) -> str:
    """Remove the caches under ``root`` that ``datamodule`` does not read (``mode=True``), or all of
    them (``"all"``); returns the line saying what was removed and the bytes freed.

    The current caches are those the datamodule's own ``setup`` asks for (``planned_caches``:
    nothing is decoded), so they match a run with the same settings exactly.
    """
    if mode is not True and mode != "all":
        raise ConfigError(
            f"clean_cache={mode!r} is not a cleaning mode. Use clean_cache=true to remove the caches the "
            "task's current settings do not read, or clean_cache=all to remove every cache of the task."
        )
    keep: set[str] = set()
    if mode is True:
        with planned_caches() as keep:
            datamodule.prepare_data()
            datamodule.setup()
    freed = remove_caches(root, keep)
    current = sum((root / CACHE_DIR / f"{stem}.json").is_file() for stem in keep)
    kept = f"; kept {current} read by the current settings" if current else ""
    if not freed:
        return f"No cache to remove in {root / CACHE_DIR}{kept}."
    removed = ", ".join(f"{stem} ({human_size(size)})" for stem, size in freed.items())
    total = sum(freed.values())
    freed_text = f"{human_size(total)} ({total:,} bytes) freed"
    return f"Removed {len(freed)} cache(s) from {root / CACHE_DIR}: {removed}; {freed_text}{kept}."


def print_counts(root: Path, console: Console | None = None) -> None:
    """The per-class count table of the manifest, with totals."""
    console = console or Console()
    rows = count_table(read_manifest(root))
    table = Table(title=f"Split of {root}")
    for col in ("class", "train", "val", "test"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, *counts in rows:
        table.add_row(label, *map(str, counts))
    totals = [sum(int(r[i]) for r in rows) for i in (1, 2, 3)]
    table.add_row(f"[bold]{len(rows)} classes", *(f"[bold]{t}" for t in totals))
    console.print(table)
