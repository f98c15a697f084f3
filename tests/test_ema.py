"""The exponential moving average of the weights (``ema_decay``): one update per optimizer step, and
with ``ema_warmup`` a decay that starts low, so a short run's average is not its initial weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionbench.callbacks.ema import ema_average
from visionbench.config_checks import check_numeric_knobs
from visionbench.errors import ConfigError


def averaged_after(updates: list[float], decay: float, warmup: bool) -> float:
    """The average of a one-weight model whose weight takes the values ``updates`` in turn."""
    model = nn.Linear(1, 1, bias=False)
    average = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_average(decay, warmup), use_buffers=True)
    for value in updates:
        model.weight.data.fill_(value)
        average.update_parameters(model)
    return average.module.weight.item()


def test_without_warmup_the_average_is_lightnings_ema() -> None:
    """The first update copies the weights; each next one keeps ``decay`` of the average."""
    assert averaged_after([1.0, 0.0, 0.0], decay=0.9, warmup=False) == pytest.approx(0.81)


def test_with_warmup_the_decay_after_n_updates_is_the_smaller_of_ema_decay_and_1_plus_n_over_10_plus_n() -> None:
    """TensorFlow's ExponentialMovingAverage(num_updates): after n averaged updates the next keeps
    min(decay, (1 + n) / (10 + n)) of the average: 2/11, then 3/12, ... and ema_decay once that is lower."""
    assert averaged_after([1.0, 0.0], decay=0.999, warmup=True) == pytest.approx(2 / 11)
    assert averaged_after([1.0, 0.0, 0.0], decay=0.999, warmup=True) == pytest.approx(2 / 11 * 3 / 12)
    assert averaged_after([1.0, 0.0], decay=0.1, warmup=True) == pytest.approx(0.1)


def test_with_warmup_a_short_runs_average_follows_its_recent_weights() -> None:
    """700 updates at ema_decay 0.999 (a slow network's 15-minute budget) keep about half of the initial
    weights without warmup; with it, under 2 %."""
    updates = [1.0] + [0.0] * 699
    assert averaged_after(updates, decay=0.999, warmup=False) == pytest.approx(0.999**699, rel=1e-4)
    assert averaged_after(updates, decay=0.999, warmup=True) < 0.02


def test_ema_warmup_is_a_top_level_switch_off_by_default(compose_cfg) -> None:
    assert compose_cfg([]).ema_warmup is False
    assert compose_cfg(["experiment=simpsons_budget"]).ema_warmup is True


def test_an_ema_warmup_without_an_ema_is_a_config_error_naming_both_keys(compose_cfg) -> None:
    """Silently ignored, ``ema_warmup=true`` alone would read as an averaged run that is not."""
    with pytest.raises(ConfigError, match=r"ema_warmup=true .*ema_decay=0\.999"):
        check_numeric_knobs(compose_cfg(["task=shapes", "ema_warmup=true"]))
    check_numeric_knobs(compose_cfg(["task=shapes", "ema_warmup=true", "ema_decay=0.999"]))
