"""TensorBoard dashboards: the event files of real runs hold the scalars, figures, hparams and layer summary."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import Metric

from visionbench.callbacks import task_figures
from visionbench.callbacks.classification import ClassificationFigures
from visionbench.callbacks.model_summary import ModelSummaryText
from visionbench.callbacks.segmentation import SegmentationFigures
from visionbench.data.transforms.per_sample import normalize, pad_collate
from visionbench.drawing import colorize, unnormalize
from visionbench.errors import ConfigError
from visionbench.masks import IGNORE_INDEX
from visionbench.tasks.segmentation import SegmentationTask, segmentation_scores

SEG_CLASSES = 3


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_classification_run_logs_scalars_figures_hparams_and_layer_summary(multirun: Path) -> None:
    acc = events(multirun / "0" / "tensorboard" / "model=cnn,seed=1")
    tags = acc.Tags()
    assert {"val/acc", "val/acc_best", "val/loss", "test/acc"} <= set(tags["scalars"])
    assert {"train/samples", "val/predictions", "val/confusion_matrix", "val/per_class_accuracy"} <= set(tags["images"])
    assert len(acc.Images("val/predictions")) == 1  # once per validation epoch, none for the sanity check
    assert len(acc.Images("train/samples")) == 1  # once per fit
    assert "model/summary/text_summary" in tags["tensors"]
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    assert acc.Scalars("val/acc_best")[0].step > 0  # no placeholder value at step 0


def test_a_sweeps_tensorboard_runs_are_named_by_what_differs_and_lead_with_the_key_hyperparameters(multirun: Path) -> None:
    runs = sorted(str(p.relative_to(multirun)) for p in multirun.glob("*/tensorboard/*") if p.is_dir())
    assert runs == [
        "0/tensorboard/model=cnn,seed=1",
        "1/tensorboard/model=cnn,seed=2",
        "2/tensorboard/model=resnet_small,seed=1",
        "3/tensorboard/model=resnet_small,seed=2",
    ]
    hparams = yaml.safe_load((multirun / "0" / "tensorboard" / "model=cnn,seed=1" / "hparams.yaml").read_text())
    assert {"model.name", "task.name", "seed", "optimizer", "optimizer.lr", "scheduler", "task.data.batch_size"} <= set(hparams)
    assert hparams["optimizer"] == "Adam" and hparams["scheduler"] == "none" and "task.data.augment.degrees" in hparams
    assert "callbacks.throughput.warmup_steps" in hparams  # set on the command line, so shown
    assert not any(key.startswith(("callbacks.model_checkpoint", "paths.")) for key in hparams)  # the rest of the config is not


class RandomSegmentation(Dataset):
    """Images of two sizes with a square of class 1 or 2 and a void border, as the VOC eval split."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        h, w = (32, 48) if i % 2 else (40, 40)
        g = torch.Generator().manual_seed(i)
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        mask = torch.zeros(h, w, dtype=torch.int64)
        mask[8:20, 8:20] = 1 + i % 2
        mask[7, 7:21] = IGNORE_INDEX
        return torch.nn.Sequential(*normalize())(image), mask


class TinySegNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class TinySegData(L.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomSegmentation(8), batch_size=4, collate_fn=pad_collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RandomSegmentation(6), batch_size=4, collate_fn=pad_collate)


class DrawnSegmentationFigures(SegmentationFigures):
    """Keeps the confusion matrix each validation epoch's figures were drawn from."""

    def __init__(self, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.drawn: list[np.ndarray] = []

    def draw(self, writer: SummaryWriter, trainer: L.Trainer, pl_module: L.LightningModule, matrix: np.ndarray) -> None:
        self.drawn.append(matrix)
        super().draw(writer, trainer, pl_module, matrix)


def fit_segmentation(root: Path, loggers: list) -> tuple[L.Trainer, DrawnSegmentationFigures]:
    task = SegmentationTask(
        TinySegNet(SEG_CLASSES), SEG_CLASSES, lambda params: torch.optim.SGD(params, lr=0.1), class_names=["bg", "a", "b"]
    )
    figures = DrawnSegmentationFigures(num_images=3, num_train_images=4)
    trainer = L.Trainer(
        max_epochs=2,
        logger=loggers,
        callbacks=[figures, ModelSummaryText()],
        default_root_dir=root,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
    )
    trainer.fit(task, datamodule=TinySegData())
    return trainer, figures


def test_segmentation_run_logs_mask_triplets_iou_bars_and_summary(tmp_path: Path) -> None:
    trainer, figures = fit_segmentation(tmp_path, [TensorBoardLogger(tmp_path, name="tb", version="")])
    tags = events(tmp_path / "tb").Tags()
    assert {"train/samples", "val/segmentation", "val/per_class_iou"} <= set(tags["images"])
    assert len(events(tmp_path / "tb").Images("val/segmentation")) == 2
    assert "model/summary/text_summary" in tags["tensors"]
    # The IoU bars are drawn from the task's own matrix, read before the task resets it at epoch end:
    # the last epoch's bars give the task's last val/miou, and the callback keeps no metric of its own.
    assert len(figures.drawn) == 2 and figures.drawn[-1].sum() > 0
    miou = segmentation_scores(torch.from_numpy(figures.drawn[-1])).miou
    assert float(miou) == pytest.approx(float(trainer.callback_metrics["val/miou"]), abs=1e-6)
    assert not any(isinstance(value, Metric) for value in vars(figures).values())


def test_figures_are_skipped_without_a_tensorboard_logger(tmp_path: Path) -> None:
    trainer, figures = fit_segmentation(tmp_path, [CSVLogger(tmp_path, name="csv")])
    assert trainer.state.finished and figures._samples is None  # nothing was drawn
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_classification_confusion_matrix_counts_argmax_against_labels() -> None:
    figures = ClassificationFigures()
    figures.setup(None, type("M", (), {"num_classes": 3})(), "fit")  # type: ignore[arg-type]
    assert figures.confusion is not None
    figures.update(torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0]]), torch.tensor([0, 1, 2]))
    assert figures.confusion.compute().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_unnormalize_inverts_the_imagenet_normalisation() -> None:
    pixels = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    restored = unnormalize(torch.nn.Sequential(*normalize())(pixels))
    assert np.array_equal(restored, pixels.permute(0, 2, 3, 1).numpy())


def test_masks_are_coloured_with_the_voc_palette() -> None:
    rgb = colorize(np.array([[0, 1, 15, IGNORE_INDEX]]))
    assert rgb.tolist() == [[[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]]


def test_figures_for_an_unknown_task_kind_is_a_config_error() -> None:
    assert isinstance(task_figures("segmentation"), SegmentationFigures)
    with pytest.raises(ConfigError, match="detection"):
        task_figures("detection")


def test_unnormalize_shows_uint8_batches_of_the_cached_pipeline_unchanged() -> None:
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    np.testing.assert_array_equal(unnormalize(images), images.permute(0, 2, 3, 1).numpy())
