"""Augmentation beyond the reference article (torchvision's classification recipe): MixUp/CutMix
on training batches, an automatic augmentation policy and random erasing per image. Each is a
``task.data.augment.*`` key, off by default, and means the same in both pipelines. Keras' zoom
(x and y apart) is a key too."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import Tensor
from torchvision.transforms import v2

from conftest import TINY
from visionbench.compose import build_datamodule, build_task
from visionbench.data.base import VisionDataModule
from visionbench.data.transforms.augment import Augment, BatchAffine, auto_augmentation, batch_mix, random_erasing
from visionbench.data.transforms.batch import BatchTransform, normalize_uint8
from visionbench.data.transforms.per_sample import classification_transform
from visionbench.errors import ConfigError

# The article's augmentation reduced to the identity (no warp, brightness 1, no flip), so the
# recipes' effects are seen alone.
IDENTITY = {"degrees": 0, "translate": 0, "shear": 0, "zoom": 0, "brightness": (1.0, 1.0), "hflip": 0.0}
CPU = torch.device("cpu")
MIXES = {"mixup": {"mixup": 0.2}, "cutmix": {"cutmix": 1.0}, "both": {"mixup": 0.2, "cutmix": 1.0}}


def textured(n: int, size: int = 16) -> Tensor:
    """Smooth random uint8 images: every op of a policy (shift, posterize, equalize...) changes them."""
    torch.manual_seed(1)
    coarse = torch.rand(n, 3, size // 4, size // 4) * 255
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").round().to(torch.uint8)


def alternating_labels(n: int) -> Tensor:
    """0, 1, 0, 1, ...: every sample's neighbour (MixUp and CutMix pair sample i with i - 1) has the other class."""
    return torch.arange(n) % 2


# --- MixUp / CutMix -----------------------------------------------------------------------------


@pytest.mark.parametrize("settings", MIXES.values(), ids=MIXES.keys())
def test_mixed_labels_are_class_probabilities_that_sum_to_one(settings: dict[str, float]) -> None:
    mix = batch_mix(Augment(**settings), num_classes=5)
    assert mix is not None
    torch.manual_seed(0)
    for _ in range(20):
        labels = torch.randint(5, (8,))
        _, soft = mix(torch.randn(8, 3, 8, 8), labels)
        assert soft.shape == (8, 5) and soft.dtype == torch.float32
        assert (soft >= 0).all()
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(8))
        # the whole mass is on the sample's own class and its neighbour's
        own_or_neighbour = torch.zeros(8, 5).scatter_(1, labels[:, None], 1).scatter_(1, labels.roll(1)[:, None], 1)
        assert (soft[own_or_neighbour == 0] == 0).all()


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_the_mixup_coefficient_follows_beta_alpha_alpha(alpha: float) -> None:
    """The coefficient is the label mass a sample keeps on its own class; Beta(a, a) has mean
    1/2 and variance 1/(4 (2a + 1))."""
    mix = batch_mix(Augment(mixup=alpha), num_classes=2)
    assert mix is not None
    images, labels = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1), alternating_labels(2)
    torch.manual_seed(0)
    draws = []
    for _ in range(4000):
        mixed, soft = mix(images, labels)
        coefficient = soft[1, 1]
        assert mixed[1].item() == pytest.approx(coefficient.item())  # the image is mixed by the same amount
        draws.append(coefficient)
    coefficients = torch.stack(draws)
    assert coefficients.mean().item() == pytest.approx(0.5, abs=0.03)
    assert coefficients.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=0.01)


def test_cutmix_weighs_each_label_by_the_share_of_pixels_the_image_keeps() -> None:
    mix = batch_mix(Augment(cutmix=1.0), num_classes=2)
    assert mix is not None
    images, labels = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 10, 10), alternating_labels(4)
    torch.manual_seed(0)
    for _ in range(50):
        mixed, soft = mix(images, labels)
        kept = (mixed == images).float().mean(dim=(1, 2, 3))
        torch.testing.assert_close(soft[torch.arange(4), labels], kept)


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
def test_batches_are_mixed_in_training_only(pipeline: str) -> None:
    """pil batches reach the hook as normalised floats, cached ones as uint8; validation and test
    batches keep their integer labels."""
    aug = Augment(mixup=0.2, cutmix=1.0)
    datamodule = VisionDataModule(batch_size=4, num_workers=0)
    datamodule.batch_transform = BatchTransform(aug) if pipeline == "cached" else None
    datamodule.batch_mix = batch_mix(aug, num_classes=3)
    images = textured(4) if pipeline == "cached" else normalize_uint8(textured(4))
    labels = torch.tensor([0, 1, 2, 0])
    for training in (True, False):
        datamodule.trainer = SimpleNamespace(training=training)  # type: ignore[assignment]
        out_images, out_labels = datamodule.on_after_batch_transfer((images, labels), 0)
        assert out_images.dtype == torch.float32
        if training:
            assert out_labels.shape == (4, 3) and out_labels.is_floating_point()
        else:
            assert torch.equal(out_labels, labels)


# --- automatic augmentation policy and random erasing, per image ----------------------------------


