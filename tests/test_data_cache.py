"""The cached data path: decode-once uint8 caches and batched augmentation on the device, checked
against the per-image PIL pipeline (the reference) on tiny datasets in the real on-disk layouts."""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2

from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sampler import Draw
from visionbench.data.segmentation import ImageMaskDataModule
from visionbench.data.sources.pair_layouts import SPLITS_DIR, VOC_DIR
from visionbench.data.sources.split import MANIFEST, TRAIN_DIR, read_manifest
from visionbench.data.storage.cache import CACHE_DIR, build_cache, remove_caches
from visionbench.data.storage.readers import decode_resized
from visionbench.data.transforms.augment import Augment
from visionbench.data.transforms.batch import BatchTransform, normalize_uint8
from visionbench.errors import ConfigError
from visionbench.masks import IGNORE_INDEX, voc_palette
from visionbench.pixels import MEAN_PIXEL
from visionbench.tasks.classification import ClassificationTask

SPLIT = {"min_images": 3, "test_per_class": 1, "val_fraction": 0.25}
NO_AUGMENT = {"enabled": False}


def write_classes(root: Path, width: int, height: int, classes: int = 3, per_class: int = 6) -> Path:
    """Smooth, textured JPEGs (a gradient, a disc and noise) in the Kaggle class-folder layout."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for c in range(classes):
        folder = root / TRAIN_DIR / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([c, i])
            base = rng.uniform(0, 255, 3) * (xx / width)[..., None] + rng.uniform(0, 100, 3) * (yy / height)[..., None]
            disc = ((xx - rng.uniform(0, width)) ** 2 + (yy - rng.uniform(0, height)) ** 2) < (min(width, height) / 4) ** 2
            base[disc] = rng.uniform(0, 255, 3)
            pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"pic_{i:04d}.jpg", quality=90)
    return root


def simpsons(root: Path, pipeline: str, image_size: int = 32, augment: dict | None = None, **kwargs) -> ClassFolderDataModule:
    kwargs.setdefault("split", SPLIT)
    kwargs.setdefault("num_workers", 0)
    dm = ClassFolderDataModule(
        root, image_size=image_size, batch_size=4, augment=NO_AUGMENT if augment is None else augment, pipeline=pipeline, **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / CACHE_DIR).iterdir() if not p.name.startswith("."))


def test_cached_images_match_the_pil_decode_within_one_grey_level(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "data", width=320, height=240)  # large enough for Image.draft to reduce
    dm = simpsons(root, "cached", image_size=64)
    resize = v2.Compose([v2.ToImage(), v2.Resize((64, 64), antialias=True)])
    dataset = dm.datasets["train"]
    entries = [e for e in dm.source.entries() if e.split == "train"]
    diffs = []
    for index, entry in enumerate(entries):
        cached, _ = dataset[index]
        with Image.open(root / entry.path) as image:
            reference = resize(image.convert("RGB"))
        assert cached.dtype == torch.uint8 and cached.shape == (3, 64, 64)
        diffs.append((cached.float() - reference.float()).abs().mean().item())
    assert max(diffs) <= 1.0, diffs


def test_without_augmentation_both_pipelines_give_the_same_batches(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "data", width=40, height=36)  # no draft reduction: identical decodes
    pil, cached = simpsons(root, "pil"), simpsons(root, "cached")
    for split, loader in (("train", "train_dataloader"), ("val", "val_dataloader")):
        pil_batches = list(getattr(pil, loader)())
        cached_batches = list(getattr(cached, loader)())
        assert len(pil_batches) == len(cached_batches) > 0
        for (x_pil, y_pil), raw in zip(pil_batches, cached_batches, strict=True):
            assert raw[0].dtype == torch.uint8
            x_cached, y_cached = cached.batch_transform(raw, train=split == "train")
            assert torch.equal(y_pil, y_cached)
            torch.testing.assert_close(x_cached, x_pil, atol=1e-5, rtol=0)


def test_flip_rate_brightness_and_rotation_follow_the_augment_settings() -> None:
    transform = BatchTransform(Augment(degrees=40, brightness=(0.8, 1.2), hflip=0.5))
    images = torch.randint(0, 256, (1024, 3, 8, 8), dtype=torch.uint8)
    transform((images, torch.zeros(1024, dtype=torch.long)), train=True)
    params = transform.last_params
    assert params is not None
    assert 0.44 < params.flipped.float().mean().item() < 0.56
    assert params.affine["angle"].abs().max().item() <= 40
    assert params.affine["angle"].abs().max().item() > 35  # the whole range is used, not a fixed angle
    assert params.brightness.min().item() >= 0.8 and params.brightness.max().item() <= 1.2
    assert params.affine["scale"].min().item() >= 0.9 and params.affine["scale"].max().item() <= 1.1


def test_fused_batch_augmentation_equals_the_steps_one_by_one() -> None:
    """The fast path folds the flip into the warp matrix and the brightness into the uint8
    conversion; it must equal kornia's warp, then brightness with clamp, then flip, then
    normalisation (the PIL pipeline's order) with the same sampled parameters."""
    torch.manual_seed(0)
    transform = BatchTransform(Augment())
    images = torch.randint(0, 256, (16, 3, 24, 32), dtype=torch.uint8)
    out, _ = transform((images, torch.zeros(16, dtype=torch.long)), train=True)
    params = transform.last_params
    assert params is not None and 0 < int(params.flipped.sum()) < 16
    warped = transform.affine.augmentation(images.float() / 255, params=params.affine)  # kornia's own warp
    bright = (warped * params.brightness.view(-1, 1, 1, 1)).clamp(0, 1)
    flipped = torch.where(params.flipped.view(-1, 1, 1, 1), bright.flip(-1), bright)
    expected = (flipped - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_each_sample_is_flipped_exactly_when_its_parameters_say_so() -> None:
    still = Augment(degrees=0, translate=0, shear=0, zoom=0, brightness=(1.0, 1.0), hflip=0.5)
    transform = BatchTransform(still)
    images = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    images[..., :, 0] = 255  # a marker in the left column
    out, _ = transform((images, torch.zeros(64, dtype=torch.long)), train=True)
    marker_right = out[:, 0, :, -1].mean(-1) > out[:, 0, :, 0].mean(-1)
    assert transform.last_params is not None
    assert torch.equal(marker_right, transform.last_params.flipped)


def test_rotation_turns_a_marker_by_the_sampled_angle() -> None:
    """A bright dot right of the centre ends up at the sampled angle (image y axis points down)."""
    transform = BatchTransform(Augment(degrees=40, translate=0, shear=0, zoom=0, brightness=(1.0, 1.0), hflip=0))
    size, radius = 33, 12
    images = torch.zeros(256, 3, size, size, dtype=torch.uint8)
    images[..., size // 2, size // 2 + radius] = 255
    out, _ = transform((images, torch.zeros(256, dtype=torch.long)), train=True)
    assert transform.last_params is not None
    angles = transform.last_params.affine["angle"]
    weights = (out[:, 0] - out[:, 0].amin((1, 2), keepdim=True)).clamp(min=0)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    cy = (weights * yy).sum((1, 2)) / weights.sum((1, 2)) - size // 2
    cx = (weights * xx).sum((1, 2)) / weights.sum((1, 2)) - size // 2
    on_screen = torch.rad2deg(torch.atan2(-cy, cx))  # counter-clockwise on screen is positive here
    assert (on_screen + angles).abs().max().item() < 4.0  # kornia's positive angle turns clockwise on screen


def test_eval_batches_are_only_normalised() -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out, _ = BatchTransform(Augment())((images, torch.zeros(4, dtype=torch.long)), train=False)
    torch.testing.assert_close(out, normalize_uint8(images))


def test_whole_batch_reads_equal_item_reads(tmp_path: Path) -> None:
    """``__getitems__`` (what the DataLoader calls) returns the items of ``__getitem__``, stacked."""
    dataset = simpsons(write_classes(tmp_path / "data", width=40, height=36), "cached").datasets["train"]
    indices = [3, 0, 5, 3]
    images, labels = dataset.__getitems__(indices)  # type: ignore[attr-defined]
    assert torch.equal(images, torch.stack([dataset[i][0] for i in indices]))
    assert labels.tolist() == [dataset[i][1] for i in indices]
    assert dataset.cache.images.read_many([]).shape == (0, 3, 32, 32)  # type: ignore[attr-defined]


def test_per_image_augmentation_depends_on_epoch_and_sample_not_on_workers_or_restarts(tmp_path: Path) -> None:
    """Epoch 1's augmented batches are the same with 0 or 2 loader workers, and for a fresh
    DataModule started at epoch 1 (a resumed run); epoch 2 differs."""
    root = write_classes(tmp_path / "data", width=40, height=36)

    def epoch_batches(workers: int, epoch: int) -> list[Tensor]:
        dm = simpsons(root, "pil", augment={}, num_workers=workers)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        return [images for images, _ in loader]

    one = epoch_batches(0, 1)
    for other in (epoch_batches(2, 1), epoch_batches(0, 1)):
        assert len(other) == len(one) and all(torch.equal(a, b) for a, b in zip(one, other, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(one, epoch_batches(0, 2), strict=True))


def test_cache_is_reused_until_the_manifest_or_size_changes(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "data", width=40, height=36)
    simpsons(root, "cached")
    first = {p.name: p.stat().st_mtime_ns for p in cache_files(root)}
    assert len(first) == 6  # train/val/test x (images, json)
    simpsons(root, "cached")
    assert {p.name: p.stat().st_mtime_ns for p in cache_files(root)} == first
    simpsons(root, "cached", split={**SPLIT, "seed": 7})  # another split spec -> a new manifest
    second = {p.name for p in cache_files(root)}
    assert len(second) == 12 and second > set(first)  # rebuilt beside the old cache, which another job may read
    simpsons(root, "cached", image_size=24, split={**SPLIT, "seed": 7})
    third = {p.name for p in cache_files(root)}
    assert len(third) == 18 and third > second


def test_the_cache_serves_the_new_pixels_of_an_image_replaced_under_the_same_name(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "data", width=40, height=36)
    before, _ = simpsons(root, "cached").datasets["train"][0]
    path = root / next(e.path for e in read_manifest(root) if e.split == "train")
    Image.fromarray(np.random.default_rng(99).integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(path, quality=90)
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))
    after, _ = simpsons(root, "cached").datasets["train"][0]
    assert torch.equal(after, torch.from_numpy(decode_resized(path, (32, 32))))
    assert not torch.equal(after, before)


def test_caches_of_two_image_sizes_both_stay_readable_after_the_other_is_built(tmp_path: Path) -> None:
    """Two jobs of a sweep (image_size 24 and 32) on one data folder: neither deletes the other's cache."""
    root = write_classes(tmp_path / "data", width=40, height=36)
    small = simpsons(root, "cached", image_size=24).datasets["train"]
    large = simpsons(root, "cached", image_size=32).datasets["train"]
    again = simpsons(root, "cached", image_size=24).datasets["train"]  # reuses the first cache
    assert small[0][0].shape == (3, 24, 24) and large[0][0].shape == (3, 32, 32)
    assert torch.equal(again[0][0], small[0][0]) and len(cache_files(root)) == 12


def test_cache_is_rebuilt_when_the_manifest_content_changes(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "data", width=40, height=36)
    dm = simpsons(root, "cached")
    manifest = (root / MANIFEST).read_text().splitlines()
    header, rows = manifest[0], manifest[1:]
    train_rows = [r for r in rows if ",train," in r]
    (root / MANIFEST).write_text("\n".join([header, *[r for r in rows if r != train_rows[0]]]) + "\n")
    edited = simpsons(root, "cached")
    assert len(edited.datasets["train"]) == len(dm.datasets["train"]) - 1


def test_interrupted_build_leaves_no_cache_a_later_run_trusts(tmp_path: Path) -> None:
    def failing(index: int) -> tuple[np.ndarray, None]:
        if index == 2:
            raise RuntimeError("disk full")
        return np.full((3, 4, 4), index, np.uint8), None

    with pytest.raises(RuntimeError, match="disk full"):
        build_cache(tmp_path, "train", "k1", 4, (4, 4), failing)
    assert list((tmp_path / CACHE_DIR).glob("train-*")) == []
    assert [p for p in (tmp_path / CACHE_DIR).iterdir() if p.suffix == ".tmp"] == []
    cache = build_cache(tmp_path, "train", "k1", 4, (4, 4), lambda i: (np.full((3, 4, 4), i, np.uint8), None))
    assert [int(cache.images.read(i)[0, 0, 0]) for i in range(4)] == [0, 1, 2, 3]


def test_unknown_pipeline_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pipeline"):
        ClassFolderDataModule(tmp_path, pipeline="dali")


class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x.mean((2, 3)))


class RecordingTask(ClassificationTask):
    """Records what ``training_step``/``validation_step`` receive."""

    seen: list[tuple[str, torch.dtype, float]]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self.seen.append(("train", batch[0].dtype, batch[0].mean().item()))
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        self.seen.append(("val", batch[0].dtype, batch[0].mean().item()))
        return super().validation_step(batch, batch_idx)


def test_lightning_steps_receive_normalised_float_batches_from_the_cached_pipeline(tmp_path: Path) -> None:
    root = write_classes(tmp_path / "data", width=40, height=36)
    dm = simpsons(root, "cached", augment={"enabled": True})
    task = RecordingTask(TinyNet(dm.num_classes), dm.num_classes, optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
    task.seen = []
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=dm)
    assert {stage for stage, _, _ in task.seen} == {"train", "val"}
    assert all(dtype == torch.float32 and math.isfinite(mean) and abs(mean) < 3 for _, dtype, mean in task.seen)


def write_voc(root: Path, sizes: dict[str, tuple[int, int]], train: list[str], val: list[str]) -> Path:
    voc = root / VOC_DIR
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir(parents=True)
    for image_id, (height, width) in sizes.items():
        rng = np.random.default_rng(len(image_id) + height * width)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((height, width), np.uint8)
        mask[2 : height // 2, 3 : width // 2] = 7
        mask[1, 3 : width // 2] = IGNORE_INDEX
        image = Image.frombytes("P", (width, height), mask.tobytes())
        image.putpalette(voc_palette())
        image.save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / SPLITS_DIR).mkdir(parents=True)
    (voc / SPLITS_DIR / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (voc / SPLITS_DIR / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return root


def voc(root: Path, pipeline: str) -> ImageMaskDataModule:
    dm = ImageMaskDataModule(root, crop=(16, 24), batch_size=2, num_workers=0, augment={"enabled": False}, pipeline=pipeline)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_cached_segmentation_eval_batches_equal_the_pil_path(tmp_path: Path) -> None:
    sizes = {"a": (24, 32), "b": (30, 20), "c": (10, 12), "d": (20, 36)}
    root = write_voc(tmp_path, sizes, train=["a", "c"], val=["b", "d", "a"])
    pil, cached = voc(root, "pil"), voc(root, "cached")
    for (x_pil, y_pil), raw in zip(pil.val_dataloader(), cached.val_dataloader(), strict=True):
        x_cached, y_cached = cached.batch_transform(raw, train=False)
        assert torch.equal(y_cached, y_pil)  # masks at native resolution, padding void
        valid = y_pil != IGNORE_INDEX
        torch.testing.assert_close(x_cached.permute(0, 2, 3, 1)[valid], x_pil.permute(0, 2, 3, 1)[valid], atol=1e-5, rtol=0)
        # padding is the mean pixel: ~0 once normalised, as the PIL path's exact 0
        assert x_cached.abs()[x_pil == 0].max().item() < 0.01


def test_cached_segmentation_training_crops_are_padded_with_void(tmp_path: Path) -> None:
    root = write_voc(tmp_path, {"a": (24, 32), "c": (10, 12), "b": (30, 20)}, train=["a", "c"], val=["b"])
    dm = voc(root, "cached")
    dataset = dm.datasets["train"]
    image, mask = dataset[1]  # 10x12, smaller than the 16x24 crop
    assert image.shape == (3, 16, 24) and mask.shape == (16, 24)
    assert (mask == IGNORE_INDEX).sum().item() >= 16 * 24 - 10 * 12
    assert (mask == 7).sum().item() == (5 - 2) * (6 - 3)  # the whole labelled block is inside the crop
    outside = mask == IGNORE_INDEX
    assert all((image[c][outside] == MEAN_PIXEL[c]).float().mean().item() > 0.9 for c in range(3))


def test_building_a_cache_is_announced_once_with_its_size_and_duration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def decode(i: int) -> tuple[np.ndarray, None]:
        return np.full((3, 4, 4), i, np.uint8), None

    build_cache(tmp_path, "val", "k0", 2, (4, 4), decode)  # 96 B of pixels, already in the folder
    with caplog.at_level(logging.INFO, logger="visionbench.data.storage.cache"):
        build_cache(tmp_path, "train", "k1", 4, (4, 4), decode)
        build_cache(tmp_path, "train", "k1", 4, (4, 4), decode)  # reused: silent
    messages = [r.getMessage() for r in caplog.records]
    folder = sum(p.stat().st_size for p in (tmp_path / CACHE_DIR).iterdir())
    built = folder - sum(p.stat().st_size for p in (tmp_path / CACHE_DIR).glob("val-k0.*"))
    assert len(messages) == 2 and "train split" in messages[0] and "(4 items, 4x4)" in messages[0]
    assert f" s: {built} B;" in messages[1] and f"holds {folder} B in all" in messages[1]
    assert "clean_cache=true" in messages[1]  # how to remove what is no longer read


def test_cleaning_waits_for_a_build_in_progress_and_removes_only_what_is_not_kept(tmp_path: Path) -> None:
    def item(i: int) -> tuple[np.ndarray, None]:
        return np.full((3, 4, 4), i, np.uint8), None

    build_cache(tmp_path, "train", "k1", 4, (4, 4), item)
    build_cache(tmp_path, "val", "k1", 2, (4, 4), item)
    old_bytes = sum(p.stat().st_size for p in (tmp_path / CACHE_DIR).glob("train-k1.*"))
    building, proceed = threading.Event(), threading.Event()

    def slow_item(i: int) -> tuple[np.ndarray, None]:
        building.set()
        proceed.wait()
        return item(i)

    builder = threading.Thread(target=build_cache, args=(tmp_path, "train", "k2", 4, (4, 4), slow_item))
    builder.start()
    building.wait()
    result: list[dict[str, int]] = []
    cleaner = threading.Thread(target=lambda: result.append(remove_caches(tmp_path, keep={"train-k2", "val-k1"})))
    cleaner.start()
    cleaner.join(0.5)
    assert cleaner.is_alive() and (tmp_path / CACHE_DIR / "train-k1.json").is_file()  # waiting for the builder's lock
    proceed.set()
    builder.join()
    cleaner.join()
    assert result == [{"train-k1": old_bytes}]
    assert [p.name for p in cache_files(tmp_path)] == ["train-k2.images.u8", "train-k2.json", "val-k1.images.u8", "val-k1.json"]


# --- the batch transform in the loader workers when the training device is the CPU ----------------


def on_cpu(dm: ClassFolderDataModule) -> ClassFolderDataModule:
    dm.trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    dm.trainer.training = True
    return dm


def test_on_a_cpu_batches_leave_the_loader_augmented_and_normalised(tmp_path: Path) -> None:
    """The training process only trains: its batch hook passes loader batches through untouched, and
    each sample draws from its own (seed, epoch, index) stream, so any number of workers gives the same batches."""
    root = write_classes(tmp_path / "data", width=40, height=36)
    train: dict[int, tuple[Tensor, Tensor]] = {}
    for workers in (0, 2):
        dm = on_cpu(simpsons(root, "cached", augment={}, num_workers=workers))
        train[workers] = next(iter(dm.train_dataloader()))
        assert train[workers][0].dtype == torch.float32
        assert dm.on_after_batch_transfer(train[workers], 0) is train[workers]
        val = next(iter(dm.val_dataloader()))
        raw = next(iter(simpsons(root, "cached", augment={}).val_dataloader()))  # no trainer: the uint8 batch
        torch.testing.assert_close(val[0], normalize_uint8(raw[0]), atol=0, rtol=0)
    assert torch.equal(train[0][0], train[2][0]) and torch.equal(train[0][1], train[2][1])
    unaugmented = normalize_uint8(next(iter(simpsons(root, "cached", augment={}).train_dataloader()))[0])
    assert not torch.allclose(train[0][0], unaugmented)


def test_a_samples_loader_augmentation_does_not_depend_on_its_batch(tmp_path: Path) -> None:
    dm = on_cpu(
        simpsons(write_classes(tmp_path / "data", width=40, height=36), "cached", augment={"auto_augment": "ta_wide", "random_erase": 0.5})
    )
    dataset = dm.train_dataloader().dataset
    first, _ = dataset.__getitems__([Draw(0, 3), Draw(0, 5)])  # type: ignore[attr-defined]
    second, _ = dataset.__getitems__([Draw(0, 5), Draw(0, 1), Draw(0, 3)])  # type: ignore[attr-defined]
    assert torch.equal(first[0], second[2]) and torch.equal(first[1], second[0])
    later, _ = dataset.__getitems__([Draw(1, 3)])  # the same sample in the next epoch: other draws
    assert not torch.equal(first[0], later[0])


def test_segmentation_batches_leave_the_loader_normalised_on_a_cpu(tmp_path: Path) -> None:
    root = write_voc(tmp_path, {"a": (24, 32), "b": (30, 20), "c": (10, 12)}, train=["a", "c"], val=["b", "a"])
    dm = on_cpu(voc(root, "cached"))  # type: ignore[arg-type]
    images, masks = next(iter(dm.val_dataloader()))
    raw_images, raw_masks = next(iter(voc(root, "cached").val_dataloader()))
    torch.testing.assert_close(images, normalize_uint8(raw_images), atol=0, rtol=0)
    assert torch.equal(masks, raw_masks)
