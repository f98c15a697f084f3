"""ResNet-50, VGG-19 and Inception v1 reproduce the reference networks (counts and outputs)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

from visionbench.models.base import AuxOutput
from visionbench.models.inception import InceptionV1, googlenet_to_inception_v1
from visionbench.models.resnet import ResNet50, ResNetTrunk
from visionbench.models.vgg import VGG19


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def assert_same_outputs(ours: nn.Module, reference: nn.Module, size: int) -> None:
    ours.eval()
    reference.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
    assert expected.abs().max() > 0


def test_resnet50_has_published_parameter_count() -> None:
    assert n_params(ResNet50(1000)) == 25_557_032


def test_resnet50_loads_torchvision_state_dict_strictly_and_matches_outputs() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    ours = ResNet50(1000)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert_same_outputs(ours, reference, 64)


@pytest.mark.parametrize(("depth", "channels"), [(18, (64, 128, 256, 512)), (50, (256, 512, 1024, 2048))])
def test_resnet_trunk_returns_c2_to_c5_at_strides_4_to_32(depth: int, channels: tuple[int, ...]) -> None:
    trunk = ResNetTrunk(depth).eval()
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, 64, 96))
    assert trunk.out_channels == channels
    assert [f.shape[1:] for f in features] == [(c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)]


def test_resnet_trunk_loads_torchvision_resnet18_without_fc() -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    trunk_state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    ResNetTrunk(18).load_state_dict(trunk_state, strict=True)


def test_resnet50_works_at_small_inputs_and_other_channel_counts() -> None:
    net = ResNet50(7, in_channels=1).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 48)).shape == (2, 7)


@pytest.mark.parametrize(
    ("batch_norm", "builder", "expected_params"),
    [(False, torchvision.models.vgg19, 143_667_240), (True, torchvision.models.vgg19_bn, 143_678_248)],
)
def test_vgg19_matches_torchvision(batch_norm: bool, builder, expected_params: int) -> None:
    torch.manual_seed(0)
    ours = VGG19(1000, batch_norm=batch_norm)
    assert n_params(ours) == expected_params
    reference = builder(weights=None)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert_same_outputs(ours, reference, 64)


def test_vgg19_has_sixteen_convs_in_five_pooled_blocks() -> None:
    features = VGG19(10).features
    assert sum(isinstance(m, nn.Conv2d) for m in features) == 16
    assert sum(isinstance(m, nn.MaxPool2d) for m in features) == 5


def test_inception_v1_stage_outputs_match_table_1_at_224() -> None:
    net = InceptionV1(1000).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("inception3a", "inception3b", "inception4a", "inception4d", "inception4e", "inception5b"):
        getattr(net, name).register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
    with torch.no_grad():
        net(torch.randn(1, 3, 224, 224))
    assert shapes == {
        "inception3a": (256, 28, 28),
        "inception3b": (480, 28, 28),
        "inception4a": (512, 14, 14),
        "inception4d": (528, 14, 14),
        "inception4e": (832, 14, 14),
        "inception5b": (1024, 7, 7),
    }


@pytest.mark.parametrize("size", [128, 64])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_inception_v1_returns_aux_output_in_training_and_logits_in_eval(size: int, batch_norm: bool) -> None:
    net = InceptionV1(5, aux_weight=0.25, batch_norm=batch_norm)
    x = torch.randn(2, 3, size, size)
    out = net.train()(x)
    assert isinstance(out, AuxOutput)
    assert out.logits.shape == (2, 5)
    assert [a.shape for a in out.aux] == [(2, 5), (2, 5)]
    assert out.aux_weight == 0.25
    with torch.no_grad():
        logits = net.eval()(x)
    assert isinstance(logits, Tensor) and logits.shape == (2, 5)


def test_inception_v1_without_aux_logits_returns_a_tensor_in_training() -> None:
    net = InceptionV1(5, aux_logits=False).train()
    assert not hasattr(net, "aux1")
    out = net(torch.randn(2, 3, 64, 64))
    assert isinstance(out, Tensor) and out.shape == (2, 5)


def test_inception_v1_parameter_counts() -> None:
    # Paper: "about 6.8M" without the auxiliary heads; the BN variant trades conv biases for BN affines.
    assert n_params(InceptionV1(1000, aux_logits=False)) == 6_998_552
    assert n_params(InceptionV1(1000)) == 13_378_280
    assert n_params(InceptionV1(1000, batch_norm=True)) == 13_385_816


def test_inception_v1_bn_takes_torchvision_googlenet_weights() -> None:
    """The checkpoint maps exactly once its 3×3 "5×5" kernels are zero-padded; the only remaining
    difference is maxpool4 (torchvision 2×2/2, paper 3×3/2), swapped here to show all else matches."""
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    ours = InceptionV1(1000, batch_norm=True)
    ours.load_state_dict(googlenet_to_inception_v1(reference.state_dict()), strict=True)
    ours.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
    assert_same_outputs(ours, reference, 64)
