"""Data-path benchmarks (``pytest -m bench``): the cached pipeline must keep the model fed.

Targets from issue 5, measured as ratios in one run: loader ≥ 10x the per-image PIL pipeline
(same files, augmentations and workers); Lightning training ≥ 0.95x the model alone on tensors in
memory; epoch time linear and peak RSS flat in the dataset size.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from visionbench.bench.data_speed import run

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("data_bench")
    measured = run(out)
    print(json.dumps(asdict(measured), indent=2))
    return measured


def test_cached_loader_is_ten_times_the_pil_loader(result) -> None:
    assert result.loader_speedup >= 10, result


@pytest.mark.parametrize("model", ["cnn", "resnet_small"])
def test_training_loop_keeps_the_model_busy(result, model: str) -> None:
    assert result.train_over_model[model] >= 0.95, result


def test_epoch_time_grows_linearly_and_memory_stays_flat(result) -> None:
    per_image = [s / n for s, n in zip(result.growth_epoch_s, result.growth_train_images)]
    assert max(per_image) / min(per_image) < 1.5, result  # linear: constant time per image
    assert max(result.growth_peak_rss_mb) - min(result.growth_peak_rss_mb) < 64, result  # flat
