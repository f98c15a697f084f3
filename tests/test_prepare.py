"""prepare.py brings the Kaggle download into place in the layout the archive really has: the
nested duplicate of the class folders is skipped, the nested test set is taken one level up. A
folder holding the class folders directly is taken as well; ``clean_cache`` removes caches on request."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import run_cli
from kaggle_fixture import flat_copy, make_kaggle_download
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sources.prepare import clean_cache, extract_zip, import_source, link_folder
from visionbench.data.sources.split import KAGGLE_TEST_DIR, TRAIN_DIR, count_table, read_manifest
from visionbench.data.storage.cache import CACHE_DIR
from visionbench.errors import DataNotFoundError


@pytest.fixture(scope="module")
def download(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_kaggle_download(tmp_path_factory.mktemp("kaggle") / "download")


def _zip(download: Path, path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(download.rglob("*")):
            archive.write(file, prefix + file.relative_to(download).as_posix())
    return path


@pytest.mark.parametrize("prefix", ["", "the-simpsons-characters-dataset/"], ids=["at the root", "under a folder"])
def test_the_kaggle_zip_is_extracted_without_the_duplicate_and_with_the_test_set(download: Path, tmp_path: Path, prefix: str) -> None:
    count = extract_zip(_zip(download, tmp_path / "archive.zip", prefix), tmp_path / "simpsons")
    extracted = sorted(p.relative_to(tmp_path / "simpsons").as_posix() for p in (tmp_path / "simpsons").rglob("*") if p.is_file())
    assert count == len(extracted)
    assert f"{TRAIN_DIR}/homer_simpson/pic_0000.jpg" in extracted
    assert not any(p.startswith(f"{TRAIN_DIR}/{TRAIN_DIR}/") for p in extracted)  # the nested duplicate
    test_set = [p for p in extracted if p.startswith(f"{KAGGLE_TEST_DIR}/")]
    assert len(test_set) == 12 and f"{KAGGLE_TEST_DIR}/bart_simpson_0.jpg" in test_set  # one level up


def test_an_extracted_download_is_linked_not_copied(download: Path, tmp_path: Path) -> None:
    link_folder(download, tmp_path / "simpsons")
    assert (tmp_path / "simpsons" / TRAIN_DIR).resolve() == (download / TRAIN_DIR).resolve()
    assert (tmp_path / "simpsons" / KAGGLE_TEST_DIR).is_symlink()


@pytest.mark.slow
def test_prepare_imports_the_zip_and_the_kaggle_test_set_becomes_the_test_split(download: Path, tmp_path: Path) -> None:
    archive = _zip(download, tmp_path / "archive.zip")
    result = run_cli("src/prepare.py", "task=simpsons", f"source={archive}", f"paths.data_dir={tmp_path / 'data'}")
    assert "homer_simpson" in result.stdout and "excluded" in result.stdout
    dm = ClassFolderDataModule(
        tmp_path / "data" / "simpsons", batch_size=4, num_workers=0, split={"test_source": "kaggle", "test_per_class": 50}
    )
    dm.prepare_data()
    test = [e for e in dm.source.entries() if e.split == "test"]
    assert len(test) == 9 and all(e.path.startswith(KAGGLE_TEST_DIR) for e in test)  # 3 per kept class; nelson_muntz has only 100


@pytest.mark.parametrize("nested_duplicate", [False, True], ids=["class folders only", "with the nested duplicate"])
def test_a_folder_holding_the_class_folders_directly_is_imported_like_the_kaggle_folder(
    download: Path, tmp_path: Path, nested_duplicate: bool
) -> None:
    flat = flat_copy(download, tmp_path / "characters", nested_duplicate)  # characters/homer_simpson/pic_0000.jpg
    tables = []
    for source, root in ((download, tmp_path / "kaggle"), (flat, tmp_path / "flat")):
        import_source(source, root)
        ClassFolderDataModule(root, num_workers=0).prepare_data()
        tables.append(count_table(read_manifest(root)))
    assert (tmp_path / "flat" / TRAIN_DIR).resolve() == flat.resolve()  # linked, not its nested duplicate
    assert tables[0] == tables[1] and [c for c, *_ in tables[0]] == ["bart_simpson", "homer_simpson", "lisa_simpson"]


@pytest.mark.parametrize("layout", ["loose images", "empty folder", "not a zip"])
def test_a_source_in_none_of_the_three_layouts_is_refused_with_the_layouts_it_takes(tmp_path: Path, layout: str) -> None:
    source = tmp_path / "download"
    if layout == "not a zip":
        source.write_text("not an archive")
    else:
        source.mkdir()
        if layout == "loose images":
            (source / "pic_0000.jpg").write_bytes(b"")
    with pytest.raises(DataNotFoundError) as raised:
        import_source(source, tmp_path / "simpsons")
    message = str(raised.value)
    assert f"'{source}'" in message and "\n" not in message
    assert ".zip" in message  # the three layouts it takes: the zip, the Kaggle folder, the class folders
    assert f"'{TRAIN_DIR}/homer_simpson/pic_0000.jpg'" in message and "'homer_simpson/pic_0000.jpg'" in message
    assert not (tmp_path / "simpsons").exists()


def _cache_sizes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (root / CACHE_DIR).iterdir() if not p.name.startswith(".")}


def _cached(root: Path, image_size: int) -> ClassFolderDataModule:
    dm = ClassFolderDataModule(root, image_size=image_size, num_workers=0, pipeline="cached")
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.slow
def test_clean_cache_removes_only_the_caches_the_current_settings_do_not_read_and_reports_the_bytes(download: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / "simpsons"
    link_folder(download, root)
    _cached(root, 16)  # two jobs of a sweep over task.data.image_size
    superseded = _cache_sizes(root)
    job = _cached(root, 24)
    current = {name: size for name, size in _cache_sizes(root).items() if name not in superseded}
    data_dir = f"paths.data_dir={tmp_path / 'data'}"
    result = run_cli("src/prepare.py", "task=simpsons", "task.data.image_size=24", "clean_cache=true", data_dir)
    assert _cache_sizes(root) == current
    line = next(line for line in result.stdout.splitlines() if line.startswith("Removed"))
    assert "3 cache(s)" in line and f"({sum(superseded.values()):,} bytes) freed" in line
    assert all(name.split(".")[0] in line for name in superseded) and not any(name.split(".")[0] in line for name in current)
    assert job.datasets["train"][0][0].shape == (3, 24, 24)  # the current cache is still read

    message = clean_cache(root, "all", job)
    assert _cache_sizes(root) == {} and f"({sum(current.values()):,} bytes) freed" in message
