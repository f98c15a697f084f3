"""Benchmark results as tables and a plot, joined with the quality of trained runs found under ``logs/``.

CSV keeps raw numbers for later analysis; Markdown is what goes into ``docs/results.md``; the PNG
shows the speed/cost trade-off at a glance. Ratio columns are computed here, round by round from
the interleaved step times of the same run, because a ratio is only meaningful between
measurements taken under the same conditions.
"""

from __future__ import annotations

import csv
import datetime
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from visionbench.bench.serving import EAGER, ONNXRUNTIME, Serving
from visionbench.bench.speed import Measurement
from visionbench.results import TRAIN, Run, Stat

OURS = "ours"
TORCHVISION = "torchvision"


@dataclass(frozen=True)
class Quality:
    """A metric over seeds, as the run tables give it (``results.Stat``: mean ± sample standard
    deviation; no deviation from a single seed)."""

    metric: str
    stat: Stat

    def __str__(self) -> str:
        return f"{self.stat.format(3)} (n={self.stat.runs})"


@dataclass
class BenchRow:
    """One measured (or failed) network × task × variant, plus the columns derived from other rows."""

    model: str
    impl: str
    task: str
    variant: str
    batch_size: int
    image_size: tuple[int, int]
    warmup: int
    iters: int
    measurement: Measurement | None = None
    error: str | None = None
    precision: str = "fp32"
    train_mfu: float | None = None
    infer_mfu: float | None = None
    train_ratio_vs_torchvision: float | None = None
    infer_ratio_vs_torchvision: float | None = None
    train_ratio_vs_baseline: float | None = None
    infer_ratio_vs_baseline: float | None = None
    val_quality: Quality | None = None
    test_quality: Quality | None = None
    serving: Serving | None = None  # on the model's first row (ours, baseline) only
    serving_error: str | None = None


def machine_note(day: datetime.date, setup: str, load_at_start: float, load_at_end: float, cpus: int) -> str:
    """When and on what the numbers were taken, and whether other processes shared the machine: a
    1-min load average above the CPU count at either end says they did."""
    shared = (
        " (above the CPU count: other processes shared the cores and slowed these numbers)"
        if max(load_at_start, load_at_end) > cpus
        else ""
    )
    loads = f"1-min load average {load_at_start:.1f} at start, {load_at_end:.1f} at end on {cpus} CPUs"
    return f"measured {day.isoformat()}, {setup}; {loads}{shared}"


def add_mfu(rows: Sequence[BenchRow], peak_flops: Mapping[str, float]) -> None:
    """Fill the MFU columns against the peak of each row's precision (the best the run measured)."""
    for row in rows:
        if row.measurement is not None:
            peak = peak_flops[row.precision]
            row.train_mfu, row.infer_mfu = row.measurement.train_mfu(peak), row.measurement.infer_mfu(peak)


def above_peak(row: BenchRow) -> bool:
    """An MFU above 100 % means the peak was measured low (under load), not that the row beat it."""
    return any(mfu is not None and mfu > 1 for mfu in (row.train_mfu, row.infer_mfu))


def add_ratios(rows: Sequence[BenchRow], baseline_variant: str) -> None:
    """Fill the ratio columns: ours ÷ torchvision (same variant) and variant ÷ baseline (same network)."""
    by_key = {(r.model, r.impl, r.task, r.variant): r.measurement for r in rows if r.measurement is not None}
    for row in rows:
        if row.measurement is None:
            continue
        reference = by_key.get((row.model, TORCHVISION, row.task, row.variant)) if row.impl == OURS else None
        row.train_ratio_vs_torchvision, row.infer_ratio_vs_torchvision = _ratios(row.measurement, reference)
        baseline = by_key.get((row.model, row.impl, row.task, baseline_variant)) if row.variant != baseline_variant else None
        row.train_ratio_vs_baseline, row.infer_ratio_vs_baseline = _ratios(row.measurement, baseline)


def _ratios(m: Measurement, reference: Measurement | None) -> tuple[float | None, float | None]:
    if reference is None:
        return None, None
    return _speedup(m.train_step_s, reference.train_step_s), _speedup(m.infer_step_s, reference.infer_step_s)


def _speedup(seconds: Sequence[float], reference_seconds: Sequence[float]) -> float:
    """Median over rounds of reference time ÷ time: each round's two steps ran back to back."""
    return statistics.median(ref / s for s, ref in zip(seconds, reference_seconds, strict=True))


