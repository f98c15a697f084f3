"""What a network costs to serve on the CPU: batch-1 latency (median and p95 over warm calls) and
throughput at the bench's inference batch, for eager PyTorch and for ONNX Runtime running the same
network exported to ONNX, side by side.

Both runtimes get the same cores (ONNX Runtime's intra-op threads = ``torch.get_num_threads()``) and
take their calls in alternation (``interleaved_step_times``), so a neighbour's burst of load slows
both sides of the ratio alike.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from visionbench.bench.speed import Job
from visionbench.export.exporter import DEFAULT_OPSET, export_network
from visionbench.export.runtime import OnnxNet
from visionbench.measure import interleaved_step_times, step_times

EAGER, ONNXRUNTIME = "eager", "onnxruntime"
RUNTIMES = (EAGER, ONNXRUNTIME)


@dataclass(frozen=True)
class Serving:
    """Seconds per call of each runtime, one per alternating round: ``latency_s`` at batch 1, ``batch_s``
    at ``batch_size``; ``threads`` is what both ran on."""

    latency_s: dict[str, tuple[float, ...]]
    batch_s: dict[str, tuple[float, ...]]
    batch_size: int
    threads: int

    def latency_ms(self, runtime: str) -> float:
        return 1e3 * statistics.median(self.latency_s[runtime])

    def latency_p95_ms(self, runtime: str) -> float:
        """Nearest-rank 95th percentile: a measured call, defined for any number of calls."""
        calls = sorted(self.latency_s[runtime])
        return 1e3 * calls[math.ceil(0.95 * len(calls)) - 1]

    def images_per_s(self, runtime: str) -> float:
        return self.batch_size / statistics.median(self.batch_s[runtime])

    def onnxruntime_speedup(self, phase: str) -> float:
        """Median over rounds of eager ÷ ONNX Runtime seconds (``phase``: latency or batch)."""
        seconds = self.latency_s if phase == "latency" else self.batch_s
        return statistics.median(e / o for e, o in zip(seconds[EAGER], seconds[ONNXRUNTIME], strict=True))


def measure_serving(job: Job, latency_calls: int, warmup: int) -> Serving:
    """Export a fresh copy of ``job``'s network (eval mode, dynamic batch) and time both runtimes on random images
    of the job's input size: ``latency_calls`` rounds at batch 1, the job's ``iters`` rounds at its batch."""
    cpu = torch.device("cpu")
    net = job.make_net().eval()
    height, width = job.workload.image_size
    inputs = {"latency": torch.randn(1, 3, height, width), "batch": torch.randn(job.workload.batch_size, 3, height, width)}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="visionbench-serving-") as folder:
        path = Path(folder) / f"{job.model}.onnx"
        example = torch.randn(2, 3, height, width)
        export_network(net, example, path, dynamic_batch=True, dynamic_size=False, opset=DEFAULT_OPSET)
        models: dict[str, nn.Module] = {EAGER: net, ONNXRUNTIME: OnnxNet(path, threads)}
        times = {}
        for phase, rounds in (("latency", latency_calls), ("batch", job.workload.iters)):
            steps = {name: _forward(model, inputs[phase]) for name, model in models.items()}
            for step in steps.values():
                step_times(step, warmup=warmup, iters=0, device=cpu)
            times[phase] = {name: tuple(s) for name, s in interleaved_step_times(steps, rounds, cpu).items()}
    return Serving(times["latency"], times["batch"], job.workload.batch_size, threads)


def _forward(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(x)

    return step
