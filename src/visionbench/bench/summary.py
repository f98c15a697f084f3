"""A Keras-style layer table (output shape and parameters per layer) plus total params and FLOPs.

Parameters are compared against the published summaries, and FLOPs make the speed tables
interpretable, so both come from one place: forward hooks on the leaf modules during a single
eval-mode forward pass (eval mode drops auxiliary heads, which inference never runs).
Lightning's ``ModelSummary`` (the in-run table, ``callbacks/model_summary.py``) summarises modules
to a depth with rounded counts ("3.5 M") and needs a LightningModule; the checks against published
summaries need every leaf call and exact totals, hence this table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from visionbench.measure import count_parameters


def _shape(output: object) -> str:
    if isinstance(output, Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return ", ".join(_shape(o) for o in output)
    return type(output).__name__


def layer_table(net: nn.Module, input_size: int | Sequence[int], in_channels: int = 3) -> str:
    """One row per leaf-module call with its output shape and (first-call) parameter count.

    A module called twice (e.g. a shared ReLU) gets a row per call but its parameters only
    once, so the column sums to the parameters the eval forward actually uses. GFLOPs are per
    image (batch 1) as counted by ``torch.utils.flop_counter`` (2 FLOPs per multiply-add).
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    rows: list[tuple[str, str, str, int]] = []
    seen: set[int] = set()

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, _inputs: object, output: object) -> None:
            params = 0 if id(module) in seen else sum(p.numel() for p in module.parameters())
            seen.add(id(module))
            rows.append((name, type(module).__name__, _shape(output), params))

        return record

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in net.named_modules()
        if name and not list(m.children()) and not isinstance(m, nn.Identity)
    ]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, in_channels, h, w))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)

    total = count_parameters(net)
    used = sum(r[3] for r in rows)
    header = ("layer", "type", "output shape", "params")
    widths = [max(len(header[i]), *(len(str(r[i])) for r in rows)) for i in range(3)]
    fmt = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:<{widths[2]}}}  {{:>12}}"
    lines = [fmt.format(*header), "-" * (sum(widths) + 18)]
    lines += [fmt.format(name, kind, shape, f"{params:,}") for name, kind, shape, params in rows]
    lines.append("-" * (sum(widths) + 18))
    lines.append(f"{type(net).__name__} at input {in_channels}x{h}x{w}")
    lines.append(f"Total params: {total:,}")
    if used != total:
        lines.append(f"  of which used in the eval forward: {used:,} (the rest are training-only heads)")
    lines.append(
        f"Forward GFLOPs per image: {counter.get_total_flops() / 1e9:.4g} "
        "(2 FLOPs per multiply-add, torch.utils.flop_counter; eval mode, no auxiliary heads)"
    )
    return "\n".join(lines)
