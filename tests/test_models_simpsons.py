"""The Simpsons article's two networks, reproduced to the parameter."""

from __future__ import annotations

import pytest
import torch

from visionbench.models.cnn import PlainCNN
from visionbench.models.resnet_small import SmallResNet


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_plain_cnn_has_the_published_parameter_count_at_128px_and_19_classes() -> None:
    assert trainable(PlainCNN(num_classes=19, image_size=128)) == 3_491_603


def test_small_resnet_has_the_published_trainable_count_and_256_batchnorm_statistics() -> None:
    net = SmallResNet(num_classes=19, image_size=128)
    assert trainable(net) == 1_157_011
    running = sum(b.numel() for name, b in net.named_buffers() if "running" in name)
    assert trainable(net) + running == 1_157_267  # the Keras summary's total


@pytest.mark.parametrize("model_cls", [PlainCNN, SmallResNet])
@pytest.mark.parametrize("size", [32, 64, 128])
def test_networks_accept_their_configured_input_size(model_cls: type[torch.nn.Module], size: int) -> None:
    net = model_cls(num_classes=7, image_size=size).eval()
    assert net(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_small_resnet_units_are_pre_activation_with_projection_only_when_widening() -> None:
    net = SmallResNet(num_classes=3, image_size=64)
    first, second = net.features[1], net.features[3]
    assert isinstance(first.body[0], torch.nn.BatchNorm2d)  # BN-ReLU before the conv
    assert isinstance(first.shortcut, torch.nn.Identity)
    assert isinstance(second.shortcut, torch.nn.Conv2d) and second.shortcut.kernel_size == (1, 1)
