"""Segmentation on real road scenes: median-frequency class weights from the training masks, figures
and predicted masks in the dataset's own colours with a class legend, and the CamVid recipes
(experiment=camvid_fast, camvid_budget) on tiny generated data in CamVid's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from conftest import TINY
from test_seg_folder_task import CAMVID_CLASSES, CAMVID_SPLITS, camvid_mask, write_camvid, write_image, write_mask
from test_segmentation_task import HAND_MEDIAN_FREQUENCY, WEIGHT_MASKS
from visionbench.compose import build_datamodule, build_task, check_model_task
from visionbench.drawing import SegmentationRow, segmentation_figure
from visionbench.errors import ConfigError
from visionbench.masks import IGNORE_INDEX, class_colormap, voc_palette
from visionbench.predict import predict
from visionbench.run import train
from visionbench.tasks.classification import ClassificationTask
from visionbench.tasks.optim import Horizon, check_scheduler, optimization_arguments, poly_schedule
from visionbench.tasks.segmentation import SegmentationTask, task_colormap

CAMVID_COLOURS = [
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
]  # SegNet's, in class order


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
def test_build_task_weighs_the_loss_by_the_training_masks_median_frequency(compose_cfg, tmp_path: Path, pipeline: str) -> None:
    root = tmp_path / "three"
    for i, mask in enumerate(WEIGHT_MASKS):
        write_image(root / "images" / "train" / f"{i}.png", 2, 3)
        write_mask(root / "masks" / "train" / f"{i}.png", mask.numpy().astype(np.uint8))
    write_image(root / "images" / "val" / "v.png", 2, 3)
    write_mask(root / "masks" / "val" / "v.png", np.zeros((2, 3), np.uint8))
    cfg = compose_cfg(
        [
            "task=seg_folder",
            f"task.data.root={root}",
            "task.data.class_names=[a,b,c]",
            "model=fcn",
            "task.module.class_weights=median_frequency",
            f"task.data.pipeline={pipeline}",
            "task.data.num_workers=0",
        ]
    )
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    task = build_task(cfg, build_datamodule(cfg))
    assert torch.allclose(task.class_weight, torch.tensor(HAND_MEDIAN_FREQUENCY))


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    return write_camvid(tmp_path / "camvid")


def test_camvid_palette_colours_its_classes_and_leaves_void_black(compose_cfg, camvid_root: Path) -> None:
    cfg = compose_cfg(["task=camvid", f"task.data.root={camvid_root}"])
    colormap = task_colormap(cfg.task.module.palette, CAMVID_CLASSES)
    assert [tuple(c) for c in colormap[:11].tolist()] == CAMVID_COLOURS
    assert colormap[11:].max() == 0  # void (255) and every unused value: black, as CamVid's label images


def test_tasks_without_a_palette_keep_vocs_colour_map(compose_cfg) -> None:
    for task in ("voc", "shapes_seg"):
        assert compose_cfg([f"task={task}"]).task.module.palette is None
    assert class_colormap(None).flatten().tolist() == voc_palette()


def test_a_palette_short_of_a_colour_per_class_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"task.module.palette has 2 colour\(s\) for the 3 classes"):
        task_colormap([[0, 0, 0], [1, 1, 1]], ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"task\.module\.palette"):
        task_colormap([[0, 0, 0], [1, 1, 300]], ["a", "b"])


def test_segmentation_figure_shows_truth_and_prediction_in_the_given_colours_with_a_class_legend(tmp_path: Path) -> None:
    colormap = task_colormap(CAMVID_COLOURS, CAMVID_CLASSES)
    mask = camvid_mask()
    mask[mask == 11] = IGNORE_INDEX
    image = np.full((*mask.shape, 3), 255, np.uint8)
    figure = segmentation_figure([SegmentationRow(image, np.full_like(mask, 3), mask)], CAMVID_CLASSES, colormap)
    assert [ax.get_title() for ax in figure.axes] == ["image", "ground truth", "prediction"]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == CAMVID_CLASSES
    figure.savefig(tmp_path / "figure.png")
    drawn = {tuple(c) for c in np.asarray(Image.open(tmp_path / "figure.png").convert("RGB")).reshape(-1, 3).tolist()}
    assert set(CAMVID_COLOURS) <= drawn


def test_experiments_compose_into_the_recipe_and_the_equal_budget_sweep(compose_cfg, camvid_root: Path) -> None:
    fast = compose_cfg(["experiment=camvid_fast", f"task.data.root={camvid_root}"])
    assert (fast.task.name, fast.model.name, fast.task.module.class_weights) == ("camvid", "fcn8s", "median_frequency")
    assert fast.task.data.augment.scale_range == [0.5, 2.0] and fast.task.data.augment.hflip == 0.5
    assert fast.scheduler._target_.endswith("poly_schedule") and fast.scheduler.warmup_epochs > 0
    assert fast.optimizer._target_ == "torch.optim.AdamW" and fast.ema_decay and fast.trainer.precision == "bf16-mixed"
    check_scheduler(fast)
    sweep = compose_cfg(["experiment=camvid_budget", f"task.data.root={camvid_root}"])
    assert sweep.hydra.sweeper.params.model == "fcn,fcn8s,fpn" and sweep.hydra.mode.name == "MULTIRUN"
    assert sweep.trainer.max_epochs == -1 and sweep.trainer.max_time and sweep.task.module.class_weights == "median_frequency"
    for model in ("fcn", "fcn8s", "fpn"):
        cfg = compose_cfg(["experiment=camvid_budget", f"task.data.root={camvid_root}", f"model={model}"])
        check_scheduler(cfg)  # the budget schedule gets no key of the poly one
        check_model_task(cfg.model, cfg.task)


@pytest.mark.slow
def test_camvid_fast_trains_on_camvid_layout_and_predicts_in_camvids_colours(compose_cfg, camvid_root: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [
            "experiment=camvid_fast",
            f"task.data.root={camvid_root}",
            *TINY,
            "task.data.crop=[32,48]",
            "scheduler.warmup_epochs=0",
            "callbacks.figures.num_images=1",
            "callbacks.figures.num_train_images=1",
            "callbacks.model_summary=null",
            "callbacks.model_checkpoint=null",
        ]
    )
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    train(cfg)
    assert 0.0 <= json.loads((tmp_path / "metrics.json").read_text())["test/miou"] <= 1.0
    out = tmp_path / "predictions"
    predict(tmp_path / "checkpoints" / "last.ckpt", camvid_root / "val", out, echo=lambda _: None)
    name = CAMVID_SPLITS["val"][0]
    mask = Image.open(out / f"{name}.png.mask.png")
    assert mask.mode == "P" and [tuple(c) for c in np.reshape(mask.getpalette()[:33], (11, 3)).tolist()] == CAMVID_COLOURS
    drawn = {tuple(c) for c in np.asarray(Image.open(out / f"{name}.png.png").convert("RGB")).reshape(-1, 3).tolist()}
    assert set(CAMVID_COLOURS) <= drawn  # the legend's patches at least


def head_lr_task(compose_cfg, model: str, *overrides: str) -> SegmentationTask | ClassificationTask:
    cfg = compose_cfg([f"model={model}", "optimizer=adamw", "optimizer.lr=0.01", *overrides])
    kind = "segmentation" if model in ("fcn", "fcn8s", "fpn") else "classification"
    task_class = SegmentationTask if kind == "segmentation" else ClassificationTask
    return task_class(instantiate(cfg.model.net, num_classes=3), 3, **optimization_arguments(cfg))


@pytest.mark.parametrize("model", ["fcn", "fcn8s", "fpn"])
def test_head_lr_mult_trains_the_decoder_faster_than_the_backbone_through_the_schedule(compose_cfg, model: str) -> None:
    task = head_lr_task(compose_cfg, model, "optimizer.head_lr_mult=10", "optimizer.norm_weight_decay=0.0")
    optimizer = task.configure_optimizers()
    backbone = {id(p) for p in task.net.get_submodule("trunk.backbone" if model == "fpn" else "backbone").parameters()}
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in task.parameters())  # every parameter once
    for group in optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1 and group["lr"] == (0.01 if in_backbone == {True} else 0.1)
        assert group["weight_decay"] == (optimizer.defaults["weight_decay"] if group["params"][0].ndim > 1 else 0.0)
    schedule = poly_schedule(optimizer, Horizon(total_steps=20, steps_per_epoch=5), warmup_epochs=1)
    for _ in range(7):  # into the warmup and past it
        optimizer.step()
        schedule.step()
        head, trunk = max(g["lr"] for g in optimizer.param_groups), min(g["lr"] for g in optimizer.param_groups)
        assert head == pytest.approx(10 * trunk) and trunk > 0


def test_without_head_lr_mult_every_parameter_learns_at_the_optimizers_lr(compose_cfg) -> None:
    optimizer = head_lr_task(compose_cfg, "fcn8s").configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [0.01]


def test_head_lr_mult_on_a_network_without_a_backbone_names_the_key(compose_cfg) -> None:
    task = head_lr_task(compose_cfg, "cnn", "optimizer.head_lr_mult=10")
    with pytest.raises(ConfigError, match=r"optimizer.head_lr_mult=10 .*PlainCNN has none"):
        task.configure_optimizers()
