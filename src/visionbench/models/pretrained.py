"""Load torchvision's ImageNet weights from the local torch hub cache, never from the network.

The benchmark machines are offline, so the weights file must already sit where
``torch.hub.load_state_dict_from_url`` would have put it; when it does not, the user gets one
paragraph naming the exact file and folder instead of a download attempt that hangs or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import get_weight

from visionbench.errors import ConfigError, DataNotFoundError

StateDict = dict[str, Tensor]

# The one ImageNet checkpoint each architecture name refers to (the original-recipe V1 weights).
TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "vgg19": "VGG19_Weights.IMAGENET1K_V1",
    "vgg19_bn": "VGG19_BN_Weights.IMAGENET1K_V1",
    "googlenet": "GoogLeNet_Weights.IMAGENET1K_V1",
}


def checkpoint_path(arch: str) -> Path:
    """Where torch hub caches ``arch``'s weights: ``$TORCH_HOME/hub/checkpoints/<file from the url>``."""
    if arch not in TORCHVISION_WEIGHTS:
        raise ConfigError(
            f"No torchvision ImageNet weights are known for architecture '{arch}'. "
            f"Known architectures: {', '.join(sorted(TORCHVISION_WEIGHTS))}. "
            "Set `model.net.pretrained=false` or use one of these architectures."
        )
    url = get_weight(TORCHVISION_WEIGHTS[arch]).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def load_torchvision_weights(
    module: nn.Module,
    arch: str,
    head_prefixes: tuple[str, ...],
    convert: Callable[[StateDict], StateDict] | None = None,
) -> None:
    """Copy torchvision's ``arch`` ImageNet weights into ``module``, except the classifier head.

    Keys starting with one of ``head_prefixes`` are skipped in the file and left at their fresh
    initialisation in ``module`` (the head is sized for the task's classes); every other key
    must match in name and shape, so a silent partial load cannot happen. ``convert`` adapts a
    checkpoint whose layout differs from ours in a known, exact way.
    """
    path = checkpoint_path(arch)
    if not path.is_file():
        url = get_weight(TORCHVISION_WEIGHTS[arch]).url
        raise DataNotFoundError(
            f"Pretrained weights for '{arch}' were requested (`pretrained: true`) but the file "
            f"'{path.name}' is not in the torch hub cache folder '{path.parent}', and this machine "
            f"downloads nothing. On a machine with internet, download {url} (for example with "
            f"`python -c \"import torchvision; torchvision.models.get_weight('{TORCHVISION_WEIGHTS[arch]}')"
            f'.get_state_dict()"`, which stores it in ~/.cache/torch/hub/checkpoints), copy '
            f"'{path.name}' into '{path.parent}' (or point TORCH_HOME at a folder whose "
            "hub/checkpoints holds it), or set `model.net.pretrained=false`."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if convert is not None:
        state = convert(state)
    state = {k: v for k, v in state.items() if not k.startswith(head_prefixes)}
    own = module.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ConfigError(
            f"The torchvision '{arch}' weights in '{path}' do not fit this network: "
            f"{', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in mismatched[:4])}. "
            "This happens when `in_channels` differs from 3 or the width was changed; use the "
            "default layout or set `model.net.pretrained=false`."
        )
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head_prefixes)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"Loading '{path}' into {type(module).__name__}: missing keys {missing[:8]}, "
            f"unexpected keys {result.unexpected_keys[:8]}; the key names no longer match torchvision's."
        )
