"""Atomic file writes: a run killed mid-write leaves no file that a later run would trust."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~UMASK)  # mkstemp's 0600 would hide shared data from other users
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Reading the umask means setting it: done once, at import, before any loader or logger thread
# could create a file while it is 0.
UMASK = _read_umask()


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def file_lock(path: Path) -> FileLock:
    """An exclusive lock on ``path`` so that DDP ranks or parallel jobs preparing the same
    dataset wait for each other instead of racing (``filelock``, already a dependency of torch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)
