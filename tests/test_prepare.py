"""prepare.py brings the Kaggle download into place in the layout the archive really has: the
nested duplicate of the class folders is skipped, the nested test set is taken one level up."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from conftest import run_cli
from kaggle_fixture import make_kaggle_download

from visionbench.data.prepare import extract_zip, link_folder
from visionbench.data.simpsons import SimpsonsDataModule
from visionbench.data.split import KAGGLE_TEST_DIR, TRAIN_DIR


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


def test_prepare_imports_the_zip_and_the_kaggle_test_set_becomes_the_test_split(download: Path, tmp_path: Path) -> None:
    archive = _zip(download, tmp_path / "archive.zip")
    result = run_cli("src/prepare.py", "task=simpsons", f"source={archive}", f"paths.data_dir={tmp_path / 'data'}")
    assert "homer_simpson" in result.stdout and "excluded" in result.stdout
    dm = SimpsonsDataModule(tmp_path / "data" / "simpsons", batch_size=4, num_workers=0, split={"test_source": "kaggle", "test_per_class": 50})
    dm.prepare_data()
    test = [e for e in dm._entries() if e.split == "test"]
    assert len(test) == 9 and all(e.path.startswith(KAGGLE_TEST_DIR) for e in test)  # 3 per kept class; nelson_muntz has only 100
