"""Every random stream of a run derives from one hash of (seed, stream keys).

``seed + epoch`` is not independent across seeds: seed 1's epoch 1 is seed 2's epoch 0, so a
``-m seed=1,2,3`` sweep would share shuffles and augmentations between its "independent"
repetitions. ``numpy.random.SeedSequence`` hashes its entropy words, so (seed, epoch, rank,
index) tuples that differ in any word give unrelated streams.
"""

from __future__ import annotations

import numpy as np


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream (``seed``, ``keys``...), e.g. (seed, epoch) or (seed, epoch, rank)."""
    words = np.random.SeedSequence([seed % 2**64, *(k % 2**64 for k in keys)]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
