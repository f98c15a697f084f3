"""Class-balanced training recipes for imbalanced training splits (Simpsons: homer 1,398 frames,
maggie 42; the test split is class-balanced): ``task.data.sampler=balanced`` draws every class
about equally often, ``task.module.class_weights=balanced`` weighs the training loss by
n / (k · count_c). Both derive from the training split alone; evaluation stays unweighted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from visionbench.cli import user_error
from visionbench.compose import build_datamodule, build_task
from visionbench.data.base import VisionDataModule
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sampler import ClassBalancedSampler, EpochShuffleSampler, EpochTaggedSampler
from visionbench.data.sources.shapes import generate_shapes
from visionbench.data.sources.split import TRAIN_DIR, read_manifest
from visionbench.data.storage.samples import FileSamples
from visionbench.errors import ConfigError
from visionbench.seeding import stream_seed
from visionbench.tasks.classification import ClassificationTask, balanced_class_weights

TEN_TO_ONE = [0] * 1000 + [1] * 100


def _draw(labels: list[int], seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    sampler = ClassBalancedSampler(labels, seed=seed, rank=rank, world_size=world)
    sampler.set_epoch(epoch)
    return list(sampler)


def _fake_trainer(rank: int = 0, world: int = 1) -> SimpleNamespace:
    """What ``VisionDataModule._loader`` reads of Lightning's trainer."""
    progress = SimpleNamespace(epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=0)))
    return SimpleNamespace(global_rank=rank, world_size=world, overfit_batches=0, fit_loop=progress)


def _train_order(dm: VisionDataModule, epoch: int) -> list[int]:
    """The dataset indices of ``dm``'s training loader in ``epoch`` (tags removed)."""
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, EpochTaggedSampler)
    sampler.set_epoch(epoch)
    return [draw.item for draw in sampler]


def _tiny_task(counts: list[int] | None, label_smoothing: float = 0.0) -> ClassificationTask:
    weights = {"class_weights": "balanced", "class_counts": counts} if counts is not None else {}
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return ClassificationTask(net, num_classes=3, optimizer=torch.optim.SGD, label_smoothing=label_smoothing, **weights)


# --- the balanced sampler -----------------------------------------------------------------------


def test_balanced_sampling_draws_each_class_about_equally_often_from_a_10_to_1_split() -> None:
    drawn = Counter(TEN_TO_ONE[i] for epoch in range(40) for i in _draw(TEN_TO_ONE, seed=0, epoch=epoch))
    assert sum(drawn.values()) == 40 * len(TEN_TO_ONE)  # every epoch keeps the split's length
    assert drawn[0] / drawn[1] == pytest.approx(1.0, abs=0.05)  # the split itself is 10.0


