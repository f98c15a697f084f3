"""`pretrained=True` loads torchvision checkpoints from the offline torch hub cache, head excluded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from visionbench.errors import ConfigError, DataNotFoundError
from visionbench.models import pretrained as pretrained_module
from visionbench.models.fcn import FCN8s, FCN32s
from visionbench.models.fpn import SemanticFPN
from visionbench.models.inception import InceptionV1
from visionbench.models.pretrained import checkpoint_path
from visionbench.models.resnet import ResNet50
from visionbench.models.vgg import VGG19


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def cache_random_checkpoint(arch: str, builder: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """Write a random-weight torchvision checkpoint where torch hub would have cached the real one."""
    torch.manual_seed(1)
    state = builder().state_dict()
    path = checkpoint_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def assert_loaded(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], prefix: str, skip: tuple[str, ...]) -> None:
    """Every non-head reference tensor sits, unchanged, under ``prefix`` in ``ours``."""
    compared = 0
    for key, value in reference.items():
        if key.startswith(skip):
            continue
        assert torch.equal(ours[prefix + key], value), key
        compared += 1
    assert compared > 0


def test_checkpoint_path_uses_the_torchvision_url_file_name(torch_home: Path) -> None:
    assert checkpoint_path("resnet50") == torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"


def test_resnet50_pretrained_loads_everything_but_the_head(torch_home: Path) -> None:
    reference = cache_random_checkpoint("resnet50", lambda: torchvision.models.resnet50(weights=None))
    net = ResNet50(10, pretrained=True)
    assert_loaded(net.state_dict(), reference, "", skip=("fc.",))
    assert net.fc.weight.shape == (10, 2048)


@pytest.mark.parametrize(
    ("build", "prefix"),
    [
        (lambda: FCN32s(21, pretrained=True), "backbone."),
        (lambda: FCN8s(21, pretrained=True), "backbone."),
        (lambda: SemanticFPN(21, depth=18, pretrained=True), "trunk.backbone."),
    ],
    ids=["fcn32s", "fcn8s", "semantic_fpn"],
)
def test_segmentation_nets_load_resnet18_trunk_weights(torch_home: Path, build: Callable[[], nn.Module], prefix: str) -> None:
    reference = cache_random_checkpoint("resnet18", lambda: torchvision.models.resnet18(weights=None))
    assert_loaded(build().state_dict(), reference, prefix, skip=("fc.",))


def test_inception_v1_bn_pretrained_loads_googlenet_with_padded_5x5_kernels(torch_home: Path) -> None:
    reference = cache_random_checkpoint("googlenet", lambda: torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True))
    state = InceptionV1(10, batch_norm=True, pretrained=True).state_dict()
    heads = ("fc.", "aux1.fc2.", "aux2.fc2.")
    key = "inception4a.branch3.1.conv.weight"
    assert state[key].shape[-2:] == (5, 5)
    assert torch.equal(state[key][..., 1:4, 1:4], reference[key])
    assert state[key][..., 0, :].abs().sum() == 0
    assert_loaded(
        {k: v for k, v in state.items() if ".branch3.1.conv.weight" not in k},
        {k: v for k, v in reference.items() if ".branch3.1.conv.weight" not in k},
        "",
        skip=heads,
    )


def test_vgg19_pretrained_uses_the_vgg19_checkpoint(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 550 MB checkpoint is too heavy for a unit test: a placeholder file plus a patched loader.
    reference = torchvision.models.vgg19(weights=None).state_dict()
    path = checkpoint_path("vgg19")
    path.parent.mkdir(parents=True)
    path.touch()
    monkeypatch.setattr(pretrained_module.torch, "load", lambda *args, **kwargs: reference)
    assert_loaded(VGG19(10, pretrained=True).state_dict(), reference, "", skip=("classifier.6.",))


def test_missing_checkpoint_error_names_the_file_and_folder(torch_home: Path) -> None:
    with pytest.raises(DataNotFoundError) as excinfo:
        ResNet50(10, pretrained=True)
    message = str(excinfo.value)
    assert "resnet50-0676ba61.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "download.pytorch.org" in message


def test_pretrained_with_other_input_channels_is_a_config_error(torch_home: Path) -> None:
    cache_random_checkpoint("resnet18", lambda: torchvision.models.resnet18(weights=None))
    with pytest.raises(ConfigError, match="in_channels"):
        FCN32s(21, in_channels=1, pretrained=True)


def test_pretrained_inception_without_batch_norm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="batch_norm"):
        InceptionV1(10, pretrained=True)
