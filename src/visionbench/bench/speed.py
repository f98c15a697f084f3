"""How fast a network is (parameters, forward FLOPs, train/inference images/s, peak memory), and
which networks × knobs the benchmark config asks to measure.

The timing rules are the ones that make numbers comparable across models and with other
benchmarks: warm up first (allocator, cuDNN autotune, ``torch.compile``), synchronise the device
around every step, report the median step, and take the steps of networks that will be compared
in alternation (``visionbench.measure``). FLOPs count 2 per multiply-add, on an eval-mode forward
so auxiliary heads are left out.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import platform
import resource
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from visionbench.compose import compose_train, input_size
from visionbench.errors import ConfigError
from visionbench.measure import (
    DTYPES,
    TRAIN_FLOPS_PER_FORWARD,
    count_parameters,
    forward_flops_per_image,
    interleaved_step_times,
    step_times,
)
from visionbench.models.base import AuxOutput, TaskKind

PHASES = ("infer", "train")


@dataclass(frozen=True)
class Variant:
    """The knobs a measurement runs with; ``fp32`` eager NCHW is the baseline the others are compared to."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ConfigError(
                f"Unknown precision {self.precision!r} (config keys bench.precision / bench.low_precision). Use one of {sorted(DTYPES)}."
            )

    @property
    def label(self) -> str:
        parts = [self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
        return "+".join(parts)


@dataclass(frozen=True)
class Workload:
    """The input a network is timed on: the task's input size and classes, the bench's batch and rounds."""

    task_kind: TaskKind
    num_classes: int
    image_size: tuple[int, int]
    batch_size: int
    warmup: int
    iters: int

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.iters < 1:
            raise ConfigError(
                f"bench.warmup and bench.iters must both be at least 1 (got {self.warmup} and {self.iters}); "
                "the first step includes one-off costs (allocation, compilation) and must not be timed."
            )


@dataclass(frozen=True)
class Measurement:
    """Everything measured for one network × workload × variant; step times are one per interleaved round."""

    params: int
    gflops_per_image: float
    batch_size: int
    train_step_s: tuple[float, ...]
    infer_step_s: tuple[float, ...]
    train_peak_mem_mb: float
    infer_peak_mem_mb: float
    compile_s: float | None

    @property
    def train_images_per_s(self) -> float:
        return self.batch_size / statistics.median(self.train_step_s)

    @property
    def infer_images_per_s(self) -> float:
        return self.batch_size / statistics.median(self.infer_step_s)

    def train_mfu(self, peak_flops: float) -> float:
        """Forward + backward FLOP/s over ``peak_flops`` (the peak of this row's precision)."""
        return TRAIN_FLOPS_PER_FORWARD * self.gflops_per_image * 1e9 * self.train_images_per_s / peak_flops

    def infer_mfu(self, peak_flops: float) -> float:
        return self.gflops_per_image * 1e9 * self.infer_images_per_s / peak_flops


def measure_together(jobs: Sequence[Job], device: torch.device) -> list[Measurement | Exception]:
    """Time inference then training of every job's freshly built network, their steps interleaved.

    The jobs of one model (ours, torchvision's, each knob) share a workload, and every ratio the
    tables print is between two of them: round r runs one step of each in turn, so a neighbour's
    burst of load slows both sides of a ratio instead of one. Each network's warm-up steps run
    alone inside its own memory measurement; inference comes first so its peak is not inflated
    by gradients and optimizer state. A job that fails gets its exception in place of a
    measurement and leaves the others be.
    """
    outcomes: list[Measurement | Exception | None] = [None] * len(jobs)
    running: dict[int, _Run] = {}
    for i, job in enumerate(jobs):
        try:
            running[i] = _Run(job, device)
        except ConfigError:
            raise
        except Exception as error:  # one broken network must not throw away the others' measurements
            outcomes[i] = error
    for phase in PHASES:
        for i in list(running):
            try:
                running[i].warm_up(phase)
            except Exception as error:
                outcomes[i] = error
                del running[i]
        rounds = interleaved_step_times({i: run.steps[phase] for i, run in running.items()}, jobs[0].workload.iters, device)
        for i, seconds in rounds.items():
            running[i].times[phase] = tuple(seconds)
    for i, run in running.items():
        outcomes[i] = run.measurement()
    return [o for o in outcomes if o is not None]


class _Run:
    """One job's network, batch and step functions, and what its warm-up and rounds measured."""

    def __init__(self, job: Job, device: torch.device) -> None:
        self.job, self.device = job, device
        self.net = job.make_net().to(device)
        self.params = count_parameters(self.net)
        self.flops = forward_flops_per_image(self.net, job.workload.image_size)
        if job.variant.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        model: Callable[[Tensor], object] = torch.compile(self.net) if job.variant.compile else self.net
        x, target = _batch(job.workload, job.variant, device)
        self.steps = {
            "infer": _infer_step(model, x, job.variant, device),
            "train": _train_step(self.net, model, x, target, job.variant, device),
        }
        self.first_s: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.times: dict[str, tuple[float, ...]] = {}

    def warm_up(self, phase: str) -> None:
        """The untimed steps, alone, inside the memory measurement of ``phase``."""
        self.net.train(phase == "train")
        with _PeakMemory(self.device) as memory:
            first, *_ = step_times(self.steps[phase], warmup=0, iters=self.job.workload.warmup, device=self.device)
        self.first_s[phase], self.peak_mb[phase] = first, memory.peak_mb

    def measurement(self) -> Measurement:
        compile_s = None
        if self.job.variant.compile:  # first step minus a typical one: what compiling cost, per phase
            compile_s = sum(self.first_s[p] - statistics.median(self.times[p]) for p in PHASES)
        return Measurement(
            params=self.params,
            gflops_per_image=self.flops / 1e9,
            batch_size=self.job.workload.batch_size,
            train_step_s=self.times["train"],
            infer_step_s=self.times["infer"],
            train_peak_mem_mb=self.peak_mb["train"],
            infer_peak_mem_mb=self.peak_mb["infer"],
            compile_s=compile_s,
        )


def _batch(workload: Workload, variant: Variant, device: torch.device) -> tuple[Tensor, Tensor]:
    b, (h, w) = workload.batch_size, workload.image_size
    x = torch.randn(b, 3, h, w, device=device)
    if variant.channels_last:
        x = x.to(memory_format=torch.channels_last)
    target_shape = (b,) if workload.task_kind == "classification" else (b, h, w)
    return x, torch.randint(workload.num_classes, target_shape, device=device)


def _autocast(variant: Variant, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=DTYPES[variant.precision], enabled=variant.precision != "fp32")


def _infer_step(model: Callable[[Tensor], object], x: Tensor, variant: Variant, device: torch.device) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad(), _autocast(variant, device):
            model(x)

    return step


def _train_step(
    net: nn.Module, model: Callable[[Tensor], object], x: Tensor, target: Tensor, variant: Variant, device: torch.device
) -> Callable[[], None]:
    """Forward + cross-entropy (auxiliary heads included, as in training) + backward + SGD step."""
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=variant.precision == "fp16")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(variant, device):
            loss = _cross_entropy(model(x), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _cross_entropy(output: object, target: Tensor) -> Tensor:
    if isinstance(output, AuxOutput):
        aux = sum(F.cross_entropy(a.float(), target) for a in output.aux)
        return F.cross_entropy(output.logits.float(), target) + output.aux_weight * aux
    assert isinstance(output, Tensor), f"network returned {type(output).__name__}, expected Tensor or AuxOutput"
    return F.cross_entropy(output.float(), target)


class _PeakMemory:
    """Peak memory above the level at entry, in MiB.

    CUDA: the caching allocator's peak. CPU: Linux ``VmHWM`` after resetting it through
    ``/proc/self/clear_refs`` so each measurement sees its own peak, not the process's lifetime
    high-water mark; where that file cannot be written, the ``ru_maxrss`` delta, which reads 0
    whenever an earlier measurement peaked higher.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._start_kb = 0
        self._hwm_reset = False

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_kb = torch.cuda.memory_allocated(self.device) // 1024
        else:
            _return_freed_memory_to_os()
            self._hwm_reset = _reset_peak_rss()
            self._start_kb = _proc_status_kb("VmRSS") if self._hwm_reset else _ru_maxrss_kb()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            peak_kb = torch.cuda.max_memory_allocated(self.device) // 1024
        else:
            peak_kb = _proc_status_kb("VmHWM") if self._hwm_reset else _ru_maxrss_kb()
        self.peak_mb = max(peak_kb - self._start_kb, 0) / 1024


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _ru_maxrss_kb() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # macOS reports bytes, Linux kilobytes


def _return_freed_memory_to_os() -> None:
    """glibc keeps freed blocks mapped; trimming first keeps an earlier model's leftovers out of the baseline."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- what to measure, from the bench config ---------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One measurement to run: which network (ours or torchvision's), on which workload, with which knobs."""

    model: str
    impl: str
    task: str
    workload: Workload
    variant: Variant
    make_net: Callable[[], nn.Module] = field(compare=False)


def baseline_variant(bench: DictConfig) -> Variant:
    return Variant(precision=bench.precision, channels_last=bench.channels_last)


def plan_jobs(bench: DictConfig) -> list[list[Job]]:
    """Per model in ``bench.models``: its job at its task's input, its torchvision twin's and its knobs'.

    One list per model because those are measured together (``measure_together``): every ratio
    is between two jobs of one list. The task is chosen by the network class's ``task_kind`` and
    composed as ``task=<name>`` (``compose.compose_train``), so class count and input size have one source.
    Knob variants change one thing relative to the baseline each, so their ratio isolates that knob.
    """
    baseline = baseline_variant(bench)
    knob_variants = [_knob_variant(knob, baseline, bench.low_precision) for knob in bench.knobs]
    groups = []
    for name in bench.models:
        net_cfg = _model_net_config(name)
        task_kind = _task_kind(name, net_cfg)
        bench_task = bench.tasks[task_kind]
        task = _task_config(bench_task.name)
        overrides = bench.per_model.get(name, {})
        workload = Workload(
            task_kind=task_kind,
            num_classes=task.num_classes,
            image_size=_hw(bench_task.get("input_size") or input_size(task)),
            batch_size=overrides.get("batch_size", bench_task.batch_size),
            warmup=overrides.get("warmup", bench.warmup),
            iters=overrides.get("iters", bench.iters),
        )
        h, w = workload.image_size
        ours = functools.partial(build_net, name, task.num_classes, h if h == w else [h, w])
        group = [Job(name, "ours", task.name, workload, baseline, ours)]
        if name in bench.torchvision:
            twin_cfg = OmegaConf.to_container(bench.torchvision[name], resolve=True)
            twin = functools.partial(hydra.utils.instantiate, twin_cfg, num_classes=task.num_classes)
            group.append(Job(name, "torchvision", task.name, workload, baseline, twin))
        if name in bench.knob_models:
            group.extend(Job(name, "ours", task.name, workload, variant, ours) for variant in knob_variants)
        groups.append(group)
    return groups


def _knob_variant(knob: str, baseline: Variant, low_precision: str) -> Variant:
    if knob == "channels_last":
        return replace(baseline, channels_last=True)
    if knob == "precision":
        return replace(baseline, precision=low_precision)
    if knob == "compile":
        return replace(baseline, compile=True)
    raise ConfigError(
        f"Unknown knob {knob!r} in bench.knobs. Use any of channels_last, precision, compile "
        "(e.g. `bench.knobs=[channels_last,precision,compile]`)."
    )


def build_net(name: str, num_classes: int, image_size: int | list[int]) -> nn.Module:
    """The network of ``model=<name>`` as ``src/train.py`` builds it, for inputs of ``image_size``."""
    size = image_size if isinstance(image_size, int) else max(image_size)
    cfg = compose_train([f"model={name}", f"task.data.image_size={size}"])
    return hydra.utils.instantiate(cfg.model.net, num_classes=num_classes)


def _model_net_config(name: str) -> DictConfig:
    net: DictConfig = compose_train([f"model={name}"]).model.net
    return net


def _task_config(name: str) -> DictConfig:
    """The composed ``task=<name>``: the bench reads its ``num_classes``, ``kind`` and input size."""
    task: DictConfig = compose_train([f"task={name}"]).task
    if task.get("num_classes") is None:
        raise ConfigError(f"task={name} has no num_classes; the bench needs the task's reference class count.")
    return task


def _task_kind(name: str, net_cfg: DictConfig) -> TaskKind:
    kind = getattr(hydra.utils.get_class(net_cfg._target_), "task_kind", None)
    if kind not in ("classification", "segmentation"):
        raise ConfigError(
            f"{net_cfg._target_} (conf/model/{name}.yaml) has no task_kind class attribute; "
            "set `task_kind` to 'classification' or 'segmentation' on the network class."
        )
    return kind


def _hw(size: int | Sequence[int] | ListConfig) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def describe_device(device: torch.device) -> str:
    """The name to print beside the numbers, so a table says what it was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    model = ""
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), "")
    return f"CPU {model or platform.machine()}, {torch.get_num_threads()} threads"
