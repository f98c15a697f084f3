"""Evaluation sharding that sees every sample exactly once, whatever the number of processes.

Lightning's default ``DistributedSampler`` pads the last batch by repeating samples when the
split size is not divisible by the world size, so synced metrics differ from the 1-process
value (pytorch#25162, Lightning#4732). Disjoint shards (rank r takes r::world) are exact.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class EvalShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint across ranks, together exactly ``range(n)``."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.indices = range(rank, num_samples, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