# --- quality of trained runs ---------------------------------------------------------------------


# Overrides that make a run's numbers incomparable with the task's reference: part of an epoch
# or of the evaluation, or another split.
PARTIAL_RUN = ("trainer.limit_", "trainer.overfit_batches", "trainer.fast_dev_run", "task.data.split.")


def is_full_run(run: Run) -> bool:
    """A training run on the task's whole reference split (debug and partial runs are not results)."""
    return run.kind == TRAIN and not any(key.lstrip("+~").startswith(PARTIAL_RUN) for key in run.overrides)


def aggregate_quality(runs: Iterable[Run], model: str, task: str, metric: str) -> Quality | None:
    """Mean ± std of ``metric`` over seeds of the matching full training runs (``visionbench.report.find_runs``,
    ``is_full_run``); a re-run of a seed counts once (latest)."""
    latest_per_seed: dict[object, Run] = {}
    for run in runs:
        if not is_full_run(run) or run.group_name("model") != model or run.group_name("task") != task or metric not in run.metrics:
            continue
        seed_key = run.seed if run.seed is not None else run.path  # an unknown seed is its own seed
        if seed_key not in latest_per_seed or run.finished_at > latest_per_seed[seed_key].finished_at:
            latest_per_seed[seed_key] = run
    values = [r.metrics[metric] for r in latest_per_seed.values()]
    return Quality(metric, Stat.of(values)) if values else None


def attach_quality(rows: Sequence[BenchRow], runs: Sequence[Run], metrics: Mapping[str, Mapping[str, str]]) -> None:
    """Fill val/test quality of our rows; ``metrics`` maps a task name to its ``{val: key, test: key}``."""
    for row in rows:
        keys = metrics.get(row.task)
        if row.impl != OURS or keys is None:
            continue
        row.val_quality = aggregate_quality(runs, row.model, row.task, keys["val"])
        row.test_quality = aggregate_quality(runs, row.model, row.task, keys["test"])


# --- output ----------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "model",
    "impl",
    "task",
    "variant",
    "batch_size",
    "image_size",
    "warmup",
    "iters",
    "params",
    "gflops_per_image",
    "train_images_per_s",
    "infer_images_per_s",
    "train_mfu",
    "infer_mfu",
    "mfu_above_peak",
    "train_peak_mem_mb",
    "infer_peak_mem_mb",
    "compile_s",
    "train_step_s",
    "infer_step_s",
    "train_ratio_vs_torchvision",
    "infer_ratio_vs_torchvision",
    "train_ratio_vs_baseline",
    "infer_ratio_vs_baseline",
    "val_metric",
    "val_mean",
    "val_std",
    "val_n",
    "test_metric",
    "test_mean",
    "test_std",
    "test_n",
    "error",
    "serving_threads",
    "latency_ms_eager",
    "latency_p95_ms_eager",
    "latency_ms_onnxruntime",
    "latency_p95_ms_onnxruntime",
    "latency_ratio_onnxruntime",
    "serving_images_per_s_eager",
    "serving_images_per_s_onnxruntime",
    "serving_ratio_onnxruntime",
    "latency_s_eager",
    "latency_s_onnxruntime",
    "serving_error",
]


