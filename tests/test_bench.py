"""The speed benchmark: measurement fields, FLOP convention, planning from config, tables and quality lookup."""

from __future__ import annotations

import csv
import datetime
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from visionbench import measure
from visionbench.bench.serving import EAGER, ONNXRUNTIME, Serving, measure_serving
from visionbench.bench.speed import Job, Measurement, Variant, Workload, measure_together, plan_jobs
from visionbench.bench.tables import (
    BenchRow,
    add_mfu,
    add_ratios,
    aggregate_quality,
    attach_quality,
    machine_note,
    mfu_warning,
    render_markdown,
    replace_generated_section,
    write_results,
)
from visionbench.errors import ConfigError
from visionbench.measure import count_parameters, forward_flops_per_image, interleaved_step_times, peak_matmul_flops
from visionbench.models.base import AuxOutput
from visionbench.results import Run, Stat, find_runs

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


class TinyClassifier(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x).mean((2, 3)))


class TinyAuxClassifier(TinyClassifier):
    """Returns an AuxOutput in train mode, like Inception v1."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__(num_classes)
        self.aux_head = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        features = self.conv(x)
        logits = self.head(features.mean((2, 3)))
        if self.training:
            return AuxOutput(logits, (self.aux_head(features.flatten(1)),), 0.3)
        return logits


class TinySegmenter(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _job(net_type: type[nn.Module], task_kind: str = "classification", impl: str = "ours", **variant: object) -> Job:
    workload = Workload(task_kind, num_classes=3, image_size=(8, 8), batch_size=2, warmup=1, iters=2)
    return Job("tiny", impl, "t", workload, Variant(**variant), net_type)


def _measure(net_type: type[nn.Module], task_kind: str = "classification", **variant: object) -> Measurement:
    (m,) = measure_together([_job(net_type, task_kind, **variant)], CPU)
    assert isinstance(m, Measurement)
    return m


def test_measure_returns_positive_throughput_and_exact_parameter_count() -> None:
    m = _measure(TinyClassifier)
    assert m.params == sum(p.numel() for p in TinyClassifier().parameters()) == count_parameters(TinyClassifier())
    assert m.train_images_per_s > 0 and m.infer_images_per_s > 0 and len(m.train_step_s) == len(m.infer_step_s) == 2
    assert m.gflops_per_image > 0
    assert m.train_peak_mem_mb >= 0 and m.infer_peak_mem_mb >= 0
    assert m.compile_s is None


def test_train_mfu_counts_three_forward_passes() -> None:
    m = _measure(TinyClassifier)
    assert m.train_mfu(1e9) == pytest.approx(3 * m.gflops_per_image * 1e9 * m.train_images_per_s / 1e9)
    assert m.infer_mfu(1e9) == pytest.approx(m.gflops_per_image * 1e9 * m.infer_images_per_s / 1e9)


def test_a_failing_network_gets_its_error_and_the_others_their_measurements() -> None:
    def broken() -> nn.Module:
        raise RuntimeError("boom")

    ok, failed = measure_together([_job(TinyClassifier), _job(broken, impl="torchvision")], CPU)  # type: ignore[arg-type]
    assert isinstance(ok, Measurement) and isinstance(failed, RuntimeError)


def test_interleaved_rounds_take_one_step_of_each_in_turn() -> None:
    calls: list[str] = []
    times = interleaved_step_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, device=CPU)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_peak_is_the_best_of_repeated_matmuls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "step_times", lambda step, warmup, iters, device: [2.0, 0.5, 4.0][:iters])
    assert peak_matmul_flops(CPU, "fp32", size=8, repeats=3) == 2 * 8**3 / 0.5


def test_the_peak_is_the_faster_of_the_matmul_and_the_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """On AMD EPYC the fp32 matmul (MKL) stops short of the chip while oneDNN's convolutions do not: an MFU
    against the matmul alone read 169 % there. The peak is the best the device was seen to do."""
    monkeypatch.setattr(measure, "peak_matmul_flops", lambda *args: 210e9)
    monkeypatch.setattr(measure, "peak_conv_flops", lambda *args: 355e9)
    assert measure.peak_flops(CPU) == (355e9, "conv3x3")
    monkeypatch.setattr(measure, "peak_conv_flops", lambda *args: 100e9)
    assert measure.peak_flops(CPU) == (210e9, "matmul")


def test_the_convolution_peak_counts_two_flops_per_multiply_add(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "step_times", lambda step, warmup, iters, device: [2.0, 0.5][:iters])
    channels = 256 // 16
    assert measure.peak_conv_flops(CPU, "fp32", size=256, repeats=2) == 2 * 8 * channels * channels * 9 * 56 * 56 / 0.5


def test_measure_trains_networks_with_aux_heads_and_segmentation_outputs() -> None:
    assert _measure(TinyAuxClassifier).train_images_per_s > 0
    assert _measure(TinySegmenter, task_kind="segmentation").train_images_per_s > 0


def test_measure_runs_channels_last_and_bf16_variants() -> None:
    assert _measure(TinyClassifier, channels_last=True, precision="bf16").train_images_per_s > 0


def test_linear_flops_are_two_per_multiply_add() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    assert forward_flops_per_image(net, (4, 4)) == 2 * (3 * 4 * 4) * 5


def test_conv_flops_are_two_per_multiply_add() -> None:
    net = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert forward_flops_per_image(net, (16, 10)) == 2 * (16 * 10) * 8 * (3 * 3 * 3)


def test_flops_exclude_auxiliary_heads_and_keep_training_mode() -> None:
    net = TinyAuxClassifier().train()
    assert forward_flops_per_image(net, (8, 8)) == forward_flops_per_image(TinyClassifier(), (8, 8))
    assert net.training


def test_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="precision"):
        Variant(precision="fp8")


def test_zero_warmup_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"bench\.warmup"):
        Workload("classification", 3, (8, 8), batch_size=2, warmup=0, iters=2)


# --- planning from config ------------------------------------------------------------------------


def _bench_config(**overrides: object) -> OmegaConf:
    bench = OmegaConf.load(REPO / "conf" / "bench.yaml").bench
    bench.profile = "test"
    return OmegaConf.merge(bench, overrides)


def test_plan_adds_knob_rows_after_the_baseline_and_builds_nets_for_the_task() -> None:
    bench = _bench_config(models=["resnet_small"], knob_models=["resnet_small"], knobs=["channels_last", "precision", "compile"])
    (jobs,) = plan_jobs(bench)
    assert [j.variant.label for j in jobs] == ["fp32", "fp32+channels_last", "bf16", "fp32+compile"]
    assert {(j.impl, j.task, j.workload.image_size, j.workload.num_classes, j.workload.batch_size) for j in jobs} == {
        ("ours", "simpsons", (128, 128), 19, 32)  # class count and size from task=simpsons, composed as train.py does
    }
    net = jobs[0].make_net()
    assert net(torch.randn(1, 3, 128, 128)).shape == (1, 19)


def test_the_real_bench_tasks_are_read_from_their_task_configs() -> None:
    groups = plan_jobs(_bench_config(models=["cnn", "fcn"], knob_models=[]))
    workloads = {g[0].task: (g[0].workload.num_classes, g[0].workload.image_size) for g in groups}
    assert workloads == {"simpsons": (19, (128, 128)), "voc": (21, (320, 480))}


def test_plan_applies_per_model_overrides() -> None:
    bench = _bench_config(models=["cnn"], knob_models=[], per_model={"cnn": {"batch_size": 4, "iters": 7}})
    ((job,),) = plan_jobs(bench)
    assert (job.workload.batch_size, job.workload.iters, job.workload.warmup) == (4, 7, 1)


def test_plan_rejects_unknown_models_and_knobs() -> None:
    with pytest.raises(ConfigError, match=r"model=nosuchnet.*(?s:.*)cnn"):  # the paragraph lists the models there are
        plan_jobs(_bench_config(models=["nosuchnet"]))
    with pytest.raises(ConfigError, match=r"bench\.knobs"):
        plan_jobs(_bench_config(models=["cnn"], knobs=["turbo"]))


# --- ratios, quality, output ---------------------------------------------------------------------


def _fake_measurement(train: float | list[float], infer: float | list[float], gflops: float = 1.0) -> Measurement:
    """Images/s per round for a batch of 1 (a number: the same in all three rounds)."""

    def seconds(ips: float | list[float]) -> tuple[float, ...]:
        return tuple(1 / v for v in (ips if isinstance(ips, list) else [ips] * 3))

    return Measurement(
        params=1000,
        gflops_per_image=gflops,
        batch_size=1,
        train_step_s=seconds(train),
        infer_step_s=seconds(infer),
        train_peak_mem_mb=100.0,
        infer_peak_mem_mb=50.0,
        compile_s=None,
    )


def _row(model: str, impl: str, variant: str, train: float | list[float], infer: float | list[float], task: str = "simpsons") -> BenchRow:
    return BenchRow(model, impl, task, variant, 32, (128, 128), 1, 3, measurement=_fake_measurement(train, infer))


def test_ratio_columns_compare_with_torchvision_and_with_the_baseline() -> None:
    rows = [
        _row("resnet50", "ours", "fp32", train=10, infer=40),
        _row("resnet50", "torchvision", "fp32", train=8, infer=50),
        _row("resnet50", "ours", "fp32+channels_last", train=12, infer=60),
        BenchRow("vgg19", "ours", "simpsons", "fp32", 8, (128, 128), 1, 3, error="RuntimeError: boom"),
    ]
    add_ratios(rows, baseline_variant="fp32")
    ours, twin, knob, failed = rows
    assert (ours.train_ratio_vs_torchvision, ours.infer_ratio_vs_torchvision) == (pytest.approx(1.25), pytest.approx(0.8))
    assert ours.train_ratio_vs_baseline is None and twin.train_ratio_vs_torchvision is None
    assert (knob.train_ratio_vs_baseline, knob.infer_ratio_vs_baseline) == (pytest.approx(1.2), pytest.approx(1.5))
    assert knob.train_ratio_vs_torchvision is None  # no torchvision row with channels_last
    assert failed.train_ratio_vs_baseline is None


def test_ratios_are_the_median_of_the_rounds_ratios_not_a_ratio_of_medians() -> None:
    # Ours runs at half torchvision's speed in every round, but the load differs between rounds.
    rows = [_row("resnet50", "ours", "fp32", train=[5, 1, 4], infer=1), _row("resnet50", "torchvision", "fp32", train=[10, 2, 8], infer=1)]
    add_ratios(rows, "fp32")
    assert rows[0].train_ratio_vs_torchvision == pytest.approx(0.5)


def test_mfu_above_100_percent_is_flagged_in_the_table_and_a_note() -> None:
    rows = [_row("cnn", "ours", "fp32", train=10, infer=40), _row("resnet50", "ours", "bf16", train=1, infer=40)]
    rows[1].precision = "bf16"
    add_mfu(rows, {"fp32": 1e12, "bf16": 35e9})  # resnet50: 40 GFLOP/s of inference against a 35 GFLOP/s peak
    assert rows[1].infer_mfu == pytest.approx(40 / 35) and rows[0].infer_mfu == pytest.approx(0.04)
    warning = mfu_warning(rows)
    assert warning is not None and "resnet50 (ours, bf16)" in warning and "cnn" not in warning
    markdown = render_markdown(rows, [warning])
    assert "| 114% ⚠ |" in markdown and "| 4% |" in markdown
    assert mfu_warning(rows[:1]) is None


def test_the_generated_section_of_a_doc_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nHand-written.\n")
    replace_generated_section(doc, "bench cpu", "| old |\n")
    replace_generated_section(doc, "bench cpu", "| new |\n")
    text = doc.read_text()
    assert text.startswith("# Results\n\nHand-written.\n") and "| new |" in text and "| old |" not in text
    assert text.count("<!-- begin: bench cpu") == 1 and text.rstrip().endswith("<!-- end: bench cpu -->")


def _write_run(root: Path, name: str, model: str, task: str, seed: int | None, metrics: dict | str | None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"model": {"name": model}, "task": {"name": task}, "seed": seed}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    if metrics is not None:
        (run / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return run


def test_quality_is_mean_and_std_over_seeds_of_matching_runs(tmp_path: Path) -> None:
    for seed, acc in [(1, 0.5), (2, 0.9), (3, 1.0)]:
        _write_run(tmp_path, f"train/runs/s{seed}", "cnn", "simpsons", seed, {"val/acc_best": acc, "test/acc": acc - 0.1})
    rerun = _write_run(tmp_path, "train/runs/s1_again", "cnn", "simpsons", 1, {"val/acc_best": 0.8, "test/acc": 0.7})
    os.utime(rerun / "metrics.json", (4e9, 4e9))  # the later run of seed 1 replaces the earlier one
    _write_run(tmp_path, "other_model", "vgg19", "simpsons", 1, {"val/acc_best": 0.1})
    _write_run(tmp_path, "other_task", "cnn", "voc", 1, {"val/acc_best": 0.1})
    _write_run(tmp_path, "crashed", "cnn", "simpsons", 4, None)
    smoke = _write_run(tmp_path, "debug/runs/fdr", "cnn", "simpsons", 6, {"val/acc_best": 0.0})
    (smoke / ".hydra" / "overrides.yaml").write_text("- debug=fdr\n")  # a smoke test, not a result
    for name, override in [("few_batches", "trainer.limit_train_batches=3"), ("other_split", "task.data.split.test_source=kaggle")]:
        partial = _write_run(tmp_path, f"train/runs/{name}", "cnn", "simpsons", 7, {"val/acc_best": 0.0})
        (partial / ".hydra" / "overrides.yaml").write_text(f"- {override}\n")  # not comparable with the reference
    _write_run(tmp_path, "corrupt", "cnn", "simpsons", 5, "{not json")
    (tmp_path / "bench" / "2026" / ".hydra").mkdir(parents=True)  # a bench run: config without `model`
    (tmp_path / "bench" / "2026" / ".hydra" / "config.yaml").write_text("bench: {profile: quick}\n")

    runs = find_runs(tmp_path)
    val = aggregate_quality(runs, "cnn", "simpsons", "val/acc_best")
    assert val is not None and val.stat.runs == 3
    assert val.stat.mean == pytest.approx(0.9) and val.stat.std == pytest.approx(0.1)
    assert str(val) == "0.900 ± 0.100 (n=3)"
    assert aggregate_quality(runs, "cnn", "simpsons", "test/miou") is None
    assert aggregate_quality(runs, "fpn", "voc", "val/miou_best") is None


def test_quality_is_attached_to_our_rows_only(tmp_path: Path) -> None:
    config = {"model": {"name": "resnet50"}, "task": {"name": "simpsons"}, "seed": 0}
    runs = [Run(tmp_path, {}, config, {"val/acc_best": 0.9, "test/acc": 0.85})]
    rows = [_row("resnet50", "ours", "fp32", 1, 1), _row("resnet50", "torchvision", "fp32", 1, 1)]
    attach_quality(rows, runs, {"simpsons": {"val": "val/acc_best", "test": "test/acc"}})
    assert rows[0].test_quality is not None and rows[0].test_quality.stat == Stat(0.85, None)  # one seed: no deviation
    assert str(rows[0].test_quality) == "0.850 (n=1)"
    assert rows[1].val_quality is None


def test_results_are_written_as_csv_markdown_and_png(tmp_path: Path) -> None:
    rows = [
        _row("cnn", "ours", "fp32", 20, 80, task="simpsons"),
        _row("resnet50", "ours", "fp32", 10, 40),
        _row("resnet50", "torchvision", "fp32", 8, 50),
        _row("fcn", "ours", "fp32", 2, 6, task="voc"),
        BenchRow("vgg19", "ours", "simpsons", "fp32", 8, (128, 128), 1, 3, error="RuntimeError: boom"),
    ]
    add_ratios(rows, "fp32")
    markdown = write_results(rows, tmp_path, "results_cpu_fp32_nchw", ["a note"], baseline_variant="fp32")

    with (tmp_path / "results_cpu_fp32_nchw.csv").open() as f:
        records = list(csv.DictReader(f))
    assert [r["model"] for r in records] == ["cnn", "resnet50", "resnet50", "fcn", "vgg19"]
    assert float(records[1]["train_ratio_vs_torchvision"]) == pytest.approx(1.25)
    assert records[4]["error"] == "RuntimeError: boom" and records[4]["train_images_per_s"] == ""
    assert (tmp_path / "results_cpu_fp32_nchw.md").read_text() == markdown
    assert "- a note" in markdown and "| resnet50 | torchvision |" in markdown and "failed: RuntimeError" in markdown
    assert (tmp_path / "results_cpu_fp32_nchw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serving_times_eager_and_onnx_runtime_in_alternation_at_batch_1_and_the_bench_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rounds: list[tuple[list[str], int]] = []
    interleaved = measure.interleaved_step_times

    def recorded(steps: dict, rounds_: int, device: torch.device) -> dict[str, list[float]]:
        rounds.append((list(steps), rounds_))
        return interleaved(steps, rounds_, device)

    monkeypatch.setattr("visionbench.bench.serving.interleaved_step_times", recorded)
    serving = measure_serving(_job(TinyAuxClassifier), latency_calls=5, warmup=1)  # exported in eval mode: no aux heads
    assert rounds == [([EAGER, ONNXRUNTIME], 5), ([EAGER, ONNXRUNTIME], 2)]  # batch-1 calls, then the job's iters
    assert {len(v) for v in serving.latency_s.values()} == {5} and serving.batch_size == 2
    assert serving.threads == torch.get_num_threads()
    for runtime in (EAGER, ONNXRUNTIME):
        assert 0 < serving.latency_ms(runtime) <= serving.latency_p95_ms(runtime) and serving.images_per_s(runtime) > 0


def _serving(eager_ms: list[float], ort_ms: list[float], batch_s: tuple[float, float] = (0.5, 0.25)) -> Serving:
    return Serving(
        latency_s={EAGER: tuple(t / 1e3 for t in eager_ms), ONNXRUNTIME: tuple(t / 1e3 for t in ort_ms)},
        batch_s={EAGER: (batch_s[0],) * 3, ONNXRUNTIME: (batch_s[1],) * 3},
        batch_size=32,
        threads=2,
    )


def test_serving_latency_is_the_median_and_nearest_rank_p95_and_the_speedup_a_median_of_round_ratios() -> None:
    serving = _serving(eager_ms=[float(t) for t in range(1, 21)], ort_ms=[t / 2 for t in range(1, 21)])
    assert serving.latency_ms(EAGER) == pytest.approx(10.5) and serving.latency_p95_ms(EAGER) == pytest.approx(19)
    assert serving.onnxruntime_speedup("latency") == pytest.approx(2) and serving.images_per_s(ONNXRUNTIME) == pytest.approx(128)
    assert _serving([10.0], [30.0]).latency_p95_ms(EAGER) == pytest.approx(10)  # one call is its own p95


def test_serving_columns_are_written_beside_eager_and_onnx_runtime_in_csv_and_a_markdown_table(tmp_path: Path) -> None:
    rows = [_row("cnn", "ours", "fp32", 20, 80), _row("fcn", "ours", "fp32", 2, 6, task="voc")]
    rows[0].serving = _serving([10.0, 12.0, 30.0], [4.0, 5.0, 6.0])
    rows[1].serving_error = "RuntimeError: export failed"
    markdown = write_results(rows, tmp_path, "results", [], baseline_variant="fp32")
    with (tmp_path / "results.csv").open() as f:
        cnn, fcn = csv.DictReader(f)
    assert float(cnn["latency_ms_eager"]) == pytest.approx(12) and float(cnn["latency_p95_ms_onnxruntime"]) == pytest.approx(6)
    assert float(cnn["serving_images_per_s_onnxruntime"]) == pytest.approx(128) and cnn["serving_threads"] == "2"
    assert fcn["serving_error"] == "RuntimeError: export failed" and fcn["latency_ms_eager"] == ""
    assert "| cnn | simpsons | 128×128 | 12.0 / 30.0 | 5.0 / 6.0 | 2.50 | 32 | 64.00 | 128.00 | 2.00 |" in markdown
    assert "| fcn | voc | 128×128 | failed: RuntimeError: export failed |" in markdown


@pytest.mark.bench
def test_bench_cli_writes_results_for_a_tiny_run(tmp_path: Path) -> None:
    overrides = [
        f"paths.log_dir={tmp_path}",
        "device=cpu",
        "bench.models=[cnn]",
        "bench.knob_models=[cnn]",
        "+bench.tasks.classification.input_size=[32,32]",
        "bench.tasks.classification.batch_size=2",
        "bench.peak_matmul.size=256",
        "bench.iters=1",
        f"results_doc={tmp_path / 'results.md'}",
    ]
    result = subprocess.run([sys.executable, str(REPO / "src" / "bench.py"), *overrides], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (out_dir,) = (tmp_path / "bench").iterdir()
    assert {p.suffix for p in out_dir.glob("results_cpu_fp32_nchw.*")} == {".csv", ".md", ".png"}
    assert "| cnn | ours | simpsons | bf16 |" in result.stdout
    assert "| cnn | ours | simpsons | bf16 |" in (tmp_path / "results.md").read_text()
    assert "| cnn | simpsons | 32×32 |" in result.stdout  # the serving table


@pytest.fixture
def process_wide_torch_settings() -> Iterator[None]:
    """The benchmark sets its process's thread count, denormal flushing and Lightning's log level
    (right for the program); an in-process call must not leave them to the tests that follow."""
    threads, level = torch.get_num_threads(), logging.getLogger("lightning.pytorch").level
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
    logging.getLogger("lightning.pytorch").setLevel(level)


@pytest.mark.slow
def test_the_data_bench_runs_every_measurement_and_tabulates_it(tmp_path: Path, process_wide_torch_settings: None) -> None:
    """The data-path benchmark itself, on tiny settings (its targets are checked by ``pytest -m bench``)."""
    from visionbench.bench.data_speed import END_TO_END_MODELS, markdown, run

    steps: list[str] = []
    result = run(
        tmp_path,
        image_size=32,
        source_sizes=(40,),
        loader_workers=(0,),
        loader_batches=2,
        rounds=1,
        train_batches=1,
        warmup=1,
        growth_per_class=(110,),
        growth_size=24,
        progress=lambda step, total: steps.append(step),
    )
    assert len(steps) == 1 + 1 + len(END_TO_END_MODELS) + 1
    rates = result.loader[0]
    assert (rates.source_size, rates.num_workers) == (40, 0) and min(rates.pil, rates.cached, rates.cached_no_augment) > 0
    assert set(result.train_over_model) == set(END_TO_END_MODELS) and all(v > 0 for v in result.train_over_model.values())
    table = markdown(result)
    assert "40-px JPEGs, 0 workers" in table and "resnet50" in table and "MiB" in table


def test_the_in_run_throughput_warns_when_its_mfu_exceeds_the_measured_peak(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from visionbench.callbacks.throughput import TrainingThroughput

    clock = iter([0.0, 1.0])
    monkeypatch.setattr("visionbench.callbacks.throughput.time.perf_counter", lambda: next(clock))
    callback = TrainingThroughput(warmup_steps=0)
    callback.flops_per_image, callback.peak_flops = 1.0, 10.0  # 4 images/s × 3 FLOPs = 12 FLOP/s > 10
    logged: dict[str, float] = {}
    module = SimpleNamespace(device=CPU, log_dict=lambda values, **_: logged.update(values))
    for step in range(2):
        callback.on_train_batch_end(None, module, None, (torch.zeros(4, 3, 8, 8), torch.zeros(4)), step)  # type: ignore[arg-type]
    callback.on_train_epoch_end(SimpleNamespace(world_size=1), module)  # type: ignore[arg-type]
    assert logged["perf/train_mfu"] == pytest.approx(1.2) and "above the peak measured" in caplog.text


@pytest.mark.parametrize(("loads", "shared"), [((0.4, 1.9), False), ((2.6, 1.1), True), ((0.5, 2.2), True)])
def test_the_machine_note_dates_the_numbers_and_blames_other_processes_only_when_the_load_exceeded_the_cpus(
    loads: tuple[float, float], shared: bool
) -> None:
    note = machine_note(datetime.date(2026, 12, 7), "profile `quick` on CPU x", *loads, cpus=2)
    assert note.startswith("measured 2026-12-07, profile `quick` on CPU x; 1-min load average")
    assert ("other processes shared the cores" in note) is shared
