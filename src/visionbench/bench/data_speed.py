"""Does the data path starve the model? Loader throughput of both pipelines, end-to-end training
throughput against the model alone, and how epoch time and memory grow with the dataset.

All three are ratios measured in one process, one after the other, so a loaded machine slows
both sides of each ratio alike; absolute images/s are reported beside them for context. Torch
runs with ``threads`` intra-op threads (default 1): on a shared 2-core machine, 2 OpenMP threads
made elementwise ops up to 10x slower whenever another process held a core (measured: batch
transform 156 ms at 2 threads vs 22 ms at 1), which swamped every ratio with noise.
Usage: ``python -m visionbench.bench.data_speed [out_dir]`` (also run by ``pytest -m bench``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from visionbench.bench.speed import _PeakMemory
from visionbench.data.shapes import generate_shapes
from visionbench.data.simpsons import SimpsonsDataModule
from visionbench.models.cnn import PlainCNN
from visionbench.models.resnet_small import SmallResNet
from visionbench.tasks.classification import ClassificationTask

SPLIT = {"min_images": 100, "test_per_class": 20, "val_fraction": 0.1}


def make_shapes(root: Path, per_class: int, image_size: int, num_classes: int = 6) -> Path:
    """The built-in dataset at ``image_size`` (written once per root; 6 classes keep generation short)."""
    generate_shapes(root, num_classes=num_classes, per_class=per_class, image_size=image_size, log=lambda _: None)
    return root


def datamodule(root: Path, pipeline: str, image_size: int, batch_size: int, num_workers: int) -> SimpsonsDataModule:
    dm = SimpsonsDataModule(root, image_size=image_size, batch_size=batch_size, num_workers=num_workers, split=SPLIT, pipeline=pipeline)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def loader_images_per_s(dm: SimpsonsDataModule, batches: int) -> float:
    """Training batches/s * batch as the model would receive them (augmented, normalised, float),
    after one warm-up batch; the cached pipeline's batch transform runs here, in this process."""
    loader = iter(dm.train_dataloader())
    count, start = 0, 0.0
    for i in range(batches + 1):
        batch = next(loader)
        if dm.batch_transform is not None:
            batch = dm.batch_transform(batch, train=True)
        if i == 0:
            start = time.perf_counter()
        else:
            count += len(batch[1])
    return count / (time.perf_counter() - start)


class _BatchClock(L.Callback):
    """Wall time of every training batch end: end-to-end throughput including data waits."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.times.append(time.perf_counter())


def training_images_per_s(dm: SimpsonsDataModule, make_net: Callable[[], nn.Module], batches: int, warmup: int) -> float:
    """Images/s through the real Lightning fit loop (data, augmentation, step, logging, metrics)."""
    torch.manual_seed(0)
    task = ClassificationTask(make_net(), dm.num_classes, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    clock = _BatchClock()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=warmup + batches, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    return batches * dm.batch_size / (clock.times[-1] - clock.times[warmup - 1])


def model_images_per_s(make_net: Callable[[], nn.Module], num_classes: int, image_size: int, batch_size: int, batches: int, warmup: int) -> float:
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


def epoch_cost(dm: SimpsonsDataModule) -> tuple[float, float]:
    """(seconds, peak RSS MiB above the start) of one loader-only training epoch of the cached pipeline."""
    with _PeakMemory(torch.device("cpu")) as memory:
        start = time.perf_counter()
        for batch in dm.train_dataloader():
            dm.batch_transform(batch, train=True)  # type: ignore[misc]
        seconds = time.perf_counter() - start
    return seconds, memory.peak_mb


@dataclass
class DataBenchResult:
    loader_pil_images_per_s: float
    loader_cached_images_per_s: float
    loader_speedup: float
    train_images_per_s: dict[str, float]
    model_images_per_s: dict[str, float]
    train_over_model: dict[str, float]
    growth_train_images: list[int]
    growth_epoch_s: list[float]
    growth_peak_rss_mb: list[float]


def run(
    work_dir: Path,
    image_size: int = 128,
    source_size: int = 256,
    batch_size: int = 32,
    num_workers: int = 2,
    loader_batches: int = 8,
    train_batches: int = 6,
    warmup: int = 2,
    growth_per_class: tuple[int, ...] = (150, 300, 600),
    growth_size: int = 48,
    threads: int = 1,
) -> DataBenchResult:
    """Every measurement on data in ``work_dir`` (generated on first use, then reused).

    Growth epochs run without loader workers (their start-up would dominate small epochs) and
    keep the faster of two epochs, the first of which also warms the page cache.
    """
    torch.set_num_threads(threads)
    # Both sides of each ratio alike: denormal floats (which a model trained on one repeated random
    # batch drifts into) otherwise make the CPU timings erratic (measured up to 15x on resnet_small).
    torch.set_flush_denormal(True)
    source = make_shapes(work_dir / f"shapes{source_size}", per_class=150, image_size=source_size)
    pil = datamodule(source, "pil", image_size, batch_size, num_workers)
    cached = datamodule(source, "cached", image_size, batch_size, num_workers)  # builds the cache once
    pil_rate = loader_images_per_s(pil, loader_batches)
    cached_rate = loader_images_per_s(cached, loader_batches)

    nets: dict[str, Callable[[], nn.Module]] = {
        "cnn": lambda: PlainCNN(num_classes=cached.num_classes, image_size=image_size),
        "resnet_small": lambda: SmallResNet(num_classes=cached.num_classes, image_size=image_size),
    }
    train_rate, model_rate = {}, {}
    for name, make_net in nets.items():
        train_rate[name] = training_images_per_s(cached, make_net, train_batches, warmup)
        model_rate[name] = model_images_per_s(make_net, cached.num_classes, image_size, batch_size, train_batches, warmup)

    sizes, seconds, peaks = [], [], []
    for per_class in growth_per_class:
        root = make_shapes(work_dir / f"growth{per_class}", per_class=per_class, image_size=growth_size)
        dm = datamodule(root, "cached", growth_size, batch_size, num_workers=0)
        (s1, peak1), (s2, peak2) = epoch_cost(dm), epoch_cost(dm)
        sizes.append(len(dm.datasets["train"]))
        seconds.append(min(s1, s2))
        peaks.append(max(peak1, peak2))
    return DataBenchResult(
        pil_rate, cached_rate, cached_rate / pil_rate, train_rate, model_rate,
        {k: train_rate[k] / model_rate[k] for k in nets}, sizes, seconds, peaks,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    out_dir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="visionbench-data-bench-"))
    result = run(out_dir)
    (out_dir / "data_bench.json").write_text(json.dumps(asdict(result), indent=2))
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
