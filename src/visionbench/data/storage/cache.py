"""Decode-once uint8 caches: every image of a split decoded (and, for classification, resized) once
into a raw (N, 3, H, W) uint8 file that an ``np.memmap`` can open, so epochs never decode again.

Layout under ``<root>/.cache/``: ``<name>-<key>.images.u8`` (+ ``.masks.u8`` for segmentation)
and ``<name>-<key>.json``. ``key`` hashes what the content depends on (the split's file names,
sizes and mtimes, the manifest, the target size, the decode rule); a change of any of them gives
a new key, so a stale cache is never read. Caches of other keys are never deleted automatically:
a parallel job with other settings (a sweep over ``image_size``) may be reading them. Each build
logs the folder's size instead, and ``remove_caches`` (``prepare.py clean_cache=true``) deletes
them on request, under the builders' lock. Every file is written to a temporary name and renamed
into place (``atomic_path``), and the JSON is written last: a build interrupted at any point leaves
no JSON for its key, so the next run rebuilds instead of trusting half-written pixels.

Samples are read with ``os.pread`` into fresh buffers rather than through a mapping: mapped
pages would count towards the process's RSS and grow it with the dataset; ``pread`` goes through
the page cache all the same (as fast once warm) and keeps RSS flat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from rich.progress import track

from visionbench.data.storage.atomic import atomic_path, file_lock, write_text_atomic
from visionbench.pixels import MEAN_PIXEL

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"  # hidden: a flat class-folder layout must not scan it as a class
FORMAT_VERSION = 1  # bump when the decode rule changes: old caches then get a new key
# <name>-<key>.{images.u8,masks.u8,json}; keys are hex, names may hold '-' (seg-train)
CACHE_FILE = re.compile(r"(?P<stem>(?P<name>.+)-[^-.]+)\.(?:images\.u8|masks\.u8|json)")
_PLANNED: ContextVar[set[str] | None] = ContextVar("planned caches", default=None)


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def files_digest(paths: Iterable[Path]) -> str:
    """Names, sizes and mtimes of ``paths``: cheap (no reads) and changes whenever a file is replaced."""
    h = hashlib.sha1()
    for path in paths:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(*parts: object) -> str:
    return hashlib.sha1(json.dumps([FORMAT_VERSION, *parts], default=str).encode()).hexdigest()[:16]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


@dataclass(frozen=True)
class CacheFiles:
    """Paths of one cache; ``meta`` is the completeness marker."""

    images: Path
    masks: Path
    meta: Path

    @classmethod
    def of(cls, root: Path, name: str, key: str) -> CacheFiles:
        stem = root / CACHE_DIR / f"{name}-{key}"
        return cls(Path(f"{stem}.images.u8"), Path(f"{stem}.masks.u8"), Path(f"{stem}.json"))

    def size(self) -> int:
        return sum(path.stat().st_size for path in (self.images, self.masks, self.meta) if path.is_file())


def _lock(root: Path, name: str) -> FileLock:
    """The one lock of cache ``name``: taken by its builders and by ``remove_caches``."""
    return file_lock(root / CACHE_DIR / f".{name}.lock")


class ArrayFile:
    """A raw C-ordered uint8 array file read one item at a time with ``os.pread``.

    The file descriptor is opened lazily per process, so the object pickles cheaply into
    DataLoader workers (a pickled ``np.memmap`` would copy the whole array).
    """

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = path
        self.shape = shape
        self.item_bytes = math.prod(shape[1:])
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index: int) -> np.ndarray:
        """Item ``index`` as a writable array (a fresh buffer, safe to hand to torch)."""
        return self.read_many([index])[0]

    def read_many(self, indices: list[int]) -> np.ndarray:
        """Items ``indices`` stacked into one fresh (len, ...) array: one buffer and one ``pread``
        per item, no per-item tensors or stacking (3x the images/s of per-item reads + collate)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        if not indices:
            return out
        view = out.data.cast("B")
        size = self.item_bytes
        for slot, index in enumerate(indices):
            if os.preadv(self._fd, [view[slot * size : (slot + 1) * size]], index * size) != size:
                raise OSError(f"Cache file '{self.path}' is shorter than its metadata says; delete it to rebuild.")
        return out


@dataclass
class ImageCache:
    """A built cache: images (N, 3, H, W), optional masks (N, H, W) and per-item valid sizes (h, w)."""

    images: ArrayFile
    masks: ArrayFile | None
    sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.images)


Decoder = Callable[[int], tuple[np.ndarray, np.ndarray | None]]  # index -> (image (3,h,w), mask (h,w) | None)


