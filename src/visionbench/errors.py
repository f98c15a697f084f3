"""User-facing errors: one paragraph saying what went wrong, where, and how to fix it."""

from __future__ import annotations


class VisionbenchError(RuntimeError):
    """An error caused by the user's data or configuration, not by a bug.

    The entry points print only the message (no traceback) for these, so the message must
    stand alone: what is wrong, which file or config key, and the fix.
    """


class DataNotFoundError(VisionbenchError, FileNotFoundError):
    """A dataset root, list or file that should exist does not."""


class CorruptDataError(VisionbenchError, ValueError):
    """A file exists but its content cannot be used (unreadable image, invalid mask values)."""


class ConfigError(VisionbenchError, ValueError):
    """The composed configuration is inconsistent (unknown key, model/task mismatch)."""
