"""One augmentation description, two pipelines: the per-image (pil) path and the cached path's
batches must train on the same distribution, i.e. give the same sample for the same sampled
parameters, up to interpolation and uint8 rounding; and for the same seed they draw the same
parameters, so both pipelines hand the model the same training batch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.segmentation import ImageMaskDataModule
from visionbench.data.sources.shapes import generate_shapes
from visionbench.data.sources.shapes_seg import generate_shapes_seg
from visionbench.data.transforms.augment import Augment, SampleStreams
from visionbench.data.transforms.batch import BatchTransform
from visionbench.data.transforms.per_sample import augmentation, normalize
from visionbench.errors import ConfigError
from visionbench.seeding import stream_seed

FILLS = ("nearest", "constant", "reflect")
WARP_ONLY = {"brightness": (1.0, 1.0), "hflip": 0.0}


# --- segmentation: scale -> pad -> crop -> flip ------------------------------------------------


@pytest.fixture(scope="module")
def shapes_seg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Textured 40x56 scenes in the VOC layout: smaller than the crop once scaled down, larger once scaled up."""
    root = tmp_path_factory.mktemp("shapes_seg")
    generate_shapes_seg(root, num_train=8, num_val=2, height=40, width=56, log=lambda _: None)
    return root


def first_training_batch(root: Path, pipeline: str, scale_range: list[float] | None) -> tuple[Tensor, Tensor]:
    dm = ImageMaskDataModule(
        root,
        crop=(32, 48),
        batch_size=8,
        num_workers=0,
        seed=3,
        pipeline=pipeline,
        augment={"scale_range": scale_range, "hflip": 0.5},
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return dm.batch_transform(batch, train=True) if dm.batch_transform is not None else batch


@pytest.mark.parametrize("scale_range", [None, [0.5, 2.0]], ids=["no-scaling", "scale-0.5-2"])
def test_cached_segmentation_batches_equal_the_per_image_ones_for_the_same_seed(
    shapes_seg_root: Path, scale_range: list[float] | None
) -> None:
    """Zooming out shows context beyond the crop and pads with the mean (~0 normalised) and void,
    flips are the same samples' flips: the cached batch is the pil batch up to uint8 rounding."""
    x_pil, y_pil = first_training_batch(shapes_seg_root, "pil", scale_range)
    x_cached, y_cached = first_training_batch(shapes_seg_root, "cached", scale_range)
    assert x_cached.shape == x_pil.shape and x_cached.dtype == torch.float32
    assert (y_cached == y_pil).float().mean().item() >= 0.99
    assert (x_cached - x_pil).abs().mean().item() < 0.01  # one grey level is 0.017 once normalised
    if scale_range is not None:  # some sample was zoomed out below the crop: its padding (exactly the mean) is compared too
        assert (x_pil == 0).all(1).any()


# --- classification: affine with Keras' fill modes -> brightness -> flip -----------------------


def sample(params: dict[str, Tensor], i: int) -> dict[str, Tensor]:
    """Sample ``i``'s parameters of a batch as a batch of one (kornia's dict)."""
    return {k: v[i : i + 1] for k, v in params.items() if k != "forward_input_shape"}


def per_image_warp(aug: Augment, image: Tensor, affine: dict[str, Tensor]) -> Tensor:
    """The per-image pipeline's own affine step, applied to a uint8 image with the given parameters."""
    return augmentation(aug)[0].transform(TF.to_image(image), {"affine": affine})


def per_image(aug: Augment, image: Tensor, affine: dict[str, Tensor], brightness: float, flipped: bool) -> Tensor:
    """The affine step, then torchvision's brightness and flip (what the per-image pipeline's
    ColorJitter and RandomHorizontalFlip apply) and normalisation."""
    bright = TF.adjust_brightness(per_image_warp(aug, image, affine), brightness)
    return v2.Compose(normalize())(TF.horizontal_flip(bright) if flipped else bright)


def textured(n: int, height: int = 24, width: int = 32) -> Tensor:
    torch.manual_seed(1)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, height // 4, width // 4) * 255, size=(height, width), mode="bilinear")
    return smooth.round().to(torch.uint8)


@pytest.mark.parametrize("fill", FILLS)
def test_both_classification_pipelines_augment_alike_for_the_same_parameters(fill: str) -> None:
    aug = Augment(fill=fill, translate=0.3)  # the article's rotation/shear/zoom, larger shifts: much fill
    transform = BatchTransform(aug)
    images = textured(6)
    torch.manual_seed(0)
    batch, _ = transform((images, torch.zeros(6, dtype=torch.long)), train=True)
    params = transform.last_params
    assert params is not None and params.flipped.any() and not params.flipped.all()
    for i in range(6):
        reference = per_image(aug, images[i], sample(params.affine, i), float(params.brightness[i]), bool(params.flipped[i]))
        # one grey level is 0.017 once normalised; the per-image path rounds the warp and
        # truncates the brightness to uint8 (torchvision's adjust_brightness), so ~1 level apart
        assert (batch[i] - reference).abs().mean().item() < 0.02, i
        assert (batch[i] - reference).abs().max().item() < 0.04, i


def framed(n: int) -> Tensor:
    """Grey 50 images with a 200 frame: edge fill shows the frame, constant fill shows black."""
    images = torch.full((n, 3, 16, 16), 200, dtype=torch.uint8)
    images[..., 1:-1, 1:-1] = 50
    return images


@pytest.mark.parametrize("fill", ["nearest", "constant"])
def test_nearest_fill_repeats_the_edge_pixel_and_constant_fill_is_black(fill: str) -> None:
    aug = Augment(fill=fill, degrees=0, translate=0.45, shear=0, zoom=0, **WARP_ONLY)
    transform = BatchTransform(aug)
    torch.manual_seed(0)
    levels = transform.augment(framed(16))
    params = transform.last_params
    assert params is not None
    shift_x = params.affine["translations"][:, 0]
    far = (shift_x.abs() > 4).nonzero().flatten().tolist()  # moved 4+ px sideways: a wide uncovered side
    assert len(far) >= 4
    expected = 200.0 if fill == "nearest" else 0.0
    for i in far:
        uncovered = 0 if shift_x[i] > 0 else -1  # the column the shift left behind
        per_image_levels = per_image_warp(aug, framed(1)[0], sample(params.affine, i)).float()
        for column in (levels[i, :, :, uncovered], per_image_levels[:, :, uncovered]):
            assert (column - expected).abs().max().item() < 1, (i, column)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_classes=3, per_class=8, image_size=40, log=lambda _: None)


