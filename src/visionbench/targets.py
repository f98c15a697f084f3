"""The keys of time-to-target figures, written by the run's callback and read by the report tables."""

from __future__ import annotations

TIME_TO = "time_to/"  # the prefix of the seconds keys, which report tables show


def target_key(kind: str, monitor: str, threshold: float) -> str:
    """``time_to/val/acc@0.8``, ``epochs_to/...``, ``images_to/...``."""
    return f"{kind}_to/{monitor}@{threshold:g}"
