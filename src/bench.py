"""`make bench`: speed of every configured network, written as CSV + Markdown + PNG beside Hydra's config.

Usage: ``python src/bench.py`` (quick CPU profile), ``python src/bench.py bench=full`` (GPU node),
``python src/bench.py bench.models=[resnet50] 'bench.knobs=[channels_last,precision,compile]'``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from visionbench.bench.speed import DTYPES, baseline_variant, describe_device, measure, peak_matmul_flops, plan_jobs
from visionbench.bench.tables import BenchRow, add_ratios, attach_quality, write_results
from visionbench.cli import CONFIG_DIR, report_errors, set_repo_root
from visionbench.errors import ConfigError
from visionbench.report import find_runs

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    report_errors(lambda: bench_all(cfg))


def bench_all(cfg: DictConfig) -> None:
    """Measure every planned job with a progress bar, then write and print the tables."""
    bench, load_at_start = cfg.bench, os.getloadavg()[0]
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    jobs = plan_jobs(bench, Path(CONFIG_DIR))
    baseline = baseline_variant(bench)
    peaks = {p: peak_matmul_flops(device, p, bench.peak_matmul.size, bench.peak_matmul.iters)
             for p in DTYPES if any(j.variant.precision == p for j in jobs)}  # fmt: skip

    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task("bench", total=len(jobs))
        for job in jobs:
            progress.update(bar, description=f"{job.model} ({job.impl}, {job.variant.label})")
            w = job.workload
            row = BenchRow(job.model, job.impl, job.task, job.variant.label, w.batch_size, w.image_size, w.warmup, w.iters)
            try:
                row.measurement = measure(job.make_net, w, job.variant, device, peaks[job.variant.precision])
            except ConfigError:
                raise
            except Exception as error:  # one broken network must not throw away the others' measurements
                row.error = f"{type(error).__name__}: {error}".splitlines()[0]
            m = row.measurement
            summary = row.error or f"train {m.train_images_per_s:.2f} img/s, infer {m.infer_images_per_s:.2f} img/s"
            log.info("%s (%s, %s): %s", job.model, job.impl, job.variant.label, summary)
            rows.append(row)
            progress.advance(bar)

    add_ratios(rows, baseline.label)
    metrics = {bench.tasks[kind].name: keys for kind, keys in bench.quality_metrics.items()}
    attach_quality(rows, find_runs(Path(cfg.paths.log_dir)), metrics)
    layout = "channels_last" if baseline.channels_last else "nchw"
    stem = f"results_{device.type}_{baseline.precision}_{layout}"
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    markdown = write_results(rows, out_dir, stem, _notes(bench, device, peaks, rows, load_at_start), baseline.label)
    print(markdown)  # plain print: rich would wrap the table lines at the terminal width
    print(f"Results: {out_dir / stem}.{{csv,md,png}}")


def _notes(
    bench: DictConfig, device: torch.device, peaks: dict[str, float], rows: list[BenchRow], load_at_start: float
) -> list[str]:
    """How the numbers were taken, printed above the table so it can be read on its own."""
    peak_text = ", ".join(f"{p} {f / 1e9:.0f} GFLOP/s" for p, f in peaks.items())
    reference_batch = {task.name: task.batch_size for task in bench.tasks.values()}
    reduced = sorted({f"{r.model} batch {r.batch_size}" for r in rows if r.batch_size != reference_batch[r.task]})
    return [
        f"profile `{bench.profile}` on {describe_device(device)}, torch {torch.__version__}; 1-min load average "
        f"{load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end on {os.cpu_count()} CPUs (above the CPU count: "
        "other processes shared the cores and slowed these numbers)",
        f"peak = {bench.peak_matmul.size}² matmul measured in this run: {peak_text}; MFU = achieved FLOP/s ÷ peak of the row's precision",
        "GFLOPs: forward of one image in eval mode (auxiliary heads excluded), 2 FLOPs per multiply-add "
        "(torch FlopCounterMode); train MFU counts 3× forward FLOPs",
        "img/s: batch ÷ median step time over the timed steps (iters = warm-up + timed); train step = "
        "forward + cross-entropy (aux heads included) + backward + SGD step; infer = eval mode under no_grad",
        "peak MiB: peak RSS above the level before the phase (CPU) / max_memory_allocated (CUDA)",
        "×tv = ours ÷ torchvision img/s (same variant); ×base = variant ÷ "
        f"{baseline_variant(bench).label} eager; compile s = first-step time minus median, inference + train",
        "val/test: mean ± std over seeds of trained runs under logs/ (blank if none)",
        "reduced from the reference batch for time: " + (", ".join(reduced) if reduced else "none"),
    ]


if __name__ == "__main__":
    set_repo_root()
    main()
