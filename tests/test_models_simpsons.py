"""The Simpsons article's two networks, reproduced to the parameter."""

from __future__ import annotations

import pytest
import torch

from visionbench.models.cnn import PlainCNN
from visionbench.models.resnet_small import SmallResNet
from visionbench.pixels import IMAGENET_MEAN, IMAGENET_STD


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


def test_small_resnet_batchnorm_can_take_keras_momentum_and_epsilon() -> None:
    """Keras' BatchNormalization keeps 0.99 of the running statistics per step (PyTorch's momentum is
    the complement, 0.01) with epsilon 1e-3; PyTorch's defaults (0.1, 1e-5) stay the default."""

    def norms(**kwargs: float) -> list[torch.nn.BatchNorm2d]:
        return [m for m in SmallResNet(num_classes=3, image_size=32, **kwargs).modules() if isinstance(m, torch.nn.BatchNorm2d)]

    default, keras = norms(), norms(bn_momentum=0.01, bn_eps=1e-3)
    assert len(keras) == len(default) == 4
    assert {(m.momentum, m.eps) for m in default} == {(0.1, 1e-5)}
    assert {(m.momentum, m.eps) for m in keras} == {(0.01, 1e-3)}


def test_the_articles_resnet_reproduction_uses_keras_batchnorm(compose_cfg) -> None:
    net = compose_cfg(["experiment=seed_resnet_small"]).model.net
    assert (net.bn_momentum, net.bn_eps) == (0.01, 1e-3)


@pytest.mark.parametrize("model_cls", [PlainCNN, SmallResNet])
def test_unit_pixels_feed_the_network_what_keras_rescale_gave_it(model_cls: type[torch.nn.Module]) -> None:
    """The data arrive in ImageNet statistics; ``pixels="unit"`` hands the first layer [0, 1] pixels
    (Keras' ``rescale=1/255``), the same weights seeing the same images, with no new parameters."""
    torch.manual_seed(0)
    unit = model_cls(num_classes=5, image_size=32, pixels="unit").eval()
    plain = model_cls(num_classes=5, image_size=32).eval()
    plain.load_state_dict(unit.state_dict())
    levels = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(unit((levels - mean) / std), plain(levels), rtol=1e-4, atol=1e-5)
    assert trainable(unit) == trainable(plain)


def test_the_articles_reproductions_feed_unit_pixels(compose_cfg) -> None:
    assert compose_cfg(["experiment=seed_resnet_small"]).model.net.pixels == "unit"
    assert compose_cfg(["model=cnn", "task=simpsons"]).model.net.pixels == "imagenet"
