"""How fast a network is (parameters, forward FLOPs, train/inference images/s, peak memory, MFU), and
which networks × knobs the benchmark config asks to measure.

The timing rules are the ones that make numbers comparable across models and with other
benchmarks: warm up first (allocator, cuDNN autotune, ``torch.compile``), synchronise the device
around every step, report the median step. FLOPs are counted by ``FlopCounterMode``, which
counts 2 FLOPs per multiply-add, on an eval-mode forward so auxiliary heads are left out.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from visionbench.errors import ConfigError
from visionbench.models.base import AuxOutput, TaskKind

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TRAIN_FLOPS_PER_FORWARD = 3  # backward costs about twice the forward (grads w.r.t. inputs and weights)


@dataclass(frozen=True)
class Variant:
    """The knobs a measurement runs with; ``fp32`` eager NCHW is the baseline the others are compared to."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ConfigError(
                f"Unknown precision {self.precision!r} (config keys bench.precision / bench.low_precision). "
                f"Use one of {sorted(DTYPES)}."
            )

    @property
    def label(self) -> str:
        parts = [self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
        return "+".join(parts)


@dataclass(frozen=True)
class Workload:
    """The input a network is timed on: the task's reference size, batch and class count."""

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
    """Everything measured for one network × workload × variant."""

    params: int
    gflops_per_image: float
    train_images_per_s: float
    infer_images_per_s: float
    train_mfu: float
    infer_mfu: float
    train_peak_mem_mb: float
    infer_peak_mem_mb: float
    compile_s: float | None


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def forward_flops_per_image(net: nn.Module, image_size: tuple[int, int], in_channels: int = 3) -> float:
    """Forward FLOPs (2 per multiply-add) of one image, in eval mode so auxiliary heads are excluded."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    x = torch.randn(1, in_channels, *image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return float(counter.get_total_flops())


def peak_matmul_flops(device: torch.device, precision: str = "fp32", size: int = 4096, iters: int = 3) -> float:
    """FLOP/s of a large square matmul: the practical peak MFU is measured against, on this device, now.

    Measuring it in the same run (instead of quoting a datasheet) makes MFU honest about shared
    CPUs, thermal state and the BLAS actually linked.
    """
    dtype = DTYPES[precision]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = _time_steps(lambda: torch.mm(a, b), warmup=1, iters=iters, device=device).median_s
    return 2.0 * size**3 / seconds


def measure(
    make_net: Callable[[], nn.Module],
    workload: Workload,
    variant: Variant,
    device: torch.device,
    peak_flops: float,
) -> Measurement:
    """Time inference then training of a freshly built network; ``peak_flops`` is for ``variant.precision``.

    The network is built here (not passed in) because the measurement converts and trains it.
    Inference runs first so its memory peak is not inflated by gradients and optimizer state.
    """
    net = make_net().to(device)
    params = count_parameters(net)
    flops = forward_flops_per_image(net, workload.image_size)
    if variant.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model: Callable[[Tensor], object] = torch.compile(net) if variant.compile else net

    x, target = _batch(workload, variant, device)
    net.eval()
    with _PeakMemory(device) as infer_mem:
        infer = _time_steps(_infer_step(model, x, variant, device), workload.warmup, workload.iters, device)
    net.train()
    with _PeakMemory(device) as train_mem:
        train = _time_steps(_train_step(net, model, x, target, variant, device), workload.warmup, workload.iters, device)

    infer_ips = workload.batch_size / infer.median_s
    train_ips = workload.batch_size / train.median_s
    compile_s = (infer.first_s - infer.median_s) + (train.first_s - train.median_s) if variant.compile else None
    return Measurement(
        params=params,
        gflops_per_image=flops / 1e9,
        train_images_per_s=train_ips,
        infer_images_per_s=infer_ips,
        train_mfu=TRAIN_FLOPS_PER_FORWARD * flops * train_ips / peak_flops,
        infer_mfu=flops * infer_ips / peak_flops,
        train_peak_mem_mb=train_mem.peak_mb,
        infer_peak_mem_mb=infer_mem.peak_mb,
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


@dataclass(frozen=True)
class _Timing:
    first_s: float
    median_s: float


def _time_steps(step: Callable[[], object], warmup: int, iters: int, device: torch.device) -> _Timing:
    """Run ``warmup`` steps left out of the median, then ``iters`` timed ones, synchronising around each."""
    times = []
    for _ in range(warmup + iters):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return _Timing(first_s=times[0], median_s=statistics.median(times[warmup:]))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --- what to measure, from the bench config ---------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One measurement to run: which network (ours or torchvision's), on which workload, with which knobs."""

    model: str
    impl: str
    task: str
    workload: Workload
    variant: Variant
    make_net: Callable[[], nn.Module]


def baseline_variant(bench: DictConfig) -> Variant:
    return Variant(precision=bench.precision, channels_last=bench.channels_last)


def plan_jobs(bench: DictConfig, conf_dir: Path) -> list[Job]:
    """Every model in ``bench.models`` at its task's reference workload, its torchvision twin, and its knobs.

    The task is chosen by the network class's ``task_kind``, so one model list covers both tasks.
    Knob variants change one thing relative to the baseline each, so their ratio isolates that knob.
    """
    baseline = baseline_variant(bench)
    knob_variants = [_knob_variant(knob, baseline, bench.low_precision) for knob in bench.knobs]
    jobs = []
    for name in bench.models:
        net_cfg = _model_net_config(conf_dir, name)
        task_kind = _task_kind(name, net_cfg)
        task = bench.tasks[task_kind]
        overrides = bench.per_model.get(name, {})
        workload = Workload(
            task_kind=task_kind,
            num_classes=task.num_classes,
            image_size=_hw(task.image_size),
            batch_size=overrides.get("batch_size", task.batch_size),
            warmup=overrides.get("warmup", bench.warmup),
            iters=overrides.get("iters", bench.iters),
        )
        ours = functools.partial(build_net, conf_dir, name, task.num_classes, task.image_size)
        jobs.append(Job(name, "ours", task.name, workload, baseline, ours))
        if name in bench.torchvision:
            twin_cfg = OmegaConf.to_container(bench.torchvision[name], resolve=True)
            twin = functools.partial(hydra.utils.instantiate, twin_cfg, num_classes=task.num_classes)
            jobs.append(Job(name, "torchvision", task.name, workload, baseline, twin))
        if name in bench.knob_models:
            jobs.extend(Job(name, "ours", task.name, workload, variant, ours) for variant in knob_variants)
    return jobs


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


def build_net(conf_dir: Path, name: str, num_classes: int, image_size: int | ListConfig) -> nn.Module:
    """The network of ``conf/model/<name>.yaml``, as ``src/train.py model=<name>`` builds it."""
    return hydra.utils.instantiate(_resolved(_model_net_config(conf_dir, name), image_size), num_classes=num_classes)


def _model_net_config(conf_dir: Path, name: str) -> DictConfig:
    path = Path(conf_dir) / "model" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(
            f"bench.models lists {name!r} but {path} does not exist. "
            f"Use one of {available} or add that model config."
        )
    model_cfg = OmegaConf.load(path)
    if "net" not in model_cfg:
        raise ConfigError(f"{path} has no `net` key; a model config needs `net: {{_target_: ...}}` to be benchmarked.")
    return model_cfg.net


def _task_kind(name: str, net_cfg: DictConfig) -> TaskKind:
    kind = getattr(hydra.utils.get_class(net_cfg._target_), "task_kind", None)
    if kind not in ("classification", "segmentation"):
        raise ConfigError(
            f"{net_cfg._target_} (conf/model/{name}.yaml) has no task_kind class attribute; "
            "set `task_kind` to 'classification' or 'segmentation' on the network class."
        )
    return kind


def _resolved(net_cfg: DictConfig, image_size: object) -> dict:
    """The model config with ``${task.data.image_size}`` filled in from the bench task, as a plain dict."""
    root = OmegaConf.create({"task": {"data": {"image_size": image_size}}, "net": net_cfg})
    return OmegaConf.to_container(root, resolve=True)["net"]


def _hw(image_size: int | ListConfig) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def describe_device(device: torch.device) -> str:
    """The name to print beside the numbers, so a table says what it was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    model = ""
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return f"CPU {model or platform.machine()}, {torch.get_num_threads()} threads"
