"""Bookkeeping for the built-in (generated) datasets: regenerate when the recipe changes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionbench.data.storage.atomic import write_text_atomic

RECIPE = "generator.json"


def build_once(root: Path, target: Path, recipe: dict[str, Any], write: Callable[[Path], None], log: Callable[[str], None]) -> Path:
    """Make ``target`` hold exactly the data ``recipe`` describes, generating it only when needed.

    ``write`` fills a staging folder beside ``target`` that is renamed into place when complete,
    so an interrupted run leaves nothing a later run would mistake for a finished dataset.
    """
    if is_current(root, target, recipe, log):
        return target
    log(f"Generating the built-in {recipe['dataset']} dataset ({recipe}) in {root} ...")
    staging = root / f".{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    staging.rename(target)
    record(root, recipe)
    return target


def is_current(root: Path, target: Path, recipe: dict[str, Any], log: Callable[[str], None]) -> bool:
    """True when ``target`` was generated from exactly ``recipe``.

    A dataset generated with other settings (e.g. another image size after a config change) is
    removed together with everything derived from it (manifest, caches), so a run never trains
    on data that its config does not describe.
    """
    recorded = root / RECIPE
    if target.is_dir() and recorded.is_file() and json.loads(recorded.read_text()) == recipe:
        return True
    if root.is_dir() and any(root.iterdir()):
        log(f"The built-in data in {root} comes from other settings or an interrupted run; regenerating it.")
        for child in root.iterdir():
            if child.name.endswith(".lock"):
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    return False


def record(root: Path, recipe: dict[str, Any]) -> None:
    write_text_atomic(root / RECIPE, json.dumps(recipe, indent=2, sort_keys=True))
