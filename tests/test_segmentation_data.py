"""VOC2012 reader, joint transforms and the built-in shapes_seg dataset, on tiny fixtures in the real layout."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from visionbench.cli import CONFIG_DIR
from visionbench.data.segmentation import ImageMaskDataModule
from visionbench.data.sources.pair_layouts import SPLITS_DIR, VOC_DIR
from visionbench.data.sources.shapes_seg import SEG_CLASSES, generate_shapes_seg
from visionbench.data.transforms.augment import SegAugment
from visionbench.data.transforms.per_sample import eval_transform, pad_collate, train_transform
from visionbench.errors import CorruptDataError, DataNotFoundError
from visionbench.masks import IGNORE_INDEX, voc_palette
from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD

NUM_CLASSES = 21


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A palette PNG as VOC ships them: pixel values are the class indices."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
    image.putpalette(voc_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_pair(
    voc: Path, image_id: str, height: int = 24, width: int = 32, value: int = 15, mask_dir: str = "SegmentationClass"
) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    mask = np.zeros((height, width), np.uint8)
    mask[4:12, 6:20] = value
    mask[3, 6:20] = IGNORE_INDEX
    write_mask(voc / mask_dir / f"{image_id}.png", mask)
    return mask


def write_list(voc: Path, split: str, lines: list[str]) -> None:
    (voc / SPLITS_DIR).mkdir(parents=True, exist_ok=True)
    (voc / SPLITS_DIR / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A 3 train + 2 val VOC2012 tree; the 'small' image is smaller than any crop used here."""
    voc = tmp_path / VOC_DIR
    for image_id in ("2007_000001", "2007_000002", "2007_000003", "2008_000001", "2008_000002"):
        write_pair(voc, image_id)
    write_pair(voc, "small", height=10, width=12)
    write_list(voc, "train", ["2007_000001", "2007_000002", "2007_000003", "small"])
    write_list(voc, "val", ["2008_000001", "2008_000002"])
    return tmp_path


def datamodule(root: Path, **kwargs) -> ImageMaskDataModule:
    return ImageMaskDataModule(root, crop=kwargs.pop("crop", (16, 24)), batch_size=2, num_workers=0, **kwargs)


def test_voc_palette_matches_the_official_colour_map() -> None:
    palette = np.array(voc_palette()).reshape(256, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]  # aeroplane
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # void border


def test_reader_returns_class_indices_not_colours(voc_root: Path) -> None:
    dm = datamodule(voc_root)
    dm.prepare_data()
    dm.setup("fit")
    image, mask = dm.datasets["val"][0]
    assert image.dtype == torch.float32 and image.shape == (3, 24, 32)
    assert mask.dtype == torch.int64 and mask.shape == (24, 32)
    assert set(mask.unique().tolist()) == {0, 15, IGNORE_INDEX}
    assert dm.num_classes == NUM_CLASSES and dm.class_names[15] == "person"


def test_corrupt_mask_value_names_the_file_and_the_value(voc_root: Path) -> None:
    bad = np.zeros((24, 32), np.uint8)
    bad[0, 0] = 42
    mask_path = voc_root / VOC_DIR / "SegmentationClass" / "2008_000002.png"
    write_mask(mask_path, bad)
    dm = datamodule(voc_root)
    dm.setup("validate")
    dm.datasets["val"][0]  # a good mask loads
    with pytest.raises(CorruptDataError, match=r"2008_000002\.png.*\[42\]"):
        dm.datasets["val"][1]


def test_image_and_mask_of_different_sizes_name_both_files(voc_root: Path) -> None:
    write_mask(voc_root / VOC_DIR / "SegmentationClass" / "2008_000001.png", np.zeros((20, 32), np.uint8))
    dm = datamodule(voc_root)
    dm.setup("validate")
    with pytest.raises(CorruptDataError, match=r"JPEGImages/2008_000001\.jpg.*32x24.*SegmentationClass/2008_000001\.png.*32x20"):
        dm.datasets["val"][0]


def test_missing_split_list_names_the_path(voc_root: Path) -> None:
    (voc_root / VOC_DIR / SPLITS_DIR / "val.txt").unlink()
    with pytest.raises(DataNotFoundError, match=r"ImageSets/Segmentation/val\.txt"):
        datamodule(voc_root).prepare_data()


def test_listed_id_without_its_file_names_the_file(voc_root: Path) -> None:
    (voc_root / VOC_DIR / "JPEGImages" / "2008_000002.jpg").unlink()
    dm = datamodule(voc_root)
    dm.setup("validate")
    with pytest.raises(DataNotFoundError, match=r"JPEGImages/2008_000002\.jpg.*split 'val'"):
        dm.datasets["val"][1]


