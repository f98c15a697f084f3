"""FCN-32s, FCN-8s and semantic FPN: bilinear upsampling, output sizes, parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionbench.models.fcn import FCN8s, FCN32s, bilinear_kernel, bilinear_upsampler
from visionbench.models.fpn import FPNTrunk, SemanticFPN


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_bilinear_kernel_is_the_separable_tent_on_the_channel_diagonal() -> None:
    k = bilinear_kernel(3, 3, 4)
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(k[1, 1], tent[:, None] * tent[None, :])
    assert k[0, 1].abs().sum() == 0


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_transposed_conv_equals_interpolate_away_from_the_border(factor: int) -> None:
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        ours = bilinear_upsampler(3, factor)(x)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == expected.shape
    # Within half an input pixel of the border interpolate clamps while the conv sees zero padding.
    b = factor // 2
    torch.testing.assert_close(ours[..., b:-b, b:-b], expected[..., b:-b, b:-b], atol=1e-5, rtol=0)


def test_fcn32s_has_12_993_642_parameters_at_21_classes() -> None:
    assert n_params(FCN32s(21)) == 12_993_642


def test_fcn32s_upsampler_starts_bilinear_or_xavier() -> None:
    assert torch.equal(FCN32s(4).upsample.weight.detach(), bilinear_kernel(4, 4, 64))
    assert not torch.equal(FCN32s(4, upsample_init="xavier").upsample.weight.detach(), bilinear_kernel(4, 4, 64))


@pytest.mark.parametrize("net_class", [FCN32s, FCN8s, SemanticFPN])
@pytest.mark.parametrize("size", [(64, 96), (70, 101)])
def test_segmentation_output_matches_input_size(net_class: type[nn.Module], size: tuple[int, int]) -> None:
    kwargs = {"depth": 18} if net_class is SemanticFPN else {}
    net = net_class(6, **kwargs).eval()
    assert net.task_kind == "segmentation"
    with torch.no_grad():
        assert net(torch.randn(2, 3, *size)).shape == (2, 6, *size)


@pytest.mark.parametrize("net_class", [FCN32s, FCN8s])
def test_fcn_pads_bottom_right_so_scores_stay_anchored_at_the_top_left_pixel(net_class: type[nn.Module]) -> None:
    net = net_class(3).eval()
    x = torch.randn(1, 3, 50, 45)
    with torch.no_grad():
        padded_by_hand = net(F.pad(x, (0, 19, 0, 14)))[..., :50, :45]
        torch.testing.assert_close(net(x), padded_by_hand)


def test_fcn8s_skip_scorers_start_at_zero_so_it_starts_as_coarse_fusion() -> None:
    net = FCN8s(5)
    assert net.score_c4.weight.abs().sum() == 0 and net.score_c3.weight.abs().sum() == 0


@pytest.mark.parametrize("depth", [18, 50])
def test_fpn_trunk_gives_256_channel_p2_to_p5_at_strides_4_to_32(depth: int) -> None:
    trunk = FPNTrunk(depth).eval()
    with torch.no_grad():
        pyramid = trunk(torch.randn(1, 3, 64, 96))
    assert [p.shape[1:] for p in pyramid] == [(256, 64 // s, 96 // s) for s in (4, 8, 16, 32)]


def test_semantic_fpn_trains_one_step() -> None:
    net = SemanticFPN(4, depth=18).train()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert net.trunk.backbone.conv1.weight.grad is not None


@pytest.mark.parametrize("factor", [8, 32])
def test_large_learned_upsamplers_run_in_fp32_under_bf16_autocast(factor: int) -> None:
    """oneDNN's bf16 transposed convolution with FCN-32s' 64x64 kernel, stride 32, took 14x the fp32
    time (5.0 s against 0.36 s per batch of 8 at 240x320 on a Xeon with AMX): FCN's x8 and x32
    upsamplers compute in fp32 whatever the autocast, with the same weights and output."""
    up = bilinear_upsampler(3, factor)
    x = torch.randn(2, 3, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = up(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, up(x))


def test_a_small_learned_upsampler_follows_the_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bilinear_upsampler(3, 2)(torch.randn(2, 3, 4, 5)).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_an_fp32_upsampler_follows_a_network_held_in_another_precision(dtype: torch.dtype) -> None:
    """trainer.precision=bf16-true or 64-true converts the weights themselves: the upsampler then
    computes in their precision (fp32 is only for autocast, where the weights stay fp32)."""
    up = bilinear_upsampler(3, 32).to(dtype)
    assert up(torch.randn(2, 3, 4, 5, dtype=dtype)).dtype == dtype
