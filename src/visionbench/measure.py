"""How fast a network runs: the measurement primitives `make bench` and the in-run throughput share.

Parameters, forward FLOPs, the peak MFU is taken against, and step timing live here,
below both ``bench/`` and ``callbacks/``, so the two report numbers with one meaning. On a shared
machine a single timing says more about the neighbours than about the network, hence the two
rules: a peak is the best of repeated measurements (load only ever slows it down), and a ratio
comes from steps of its two sides taken in alternation (``interleaved_step_times``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import NamedTuple, TypeVar

import torch
from lightning.fabric.utilities.throughput import measure_flops
from torch import nn

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TRAIN_FLOPS_PER_FORWARD = 3  # backward costs about twice the forward (grads w.r.t. inputs and weights)


def count_parameters(net: nn.Module) -> int:
    """Every parameter of the network, trainable or not: the number published summaries quote."""
    return sum(p.numel() for p in net.parameters())


def forward_flops_per_image(net: nn.Module, image_size: tuple[int, int], in_channels: int = 3) -> float:
    """Forward FLOPs (2 per multiply-add) of one image, in eval mode so auxiliary heads are excluded."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    x = torch.randn(1, in_channels, *image_size, device=device)
    try:
        with torch.no_grad():
            return float(measure_flops(net, lambda: net(x)))
    finally:
        net.train(was_training)


def peak_matmul_flops(device: torch.device, precision: str = "fp32", size: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` square matmuls (after one warm-up): the peak MFU is taken against.

    Measured on this device, now (not a datasheet), so MFU is honest about the BLAS linked and the
    thermal state; the best, not the median, because other processes can only slow a matmul down.
    """
    dtype = DTYPES[precision]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = step_times(lambda: torch.mm(a, b), warmup=1, iters=repeats, device=device)
    return 2.0 * size**3 / min(times)


def peak_conv_flops(device: torch.device, precision: str = "fp32", size: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` 3×3 convolutions of ``size // 16`` channels (256 at the default
    size) on a batch of 8 channels-last 56² maps, after one warm-up.

    A second kernel family because BLAS and the convolution library reach different fractions of a
    chip: on AMD EPYC torch's fp32 matmul goes through MKL, which stops well short of the chip's peak,
    while oneDNN's convolutions do not (VGG19 ran at 169 % of the matmul there).
    """
    dtype, channels, side, batch = DTYPES[precision], max(8, size // 16), 56, 8
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    with torch.no_grad():
        times = step_times(lambda: conv(x), warmup=1, iters=repeats, device=device)
    return 2.0 * batch * channels * channels * 9 * side * side / min(times)


class Peak(NamedTuple):
    """The FLOP/s MFU is taken against, and the kernel that reached it."""

    flops: float
    kernel: str  # "matmul" or "conv3x3"


def peak_flops(device: torch.device, precision: str = "fp32", size: int = 4096, repeats: int = 3) -> Peak:
    """The best of the matmul and the convolution peaks: the most this device was seen to do, so an MFU
    above 100 % still means the peak was measured under load, not that the library cannot reach it."""
    matmul = peak_matmul_flops(device, precision, size, repeats)
    conv = peak_conv_flops(device, precision, size, repeats)
    return Peak(conv, "conv3x3") if conv > matmul else Peak(matmul, "matmul")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so the clock measures work done rather than work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(step: Callable[[], object], warmup: int, iters: int, device: torch.device) -> list[float]:
    """Seconds of each of ``iters`` steps, after ``warmup`` untimed ones (allocation, autotuning, compilation)."""
    for _ in range(warmup):
        step()
    return [_timed(step, device) for _ in range(iters)]


Key = TypeVar("Key", bound=Hashable)


def interleaved_step_times(steps: Mapping[Key, Callable[[], object]], rounds: int, device: torch.device) -> dict[Key, list[float]]:
    """Seconds per step of every entry, one step each per round in turn (A, B, A, B, ...).

    Load that comes and goes then slows both sides of a ratio alike, so the ratio of round r's
    times measures the networks, not the minute they were measured in. Warm-up is the caller's.
    """
    times: dict[Key, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(_timed(step, device))
    return times


def _timed(step: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start
