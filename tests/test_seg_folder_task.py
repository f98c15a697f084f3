"""Bring-your-own segmentation data: the folders and CamVid layouts, a configurable void value, and
VOC's listing unchanged; tiny generated fixtures in each real layout."""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image
from torch import Tensor, nn

from conftest import TINY
from test_segmentation_data import write_list, write_pair
from visionbench.data.segmentation import ImageMaskDataModule
from visionbench.data.sources.pair_layouts import VOC_DIR, split_pairs
from visionbench.data.storage.readers import load_mask
from visionbench.errors import ConfigError, CorruptDataError, DataNotFoundError
from visionbench.masks import IGNORE_INDEX
from visionbench.run import train
from visionbench.tasks.segmentation import SegmentationTask, segmentation_scores

CAMVID_VOID = 11
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]
CAMVID_SPLITS = {
    "train": ["0001TP_006690", "0001TP_006720", "Seq05VD_f00000", "Seq05VD_f00030"],
    "val": ["0016E5_07959", "0016E5_07961"],
    "test": ["0001TP_008550", "0001TP_008580"],
}


def write_image(path: Path, height: int = 36, width: int = 52) -> None:
    rng = np.random.default_rng(zlib.crc32(path.stem.encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def camvid_mask(height: int = 36, width: int = 52) -> np.ndarray:
    """Column stripes of all 11 classes with a void (11) band across the top rows."""
    mask = (np.arange(width) * len(CAMVID_CLASSES) // width).astype(np.uint8)[None].repeat(height, 0)
    mask[:4] = CAMVID_VOID
    return mask


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A grayscale index PNG, as CamVid's annot folders ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, mode="L").save(path)


@pytest.fixture
def folders_root(tmp_path: Path) -> Path:
    """``images/<split>/<name>.jpg`` + ``masks/<split>/<name>.png``; 2 classes, 255 = void."""
    mask = np.zeros((36, 52), np.uint8)
    mask[10:20, 5:30] = 1
    mask[9] = IGNORE_INDEX
    for split, names in {"train": ["road_b", "road_a", "road_c"], "val": ["road_d"]}.items():
        for name in names:
            write_image(tmp_path / "images" / split / f"{name}.jpg")
            write_mask(tmp_path / "masks" / split / f"{name}.png", mask)
    return tmp_path


def write_camvid(root: Path) -> Path:
    """SegNet's CamVid layout: ``<split>/<name>.png`` + ``<split>annot/<name>.png``, void = 11."""
    for split, names in CAMVID_SPLITS.items():
        for name in names:
            write_image(root / split / f"{name}.png")
            write_mask(root / f"{split}annot" / f"{name}.png", camvid_mask())
    return root


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    return write_camvid(tmp_path / "camvid")


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC2012 tree whose lists are not in file-name order, as in test_segmentation_data."""
    voc = tmp_path / VOC_DIR
    for image_id in ("2007_000001", "2007_000002", "2008_000001", "small"):
        write_pair(voc, image_id)
    write_list(voc, "train", ["2007_000002", "small", "2007_000001"])
    write_list(voc, "val", ["2008_000001"])
    return tmp_path


def camvid_datamodule(root: Path, **kwargs) -> ImageMaskDataModule:
    return ImageMaskDataModule(
        root,
        test_split="test",
        crop=(32, 48),
        batch_size=2,
        num_workers=0,
        class_names=CAMVID_CLASSES,
        layout="camvid",
        ignore_index=CAMVID_VOID,
        **kwargs,
    )


def test_voc_layout_lists_the_same_pairs_as_before(voc_root: Path) -> None:
    voc = voc_root / VOC_DIR
    expected = {"train": ["2007_000002", "small", "2007_000001"], "val": ["2008_000001"]}  # list order, not name order
    for split, ids in expected.items():
        pairs = [(voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png") for i in ids]
        assert split_pairs(voc_root, split) == split_pairs(voc_root, split, "voc") == pairs
    dm = ImageMaskDataModule(voc_root, crop=(16, 24), num_workers=0)
    assert (dm.source.layout, dm.source.ignore_index) == ("voc", IGNORE_INDEX)


def test_folders_layout_pairs_images_and_masks_by_name_per_split(folders_root: Path) -> None:
    root = folders_root
    assert split_pairs(root, "train", "folders") == [
        (root / "images" / "train" / f"{n}.jpg", root / "masks" / "train" / f"{n}.png") for n in ("road_a", "road_b", "road_c")
    ]
    assert split_pairs(root, "val", "folders") == [(root / "images" / "val" / "road_d.jpg", root / "masks" / "val" / "road_d.png")]


def test_per_split_folders_layout_is_read_too(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "images" / "a.png")
    write_mask(tmp_path / "train" / "masks" / "a.png", np.zeros((36, 52), np.uint8))
    assert split_pairs(tmp_path, "train", "folders") == [(tmp_path / "train" / "images" / "a.png", tmp_path / "train" / "masks" / "a.png")]


def test_camvid_layout_pairs_each_split_with_its_annot_folder(camvid_root: Path) -> None:
    for split, names in CAMVID_SPLITS.items():
        pairs = split_pairs(camvid_root, split, "camvid")
        assert pairs == [(camvid_root / split / f"{n}.png", camvid_root / f"{split}annot" / f"{n}.png") for n in sorted(names)]


def test_image_without_its_mask_is_one_paragraph_naming_the_file(folders_root: Path) -> None:
    (folders_root / "masks" / "train" / "road_b.png").unlink()
    dm = ImageMaskDataModule(folders_root, layout="folders", class_names=["background", "road"], num_workers=0)
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message
    assert str(folders_root / "images" / "train" / "road_b.jpg") in message
    assert str(folders_root / "masks" / "train" / "road_b.png") in message and "task.data.root" in message


def test_mask_without_its_image_names_the_mask(camvid_root: Path) -> None:
    (camvid_root / "val" / "0016E5_07961.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"valannot/0016E5_07961\.png' \(split 'val'\) has no partner"):
        split_pairs(camvid_root, "val", "camvid")


def test_missing_split_folder_names_what_was_expected_and_the_keys(camvid_root: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"No split 'trainval' for task\.data\.layout=camvid.*trainvalannot.*_split"):
        split_pairs(camvid_root, "trainval", "camvid")


def test_mask_value_out_of_range_names_the_file_and_the_key(camvid_root: Path) -> None:
    bad = camvid_mask()
    bad[5, 5] = 12  # neither a class (0..10) nor void (11)
    path = camvid_root / "valannot" / "0016E5_07959.png"
    write_mask(path, bad)
    with pytest.raises(CorruptDataError, match=r"0016E5_07959\.png.*\[12\].*task\.data\.class_names.*task\.data\.ignore_index"):
        load_mask(path, len(CAMVID_CLASSES), "val", CAMVID_VOID)


def test_void_value_that_is_a_class_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"task\.data\.ignore_index=3"):
        ImageMaskDataModule("/nowhere", class_names=CAMVID_CLASSES, layout="camvid", ignore_index=3)


def test_seg_folder_without_class_names_asks_for_them(compose_cfg, folders_root: Path) -> None:
    cfg = compose_cfg(["task=seg_folder", f"task.data.root={folders_root}"])
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.task.data)
    assert isinstance(err.value.__cause__, ConfigError) and "task.data.class_names=[" in str(err.value.__cause__)


def test_unknown_layout_is_rejected_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"task\.data\.layout 'cityscapes'.*voc, folders, camvid"):
        ImageMaskDataModule("/nowhere", layout="cityscapes")


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
def test_camvid_void_is_read_as_the_ignored_value(camvid_root: Path, pipeline: str) -> None:
    dm = camvid_datamodule(camvid_root, pipeline=pipeline)
    dm.prepare_data()
    dm.setup("test")
    _, mask = dm.datasets["test"][0]
    expected = torch.from_numpy(camvid_mask()).long()
    expected[expected == CAMVID_VOID] = IGNORE_INDEX
    assert torch.equal(mask, expected)  # class 11 does not exist; its pixels are void like VOC's 255


class MaskEcho(nn.Module):
    """Stand-in network whose logits pick the class stored in input channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.one_hot(x[:, 0].long(), len(CAMVID_CLASSES)).permute(0, 3, 1, 2).float()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: the confusion matrix is read directly
def test_metrics_do_not_count_camvid_void_pixels(camvid_root: Path) -> None:
    path = camvid_root / "testannot" / "0001TP_008550.png"
    mask = torch.from_numpy(load_mask(path, len(CAMVID_CLASSES), "test", CAMVID_VOID)).long()
    void = mask == IGNORE_INDEX
    prediction = mask.masked_fill(void, 0)  # right on every labelled pixel, "Sky" on the void ones
    task = SegmentationTask(MaskEcho(), len(CAMVID_CLASSES), torch.optim.SGD, class_names=CAMVID_CLASSES)
    task._evaluate((prediction[None, None].float().expand(1, 3, -1, -1), mask[None]), "test")
    confmat = task.confmat["test"].compute()
    assert confmat.sum() == (~void).sum() == mask.numel() - 4 * mask.shape[1]
    scores = segmentation_scores(confmat)
    assert scores.pixel_acc == 1.0 and scores.miou == 1.0  # counted, the void pixels would be Sky false positives


def test_camvid_task_trains_and_writes_test_miou(compose_cfg, camvid_root: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "task=camvid",
            "model=fcn",
            *TINY,
            f"task.data.root={camvid_root}",
            "task.data.crop=[32,48]",
            "callbacks.figures=null",
        ]
    )
    assert (cfg.task.data.layout, cfg.task.data.ignore_index, cfg.task.data.test_split) == ("camvid", 11, "test")
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/miou"] <= 1.0


def test_seg_folder_task_reads_the_folders_layout_with_the_given_classes(compose_cfg, folders_root: Path) -> None:
    cfg = compose_cfg(["task=seg_folder", f"task.data.root={folders_root}", "task.data.class_names=[background,road]"])
    assert (cfg.task.name, cfg.task.data.layout, cfg.task.data.ignore_index) == ("seg_folder", "folders", 255)
    dm = instantiate(cfg.task.data)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_classes, len(dm.datasets["train"]), len(dm.datasets["val"])) == (2, 3, 1)


def seg_folder_datamodule(compose_cfg, root: Path, *overrides: str) -> ImageMaskDataModule:
    cfg = compose_cfg(["task=seg_folder", f"task.data.root={root}", "task.data.class_names=[background,road]", *overrides])
    dm = instantiate(cfg.task.data)
    dm.prepare_data()
    return dm


def add_test_split(root: Path) -> list[Path]:
    mask = np.zeros((36, 52), np.uint8)
    for name in ("road_t1", "road_t2"):
        write_image(root / "images" / "test" / f"{name}.jpg")
        write_mask(root / "masks" / "test" / f"{name}.png", mask)
    return sorted((root / "images" / "test").iterdir())


def test_seg_folder_tests_on_the_datasets_test_split_when_it_has_one(compose_cfg, folders_root: Path, caplog) -> None:
    test_images = add_test_split(folders_root)
    with caplog.at_level(logging.WARNING):
        dm = seg_folder_datamodule(compose_cfg, folders_root)
    assert [image for image, _ in dm.items("test").pairs] == test_images
    assert "validation numbers" not in caplog.text


def test_seg_folder_without_a_test_split_tests_on_val_with_a_warning(compose_cfg, folders_root: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        dm = seg_folder_datamodule(compose_cfg, folders_root)
    assert dm.items("test").pairs == dm.items("val").pairs
    assert "has no test split" in caplog.text and "test/ numbers are validation numbers" in caplog.text


def test_testing_on_val_beside_an_unused_test_split_is_said(compose_cfg, folders_root: Path, caplog) -> None:
    add_test_split(folders_root)
    with caplog.at_level(logging.WARNING):
        dm = seg_folder_datamodule(compose_cfg, folders_root, "task.data.test_split=val")
    assert dm.items("test").pairs == dm.items("val").pairs  # as asked
    assert "task.data.test_split=val" in caplog.text and "task.data.test_split=test" in caplog.text


def test_vocs_unlabelled_test_list_is_not_taken_for_a_test_split(voc_root: Path, caplog) -> None:
    """VOC2012's test archive adds ImageSets/Segmentation/test.txt without masks: testing on val stays silent."""
    write_list(voc_root / VOC_DIR, "test", ["2010_000001"])
    with caplog.at_level(logging.WARNING):
        ImageMaskDataModule(voc_root, crop=(32, 48), batch_size=2, num_workers=0).prepare_data()
    assert "test split" not in caplog.text
    write_pair(voc_root / VOC_DIR, "2010_000001")  # a labelled test list: testing on val is said
    with caplog.at_level(logging.WARNING):
        ImageMaskDataModule(voc_root, crop=(32, 48), batch_size=2, num_workers=0).prepare_data()
    assert "task.data.test_split=test" in caplog.text
