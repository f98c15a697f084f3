"""`make bench`: speed of every configured network, written as CSV + Markdown + PNG beside Hydra's config.

Usage: ``python src/bench.py`` (quick CPU profile), ``python src/bench.py bench=full`` (GPU node),
``python src/bench.py bench.models=[resnet50] 'bench.knobs=[channels_last,precision,compile]'``;
``results_doc=docs/results.md`` (as `make bench` does) also rewrites that file's generated section.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from visionbench.bench.serving import EAGER, ONNXRUNTIME, measure_serving
from visionbench.bench.speed import Job, Measurement, baseline_variant, describe_device, measure_together, plan_jobs
from visionbench.bench.tables import (
    BenchRow,
    add_mfu,
    add_ratios,
    attach_quality,
    machine_note,
    mfu_warning,
    replace_generated_section,
    write_results,
)
from visionbench.cli import CONFIG_DIR, report_errors, start_command
from visionbench.errors import ConfigError
from visionbench.export.runtime import EXPORT_PACKAGES, require
from visionbench.measure import Peak, peak_flops
from visionbench.results import find_runs

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    report_errors(lambda: bench_all(cfg))


def bench_all(cfg: DictConfig) -> None:
    """Measure every model's jobs together with a progress bar (then its serving cost), then write and print the tables."""
    bench, load_at_start = cfg.bench, os.getloadavg()[0]
    serving = bench.get("serving")
    if serving is not None:
        require(*EXPORT_PACKAGES, purpose="The bench's serving columns (bench.serving; bench.serving=null leaves them out)")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    groups = plan_jobs(bench)
    baseline = baseline_variant(bench)
    precisions = sorted({job.variant.precision for group in groups for job in group})
    peak_samples: dict[str, list[Peak]] = {p: [] for p in precisions}

    def sample_peaks() -> None:
        """Between models as well as at the start: the best of all samples is the peak least slowed by load."""
        for p in precisions:
            peak_samples[p].append(peak_flops(device, p, bench.peak_matmul.size, bench.peak_matmul.repeats))

    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task("bench", total=len(groups))
        sample_peaks()
        for group in groups:
            progress.update(bar, description=f"{group[0].model} ({len(group)} measured together)")
            measured = [_row(job, outcome) for job, outcome in zip(group, measure_together(group, device), strict=True)]
            sample_peaks()
            if serving is not None:
                progress.update(bar, description=f"{group[0].model} serving: eager vs ONNX Runtime")
                _add_serving(measured[0], group[0], serving)
            rows += measured
            progress.advance(bar)

    peaks = {p: max(samples).flops for p, samples in peak_samples.items()}
    add_mfu(rows, peaks)
    add_ratios(rows, baseline.label)
    metrics = {bench.tasks[kind].name: keys for kind, keys in bench.quality_metrics.items()}
    attach_quality(rows, find_runs(Path(cfg.paths.log_dir)), metrics)
    layout = "channels_last" if baseline.channels_last else "nchw"
    stem = f"results_{device.type}_{baseline.precision}_{layout}"
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    notes = _notes(bench, device, peak_samples, rows, load_at_start)
    markdown = write_results(rows, out_dir, stem, notes, baseline.label)
    print(markdown)  # plain print: rich would wrap the table lines at the terminal width
    print(f"Results: {out_dir / stem}.{{csv,md,png}}")
    if cfg.results_doc:
        replace_generated_section(Path(cfg.results_doc), f"bench {stem}", markdown)
        print(f"Updated the `bench {stem}` section of {cfg.results_doc}")


def _row(job: Job, outcome: Measurement | Exception) -> BenchRow:
    w = job.workload
    row = BenchRow(
        job.model, job.impl, job.task, job.variant.label, w.batch_size, w.image_size, w.warmup, w.iters, precision=job.variant.precision
    )
    if isinstance(outcome, Exception):
        row.error = f"{type(outcome).__name__}: {outcome}".splitlines()[0]
        result = row.error
    else:
        row.measurement = outcome
        result = f"train {outcome.train_images_per_s:.2f} img/s, infer {outcome.infer_images_per_s:.2f} img/s"
    log.info("%s (%s, %s): %s", job.model, job.impl, job.variant.label, result)
    return row