def classification_epoch(root: Path, pipeline: str, augment: dict) -> tuple[ClassFolderDataModule, list, Tensor, Tensor]:
    """Epoch 1's draws and first training batch as the model receives it, trained on a CPU (where the
    cached pipeline augments in the loader, each sample from its own stream)."""
    dm = ClassFolderDataModule(
        root,
        image_size=32,
        batch_size=8,
        num_workers=0,
        seed=3,
        pipeline=pipeline,
        augment=augment,
        split={"min_images": 1, "test_per_class": 2},
    )
    dm.prepare_data()
    dm.setup("fit")
    progress = SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=0)))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, overfit_batches=0, fit_loop=progress, accelerator=CPUAccelerator())  # type: ignore[assignment]
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
    images, labels = next(iter(loader))
    return dm, list(loader.sampler)[: len(labels)], images, labels


RECIPES = {
    "article": ({}, 0.02),
    "constant-fill-erasing": ({"fill": "constant", "random_erase": 0.5}, 0.02),
    # Thresholding ops (solarize, posterize, equalize) can turn the pipelines' one grey level of
    # rounding into a large difference at a few pixels; different draws differ by ~0.8 on average.
    "ta_wide": ({"auto_augment": "ta_wide"}, 0.05),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_both_classification_pipelines_give_the_same_training_batch_for_the_same_seed(shapes_root: Path, recipe: str) -> None:
    augment, tolerance = RECIPES[recipe]
    _, draws, x_pil, y_pil = classification_epoch(shapes_root, "pil", augment)
    dm, cached_draws, x_cached, y_cached = classification_epoch(shapes_root, "cached", augment)
    assert cached_draws == draws and torch.equal(y_cached, y_pil)  # the same samples
    # exactly the parameters the per-image transforms draw from each sample's stream
    params = dm.batch_transform.last_params  # type: ignore[union-attr]
    assert params is not None
    aug = Augment(**augment)
    for i, draw in enumerate(draws):
        warp, jitter, flip = augmentation(aug)[:3]
        with SampleStreams([stream_seed(3, *draw)]).drawing(0):
            affine = warp.make_params([tv_tensors.Image(torch.zeros(3, 32, 32, dtype=torch.uint8))])["affine"]
            factor = jitter.make_params([])["brightness_factor"]
            flipped = bool(torch.rand(1) < flip.p)
        assert all(torch.equal(affine[k], params.affine[k][i : i + 1]) for k in params.affine)
        assert params.brightness[i].item() == factor and bool(params.flipped[i]) == flipped
    # and the images alike up to the pipelines' uint8 rounding (one grey level is 0.017 once normalised)
    for i in range(len(draws)):
        assert (x_cached[i] - x_pil[i]).abs().mean().item() < tolerance, i


def test_unknown_fill_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"task\.data\.augment\.fill") as err:
        Augment(fill="wrap")
    assert all(choice in str(err.value) for choice in FILLS)


def test_simpsons_fills_like_keras_and_shapes_says_how_it_fills(compose_cfg) -> None:
    assert compose_cfg(["task=simpsons"]).task.data.augment.fill == "nearest"  # ImageDataGenerator's default
    assert compose_cfg(["task=shapes"]).task.data.augment.fill == "constant"  # shapes keep their black fill
