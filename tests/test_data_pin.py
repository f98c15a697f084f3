"""The reference tasks' numbers do not move when the data layer is rebuilt: for a fixed seed,
``task=simpsons`` and ``task=voc`` hand the model the same batches (both pipelines, two epochs,
training and validation) and end with the same test metrics as the code these digests were
recorded on. The data is generated in the real on-disk layouts (the Kaggle download with its
warts; VOCdevkit with palette PNG masks).

A change that is *meant* to alter the data (another split, augmentation or ordering) updates
these digests in the same commit and says why."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from tests.conftest import TINY
from tests.test_data_cache import write_classes
from visionbench.data.shapes_seg import generate_shapes_seg
from visionbench.run import build_datamodule, build_task

SIMPSONS = ["task=simpsons", "model=cnn", "task.data.image_size=32", "task.data.split.min_images=5", "task.data.split.test_per_class=2"]
VOC = ["task=voc", "model=fcn", "task.data.crop=[32,48]", "task.data.augment.scale_range=[0.5,2.0]", "task.module.eval_mode=slide"]
PINNED_STEPS = [*TINY, "trainer.max_epochs=2", "seed=7"]


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:12]


class BatchDigests(L.Callback):
    """What the model receives: every training and validation batch after the device transfer hook."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.append(f"train e{trainer.current_epoch} b{batch_idx} " + " ".join(digest(t) for t in batch))

    def on_validation_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self.seen.append(f"val e{trainer.current_epoch} b{batch_idx} " + " ".join(digest(t) for t in batch))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pinned")
    write_classes(base / "simpsons", width=40, height=30, classes=3, per_class=10)
    generate_shapes_seg(base / "voc", num_train=8, num_val=4, height=40, width=56, log=lambda _: None)
    return {"simpsons": base / "simpsons" / "simpsons_dataset", "voc": base / "voc"}


def batches_and_metrics(compose_cfg, overrides: list[str]) -> tuple[list[str], dict[str, float]]:
    cfg = compose_cfg([*overrides, *PINNED_STEPS])
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    probe = BatchDigests()
    trainer = instantiate(cfg.trainer, callbacks=[probe], logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(task, datamodule=datamodule)
    trainer.test(task, datamodule=datamodule)
    metrics = {k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    return probe.seen, metrics


PINNED: dict[tuple[str, str], tuple[list[str], dict[str, float]]] = {
    ('simpsons', 'pil'): (
        [
            'train e0 b0 e01625fba6de 60cb1131bd82',
            'train e0 b1 9753dbad85da bd2fbb4b3dcb',
            'val e0 b0 9a29c0f9bf09 8f77fc79b4ef',
            'val e0 b1 999cb8224a0e c571327cb01a',
            'train e1 b0 330c4299c4a9 4cea01406733',
            'train e1 b1 8e0184bfd616 39924f05f255',
            'val e1 b0 9a29c0f9bf09 8f77fc79b4ef',
            'val e1 b1 999cb8224a0e c571327cb01a',
        ],
        {'test/loss': 3.4369, 'test/acc': 0.3333, 'test/acc_macro': 0.3333},
    ),
    # On a CPU the cached pipeline augments each training batch in the loader, every sample from its own
    # (seed, epoch, index) stream: the images differ from the version that drew on the training process's
    # stream between the dropout masks (same samples, labels and validation batches).
    ('simpsons', 'cached'): (
        [
            'train e0 b0 3c46320911d5 60cb1131bd82',
            'train e0 b1 091348109522 bd2fbb4b3dcb',
            'val e0 b0 dab4e69bfb46 8f77fc79b4ef',
            'val e0 b1 58e1bd6ca86b c571327cb01a',
            'train e1 b0 cbd2636091cb 4cea01406733',
            'train e1 b1 3a80a1cdda43 39924f05f255',
            'val e1 b0 dab4e69bfb46 8f77fc79b4ef',
            'val e1 b1 58e1bd6ca86b c571327cb01a',
        ],
        {'test/loss': 1.6787, 'test/acc': 0.3333, 'test/acc_macro': 0.3333},
    ),
    ('voc', 'pil'): (
        [
            'train e0 b0 8f6704f3e9c5 05bfe3af34ba',
            'train e0 b1 379fc90277bb 75ecfcbc253e',
            'val e0 b0 0eee61b6be7d 803ec4009a88',
            'train e1 b0 b7ed222e92dd 550d7da414b2',
            'train e1 b1 ed23ff6314f0 3e394725d7a4',
            'val e1 b0 0eee61b6be7d 803ec4009a88',
        ],
        {'test/loss': 2.983, 'test/pixel_acc': 0.0116, 'test/miou': 0.0088, 'test/iou/background': 0.0, 'test/iou/aeroplane': 0.0, 'test/iou/bicycle': 0.0633, 'test/iou/bird': 0.0, 'test/iou/boat': 0.0072, 'test/iou/bottle': 0.0, 'test/iou/pottedplant': 0.0, 'test/iou/train': 0.0},
    ),
    ('voc', 'cached'): (
        [
            'train e0 b0 d600d2a15f8c 05bfe3af34ba',
            'train e0 b1 ca0748786956 75ecfcbc253e',
            'val e0 b0 3f2556db7491 803ec4009a88',
            'train e1 b0 6e34fdd50392 550d7da414b2',
            'train e1 b1 07dcacdec4b7 3e394725d7a4',
            'val e1 b0 3f2556db7491 803ec4009a88',
        ],
        {'test/loss': 2.9755, 'test/pixel_acc': 0.0061, 'test/miou': 0.0008, 'test/iou/background': 0.0, 'test/iou/aeroplane': 0.0, 'test/iou/bicycle': 0.0, 'test/iou/bird': 0.0, 'test/iou/boat': 0.0071, 'test/iou/bottle': 0.0, 'test/iou/car': 0.0, 'test/iou/motorbike': 0.0, 'test/iou/sofa': 0.0},
    ),
}  # fmt: skip


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
@pytest.mark.parametrize("task", ["simpsons", "voc"])
def test_the_reference_tasks_give_the_recorded_batches_and_metrics_for_a_fixed_seed(
    compose_cfg, roots: dict[str, Path], task: str, pipeline: str
) -> None:
    overrides = [*(SIMPSONS if task == "simpsons" else VOC), f"task.data.root={roots[task]}", f"task.data.pipeline={pipeline}"]
    seen, metrics = batches_and_metrics(compose_cfg, overrides)
    expected_seen, expected_metrics = PINNED[(task, pipeline)]
    assert seen == expected_seen
    assert metrics == pytest.approx(expected_metrics, abs=2e-4)