def _add_serving(row: BenchRow, job: Job, serving: DictConfig) -> None:
    """The serving cost of the model's baseline network on its row; a network that fails to export or run
    gets the error there and leaves the other models' numbers be."""
    try:
        row.serving = measure_serving(job, serving.latency_calls, serving.warmup)
    except ConfigError:
        raise
    except Exception as error:
        row.serving_error = f"{type(error).__name__}: {error}".splitlines()[0]
        log.info("%s serving: %s", job.model, row.serving_error)
    else:
        log.info(
            "%s serving: batch-1 %.1f ms eager, %.1f ms ONNX Runtime",
            job.model,
            row.serving.latency_ms(EAGER),
            row.serving.latency_ms(ONNXRUNTIME),
        )


def _notes(
    bench: DictConfig, device: torch.device, peak_samples: dict[str, list[Peak]], rows: list[BenchRow], load_at_start: float
) -> list[str]:
    """How the numbers were taken, printed above the table so it can be read on its own."""
    peak_text = "; ".join(
        f"{p} {max(s).flops / 1e9:.0f} GFLOP/s by {max(s).kernel} (samples {min(s).flops / 1e9:.0f}–{max(s).flops / 1e9:.0f})"
        for p, s in peak_samples.items()
    )
    reference_batch = {task.name: task.batch_size for task in bench.tasks.values()}
    reduced = sorted({f"{r.model} batch {r.batch_size}" for r in rows if r.batch_size != reference_batch[r.task]})
    notes = [
        machine_note(
            datetime.date.today(),
            f"profile `{bench.profile}` on {describe_device(device)}, torch {torch.__version__}",
            load_at_start,
            os.getloadavg()[0],
            os.cpu_count() or 1,
        ),
        f"peak = the fastest of this run's {bench.peak_matmul.size}² matmuls and {bench.peak_matmul.size // 16}-channel "
        f"3×3 convolutions (the BLAS and the convolution library reach different fractions of a chip), "
        f"{bench.peak_matmul.repeats} of each timed at the start and after every model: {peak_text}; "
        "MFU = achieved FLOP/s ÷ peak of the row's precision",
        "GFLOPs: forward of one image in eval mode (auxiliary heads excluded), 2 FLOPs per multiply-add "
        "(torch FlopCounterMode); train MFU counts 3× forward FLOPs",
        "img/s: batch ÷ median step time; the networks of one model (ours, torchvision's, the knobs) run their "
        "steps in turn, one each per round (iters = warm-up steps, alone + interleaved rounds); train step = "
        "forward + cross-entropy (aux heads included) + backward + SGD step; infer = eval mode under no_grad",
        "peak MiB: peak RSS above the level before the warm-up steps (CPU) / max_memory_allocated (CUDA)",
        "×tv = ours ÷ torchvision img/s, ×base = variant ÷ "
        f"{baseline_variant(bench).label} eager: median over rounds of the two steps' time ratio; compile s = "
        "first-step time minus median, inference + train",
        "val/test: mean ± std over seeds of trained runs under logs/ (blank if none)",
        "reduced from the reference batch for time: " + (", ".join(reduced) if reduced else "none"),
    ]
    if bench.get("serving") is not None:
        notes.append(
            f"serving (second table): on the CPU whatever the device, {torch.get_num_threads()} threads each; eager = "
            "the network in eval mode under no_grad, ONNX Runtime = the same network exported as src/export.py does "
            f"(torch.onnx dynamo exporter, intra-op threads = torch's); batch-1 latency over {bench.serving.latency_calls} "
            "warm calls (median / nearest-rank p95), img/s at the row's batch over its iters; the two runtimes' calls "
            "alternate, ×ORT = median over rounds of eager ÷ ONNX Runtime time"
        )
    warning = mfu_warning(rows)
    return notes + ([warning] if warning else [])


if __name__ == "__main__":
    start_command("bench")
    main()
