"""The class-folder source (the Kaggle Simpsons layout, ``task=folder``, built-in ``shapes``): the
split is made into the manifest (``split.py``; remade only when the spec or the listed files
change), then each split is listed from it as image paths with class indices, for the per-image
path to decode or the uint8 cache to store."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from visionbench.data.sources.split import (
    EXCLUDED,
    MANIFEST,
    Entry,
    SplitSpec,
    build_split,
    manifest_is_current,
    read_manifest,
    warn_if_tested_on_val,
    write_manifest,
)
from visionbench.data.storage.atomic import file_lock
from visionbench.data.storage.cache import ImageCache, build_cache, cache_key, file_digest, files_digest
from visionbench.data.storage.readers import decode_resized, load_rgb
from visionbench.errors import CorruptDataError, DataNotFoundError

log = logging.getLogger(__name__)


@contextmanager
def _readable(root: Path, path: Path) -> Iterator[None]:
    """Turn a vanished or undecodable listed file into the error that says how to fix it."""
    try:
        yield
    except FileNotFoundError as err:
        raise DataNotFoundError(
            f"'{path}' is listed in {root / MANIFEST} but no longer exists. Restore the file, or delete "
            "the manifest so it is rebuilt from the files present."
        ) from err
    except OSError as err:
        raise CorruptDataError(
            f"'{path}' changed since the manifest was built and no longer decodes ({err}). Delete "
            f"{root / MANIFEST} to rebuild the split (unreadable files are then excluded and listed)."
        ) from err


@dataclass
class LabelledImages:
    """One split as the manifest lists it: image paths (relative to ``root``) and class indices."""

    root: Path
    split: str
    paths: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> tuple[Image.Image, int]:
        path = self.root / self.paths[index]
        with _readable(self.root, path):
            return load_rgb(path), self.labels[index]

    def cache(self, size: tuple[int, int]) -> ImageCache:
        """The split decoded and resized once; rebuilt when the manifest, a file or ``size`` changes."""
        files = [self.root / path for path in self.paths]

        def decode(index: int) -> tuple[np.ndarray, None]:
            with _readable(self.root, files[index]):
                return decode_resized(files[index], size), None

        try:  # the files' sizes and mtimes: an image replaced under its name gives a new key
            digest = files_digest(files)
        except FileNotFoundError as err:
            with _readable(self.root, Path(err.filename)):
                raise
        key = cache_key(file_digest(self.root / MANIFEST), digest, self.split, size)
        return build_cache(self.root, self.split, key, len(files), size, decode)


class ClassFolders:
    """``<root>/<class>/<image>`` (or the Kaggle layout, or given split folders) -> manifest -> splits.

    ``generator`` (a Hydra partial) creates a built-in dataset in the same layout when the root
    holds none, which is how ``task=shapes`` runs offline through this exact code path.
    """

    def __init__(self, root: Path, spec: SplitSpec, generator: Callable[[Path], Path] | None = None) -> None:
        self.root = root
        self.spec = spec
        self.generator = generator
        self._entries: list[Entry] | None = None
        self.warned = False  # prepare runs more than once per run (fit, test)

    def prepare(self) -> None:
        """Generate (built-in data only) and build the manifest; later calls reuse it while the
        spec and the listed files are unchanged."""
        with file_lock(self.root.parent / f".{self.root.name}.lock"):
            if self.generator is not None:
                self.generator(self.root)
            if not self.warned:
                warn_if_tested_on_val(self.root, self.spec)
                self.warned = True
            if manifest_is_current(self.root, self.spec):
                return
            if (self.root / MANIFEST).is_file():
                log.warning(
                    "'%s' changed since %s was written (task.data.split settings, or files, classes or split folders "
                    "added, removed or replaced): the split is made again, so earlier runs may have used another split.",
                    self.root,
                    MANIFEST,
                )
            result = build_split(self.root, self.spec)
            if not result.entries:
                raise DataNotFoundError(
                    f"No class in '{self.root}' has more than {self.spec.min_images} readable images "
                    f"(found: {dict(sorted(result.dropped_classes.items())) or 'none'}). Lower "
                    "task.data.split.min_images or add images."
                )
            write_manifest(self.root, result, self.spec)
            if result.excluded:
                log.warning(
                    "%d file(s) excluded from %s (unreadable or duplicate content); the list is in %s",
                    len(result.excluded),
                    self.root,
                    self.root / EXCLUDED,
                )
            if result.dropped_classes:
                log.warning(
                    "%d class(es) with %d or fewer readable images dropped: %s",
                    len(result.dropped_classes),
                    self.spec.min_images,
                    result.dropped_classes,
                )

    def entries(self) -> list[Entry]:
        """The manifest's rows, read once (built first when there is none yet)."""
        if self._entries is None:
            if not (self.root / MANIFEST).is_file():
                self.prepare()
            self._entries = read_manifest(self.root)
        return self._entries

    @property
    def class_names(self) -> list[str]:
        return sorted({e.label for e in self.entries()})

    def split(self, name: str) -> LabelledImages:
        index = {c: i for i, c in enumerate(self.class_names)}
        entries = [e for e in self.entries() if e.split == name]
        return LabelledImages(self.root, name, [e.path for e in entries], [index[e.label] for e in entries])

    def excluded_files(self) -> list[tuple[str, str]]:
        with open(self.root / EXCLUDED, newline="") as f:
            return [(r["path"], r["reason"]) for r in csv.DictReader(f)]