def test_the_same_seed_and_epoch_give_the_same_draw_and_another_seed_or_epoch_another() -> None:
    assert _draw(TEN_TO_ONE, seed=3, epoch=2) == _draw(TEN_TO_ONE, seed=3, epoch=2)
    assert _draw(TEN_TO_ONE, seed=3, epoch=2) != _draw(TEN_TO_ONE, seed=4, epoch=2)
    assert _draw(TEN_TO_ONE, seed=3, epoch=2) != _draw(TEN_TO_ONE, seed=3, epoch=3)
    assert _draw(TEN_TO_ONE, seed=1, epoch=1) != _draw(TEN_TO_ONE, seed=2, epoch=0)  # stream_seed, not seed + epoch
    resumed = ClassBalancedSampler(TEN_TO_ONE, seed=3)
    resumed.set_epoch(2)
    straight = ClassBalancedSampler(TEN_TO_ONE, seed=3)
    for epoch in range(3):
        straight.set_epoch(epoch)
        order = list(straight)
    assert order == list(resumed)  # a fresh sampler at epoch 2 draws what a straight run draws there


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_disjoint_positions_of_one_draw_with_equal_lengths(world: int) -> None:
    labels = TEN_TO_ONE[:101]  # 101 samples: not divisible by 2 or 3
    shards = [_draw(labels, seed=7, epoch=1, rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal lengths, or DDP would hang at the last step
    one_process = _draw(labels, seed=7, epoch=1)
    merged = [i for step in zip(*shards, strict=True) for i in step]  # rank r holds positions r, r + world, ...
    assert merged == (one_process * 2)[: len(merged)]  # of the one draw, padded by wrapping around as EpochShuffleSampler


# --- the shuffle sampler stays today's ----------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2])
def test_shuffle_keeps_todays_training_order_exactly(world: int) -> None:
    n, per_rank = 37, -(-37 // world)
    for rank in range(world):
        dm = VisionDataModule(batch_size=4, num_workers=0, seed=5)
        assert dm.sampler == "shuffle"  # the default
        dm.datasets = {"train": TensorDataset(torch.zeros(n, 1))}
        dm.trainer = _fake_trainer(rank, world)  # type: ignore[assignment]
        for epoch in (0, 3):
            reference = EpochShuffleSampler(n, seed=5, rank=rank, world_size=world)
            reference.set_epoch(epoch)
            permutation = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(5, epoch))).tolist()
            assert _train_order(dm, epoch) == list(reference) == (permutation * 2)[: per_rank * world][rank::world]


# --- class weights ------------------------------------------------------------------------------


def test_balanced_class_weights_are_n_over_k_times_each_class_count() -> None:
    weights = balanced_class_weights([30, 10, 5, 15], ["a", "b", "c", "d"])  # n = 60, k = 4
    assert weights.tolist() == pytest.approx([60 / (4 * 30), 60 / (4 * 10), 60 / (4 * 5), 60 / (4 * 15)])
    assert balanced_class_weights([8, 8, 8], ["a", "b", "c"]).tolist() == [1.0, 1.0, 1.0]  # a balanced split


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_weighted_loss_on_a_batch_equals_the_hand_computed_value(label_smoothing: float) -> None:
    task = _tiny_task([6, 2, 1], label_smoothing)  # n = 9, k = 3: weights 0.5, 1.5, 3
    w = [0.5, 1.5, 3.0]
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, -2.0, 0.5]])
    y = torch.tensor([0, 1, 2, 0])
    nll = -torch.log_softmax(logits, dim=1)
    eps, k = label_smoothing, 3
    # PyTorch's weighted mean: per sample w[y] * ((1 - eps) * nll[y]) + eps / k * sum_c w[c] * nll[c], over sum w[y].
    per_sample = [w[t] * (1 - eps) * nll[i, t] + eps / k * sum(w[c] * nll[i, c] for c in range(k)) for i, t in enumerate(y.tolist())]
    expected = sum(per_sample) / sum(w[t] for t in y.tolist())
    assert task.loss(logits, y).item() == pytest.approx(float(expected), rel=1e-6)
    # A mixed batch (class probabilities) weighs each sample by w · p; a one-hot batch is the same batch.
    assert task.loss(logits, F.one_hot(y, 3).float()).item() == pytest.approx(float(expected), rel=1e-6)
    p = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5], [0.2, 0.0, 0.8], [1.0, 0.0, 0.0]])
    smoothed = p * (1 - eps) + eps / k
    mixed = sum(w[c] * smoothed[i, c] * nll[i, c] for i in range(4) for c in range(k)) / sum(
        w[c] * p[i, c] for i in range(4) for c in range(k)
    )
    assert task.loss(logits, p).item() == pytest.approx(float(mixed), rel=1e-6)


def test_without_class_weights_the_loss_is_plain_cross_entropy() -> None:
    logits, y = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 2, 0])
    assert _tiny_task(None).class_weight is None
    assert torch.equal(_tiny_task(None).loss(logits, y), F.cross_entropy(logits, y))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer: the metric objects are what is checked
def test_validation_and_test_losses_stay_unweighted() -> None:
    task = _tiny_task([6, 2, 1])
    x, y = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 2])
    task.validation_step((x, y), 0)
    task.test_step((x, y), 0)
    plain = F.cross_entropy(task(x), y)
    assert task.val_loss.compute().item() == pytest.approx(plain.item(), rel=1e-6)
    assert task.test_loss.compute().item() == pytest.approx(plain.item(), rel=1e-6)
    assert task.loss(task(x), y).item() != pytest.approx(plain.item(), rel=1e-3)  # training is weighted


def test_class_weights_are_not_part_of_the_checkpoint() -> None:
    """Recomputed from the data at every build: weighted and unweighted tasks load each other's weights."""
    assert "class_weight" not in _tiny_task([6, 2, 1]).state_dict()
    _tiny_task(None).load_state_dict(_tiny_task([6, 2, 1]).state_dict())


# --- configuration errors -----------------------------------------------------------------------


