"""Every config key a message tells a user to set exists: a hint naming a key that no config has
(``task.module.optimizer.lr`` after the optimizer became its own group) sends the user to a Hydra
"not in struct" error instead of the fix."""

from __future__ import annotations

import ast
import re

from omegaconf import DictConfig, OmegaConf

from conftest import REPO

GROUPS = ("task", "model", "optimizer", "scheduler", "trainer", "callbacks", "paths", "bench")
# Not after a word, a dot or a brace (``{task.description}`` is a format field), not a file name.
KEY = re.compile(r"(?<![\w.{])((?:" + "|".join(GROUPS) + r")(?:\.[a-z_][a-z0-9_]*)+)(?![\w])")
# The configs a message can be about: every task, model, optimizer and scheduler option.
COMPOSITIONS = [
    *(["task=" + p.stem] for p in sorted((REPO / "conf/task").glob("*.yaml"))),
    *(
        ["model=" + p.stem, "task=voc" if p.stem in ("fcn", "fcn8s", "fpn") else "task=simpsons"]
        for p in sorted((REPO / "conf/model").glob("*.yaml"))
    ),
    *(["optimizer=" + p.stem] for p in sorted((REPO / "conf/optimizer").glob("*.yaml"))),
    *(["scheduler=" + p.stem] for p in sorted((REPO / "conf/scheduler").glob("*.yaml"))),
    ["trainer=ddp_cpu"],
    ["trainer=slurm"],
]


def message_keys() -> dict[str, list[str]]:
    """Dotted keys inside the string literals of src/ (f-strings included; docstrings, which may quote a
    typo on purpose, left out), with where each is."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for key in KEY.findall(node.value):
                    if key.endswith((".py", ".yaml")):
                        continue
                    found.setdefault(key.rstrip("."), []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def known_keys(cfg: DictConfig, prefix: str = "") -> set[str]:
    """Every dotted key of ``cfg`` (values are not resolved: ``hydra:`` interpolations need a run)."""
    keys: set[str] = set()
    if cfg._is_none() or cfg._is_missing():
        return keys
    for key in cfg:
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            keys |= known_keys(node, dotted + ".")
    return keys


def test_every_key_a_message_names_exists_in_a_composed_config(compose_cfg) -> None:
    keys: set[str] = set()
    for overrides in COMPOSITIONS:
        keys |= known_keys(compose_cfg(overrides))
    keys |= {f"bench.{k}" for k in known_keys(OmegaConf.load(REPO / "conf/bench.yaml").bench)}
    # ``trainer.limit_*`` names a family of keys by its prefix.
    missing = {
        key: where
        for key, where in message_keys().items()
        if key not in keys and not (key.endswith("_") and any(k.startswith(key) for k in keys))
    }
    assert not missing, f"messages name keys no config has: {missing}"


def test_the_key_scan_finds_keys_in_messages() -> None:
    keys = message_keys()
    assert "task.data.split.test_source" in keys and "trainer.max_epochs" in keys
