"""`layer_table` lists every leaf layer and reports the totals the reproductions are checked against."""

from __future__ import annotations

from torch import nn

from visionbench.bench.summary import layer_table
from visionbench.models.inception import InceptionV1
from visionbench.models.resnet import ResNet50


def test_layer_table_rows_and_totals_for_a_tiny_network() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    table = layer_table(net, 4)
    rows = [line.split() for line in table.splitlines()]
    assert ["0", "Conv2d", "(1,", "8,", "4,", "4)", "224"] in rows
    assert ["1", "ReLU", "(1,", "8,", "4,", "4)", "0"] in rows
    assert ["3", "Linear", "(1,", "2)", "258"] in rows
    assert "Total params: 482" in table
    # conv: 8·3·9·16 MACs, linear: 128·2 MACs; 2 FLOPs per multiply-add.
    assert f"GFLOPs per image: {2 * (3456 + 256) / 1e9:.4g} (2 FLOPs per multiply-add" in table


def test_layer_table_resnet50_total_matches_the_published_count() -> None:
    table = layer_table(ResNet50(1000), (32, 48))
    assert "Total params: 25,557,032" in table
    assert "fc" in table and "(1, 1000)" in table


def test_layer_table_leaves_out_auxiliary_heads_and_restores_training_mode() -> None:
    net = InceptionV1(10).train()
    table = layer_table(net, 64)
    assert "aux1" not in table
    assert "of which used in the eval forward" in table
    assert net.training
