"""The reference tasks' numbers do not move when the data layer is rebuilt: for a fixed seed,
``task=simpsons`` and ``task=voc`` hand the model the same batches (both pipelines, two epochs,
training and validation) and end with the same test metrics as the code these digests were
recorded on. The data is generated in the real on-disk layouts (the Kaggle download with its
warts; VOCdevkit with palette PNG masks).

What is exact is pinned exactly: the labels and masks (sha256) and uint8 images. Float images (augmented
and normalised) are pinned by their mean and standard deviation, and the test metrics within what the
numerics of another CPU allow (the warp and the convolutions round differently on AVX-512, AVX2 and AMX):
an augmentation or ordering change moves those statistics by far more than the tolerance.

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

from visionbench.compose import build_datamodule, build_task
from visionbench.data.sources.shapes_seg import generate_shapes_seg

SIMPSONS = [
    *("task=simpsons", "model=cnn", "model.net.init=he"),  # the init the pin was recorded with
    *("task.data.image_size=32", "task.data.split.min_images=5", "task.data.split.test_per_class=2"),
]
VOC = ["task=voc", "model=fcn", "task.data.crop=[32,48]", "task.data.augment.scale_range=[0.5,2.0]", "task.module.eval_mode=slide"]
PINNED_STEPS = [*TINY, "trainer.max_epochs=2", "seed=7"]


def digest(tensor: torch.Tensor) -> str:
    """Integer tensors by content; float images by their mean and standard deviation (4 decimals)."""
    if tensor.is_floating_point():
        return f"{tensor.mean().item():.4f}/{tensor.std().item():.4f}"
    return hashlib.sha256(tensor.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:12]


def same_batches(seen: list[str], expected: list[str]) -> bool:
    """Equal labels, masks and uint8 images; float image statistics within 2e-3."""
    if len(seen) != len(expected):
        return False
    for got, want in zip(seen, expected, strict=True):
        for a, b in zip(got.split(), want.split(), strict=True):
            if "/" in b:
                if any(abs(float(x) - float(y)) > 2e-3 for x, y in zip(a.split("/"), b.split("/"), strict=True)):
                    return False
            elif a != b:
                return False
    return True


class BatchDigests(L.Callback):
    """What the model receives: every training and validation batch after the device transfer hook."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.append(f"train e{trainer.current_epoch} b{batch_idx} " + " ".join(digest(t) for t in batch))

    def on_validation_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
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
    ("simpsons", "pil"): (
        [
            "train e0 b0 -0.0445/1.1873 60cb1131bd82",
            "train e0 b1 -0.2723/1.1517 bd2fbb4b3dcb",
            "val e0 b0 -0.5726/0.9492 8f77fc79b4ef",
            "val e0 b1 -0.0824/1.0814 c571327cb01a",
            "train e1 b0 -0.1534/1.0362 4cea01406733",
            "train e1 b1 0.0464/1.2350 39924f05f255",
            "val e1 b0 -0.5726/0.9492 8f77fc79b4ef",
            "val e1 b1 -0.0824/1.0814 c571327cb01a",
        ],
        {"test/loss": 3.4369, "test/acc": 0.3333, "test/acc_macro": 0.3333},
    ),
    # On a CPU the cached pipeline augments each training batch in the loader, every sample from its own
    # (seed, epoch, index) stream: the images differ from the version that drew on the training process's
    # stream between the dropout masks (same samples, labels and validation batches).
    # Each sample now draws its parameters in the per-image path's order (affine, ColorJitter's, the flip's
    # coin; issue 17 item 10), so the training images are the pil pin's up to uint8 rounding (same samples,
    # labels and validation batches; test metrics moved with the training images).
    ("simpsons", "cached"): (
        [
            "train e0 b0 -0.0360/1.1870 60cb1131bd82",
            "train e0 b1 -0.2637/1.1516 bd2fbb4b3dcb",
            "val e0 b0 -0.5726/0.9492 8f77fc79b4ef",
            "val e0 b1 -0.0824/1.0814 c571327cb01a",
            "train e1 b0 -0.1459/1.0362 4cea01406733",
            "train e1 b1 0.0547/1.2344 39924f05f255",
            "val e1 b0 -0.5726/0.9492 8f77fc79b4ef",
            "val e1 b1 -0.0824/1.0814 c571327cb01a",
        ],
        {"test/loss": 4.0873, "test/acc": 0.3333, "test/acc_macro": 0.3333},
    ),
    ("voc", "pil"): (
        [
            "train e0 b0 0.0405/0.6875 05bfe3af34ba",
            "train e0 b1 -0.0589/0.7872 75ecfcbc253e",
            "val e0 b0 -0.0049/0.7289 803ec4009a88",
            "train e1 b0 -0.0712/0.7954 550d7da414b2",
            "train e1 b1 -0.0475/0.8199 3e394725d7a4",
            "val e1 b0 -0.0049/0.7289 803ec4009a88",
        ],
        {
            "test/loss": 2.983,
            "test/pixel_acc": 0.0116,
            "test/miou": 0.0088,
            "test/iou/background": 0.0,
            "test/iou/aeroplane": 0.0,
            "test/iou/bicycle": 0.0633,
            "test/iou/bird": 0.0,
            "test/iou/boat": 0.0072,
            "test/iou/bottle": 0.0,
            "test/iou/pottedplant": 0.0,
            "test/iou/train": 0.0,
        },
    ),
    ("voc", "cached"): (
        [
            "train e0 b0 0.0421/0.6875 05bfe3af34ba",
            "train e0 b1 -0.0578/0.7874 75ecfcbc253e",
            "val e0 b0 -0.0036/0.7289 803ec4009a88",
            "train e1 b0 -0.0704/0.7954 550d7da414b2",
            "train e1 b1 -0.0462/0.8200 3e394725d7a4",
            "val e1 b0 -0.0036/0.7289 803ec4009a88",
        ],
        {
            "test/loss": 2.9755,
            "test/pixel_acc": 0.0061,
            "test/miou": 0.0008,
            "test/iou/background": 0.0,
            "test/iou/aeroplane": 0.0,
            "test/iou/bicycle": 0.0,
            "test/iou/bird": 0.0,
            "test/iou/boat": 0.0071,
            "test/iou/bottle": 0.0,
            "test/iou/car": 0.0,
            "test/iou/motorbike": 0.0,
            "test/iou/sofa": 0.0,
        },
    ),
}