def _one_paragraph(err: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_an_unknown_sampler_is_one_paragraph_naming_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        VisionDataModule(batch_size=4, num_workers=0, sampler="weighted")
    _one_paragraph(err, "task.data.sampler", "'weighted'", "'shuffle'", "'balanced'")


def test_unknown_class_weights_are_one_paragraph_naming_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        ClassificationTask(nn.Linear(4, 3), num_classes=3, optimizer=torch.optim.SGD, class_weights="inverse", class_counts=[1, 2, 3])
    _one_paragraph(err, "task.module.class_weights", "'inverse'", "null", "'balanced'")


def test_a_class_without_training_samples_cannot_be_weighted() -> None:
    with pytest.raises(ConfigError) as err:
        balanced_class_weights([5, 0, 3], ["bart", "maggie", "lisa"])
    _one_paragraph(err, "task.module.class_weights", "maggie")


def test_balanced_sampling_of_data_without_one_class_per_sample_is_one_paragraph() -> None:
    """Segmentation labels every pixel: a datamodule that gives no ``train_labels`` refuses the balanced sampler."""
    dm = VisionDataModule(batch_size=4, num_workers=0, sampler="balanced")
    dm.datasets = {"train": TensorDataset(torch.zeros(10, 1))}
    with pytest.raises(ConfigError) as err:
        dm.train_dataloader()
    _one_paragraph(err, "task.data.sampler", "task.data.sampler=shuffle")


def test_the_segmentation_tasks_have_no_sampler_key(compose_cfg) -> None:
    """VOC and shapes_seg do not take the key: adding it is the CLI's one paragraph naming it."""
    cfg = compose_cfg(["task=shapes_seg", "+task.data.sampler=balanced"])
    with pytest.raises(Exception) as err:
        build_datamodule(cfg)
    error = user_error(err.value)
    assert isinstance(error, ConfigError) and "task.data.sampler" in str(error) and "\n" not in str(error)


# --- composed in-process ------------------------------------------------------------------------


def _imbalanced_shapes(root: Path) -> Path:
    """Three classes of rendered shapes in the Simpsons layout, 60 : 24 : 12 images."""
    generate_shapes(root, num_classes=3, per_class=60, log=lambda _: None)
    for folder, keep in zip(sorted((root / TRAIN_DIR).iterdir()), (60, 24, 12), strict=True):
        for image in sorted(folder.iterdir())[keep:]:
            image.unlink()
    return root


def _dataset_labels(dataset: Dataset) -> list[int]:
    if isinstance(dataset, FileSamples):
        return list(dataset.items.labels)  # type: ignore[attr-defined]
    return list(dataset.labels)  # type: ignore[attr-defined]


@pytest.mark.parametrize("pipeline", ["cached", "pil"])
def test_shapes_with_balanced_sampling_and_class_weights_composes_and_builds(compose_cfg, tmp_path: Path, pipeline: str) -> None:
    root = _imbalanced_shapes(tmp_path / "shapes")
    cfg = compose_cfg(
        [
            "task=shapes",
            "model=cnn",
            "task.data.sampler=balanced",
            "task.module.class_weights=balanced",
            f"task.data.root={root}",
            "task.data.generator=null",
            "task.num_classes=3",
            f"task.data.pipeline={pipeline}",
            "task.data.split.min_images=5",
            "task.data.split.test_per_class=4",
            "task.data.num_workers=0",
            "task.data.batch_size=8",
        ]
    )
    with open_dict(cfg):
        del cfg["hydra"]  # as @hydra.main hands it over
    dm = build_datamodule(cfg)
    task = build_task(cfg, dm)

    train = Counter(e.label for e in read_manifest(root) if e.split == "train")
    counts = [train[name] for name in dm.class_names]
    assert counts[0] > 3 * counts[2]  # imbalanced
    assert isinstance(task.class_weight, Tensor)
    assert task.class_weight.tolist() == pytest.approx([sum(counts) / (3 * c) for c in counts])

    dm.setup("fit")
    assert dm.train_labels() == _dataset_labels(dm.datasets["train"])  # the sampler's weights follow the dataset's order
    dm.trainer = _fake_trainer()  # type: ignore[assignment]
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochTaggedSampler) and isinstance(loader.sampler.sampler, ClassBalancedSampler)
    _, labels = next(iter(loader))
    assert len(labels) == 8


def test_simpsons_and_shapes_default_to_shuffling_and_an_unweighted_loss(tmp_path: Path, compose_cfg) -> None:
    for name in ("simpsons", "shapes"):
        task = compose_cfg([f"task={name}"]).task
        assert (task.data.sampler, task.module.class_weights) == ("shuffle", None)
    assert ClassFolderDataModule(tmp_path).sampler == "shuffle"