def _record(row: BenchRow) -> dict[str, object]:
    m = row.measurement
    record: dict[str, object] = {
        "model": row.model,
        "impl": row.impl,
        "task": row.task,
        "variant": row.variant,
        "batch_size": row.batch_size,
        "image_size": "x".join(map(str, row.image_size)),
        "warmup": row.warmup,
        "iters": row.iters,
        "error": row.error,
        "train_ratio_vs_torchvision": row.train_ratio_vs_torchvision,
        "infer_ratio_vs_torchvision": row.infer_ratio_vs_torchvision,
        "train_ratio_vs_baseline": row.train_ratio_vs_baseline,
        "infer_ratio_vs_baseline": row.infer_ratio_vs_baseline,
    }
    if m is not None:
        record.update(
            {
                "params": m.params,
                "gflops_per_image": m.gflops_per_image,
                "train_images_per_s": m.train_images_per_s,
                "infer_images_per_s": m.infer_images_per_s,
                "train_mfu": row.train_mfu,
                "infer_mfu": row.infer_mfu,
                "mfu_above_peak": above_peak(row),
                "train_peak_mem_mb": m.train_peak_mem_mb,
                "infer_peak_mem_mb": m.infer_peak_mem_mb,
                "compile_s": m.compile_s,
                "train_step_s": " ".join(f"{t:.4f}" for t in m.train_step_s),
                "infer_step_s": " ".join(f"{t:.4f}" for t in m.infer_step_s),
            }
        )
    for prefix, quality in (("val", row.val_quality), ("test", row.test_quality)):
        if quality is not None:
            record.update(
                {
                    f"{prefix}_metric": quality.metric,
                    f"{prefix}_mean": quality.stat.mean,
                    f"{prefix}_std": quality.stat.std,
                    f"{prefix}_n": quality.stat.runs,
                }
            )
    record["serving_error"] = row.serving_error
    s = row.serving
    if s is not None:
        record |= {
            "serving_threads": s.threads,
            "latency_ratio_onnxruntime": s.onnxruntime_speedup("latency"),
            "serving_ratio_onnxruntime": s.onnxruntime_speedup("batch"),
        }
        for runtime in (EAGER, ONNXRUNTIME):
            record |= {
                f"latency_ms_{runtime}": s.latency_ms(runtime),
                f"latency_p95_ms_{runtime}": s.latency_p95_ms(runtime),
                f"serving_images_per_s_{runtime}": s.images_per_s(runtime),
                f"latency_s_{runtime}": " ".join(f"{t:.5f}" for t in s.latency_s[runtime]),
            }
    return record


def write_csv(rows: Sequence[BenchRow], path: Path) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in _record(row).items()})


_MD_COLUMNS = [
    "model",
    "impl",
    "task",
    "variant",
    "batch",
    "size",
    "iters",
    "params (M)",
    "GFLOPs/img",
    "train img/s",
    "infer img/s",
    "train MFU",
    "infer MFU",
    "train peak MiB",
    "infer peak MiB",
    "compile s",
    "train ×tv",
    "infer ×tv",
    "train ×base",
    "infer ×base",
    "val",
    "test",
]


_SERVING_COLUMNS = [
    "model",
    "task",
    "size",
    "batch-1 ms eager (median / p95)",
    "batch-1 ms ONNX Runtime (median / p95)",
    "latency ×ORT",
    "batch",
    "img/s eager",
    "img/s ONNX Runtime",
    "img/s ×ORT",
]


def render_markdown(rows: Sequence[BenchRow], notes: Sequence[str]) -> str:
    """A README-ready table preceded by the notes that say how the numbers were taken, then the
    serving table when serving was measured."""
    lines = [f"- {note}" for note in notes] + [""]
    lines += _table(_MD_COLUMNS, [_markdown_cells(row) for row in rows])
    served = [row for row in rows if row.serving is not None or row.serving_error is not None]
    if served:
        lines += ["", *_table(_SERVING_COLUMNS, [_serving_cells(row) for row in served])]
    return "\n".join(lines) + "\n"


