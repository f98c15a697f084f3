"""SegmentationTask: confusion-matrix metrics over a whole split, void pixels, sliding windows."""

from __future__ import annotations

import functools
import math
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from torch import Tensor, nn
from torch.utils.data import DataLoader

from conftest import TINY, TINY_SEG_DATA
from visionbench.data.transforms.batch import normalize_uint8
from visionbench.errors import ConfigError
from visionbench.masks import IGNORE_INDEX
from visionbench.models.base import AuxOutput
from visionbench.run import train
from visionbench.tasks.segmentation import (
    SegmentationTask,
    class_pixels,
    median_frequency_weights,
    segmentation_scores,
    sliding_window_logits,
)

V = IGNORE_INDEX
NUM_CLASSES = 4
# Two batches of one 2x3 image. Class 3 is never in the ground truth and is predicted only on
# void pixels, so it is absent from the split and must be left out of the mean.
TARGETS = [torch.tensor([[0, 0, 1], [1, V, V]]), torch.tensor([[2, 2, 0], [0, 1, V]])]
PREDS = [torch.tensor([[0, 1, 1], [1, 3, 2]]), torch.tensor([[2, 0, 0], [0, 2, 3]])]
# By hand, rows = truth, cols = prediction, void pixels dropped:
HAND_CONFMAT = torch.tensor([[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
HAND_IOU = [3 / 5, 2 / 4, 1 / 3]  # classes 0..2; class 3: undefined
HAND_MIOU = sum(HAND_IOU) / 3  # 0.4778; per-batch averaging would give 0.4583, counting class 3 as 0 gives 0.3583
HAND_PIXEL_ACC = 6 / 9
HAND_CLASS_ACC = (3 / 4 + 2 / 3 + 1 / 2) / 3  # mean recall over the classes in the ground truth (class 3 is not)


class PredictionEcho(nn.Module):
    """Stand-in network whose logits pick the class stored in input channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.one_hot(x[:, 0].long(), NUM_CLASSES).permute(0, 3, 1, 2).float()


class CaptureOutputs(Callback):
    def __init__(self) -> None:
        self.outputs: list[Any] = []

    def on_validation_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.outputs.append(outputs)


def make_task(net: nn.Module, **kwargs: Any) -> SegmentationTask:
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    return SegmentationTask(net, NUM_CLASSES, functools.partial(torch.optim.SGD, lr=0.1), class_names=names, **kwargs)


def echo_batches() -> DataLoader:
    return DataLoader([(p[None, None].float().expand(1, 3, 2, 3), t[None]) for p, t in zip(PREDS, TARGETS, strict=True)], batch_size=None)


def trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_scores_from_a_confusion_matrix_match_hand_computation() -> None:
    scores = segmentation_scores(HAND_CONFMAT)
    assert scores.iou[:3].tolist() == pytest.approx(HAND_IOU)
    assert math.isnan(scores.iou[3])
    assert float(scores.miou) == pytest.approx(HAND_MIOU)
    assert float(scores.pixel_acc) == pytest.approx(HAND_PIXEL_ACC)
    assert float(scores.class_acc) == pytest.approx(HAND_CLASS_ACC)


def test_class_average_accuracy_leaves_out_classes_absent_from_the_ground_truth_and_counts_missed_ones_as_zero() -> None:
    cm = torch.tensor([[2, 1, 0], [0, 0, 0], [1, 0, 0]])  # class 1 only predicted (no recall), class 2 never found
    assert float(segmentation_scores(cm).class_acc) == pytest.approx((2 / 3 + 0.0) / 2)


def test_a_class_only_predicted_or_only_in_truth_counts_as_zero_iou() -> None:
    cm = torch.tensor([[2, 1, 0], [0, 0, 0], [1, 0, 0]])  # class 1 only predicted, class 2 never predicted
    scores = segmentation_scores(cm)
    assert scores.iou.tolist() == pytest.approx([2 / 4, 0.0, 0.0])
    assert float(scores.miou) == pytest.approx(2 / 12)


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_split_metrics_accumulate_the_confusion_matrix_over_all_batches(stage: str) -> None:
    task = make_task(PredictionEcho())
    capture = CaptureOutputs()
    t = trainer(callbacks=[capture])
    getattr(t, stage)(task, dataloaders=echo_batches())
    prefix = "val" if stage == "validate" else "test"
    metrics = t.callback_metrics
    assert float(metrics[f"{prefix}/miou"]) == pytest.approx(HAND_MIOU, abs=1e-6)
    assert float(metrics[f"{prefix}/pixel_acc"]) == pytest.approx(HAND_PIXEL_ACC, abs=1e-6)
    assert float(metrics[f"{prefix}/class_acc"]) == pytest.approx(HAND_CLASS_ACC, abs=1e-6)
    for c, iou in enumerate(HAND_IOU):
        assert float(metrics[f"{prefix}/iou/c{c}"]) == pytest.approx(iou, abs=1e-6)
    assert f"{prefix}/iou/c3" not in metrics  # absent class: no IoU logged
    assert f"{prefix}/loss" in metrics
    if stage == "validate":
        assert float(metrics["val/miou_best"]) == pytest.approx(HAND_MIOU, abs=1e-6)
        assert [o.shape for o in capture.outputs] == [(1, NUM_CLASSES, 2, 3)] * 2  # logits for the figure callbacks


def test_the_confusion_matrix_is_reset_between_epochs() -> None:
    task = make_task(PredictionEcho())
    t = trainer()
    t.validate(task, dataloaders=echo_batches())
    t.validate(task, dataloaders=echo_batches())
    assert float(t.callback_metrics["val/miou"]) == pytest.approx(HAND_MIOU, abs=1e-6)


def test_loss_ignores_void_pixels() -> None:
    task = make_task(PredictionEcho())
    logits = torch.randn(1, NUM_CLASSES, 2, 3)
    target = TARGETS[0][None]
    changed = logits.clone()
    changed[..., 1, 1:] = torch.randn(NUM_CLASSES, 2) * 10  # the two void pixels
    assert torch.equal(task.loss(logits, target), task.loss(changed, target))


# Three training masks of 3 classes. By hand, void left out of both counts:
# pixels: c0 = 4 + 2 = 6, c1 = 1 + 3 = 4, c2 = 4; pixels of the images holding the class:
# c0 = 5 + 6 = 11 (A, B), c1 = 5 + 3 = 8 (A, C), c2 = 6 (B). freq = 6/11, 1/2, 2/3; median 6/11.
WEIGHT_MASKS = [
    torch.tensor([[0, 0, 0], [0, 1, V]]),
    torch.tensor([[0, 0, 2], [2, 2, 2]]),
    torch.tensor([[1, 1, 1], [V, V, V]]),
]
HAND_MEDIAN_FREQUENCY = [1.0, 12 / 11, 9 / 11]


def test_median_frequency_weights_match_a_hand_computation() -> None:
    counted = class_pixels((m.numpy().astype("uint8") for m in WEIGHT_MASKS), 3)
    assert counted == ([6, 4, 4], [11, 8, 6])
    assert torch.allclose(median_frequency_weights(*counted, ["a", "b", "c"]), torch.tensor(HAND_MEDIAN_FREQUENCY, dtype=torch.float64))


def test_median_of_an_even_number_of_classes_is_the_mean_of_the_middle_two() -> None:
    weights = median_frequency_weights([1, 2, 3, 4], [10, 10, 10, 10], list("abcd"))  # freq .1 .2 .3 .4, median .25
    assert torch.allclose(weights, torch.tensor([2.5, 1.25, 0.25 / 0.3, 0.625], dtype=torch.float64))


def test_a_class_absent_from_the_training_masks_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"task.module.class_weights=median_frequency.*\['c3'\]"):
        make_task(PredictionEcho(), class_weights="median_frequency", class_pixels=([5, 1, 2, 0], [9, 9, 9, 0]))


def test_unknown_segmentation_class_weights_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"task\.module\.class_weights 'balanced'.*median_frequency"):
        make_task(PredictionEcho(), class_weights="balanced")


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: the loss metric is read directly
def test_training_loss_is_median_frequency_weighted_and_the_evaluation_loss_plain() -> None:
    pixels = ([6, 4, 4, 5], [11, 8, 6, 10])  # a 4th class, so the echo network's 4 classes are weighted
    task = make_task(PredictionEcho(), class_weights="median_frequency", class_pixels=pixels)
    weight = median_frequency_weights(*pixels, task.class_names).float()
    assert torch.equal(task.class_weight, weight) and "class_weight" not in task.state_dict()
    logits, target = torch.randn(1, NUM_CLASSES, 2, 3), TARGETS[1][None]
    weighted = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    plain = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    assert torch.allclose(task.loss(logits, target), weighted) and not torch.allclose(weighted, plain)
    x = PREDS[1][None, None].float().expand(1, 3, 2, 3)
    task._evaluate((x, target), "val")
    assert torch.allclose(task.eval_loss["val"].compute(), F.cross_entropy(task(x), target, ignore_index=IGNORE_INDEX))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_adds_weighted_auxiliary_losses() -> None:
    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main, self.aux = nn.Conv2d(3, NUM_CLASSES, 1), nn.Conv2d(3, NUM_CLASSES, 1)

        def forward(self, x: Tensor) -> AuxOutput | Tensor:
            return AuxOutput(self.main(x), (self.aux(x),), 0.4) if self.training else self.main(x)

    net = WithAux()
    task = make_task(net)
    x, y = torch.randn(2, 3, 4, 5), torch.randint(0, NUM_CLASSES, (2, 4, 5))
    expected = task.loss(net.main(x), y) + 0.4 * task.loss(net.aux(x), y)
    assert torch.allclose(task.training_step((x, y), 0), expected)


@pytest.mark.parametrize("size", [(37, 53), (20, 30), (64, 48)])
def test_sliding_window_matches_whole_image_for_a_pointwise_network(size: tuple[int, int]) -> None:
    net = nn.Conv2d(3, NUM_CLASSES, 1)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        slid = sliding_window_logits(net, x, window=(24, 32), stride=(16, 21), num_classes=NUM_CLASSES)
        assert slid.shape == (2, NUM_CLASSES, *size)
        assert torch.allclose(slid, net(x), atol=1e-5)


def test_sliding_window_averages_overlapping_tiles_and_covers_the_edge() -> None:
    """A network that outputs its tile's mean: each pixel must get the mean over the tiles covering it."""

    class TileMean(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:, :1].mean((2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:])

    x = torch.arange(10.0).expand(1, 3, 4, 10)
    out = sliding_window_logits(TileMean(), x, window=(4, 4), stride=(4, 4), num_classes=1)
    # Tiles start at columns 0, 4 and 6 (the last one aligned with the edge); means 1.5, 5.5, 7.5.
    expected = torch.tensor([1.5] * 4 + [5.5] * 2 + [6.5] * 2 + [7.5] * 2)
    assert torch.allclose(out[0, 0], expected.expand(4, 10))


def test_slide_eval_mode_gives_the_same_metrics_for_a_pointwise_network() -> None:
    task = make_task(PredictionEcho(), eval_mode="slide", window=(2, 2), stride=(1, 1))
    t = trainer()
    t.validate(task, dataloaders=echo_batches())
    assert float(t.callback_metrics["val/miou"]) == pytest.approx(HAND_MIOU, abs=1e-6)


def test_unknown_eval_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="eval_mode"):
        make_task(PredictionEcho(), eval_mode="tiles")


def test_sliding_window_stride_defaults_to_two_thirds_of_the_window() -> None:
    from visionbench.tasks.segmentation import window_stride

    assert window_stride((320, 480), None) == (213, 320)
    assert window_stride((2, 1), None) == (1, 1)  # never 0
    assert window_stride((320, 480), [100, 200]) == (100, 200)


def test_slide_prediction_of_a_uint8_batch_equals_that_of_its_normalised_floats() -> None:
    """Cached pipelines hand uint8 batches to inference (the figure callbacks' fixed samples):
    they are normalised before the windows, so padding is the mean (0), not black."""
    torch.manual_seed(0)
    task = make_task(nn.Conv2d(3, NUM_CLASSES, 3, padding=1), eval_mode="slide", window=(16, 24), stride=(8, 12))
    images = torch.randint(0, 256, (2, 3, 12, 30), dtype=torch.uint8)  # lower than the window: padded
    with torch.no_grad():
        torch.testing.assert_close(task.predict_logits(images), task.predict_logits(normalize_uint8(images)))


def test_trainer_predict_gives_the_argmax_of_the_logits_validation_scores() -> None:
    """predict_step goes through the same whole/slide choice as validation: with windows smaller than
    the image a 3x3 network sees tile borders, so the slide masks differ from the whole-image ones,
    and prediction must give the slide ones."""
    torch.manual_seed(0)
    net = nn.Conv2d(3, NUM_CLASSES, 3, padding=1)
    slide = make_task(net, eval_mode="slide", window=(8, 8), stride=(5, 5))
    images, masks = torch.randn(2, 3, 13, 21), torch.randint(0, NUM_CLASSES, (2, 13, 21))
    capture = CaptureOutputs()
    trainer(callbacks=[capture]).validate(slide, dataloaders=DataLoader([(images, masks)], batch_size=None))
    [predicted] = trainer().predict(slide, dataloaders=DataLoader([(images,)], batch_size=None))
    [logits] = capture.outputs
    assert predicted.dtype == torch.uint8 and torch.equal(predicted, logits.argmax(1).byte())
    with torch.no_grad():
        assert not torch.equal(predicted, net(images).argmax(1).byte())


@pytest.mark.slow
def test_cached_pipeline_with_slide_evaluation_trains_and_draws_its_validation_figures(compose_cfg, tmp_path) -> None:
    """The figure callback predicts its fixed samples from the cached (uint8) loader at the end
    of the first validation; with sliding windows that must not crash."""
    cfg = compose_cfg(
        [
            "task=shapes_seg",
            "model=fcn",
            "task.data.pipeline=cached",
            "task.module.eval_mode=slide",
            *TINY,
            f"task.data.root={tmp_path / 'shapes_seg'}",
            *TINY_SEG_DATA,
            "test=false",
            "callbacks.figures.num_images=1",
            "callbacks.figures.num_train_images=1",
            "callbacks.model_summary=null",
            "callbacks.model_checkpoint=null",
            "callbacks.last_checkpoint=null",  # 45 MB each, beside the point here
        ]
    )
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    assert 0 <= train(cfg)["val/miou_best"] <= 1
