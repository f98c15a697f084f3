"""The plain CNN baseline of the Simpsons reference article (a Keras ``Sequential`` model)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from visionbench.models.base import InitScheme, Pixels, TaskKind, init_weights, input_pixels


def _conv(in_channels: int, out_channels: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding), nn.ReLU(inplace=True))


class PlainCNN(nn.Module):
    """conv32 → pool → conv64×2 → pool → conv128×2 (valid) → pool → dense128 → dropout → classes.

    The head is a flatten + dense layer as in the article, so the parameter count depends on
    ``image_size`` (3,491,603 at 128×128 with 19 classes, the published summary); the flatten
    size is computed from a dry run rather than hand-derived so any input size works.
    ``init``/``zero_head``: see ``init_weights``; without batch norm, PyTorch's default init
    would leave this network at chance for many epochs.
    """

    task_kind: ClassVar[TaskKind] = "classification"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 128,
        dropout: float = 0.5,
        init: InitScheme = "he",
        zero_head: bool = False,
        pixels: Pixels = "imagenet",
    ) -> None:
        super().__init__()
        self.pixels = input_pixels(pixels)
        self.features = nn.Sequential(
            _conv(in_channels, 32, padding=1),
            nn.MaxPool2d(2),
            _conv(32, 64, padding=1),
            _conv(64, 64, padding=1),
            nn.MaxPool2d(2),
            _conv(64, 128, padding=0),
            _conv(128, 128, padding=0),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, image_size, image_size)).numel()
        hidden = [nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        head = nn.Linear(128, num_classes)
        self.classifier = nn.Sequential(*hidden, head)
        init_weights(self, init, zero_head=head if zero_head else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.pixels(x)))