def _table(columns: Sequence[str], cells: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|", *("| " + " | ".join(c) + " |" for c in cells)]


def _failed_cells(head: list[str], error: str | None, columns: Sequence[str]) -> list[str]:
    """A row that could not be measured: what it is, why, and empty cells for the rest."""
    return [*head, f"failed: {error}"] + [""] * (len(columns) - len(head) - 1)


def _serving_cells(row: BenchRow) -> list[str]:
    head = [row.model, row.task, "×".join(map(str, row.image_size))]
    s = row.serving
    if s is None:
        return _failed_cells(head, row.serving_error, _SERVING_COLUMNS)
    return [
        *head,
        f"{s.latency_ms(EAGER):.1f} / {s.latency_p95_ms(EAGER):.1f}",
        f"{s.latency_ms(ONNXRUNTIME):.1f} / {s.latency_p95_ms(ONNXRUNTIME):.1f}",
        f"{s.onnxruntime_speedup('latency'):.2f}",
        str(s.batch_size),
        f"{s.images_per_s(EAGER):.2f}",
        f"{s.images_per_s(ONNXRUNTIME):.2f}",
        f"{s.onnxruntime_speedup('batch'):.2f}",
    ]


def _markdown_cells(row: BenchRow) -> list[str]:
    head = [
        row.model,
        row.impl,
        row.task,
        row.variant,
        str(row.batch_size),
        "×".join(map(str, row.image_size)),
        f"{row.warmup}+{row.iters}",
    ]
    m = row.measurement
    if m is None:
        return _failed_cells(head, row.error, _MD_COLUMNS)
    return [
        *head,
        f"{m.params / 1e6:.2f}",
        f"{m.gflops_per_image:.2f}",
        f"{m.train_images_per_s:.2f}",
        f"{m.infer_images_per_s:.2f}",
        _mfu_cell(row.train_mfu),
        _mfu_cell(row.infer_mfu),
        f"{m.train_peak_mem_mb:.0f}",
        f"{m.infer_peak_mem_mb:.0f}",
        _fmt(m.compile_s, "{:.0f}"),
        _fmt(row.train_ratio_vs_torchvision, "{:.2f}"),
        _fmt(row.infer_ratio_vs_torchvision, "{:.2f}"),
        _fmt(row.train_ratio_vs_baseline, "{:.2f}"),
        _fmt(row.infer_ratio_vs_baseline, "{:.2f}"),
        _quality_cell(row.val_quality),
        _quality_cell(row.test_quality),
    ]


MFU_ABOVE_PEAK = "⚠"


def _mfu_cell(mfu: float | None) -> str:
    if mfu is None:
        return ""
    return f"{mfu:.0%} {MFU_ABOVE_PEAK}" if mfu > 1 else f"{mfu:.0%}"


def mfu_warning(rows: Sequence[BenchRow]) -> str | None:
    """The note under a table with MFUs above 100 %: which rows, and why they cannot be taken at face value."""
    flagged = [f"{r.model} ({r.impl}, {r.variant})" for r in rows if above_peak(r)]
    if not flagged:
        return None
    return (
        f"{MFU_ABOVE_PEAK} MFU above 100 % ({', '.join(flagged)}): the row ran faster than the best matmul and "
        "convolution this run measured, so that peak was taken under heavier load than the row (or the row's kernels "
        "beat both); these MFUs are not trustworthy"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else spec.format(value)


def _quality_cell(quality: Quality | None) -> str:
    return "" if quality is None else f"{quality.metric} {quality}"


def write_plot(rows: Sequence[BenchRow], path: Path, baseline_variant: str) -> None:
    """Train and inference images/s against forward GFLOPs (log-log), one labelled point per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.measurement is not None and r.variant == baseline_variant]
    task_colors = {task: f"C{i}" for i, task in enumerate(dict.fromkeys(r.task for r in points))}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
    for ax, phase in zip(axes, ("train", "infer"), strict=True):
        for row in points:
            m = row.measurement
            assert m is not None
            ips = m.train_images_per_s if phase == "train" else m.infer_images_per_s
            marker = "o" if row.impl == OURS else "x"
            ax.scatter(m.gflops_per_image, ips, marker=marker, color=task_colors[row.task])
            ax.annotate(_point_label(row), (m.gflops_per_image, ips), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("forward GFLOPs per image (2 FLOPs per multiply-add)")
        ax.set_ylabel(f"{phase} images/s")
        ax.set_title(f"{phase} (○ ours, × torchvision; colour = task: {', '.join(task_colors)})")
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _point_label(row: BenchRow) -> str:
    label = row.model + (" (tv)" if row.impl == TORCHVISION else "")
    quality = row.test_quality or row.val_quality
    if quality is not None and not math.isnan(quality.stat.mean):
        label += f"\n{quality.metric} {quality.stat.mean:.3f}"
    return label


def write_results(rows: Sequence[BenchRow], out_dir: Path, stem: str, notes: Sequence[str], baseline_variant: str) -> str:
    """Write ``<stem>.csv``, ``.md`` and ``.png`` into ``out_dir``; return the Markdown for printing."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(rows, notes)
    write_csv(rows, out_dir / f"{stem}.csv")
    (out_dir / f"{stem}.md").write_text(markdown)
    write_plot(rows, out_dir / f"{stem}.png", baseline_variant)
    return markdown


def replace_generated_section(doc: Path, name: str, markdown: str) -> None:
    """Put ``markdown`` between the ``<!-- begin: name -->`` / ``<!-- end: name -->`` markers of ``doc``,
    appending a marked section if there is none, so the measured tables are regenerated, not pasted,
    and the hand-written text around them is kept."""
    begin, end = f"<!-- begin: {name} (generated by `make bench`; edits here are overwritten) -->", f"<!-- end: {name} -->"
    text = doc.read_text() if doc.is_file() else ""
    section = f"{begin}\n{markdown.rstrip()}\n{end}"
    start = text.find(begin.split(" (")[0])
    stop = text.find(end, start)
    text = text[:start] + section + text[stop + len(end) :] if start >= 0 and stop >= 0 else text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