def test_both_pipelines_give_the_same_trivial_augment_output_for_the_same_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both pipelines apply the policy to the augmented uint8 image, before normalisation, one op
    and magnitude per sample: seeded alike at the policy, they give the same batch."""
    aug = Augment(**IDENTITY, auto_augment="ta_wide")
    images = textured(8)
    steps = classification_transform(16, aug).transforms
    policy_at = next(i for i, step in enumerate(steps) if isinstance(step, v2.TrivialAugmentWide))
    before_policy = torch.stack([v2.Compose(steps[:policy_at])(image) for image in images])
    assert torch.equal(before_policy, images)  # the article's steps are the identity here
    torch.manual_seed(0)
    per_image = torch.stack([v2.Compose(steps[policy_at:])(image) for image in before_policy])

    cached = BatchTransform(aug)
    monkeypatch.setattr(cached, "augment", lambda batch, streams=None: batch.float())  # the same identity, without its draws
    torch.manual_seed(0)
    batch, _ = cached((images, torch.zeros(8, dtype=torch.long)), train=True)

    torch.testing.assert_close(batch, per_image, atol=1e-5, rtol=0)
    assert not torch.allclose(batch, normalize_uint8(images))  # the policy did change the images


def test_the_cached_policy_draws_an_op_for_every_sample() -> None:
    transform = BatchTransform(Augment(**IDENTITY, auto_augment="ta_wide"))
    same_image = textured(1).expand(16, -1, -1, -1)
    torch.manual_seed(0)
    batch, _ = transform((same_image, torch.zeros(16, dtype=torch.long)), train=True)
    assert len({tuple(image.flatten()[:64].tolist()) for image in batch}) > 4


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
def test_random_erasing_erases_the_expected_fraction_of_samples_to_the_mean(pipeline: str) -> None:
    p, n = 0.25, 400
    aug = Augment(**IDENTITY, random_erase=p)
    images = torch.full((n, 3, 16, 16), 200, dtype=torch.uint8)  # normalised: nowhere 0 in all channels
    torch.manual_seed(0)
    if pipeline == "pil":
        transform = classification_transform(16, aug)
        batch = torch.stack([transform(image) for image in images])
    else:
        batch, _ = BatchTransform(aug)((images, torch.zeros(n, dtype=torch.long)), train=True)
    erased = (batch == 0).all(dim=1).flatten(1).any(dim=1)  # some pixel set to the mean colour
    assert erased.float().mean().item() == pytest.approx(p, abs=0.08)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["simpsons", "shapes"])
def test_the_recipes_are_off_by_default(compose_cfg, task: str) -> None:
    augment = compose_cfg([f"task={task}"]).task.data.augment
    assert (augment.mixup, augment.cutmix, augment.auto_augment, augment.random_erase) == (0, 0, None, 0)
    aug = Augment(**augment)
    assert batch_mix(aug, num_classes=5) is None and auto_augmentation(aug) is None and random_erasing(aug) is None


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("auto_augment", "foo", ["'ta_wide'", "'randaugment'", "null"]),
        ("mixup", -0.2, [">= 0"]),
        ("cutmix", -1.0, [">= 0"]),
        ("random_erase", 1.5, ["[0, 1]"]),
    ],
)
def test_a_bad_value_is_one_paragraph_naming_the_key_and_the_allowed_values(key: str, value: Any, allowed: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Augment(**{key: value})
    message = str(err.value)
    assert f"task.data.augment.{key}" in message and repr(value) in message and "\n" not in message
    assert all(choice in message for choice in allowed)


# --- a real training step -------------------------------------------------------------------------


class TrainingLabels(L.Callback):
    """The labels of every training batch as the network sees them."""

    def __init__(self) -> None:
        self.seen: list[Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.append(batch[1])


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
@pytest.mark.slow
def test_a_training_step_with_the_whole_recipe_has_a_finite_loss(compose_cfg, pipeline: str) -> None:
    recipe = ["mixup=0.2", "cutmix=1.0", "auto_augment=ta_wide", "random_erase=0.25"]
    cfg = compose_cfg(
        ["task=shapes", "model=resnet_small", *TINY, f"task.data.pipeline={pipeline}", *(f"task.data.augment.{r}" for r in recipe)]
    )
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over: hydra.* lives in HydraConfig only
    L.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    labels = TrainingLabels()
    trainer = instantiate(cfg.trainer, callbacks=[labels], logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(task, datamodule=datamodule)
    assert len(labels.seen) == 2 and all(y.shape == (4, datamodule.num_classes) for y in labels.seen)
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert 0 <= trainer.callback_metrics["val/acc"] <= 1  # validated on integer labels


@pytest.mark.parametrize("independent", [False, True])
def test_zoom_draws_one_factor_or_the_x_and_y_factors_apart_as_keras(independent: bool) -> None:
    torch.manual_seed(0)
    params = BatchAffine(Augment(degrees=0, translate=0, shear=0, zoom=0.1, zoom_independent=independent)).draw((64, 3, 8, 8), CPU)
    scale = params["scale"]
    assert ((scale >= 0.9) & (scale <= 1.1)).all()
    assert bool((scale[:, 0] != scale[:, 1]).all()) is independent
