"""Bring your own classification data: ``task=folder task.data.root=...`` runs any class-folder
dataset (or one already split into train/ val/ test/) through exactly the Simpsons code path."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from PIL import Image

from conftest import TINY
from kaggle_fixture import make_kaggle_download
from visionbench.cli import report_errors
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sources.split import EXCLUDED, MANIFEST, Entry, read_manifest
from visionbench.errors import DataNotFoundError
from visionbench.run import train

SIZES = {"cat": 34, "dog": 28, "owl": 25}  # different counts; each more than folder.yaml's test_per_class (20)


def write_images(folder: Path, n: int, seed: int) -> None:
    """``n`` tiny random images, JPEG and PNG alternating, named so that sorting is by index."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
        image.save(folder / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}")


def make_class_folders(root: Path, sizes: dict[str, int] = SIZES) -> Path:
    for seed, (label, n) in enumerate(sizes.items()):
        write_images(root / label, n, seed)
    return root


def make_presplit(root: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """``root/<split>/<class>/``; ``owl`` has no validation images (classes are the union)."""
    for s, split in enumerate(splits):
        for c, label in enumerate(SIZES):
            if not (split == "val" and label == "owl"):
                write_images(root / split / label, 6 if split == "train" else 3, 10 * s + c)
    return root


def folder_datamodule(compose_cfg, root: Path, *overrides: str) -> ClassFolderDataModule:
    """The DataModule exactly as ``task=folder task.data.root=<root>`` builds it."""
    cfg = compose_cfg(["task=folder", f"task.data.root={root}", "task.data.num_workers=0", *overrides])
    return instantiate(cfg.task.data, _convert_="all")


def rows(entries: list[Entry]) -> list[tuple[str, str, str]]:
    return [(e.path, e.label, e.split) for e in entries]


def test_class_folders_get_a_deterministic_manifest_with_content_hashes_and_three_splits(compose_cfg, tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data")
    folder_datamodule(compose_cfg, root).prepare_data()
    entries = read_manifest(root)
    assert len(entries) == sum(SIZES.values())  # min_images: 0 keeps every class
    assert all(e.sha1 == hashlib.sha1((root / e.path).read_bytes()).hexdigest() for e in entries)
    for label, n in SIZES.items():
        splits = [e.split for e in entries if e.label == label]
        assert splits.count("test") == 20 and splits.count("val") == round((n - 20) * 0.2) > 0
        assert {e.path for e in entries if e.label == label and e.split == "test"} == {
            f"{label}/{p.name}" for p in sorted((root / label).iterdir())[-20:]
        }  # the last names, as for Simpsons
    again = make_class_folders(tmp_path / "again")  # the same files elsewhere: the same split
    folder_datamodule(compose_cfg, again).prepare_data()
    assert read_manifest(again) == entries


def test_a_presplit_dataset_keeps_every_file_in_its_given_split(compose_cfg, tmp_path: Path) -> None:
    root = make_presplit(tmp_path / "data")
    dm = folder_datamodule(compose_cfg, root)
    dm.prepare_data()
    entries = read_manifest(root)
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*"))
    assert sorted(e.path for e in entries) == on_disk
    assert all(e.split == e.path.split("/")[0] and e.label == e.path.split("/")[1] for e in entries)
    assert dm.class_names == ["cat", "dog", "owl"]  # the union: owl has no val/ folder


def test_without_test_folder_the_val_images_are_the_test_split_with_a_warning(compose_cfg, tmp_path: Path, caplog) -> None:
    root = make_presplit(tmp_path / "data", splits=("train", "val"))
    with caplog.at_level(logging.WARNING):
        folder_datamodule(compose_cfg, root).prepare_data()
    entries = read_manifest(root)
    assert [e.path for e in entries if e.split == "test"] == [e.path for e in entries if e.split == "val"]
    assert "test/ numbers are validation numbers" in caplog.text


def test_a_test_folder_added_after_a_first_run_becomes_the_test_split(compose_cfg, tmp_path: Path, caplog) -> None:
    root = make_presplit(tmp_path / "data", splits=("train", "val"))
    folder_datamodule(compose_cfg, root).prepare_data()
    for c, label in enumerate(SIZES):
        write_images(root / "test" / label, 2, 90 + c)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dm = folder_datamodule(compose_cfg, root)
        dm.prepare_data()
    assert sorted(dm.items("test").paths) == sorted(p.relative_to(root).as_posix() for p in root.glob("test/*/*"))
    assert "test/ numbers are validation numbers" not in caplog.text


def test_the_val_as_test_warning_comes_with_every_run_that_reuses_the_manifest(compose_cfg, tmp_path: Path, caplog) -> None:
    root = make_presplit(tmp_path / "data", splits=("train", "val"))
    folder_datamodule(compose_cfg, root).prepare_data()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        folder_datamodule(compose_cfg, root).prepare_data()
    assert "test/ numbers are validation numbers" in caplog.text


@pytest.mark.parametrize("layout", ["given split", "made split"])
def test_images_and_classes_added_after_a_first_run_are_in_the_split(compose_cfg, tmp_path: Path, layout: str, caplog) -> None:
    given = layout == "given split"
    root = make_presplit(tmp_path / "data") if given else make_class_folders(tmp_path / "data")
    folder_datamodule(compose_cfg, root).prepare_data()
    classes = root / "train" if given else root
    Image.new("RGB", (10, 12), (200, 10, 10)).save(classes / "cat" / "img_new.png")
    write_images(classes / "yak", 30, 77)  # a new class (30 images: enough for a made split's test_per_class)
    dm = folder_datamodule(compose_cfg, root)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    assert "the split is made again" in caplog.text
    assert dm.class_names == ["cat", "dog", "owl", "yak"]
    listed = {e.path for e in read_manifest(root)}
    assert (classes / "cat" / "img_new.png").relative_to(root).as_posix() in listed
    assert {p.relative_to(root).as_posix() for p in (classes / "yak").iterdir()} <= listed


def test_a_class_without_training_images_is_an_error_naming_it(compose_cfg, tmp_path: Path) -> None:
    root = make_presplit(tmp_path / "data")
    write_images(root / "test" / "yak", 2, 99)
    with pytest.raises(DataNotFoundError, match=r"\['yak'\] have images in .* but no readable image in"):
        folder_datamodule(compose_cfg, root).prepare_data()


def test_a_corrupt_image_is_excluded_and_listed_with_its_reason(compose_cfg, tmp_path: Path, caplog) -> None:
    root = make_class_folders(tmp_path / "data")
    jpeg = (root / "dog" / "img_000.jpg").read_bytes()
    (root / "dog" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    with caplog.at_level(logging.WARNING):
        folder_datamodule(compose_cfg, root).prepare_data()
    with open(root / EXCLUDED, newline="") as f:
        listed = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert list(listed) == ["dog/broken.jpg"] and "cannot be decoded" in listed["dog/broken.jpg"]
    assert "dog/broken.jpg" not in {e.path for e in read_manifest(root)}
    assert "1 file(s) excluded" in caplog.text


def test_task_folder_without_a_root_is_one_paragraph_naming_the_key(compose_cfg, capsys) -> None:
    cfg = compose_cfg(["task=folder", "model=cnn"])
    with pytest.raises(SystemExit):
        report_errors(lambda: train(cfg))
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: task.data.root is not set") and "task.data.root=/path/to/data" in error
    assert len(error.splitlines()) == 1 and "Traceback" not in error


def _in_process(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    return cfg


def test_a_tiny_run_on_class_folders_writes_test_accuracy(compose_cfg, tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data")
    overrides = ["task=folder", f"task.data.root={root}", "model=cnn", "task.data.image_size=32", *TINY, "callbacks.figures=null"]
    metrics = train(_in_process(compose_cfg(overrides)))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= written["test/acc"] <= 1.0 and written["test/acc"] == metrics["test/acc"]


# (path, class, split) rows of the miniature Kaggle download, computed by split.py before it learnt about
# other folders: task=simpsons must keep producing exactly this manifest (with and without the Kaggle test set).
SIMPSONS_ROWS_SHA256 = {
    "holdout": "d7b02d8ae4ed9ab6300421e23e38d6903db32cc7f942ad61d1e072d7c62d36f9",
    "kaggle": "0e13d0fecec789cba8ac923f2d7dd57ef48cab5409a05098a709d9cc3f108b93",
}


@pytest.mark.parametrize("test_source", sorted(SIMPSONS_ROWS_SHA256))
def test_task_simpsons_manifest_is_unchanged(compose_cfg, tmp_path: Path, test_source: str) -> None:
    root = make_kaggle_download(tmp_path / "simpsons")
    cfg = compose_cfg(["task=simpsons", f"task.data.root={root}", f"task.data.split.test_source={test_source}"])
    instantiate(cfg.task.data, _convert_="all").prepare_data()
    text = "".join(f"{p},{c},{s}\n" for p, c, s in rows(read_manifest(root)))
    assert hashlib.sha256(text.encode()).hexdigest() == SIMPSONS_ROWS_SHA256[test_source]
    assert (root / MANIFEST).is_file()
