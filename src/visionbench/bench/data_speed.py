"""Does the data path starve the model? Loader throughput of both pipelines, what the augmentation
itself costs, end-to-end training throughput against the model alone, and how epoch time and
memory grow with the dataset.

Every ratio is measured in one process, its two sides interleaved over ``rounds`` and reduced to
medians, so a neighbour on this shared machine slows both sides alike (a single 6-batch
measurement of resnet_small read anywhere from 0.89 to 0.97 of the model alone). Absolute
images/s are reported beside the ratios for context. Torch runs with ``threads`` intra-op threads (default 1): on a
shared 2-core machine, 2 OpenMP threads made elementwise ops up to 10x slower whenever another
process (or a loader worker) held a core (measured: batch transform 156 ms at 2 threads vs 22 ms
at 1), which swamped every ratio with noise.

The loader comparison runs on JPEGs at two source sizes: 256 px, and 480 px, the middle of the
400-640 px the real Simpsons frames have (shared/MACHINE.md), because the per-image pipeline's
cost is mostly decoding and so grows with the source while the cache's does not.
Usage: ``python -m visionbench.bench.data_speed [out_dir]`` (also run by ``pytest -m bench``);
``python -m visionbench.bench.data_speed --end-to-end [work_dir]`` runs the training ÷ model-alone section alone.
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torchvision.transforms import v2

from visionbench.bench.speed import _PeakMemory, build_net
from visionbench.data.classification import ClassFolderDataModule
from visionbench.data.sources.shapes import generate_shapes
from visionbench.data.transforms.per_sample import augmentation, normalize
from visionbench.tasks.classification import ClassificationTask

SPLIT = {"min_images": 100, "test_per_class": 20, "val_fraction": 0.1}
END_TO_END_MODELS = ("cnn", "resnet_small", "resnet50")  # the three: fast, small and large steps


def make_shapes(root: Path, per_class: int, image_size: int, num_classes: int = 6) -> Path:
    """The built-in dataset at ``image_size`` (written once per root; 6 classes keep generation short)."""
    generate_shapes(root, num_classes=num_classes, per_class=per_class, image_size=image_size, log=lambda _: None)
    return root


def datamodule(root: Path, pipeline: str, image_size: int, batch_size: int, num_workers: int) -> ClassFolderDataModule:
    dm = ClassFolderDataModule(root, image_size=image_size, batch_size=batch_size, num_workers=num_workers, split=SPLIT, pipeline=pipeline)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def loader_images_per_s(dm: ClassFolderDataModule, batches: int, augment: bool = True) -> float:
    """Training batches/s * batch as the model would receive them (float, normalised; augmented
    unless ``augment`` is false), after one warm-up batch; the cached pipeline's batch transform
    runs here, in this process, as it does on a GPU (training on a CPU runs it in the loader
    workers instead, which the end-to-end section measures)."""
    loader = iter(dm.train_dataloader())
    count, start = 0, 0.0
    for i in range(batches + 1):
        batch = next(loader)
        if dm.batch_transform is not None:
            batch = dm.batch_transform(batch, train=augment)
        if i == 0:
            start = time.perf_counter()
        else:
            count += len(batch[1])
    return count / (time.perf_counter() - start)


@dataclass
class LoaderRates:
    """Loader images/s on one set of files, the same number of workers on both sides, medians
    over the rounds. With 0 workers both pipelines run on the same single core; with 2 the
    per-image pipeline decodes on two worker processes while the batch augmentation runs here, on
    one core (as on a GPU node, where it runs on the GPU; a CPU trainer runs it in the workers)."""

    source_size: int
    num_workers: int
    pil: float  # per image: decode, resize, augment, normalise (torchvision v2, the reference)
    cached: float  # uint8 batches from the cache, augmented and normalised as whole batches here
    cached_no_augment: float  # the same batches only normalised: what the cache serves when augmenting is free
    speedup: float  # cached / pil: the target (>= 10)
    speedup_if_augment_free: float  # cached_no_augment / pil: the ratio on a device that augments for ~free


def loader_rates(
    root: Path, source_size: int, image_size: int, batch_size: int, num_workers: int, batches: int, rounds: int
) -> LoaderRates:
    pil = datamodule(root, "pil", image_size, batch_size, num_workers)
    cached = datamodule(root, "cached", image_size, batch_size, num_workers)  # builds the cache once
    samples: dict[str, list[float]] = {"pil": [], "cached": [], "plain": []}
    for _ in range(rounds):
        samples["pil"].append(loader_images_per_s(pil, batches))
        samples["cached"].append(loader_images_per_s(cached, batches))
        samples["plain"].append(loader_images_per_s(cached, batches, augment=False))
    rate = {k: statistics.median(v) for k, v in samples.items()}
    return LoaderRates(
        source_size, num_workers, rate["pil"], rate["cached"], rate["plain"], rate["cached"] / rate["pil"], rate["plain"] / rate["pil"]
    )


@dataclass
class AugmentCost:
    """Milliseconds per 128² image of the augmentation and normalisation alone, decoding excluded."""

    batched_ms: float  # BatchTransform on whole batches, on this CPU
    per_image_ms: float  # the per-image pipeline's augment + normalise (torchvision v2 on uint8 tensors)


def augment_cost(cached: ClassFolderDataModule, batches: int, rounds: int) -> AugmentCost:
    """Both augmentations on the same images (the cache's uint8 batches), interleaved over rounds."""
    transform = cached.batch_transform
    assert transform is not None
    loader = iter(cached.train_dataloader())
    data = [next(loader) for _ in range(batches)]
    per_image = v2.Compose(augmentation(cached.augment) + normalize())
    batched_ms, single_ms = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in data:
            transform(batch, train=True)
        batched_ms.append((time.perf_counter() - start) * 1000 / (batches * cached.batch_size))
        start = time.perf_counter()
        for images, _ in data:
            for image in images:
                per_image(image)
        single_ms.append((time.perf_counter() - start) * 1000 / (batches * cached.batch_size))
    return AugmentCost(statistics.median(batched_ms), statistics.median(single_ms))


class _BatchClock(L.Callback):
    """Wall time of every training batch end: end-to-end throughput including data waits."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.times.append(time.perf_counter())


def training_images_per_s(dm: ClassFolderDataModule, make_net: Callable[[], nn.Module], batches: int, warmup: int) -> float:
    """Images/s through the real Lightning fit loop (data, augmentation, step, logging, metrics)."""
    torch.manual_seed(0)
    task = ClassificationTask(make_net(), dm.num_classes, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    clock = _BatchClock()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=warmup + batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(task, datamodule=dm)
    return batches * dm.batch_size / (clock.times[-1] - clock.times[warmup - 1])


def model_images_per_s(
    make_net: Callable[[], nn.Module], num_classes: int, image_size: int, batch_size: int, batches: int, warmup: int
) -> float:
    """Images/s of the same training step on random tensors already in memory: the ceiling."""
    torch.manual_seed(0)
    net = make_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * batch_size / (time.perf_counter() - start)


def epoch_cost(dm: ClassFolderDataModule) -> tuple[float, float]:
    """(seconds, peak RSS MiB above the start) of one loader-only training epoch of the cached pipeline."""
    transform = dm.batch_transform
    assert transform is not None  # the cached pipeline augments whole batches
    with _PeakMemory(torch.device("cpu")) as memory:
        start = time.perf_counter()
        for batch in dm.train_dataloader():
            transform(batch, train=True)
        seconds = time.perf_counter() - start
    return seconds, memory.peak_mb


def end_to_end(
    dm: ClassFolderDataModule,
    batches: int,
    warmup: int,
    rounds: int,
    progress: Callable[[str], None] = lambda name: None,
    models: tuple[str, ...] = END_TO_END_MODELS,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median images/s of the training loop and of the model alone for each of ``models``, the two
    sides alternating round by round so that a busy neighbour slows both alike."""
    train_rate, model_rate = {}, {}
    for name in models:
        progress(name)
        make_net = functools.partial(build_net, name, dm.num_classes, dm.image_size)
        trained, alone = [], []
        for _ in range(rounds):
            trained.append(training_images_per_s(dm, make_net, batches, warmup))
            alone.append(model_images_per_s(make_net, dm.num_classes, dm.image_size, dm.batch_size, batches, warmup))
        train_rate[name], model_rate[name] = statistics.median(trained), statistics.median(alone)
    return train_rate, model_rate


def quiet_steady_torch(threads: int) -> None:
    """``threads`` intra-op threads, no Lightning banners (one Trainer per measurement), and denormal
    floats flushed on both sides of every ratio: a model trained on one repeated random batch drifts
    into them, which made CPU timings erratic (measured up to 15x on resnet_small)."""
    torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_flush_denormal(True)


@dataclass
class DataBenchResult:
    loader: list[LoaderRates]
    augment: AugmentCost
    train_images_per_s: dict[str, float]
    model_images_per_s: dict[str, float]
    train_over_model: dict[str, float]
    growth_train_images: list[int]
    growth_epoch_s: list[float]
    growth_peak_rss_mb: list[float]


def run(
    work_dir: Path,
    image_size: int = 128,
    source_sizes: tuple[int, ...] = (256, 480),
    batch_size: int = 32,
    loader_workers: tuple[int, ...] = (0, 2),
    loader_batches: int = 12,
    rounds: int = 3,
    train_batches: int = 6,
    warmup: int = 2,
    growth_per_class: tuple[int, ...] = (150, 300, 600),
    growth_size: int = 48,
    threads: int = 1,
    progress: Callable[[str, int], None] = lambda step, total: None,
) -> DataBenchResult:
    """Every measurement on data in ``work_dir`` (generated on first use, then reused).

    Growth epochs run without loader workers (their start-up would dominate small epochs) and
    keep the faster of two epochs, the first of which also warms the page cache. ``progress``
    is told the name of each step before it starts, and the total number of steps.
    """
    total = len(source_sizes) * len(loader_workers) + 1 + len(END_TO_END_MODELS) + len(growth_per_class)
    quiet_steady_torch(threads)
    sources = {size: make_shapes(work_dir / f"shapes{size}", per_class=150, image_size=size) for size in source_sizes}
    loader = []
    for size, root in sources.items():
        for workers in loader_workers:
            progress(f"loaders, {size}-px JPEGs, {workers} workers", total)
            loader.append(loader_rates(root, size, image_size, batch_size, workers, loader_batches, rounds))
    cached = datamodule(sources[source_sizes[0]], "cached", image_size, batch_size, max(loader_workers))
    progress("augmentation cost", total)
    augment = augment_cost(cached, loader_batches, rounds)

    train_rate, model_rate = end_to_end(
        cached, train_batches, warmup, rounds, lambda name: progress(f"{name}: training loop vs model alone", total)
    )

    sizes, seconds, peaks = [], [], []
    for per_class in growth_per_class:
        progress(f"growth: {per_class} images per class", total)
        root = make_shapes(work_dir / f"growth{per_class}", per_class=per_class, image_size=growth_size)
        dm = datamodule(root, "cached", growth_size, batch_size, num_workers=0)
        (s1, peak1), (s2, peak2) = epoch_cost(dm), epoch_cost(dm)
        train = dm.datasets["train"]
        assert isinstance(train, Sized)  # torch's Dataset declares no __len__; every split has one
        sizes.append(len(train))
        seconds.append(min(s1, s2))
        peaks.append(max(peak1, peak2))
    return DataBenchResult(
        loader,
        augment,
        train_rate,
        model_rate,
        {k: train_rate[k] / model_rate[k] for k in END_TO_END_MODELS},
        sizes,
        seconds,
        peaks,
    )


def markdown(result: DataBenchResult) -> str:
    """The measurements as the README's table, each ratio beside its target."""
    rows = [
        f"| loader, {r.source_size}-px JPEGs, {r.num_workers} workers: cached + batched augmentation ÷ per-image PIL "
        f"(target ≥ 10) | {r.cached:,.0f} ÷ {r.pil:,.0f} img/s = ×{r.speedup:.2f} |"
        for r in result.loader
    ]
    rows += [
        f"| loader, {r.source_size}-px JPEGs, {r.num_workers} workers: cached without augmentation ÷ per-image PIL "
        f"| {r.cached_no_augment:,.0f} ÷ {r.pil:,.0f} img/s = ×{r.speedup_if_augment_free:.2f} |"
        for r in result.loader
    ]
    a = result.augment
    rows.append(f"| augmentation alone, ms per image: whole batches ÷ per image | {a.batched_ms:.3f} ÷ {a.per_image_ms:.3f} |")
    ratios = ", ".join(f"{name} {ratio:.2f}" for name, ratio in result.train_over_model.items())
    rows.append(f"| Lightning training ÷ model alone on in-memory tensors (target ≥ 0.95) | {ratios} |")
    images = " / ".join(f"{n:,}" for n in result.growth_train_images)
    rows.append(f"| epoch time at {images} images | {' / '.join(f'{s:.3f}' for s in result.growth_epoch_s)} s |")
    rows.append(f"| peak RSS at the same sizes | {' / '.join(f'{m:.1f}' for m in result.growth_peak_rss_mb)} MiB |")
    return "\n".join(["| measure | result |", "|---|---|", *rows]) + "\n"


def main_end_to_end(work_dir: Path, rounds: int = 5, batches: int = 6, warmup: int = 2) -> None:
    """The end-to-end section alone (``--end-to-end``): training ÷ model alone per model (printed as
    each finishes), medians of ``rounds`` interleaved rounds, cached pipeline, 2 loader workers, 128 px."""
    quiet_steady_torch(1)
    dm = datamodule(make_shapes(work_dir / "shapes256", per_class=150, image_size=256), "cached", 128, 32, 2)
    for name in END_TO_END_MODELS:
        train_rate, model_rate = end_to_end(dm, batches, warmup, rounds, models=(name,))
        print(f"{name}: {train_rate[name]:.1f} ÷ {model_rate[name]:.1f} img/s = {train_rate[name] / model_rate[name]:.3f}", flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--end-to-end"]:
        main_end_to_end(Path(argv[1]) if len(argv) > 1 else Path(tempfile.mkdtemp(prefix="visionbench-data-bench-")))
        return
    out_dir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="visionbench-data-bench-"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("data bench", total=None)
        started = False

        def step(what: str, total: int) -> None:
            nonlocal started
            bar.update(task, description=what, total=total, advance=1 if started else 0)
            started = True

        result = run(out_dir, progress=step)
        bar.update(task, description="data bench", advance=1)
    (out_dir / "data_bench.json").write_text(json.dumps(asdict(result), indent=2))
    (out_dir / "data_bench.md").write_text(markdown(result))
    print(markdown(result))
    print(f"Written: {out_dir / 'data_bench.json'}, {out_dir / 'data_bench.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
