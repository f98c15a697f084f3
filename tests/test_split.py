"""The reference split procedure on a miniature Kaggle download: deterministic, disjoint, counted, audited."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from kaggle_fixture import DUPLICATE, ODD_MODES, make_kaggle_download
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sources.split import MANIFEST, SplitSpec, build_split, read_manifest
from visionbench.data.storage.readers import load_rgb
from visionbench.errors import DataNotFoundError

KEPT = ["bart_simpson", "homer_simpson", "lisa_simpson"]


@pytest.fixture(scope="module")
def download(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_kaggle_download(tmp_path_factory.mktemp("kaggle") / "simpsons")


def test_only_classes_with_more_than_the_threshold_are_kept(download: Path) -> None:
    result = build_split(download, SplitSpec())
    assert sorted({e.label for e in result.entries}) == KEPT
    assert result.dropped_classes == {"nelson_muntz": 100, "rare_guy": 30}  # exactly 100 is not "more than 100"


def test_counts_follow_the_reference_procedure(download: Path) -> None:
    result = build_split(download, SplitSpec())
    counts = Counter((e.label, e.split) for e in result.entries)
    usable = {"bart_simpson": 105, "homer_simpson": 110, "lisa_simpson": 102}  # the duplicate is excluded
    for label, n in usable.items():
        assert counts[label, "test"] == 50
        assert counts[label, "val"] == round((n - 50) * 0.2)
        assert counts[label, "train"] == n - 50 - round((n - 50) * 0.2)


def test_nested_duplicate_archive_folder_is_not_counted_twice(download: Path) -> None:
    result = build_split(download, SplitSpec())
    assert all(not e.path.startswith("simpsons_dataset/simpsons_dataset/") for e in result.entries)
    assert len(result.entries) == 105 + 110 + 102


def test_test_set_is_the_last_images_by_name(download: Path) -> None:
    result = build_split(download, SplitSpec())
    homer = sorted(e.path for e in result.entries if e.label == "homer_simpson")
    assert {e.path for e in result.entries if e.label == "homer_simpson" and e.split == "test"} == set(homer[-50:])


def test_split_is_deterministic_and_the_seed_only_moves_train_val(download: Path) -> None:
    a, b = build_split(download, SplitSpec()), build_split(download, SplitSpec())
    assert a.entries == b.entries
    other = build_split(download, SplitSpec(seed=1))
    assert {e.path for e in other.entries if e.split == "test"} == {e.path for e in a.entries if e.split == "test"}
    assert {e.path for e in other.entries if e.split == "val"} != {e.path for e in a.entries if e.split == "val"}


def test_splits_are_disjoint_by_name_and_by_content(download: Path) -> None:
    entries = build_split(download, SplitSpec()).entries
    assert len({e.path for e in entries}) == len(entries)
    owners = {}
    for e in entries:
        assert owners.setdefault(e.sha1, e.split) == e.split
    assert len({e.sha1 for e in entries}) == len(entries)


def test_unreadable_and_duplicate_files_are_excluded_and_listed_with_a_reason(download: Path) -> None:
    excluded = dict(build_split(download, SplitSpec()).excluded)
    assert "cannot be decoded" in excluded["simpsons_dataset/homer_simpson/pic_9990.jpg"]  # truncated JPEG
    assert excluded["simpsons_dataset/homer_simpson/pic_9991.jpg"] == "zero-byte file"
    assert "not an image" in excluded["simpsons_dataset/homer_simpson/pic_9992.jpg"]  # text named .jpg
    assert excluded["simpsons_dataset/homer_simpson/notes.txt"] == "not an image file name"
    assert excluded[f"simpsons_dataset/{DUPLICATE[0]}"] == f"duplicate content of simpsons_dataset/{DUPLICATE[1]}"
    assert len(excluded) == 5


@pytest.mark.parametrize("rel", sorted(ODD_MODES))
def test_grayscale_cmyk_and_rgba_images_load_as_rgb(download: Path, rel: str) -> None:
    image = load_rgb(download / "simpsons_dataset" / rel)
    assert image.mode == "RGB" and len(image.getbands()) == 3


def test_kaggle_test_folder_can_be_the_test_split(download: Path) -> None:
    result = build_split(download, SplitSpec(test_source="kaggle"))
    test = [e for e in result.entries if e.split == "test"]
    assert sorted(Counter(e.label for e in test).items()) == [(c, 3) for c in KEPT]
    assert all(e.path.startswith("kaggle_simpson_testset/kaggle_simpson_testset/") for e in test)
    assert sum(1 for p, r in result.excluded if "nelson_muntz_" in p and "not among the kept classes" in r) == 3


def test_datamodule_writes_an_auditable_manifest_and_reuses_it(tmp_path: Path) -> None:
    root = make_kaggle_download(tmp_path / "simpsons", kaggle_test=False)
    dm = ClassFolderDataModule(root, image_size=32, batch_size=4, num_workers=0)
    dm.prepare_data()
    with open(root / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "class", "split", "sha1"]
    assert len(rows) == 317 and dm.num_classes == 3 and dm.class_names == KEPT
    assert len(dm.excluded_files()) == 5
    mtime = (root / MANIFEST).stat().st_mtime_ns
    dm.prepare_data()
    assert (root / MANIFEST).stat().st_mtime_ns == mtime  # reused, not rebuilt
    before = read_manifest(root)
    ClassFolderDataModule(root, split={"seed": 3}).prepare_data()
    assert (root / MANIFEST).stat().st_mtime_ns != mtime  # rebuilt for the new spec
    assert read_manifest(root) != before


def test_datamodule_yields_normalised_images_and_class_indices(tmp_path: Path) -> None:
    root = make_kaggle_download(tmp_path / "simpsons", kaggle_test=False)
    dm = ClassFolderDataModule(root, image_size=32, batch_size=4, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype.is_floating_point
    assert set(y.tolist()) <= {0, 1, 2}
    assert sum(len(dm.datasets[s]) for s in ("train", "val", "test")) == 317


def test_missing_dataset_names_the_folder_and_the_built_in_alternative(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        ClassFolderDataModule(tmp_path / "nowhere").prepare_data()
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "prepare.py" in message and "task=shapes" in message


def test_built_in_data_is_regenerated_when_its_recipe_changes(tmp_path: Path) -> None:
    from visionbench.data.sources.shapes import generate_shapes

    root = tmp_path / "shapes"
    generate_shapes(root, num_classes=2, per_class=3, image_size=16, log=lambda _: None)
    first = root / "simpsons_dataset" / "circle" / "pic_0000.jpg"
    (root / MANIFEST).write_text("stale")
    mtime = first.stat().st_mtime_ns
    generate_shapes(root, num_classes=2, per_class=3, image_size=16, log=lambda _: None)
    assert first.stat().st_mtime_ns == mtime  # same recipe: reused
    generate_shapes(root, num_classes=2, per_class=3, image_size=24, log=lambda _: None)
    assert load_rgb(first).size == (24, 24)
    assert not (root / MANIFEST).exists()  # everything derived from the old data is gone


def test_an_interrupted_generation_leaves_no_dataset_and_the_next_run_rebuilds(tmp_path: Path) -> None:
    from visionbench.data.sources import builtin

    root, recipe = tmp_path / "gen", {"dataset": "toy", "n": 1}

    def crash(staging: Path) -> None:
        (staging / "half_written.jpg").write_bytes(b"")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        builtin.build_once(root, root / "data", recipe, crash, log=lambda _: None)
    assert not (root / "data").exists() and not (root / builtin.RECIPE).exists()
    builtin.build_once(root, root / "data", recipe, lambda staging: (staging / "ok.jpg").write_bytes(b"x"), log=lambda _: None)
    assert [p.name for p in (root / "data").iterdir()] == ["ok.jpg"]