def test_missing_dataset_explains_where_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        datamodule(tmp_path / "voc").prepare_data()
    message = str(err.value)
    assert str(tmp_path / "voc" / VOC_DIR) in message
    assert "VOCtrainval_11-May-2012.tar" in message and "task=shapes_seg" in message


def test_validate_checks_every_file_when_preparing(voc_root: Path) -> None:
    bad = np.full((24, 32), 42, np.uint8)
    write_mask(voc_root / VOC_DIR / "SegmentationClass" / "2007_000003.png", bad)
    datamodule(voc_root).prepare_data()  # without validate only the layout is checked
    with pytest.raises(CorruptDataError, match=r"2007_000003\.png"):
        datamodule(voc_root, validate=True).prepare_data()


def test_validate_logs_the_number_of_checked_pairs(voc_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="visionbench.data.sources.pair_layouts"):
        datamodule(voc_root, validate=True).prepare_data()
    assert "validated 6 image/mask pairs" in caplog.text


def test_train_aug_reads_sbd_masks_and_list_lines_with_paths(voc_root: Path) -> None:
    voc = voc_root / VOC_DIR
    expected = write_pair(voc, "2009_000001", value=3, mask_dir="SegmentationClassAug")
    write_list(voc, "train_aug", ["/JPEGImages/2009_000001.jpg /SegmentationClassAug/2009_000001.png"])
    dm = datamodule(voc_root, train_split="train_aug", crop=(24, 32), augment={"enabled": False})
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 1
    assert torch.equal(dm.datasets["train"][0][1], torch.from_numpy(expected).long())


def test_missing_train_aug_list_says_where_sbd_goes(voc_root: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"train_aug\.txt.*SegmentationClassAug"):
        datamodule(voc_root, train_split="train_aug").prepare_data()


def test_rgb_masks_are_rejected_with_the_reason(voc_root: Path) -> None:
    Image.new("RGB", (32, 24), (128, 0, 0)).save(voc_root / VOC_DIR / "SegmentationClass" / "2008_000001.png")
    dm = datamodule(voc_root)
    dm.setup("validate")
    with pytest.raises(CorruptDataError, match=r"2008_000001\.png.*mode RGB"):
        dm.datasets["val"][0]


def test_images_smaller_than_the_crop_are_padded_not_dropped(voc_root: Path) -> None:
    dm = datamodule(voc_root, crop=(16, 24))
    dm.setup("fit")
    train = dm.datasets["train"]
    assert len(train) == 4
    image, mask = train[3]  # "small": 10x12 < 16x24
    assert image.shape == (3, 16, 24) and mask.shape == (16, 24)
    padded = (image == 0).all(0)  # the mean: no real pixel normalises to exactly 0 in all channels
    assert int(padded.sum()) == 16 * 24 - 10 * 12
    assert torch.all(mask[padded] == IGNORE_INDEX)


def denormalise(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image * std + mean) * 255).round()


def coded_pair(height: int, width: int, block: int) -> tuple[Image.Image, np.ndarray]:
    """An image whose red channel encodes its mask (class = (red - 5) / 20, constant in blocks)
    and whose blue channel is the column index, so flips and crops can be read back."""
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 12, (height // block, width // block)), np.ones((block, block), np.int64))
    columns = np.arange(width)[None].repeat(height, 0)
    rgb = np.stack([labels * 20 + 5, rng.integers(0, 256, labels.shape), columns], -1)
    return Image.fromarray(rgb.astype(np.uint8)), labels.astype(np.uint8)


def test_crop_pad_and_flip_keep_image_and_mask_aligned() -> None:
    image, labels = coded_pair(40, 48, block=4)
    transform = train_transform((48, 40), SegAugment(hflip=0.5))  # taller than the image: pads; narrower: crops
    flipped = set()
    for seed in range(12):
        torch.manual_seed(seed)
        x, y = transform(image, labels)
        assert x.shape == (3, 48, 40) and y.shape == (48, 40)
        red, blue = denormalise(x)[0], denormalise(x)[2]
        valid = y != IGNORE_INDEX
        assert torch.equal(((red[valid] - 5) / 20).long(), y[valid])
        assert torch.all(x[:, ~valid] == 0)  # padded image pixels are the mean
        row = int(valid.any(1).nonzero()[0])
        columns = blue[row][valid[row]]
        assert torch.all(columns.diff().abs() == 1)  # a contiguous crop of the columns
        flipped.add(bool(columns[0] > columns[-1]))
    assert flipped == {True, False}  # both flipped and unflipped samples were checked


def test_random_scale_keeps_image_and_mask_aligned() -> None:
    image, labels = coded_pair(64, 64, block=8)
    transform = train_transform((32, 32), SegAugment(scale_range=(0.5, 2.0), hflip=0.5))
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = transform(image, labels)
        decoded = ((denormalise(x)[0] - 5) / 20).round().long()
        # Away from block edges (where the bilinear image blends classes) the two must agree exactly.
        window = y[None, None].float()
        interior = (F.max_pool2d(window, 3, 1, 1) == -F.max_pool2d(-window, 3, 1, 1))[0, 0] & (y != IGNORE_INDEX)
        interior[0] = interior[-1] = interior[:, 0] = interior[:, -1] = False  # neighbours beyond the crop are unseen
        assert interior.sum() > 100
        assert torch.equal(decoded[interior], y[interior])


def test_masks_keep_their_values_and_dtype_after_transforms() -> None:
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([0, 3, 7, IGNORE_INDEX], np.uint8), (37, 53))
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    for transform in (train_transform((32, 64), SegAugment(scale_range=(0.37, 1.73))), eval_transform()):
        for seed in range(6):
            torch.manual_seed(seed)
            _, y = transform(image, labels)
            assert y.dtype == torch.int64
            assert set(y.unique().tolist()) <= {0, 3, 7, IGNORE_INDEX}