def build_cache(
    root: Path,
    name: str,
    key: str,
    count: int,
    canvas: tuple[int, int],
    decode: Decoder,
    with_masks: bool = False,
) -> ImageCache:
    """Open the cache ``name``/``key``, building it first if absent (under a lock, for DDP ranks).

    ``decode(i)`` returns item ``i`` at most ``canvas`` = (H, W) in size; smaller items are stored
    top-left and padded (images with ``MEAN_PIXEL``, masks with 255), their size kept in the JSON.
    Inside ``planned_caches()`` nothing is read or built: see there.
    """
    files = CacheFiles.of(root, name, key)
    planned = _PLANNED.get()
    if planned is not None:
        planned.add(f"{name}-{key}")
        return ImageCache(ArrayFile(files.images, (count, 3, *canvas)), None, [canvas] * count)
    with _lock(root, name):
        if not files.meta.is_file():
            log.info("Decoding the %s split once into the uint8 cache %s (%d items, %dx%d)", name, files.images, count, *canvas)
            start = time.perf_counter()
            _write(files, count, canvas, decode, with_masks)
            folder = sum(path.stat().st_size for path in (root / CACHE_DIR).iterdir() if path.is_file())
            log.info(
                "Cached the %s split in %.1f s: %s; %s holds %s in all. Caches of other settings are kept (a parallel "
                "job may be reading them): `python src/prepare.py task=<task> clean_cache=true` removes those the "
                "task's current settings do not read.",
                name,
                time.perf_counter() - start,
                human_size(files.size()),
                root / CACHE_DIR,
                human_size(folder),
            )
    meta = json.loads(files.meta.read_text())
    height, width = meta["canvas"]
    images = ArrayFile(files.images, (meta["count"], 3, height, width))
    masks = ArrayFile(files.masks, (meta["count"], height, width)) if meta["masks"] else None
    return ImageCache(images, masks, [tuple(s) for s in meta["sizes"]])


def _write(files: CacheFiles, count: int, canvas: tuple[int, int], decode: Decoder, with_masks: bool) -> None:
    height, width = canvas
    sizes: list[tuple[int, int]] = []
    with ExitStack() as stack:
        tmp_images = stack.enter_context(atomic_path(files.images))
        images = np.memmap(tmp_images, np.uint8, "w+", shape=(max(count, 1), 3, height, width))
        masks = None
        if with_masks:
            tmp_masks = stack.enter_context(atomic_path(files.masks))
            masks = np.memmap(tmp_masks, np.uint8, "w+", shape=(max(count, 1), height, width))
        for i in track(range(count), description="building the cache", transient=True, disable=not sys.stderr.isatty()):
            image, mask = decode(i)
            h, w = image.shape[-2:]
            if h > height or w > width:
                raise ValueError(f"item {i} is {h}x{w}, larger than the cache canvas {height}x{width}")
            images[i] = np.asarray(MEAN_PIXEL, np.uint8).reshape(3, 1, 1)
            images[i, :, :h, :w] = image
            if masks is not None:
                assert mask is not None  # with_masks: the decoder reads one
                masks[i] = 255
                masks[i, :h, :w] = mask
            sizes.append((h, w))
        for array in (images, masks):
            if array is not None:
                array.flush()
        del images, masks
    meta = {"count": count, "canvas": [height, width], "masks": with_masks, "sizes": sizes}
    write_text_atomic(files.meta, json.dumps(meta))


@contextmanager
def planned_caches() -> Iterator[set[str]]:
    """Collect the caches (``"<name>-<key>"``) that ``build_cache`` is asked for inside the block,
    without reading or building any: each call returns a handle to files that may not exist yet.

    Running a DataModule's own ``setup`` in here tells ``remove_caches`` exactly which caches the
    current settings read, at the cost of a listing and a ``stat`` per file instead of a decode.
    """
    planned: set[str] = set()
    token = _PLANNED.set(planned)
    try:
        yield planned
    finally:
        _PLANNED.reset(token)


def _cache_stem(filename: str) -> re.Match[str] | None:
    """The ``<name>-<key>`` of a cache file, also of a temporary one left by an interrupted build."""
    if filename.startswith(".") and filename.endswith(".tmp"):  # atomic_path's .<target>.<random>.tmp
        filename = filename[1:].rsplit(".", 2)[0]
    return CACHE_FILE.fullmatch(filename)


def remove_caches(root: Path, keep: Collection[str] = ()) -> dict[str, int]:
    """Delete every cache under ``root`` whose ``"<name>-<key>"`` is not in ``keep``; returns the
    bytes freed per removed cache. Each name is cleaned under its builders' lock, so a cache being
    built is waited for, never torn; a job still reading a removed cache loses it (run this when
    no job of other settings is running)."""
    cache_dir = root / CACHE_DIR
    if not cache_dir.is_dir():
        return {}
    names = {match["name"] for path in cache_dir.iterdir() if (match := _cache_stem(path.name))}
    freed: dict[str, int] = {}
    for name in sorted(names):
        with _lock(root, name):
            for path in sorted(cache_dir.iterdir()):
                match = _cache_stem(path.name)
                if match and match["name"] == name and match["stem"] not in keep:
                    freed[match["stem"]] = freed.get(match["stem"], 0) + path.stat().st_size
                    path.unlink()
    return freed