@pytest.mark.parametrize("pipeline", ["pil", "cached"])
@pytest.mark.parametrize("task", ["simpsons", "voc"])
def test_the_reference_tasks_give_the_recorded_batches_and_metrics_for_a_fixed_seed(
    compose_cfg, roots: dict[str, Path], task: str, pipeline: str
) -> None:
    overrides = [*(SIMPSONS if task == "simpsons" else VOC), f"task.data.root={roots[task]}", f"task.data.pipeline={pipeline}"]
    seen, metrics = batches_and_metrics(compose_cfg, overrides)
    expected_seen, expected_metrics = PINNED[(task, pipeline)]
    assert same_batches(seen, expected_seen), "\n".join(seen)
    assert expected_metrics.keys() <= metrics.keys()
    # After two epochs of training another CPU's rounding can move a few pixels' argmax, and the tiny
    # classifier's loss is chaotic: inputs that differ by uint8 rounding alone (pil vs cached) end at
    # 3.44 and 4.09. The batches above are the pin; the loss only has to stay in its range.
    scores = {k: v for k, v in expected_metrics.items() if k != "test/loss"}
    assert {k: metrics[k] for k in scores} == pytest.approx(scores, rel=1e-2, abs=5e-3)
    assert metrics["test/loss"] == pytest.approx(expected_metrics["test/loss"], rel=0.25)