def test_pad_collate_pads_to_a_multiple_of_32_with_mean_and_void() -> None:
    batch = [
        (torch.ones(3, 40, 50), torch.ones(40, 50, dtype=torch.int64)),
        (torch.ones(3, 33, 70), torch.zeros(33, 70, dtype=torch.int64)),
    ]
    images, masks = pad_collate(batch)
    assert images.shape == (2, 3, 64, 96) and masks.shape == (2, 64, 96)
    assert torch.all(images[0, :, :40, :50] == 1) and torch.all(images[0, :, 40:] == 0) and torch.all(images[0, :, :, 50:] == 0)
    assert torch.all(masks[0, :40, :50] == 1) and torch.all(masks[0, 40:] == IGNORE_INDEX) and torch.all(masks[1, :33, :70] == 0)
    assert int((masks[1] == IGNORE_INDEX).sum()) == 64 * 96 - 33 * 70


def test_eval_loader_batches_full_images_of_different_sizes(voc_root: Path) -> None:
    write_pair(voc_root / VOC_DIR, "2008_000002", height=40, width=36)
    dm = datamodule(voc_root)
    dm.setup("validate")
    images, masks = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64)
    assert int((masks != IGNORE_INDEX).sum()) == 24 * 32 + 40 * 36 - 2 * 14  # minus each mask's void row


def test_shapes_seg_is_deterministic_and_in_the_voc_layout(tmp_path: Path) -> None:
    a = generate_shapes_seg(tmp_path / "a", num_train=6, num_val=3, log=lambda _: None)
    generate_shapes_seg(tmp_path / "b", num_train=6, num_val=3, log=lambda _: None)
    voc_a, voc_b = tmp_path / "a" / VOC_DIR, tmp_path / "b" / VOC_DIR
    assert a == tmp_path / "a" / "VOCdevkit"
    assert (voc_a / SPLITS_DIR / "train.txt").read_text().split() == [f"shapes_{i:05d}" for i in range(6)]
    assert len((voc_a / SPLITS_DIR / "val.txt").read_text().split()) == 3
    for name in ("JPEGImages/shapes_00004.jpg", "SegmentationClass/shapes_00004.png"):
        assert (voc_a / name).read_bytes() == (voc_b / name).read_bytes()
    with Image.open(voc_a / "SegmentationClass" / "shapes_00004.png") as mask:
        assert mask.mode == "P" and mask.getpalette()[: 3 * 3] == voc_palette()[: 3 * 3]
        assert mask.size == (128, 96)
    assert not list(tmp_path.glob("a/.*partial"))


def test_shapes_seg_has_void_borders_overlaps_and_every_class(tmp_path: Path) -> None:
    generate_shapes_seg(tmp_path, num_train=40, num_val=0, log=lambda _: None)
    masks = [np.array(Image.open(p)) for p in sorted((tmp_path / VOC_DIR / "SegmentationClass").glob("*.png"))]
    values = set(np.unique(np.stack(masks)).tolist())
    assert values == set(range(len(SEG_CLASSES))) | {IGNORE_INDEX}
    # Objects touching each other: a void pixel with two different object classes within 2 px.
    touching = 0
    for m in masks:
        for y, x in zip(*np.nonzero(m == IGNORE_INDEX), strict=True):
            near = m[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
            touching += len(set(near[(near != 0) & (near != IGNORE_INDEX)].tolist())) >= 2
    assert touching > 0


def test_shapes_seg_task_class_names_match_the_generator() -> None:
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "task" / "shapes_seg.yaml")
    assert tuple(cfg.data.class_names) == SEG_CLASSES
