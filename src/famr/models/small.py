"""Small networks for the embedded demo and fast tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import register_model


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer, stored as buffers, not parameters."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _normalize(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> nn.Module:
    if mean is None and std is None:
        return nn.Identity()
    mean = list(mean) if mean is not None else [0.0] * in_channels
    std = list(std) if std is not None else [1.0] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} values each, got {mean} and {std}")
    return Normalize(mean, std)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU blocks (one max-pool), global average pool, linear classifier."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = _normalize(in_channels, mean, std)
        self.features = nn.Sequential(
            _conv_bn(in_channels, width),
            _conv_bn(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)))


class MLP(nn.Module):
    """Flatten, one hidden ReLU layer, linear classifier (no BatchNorm)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 8,
        hidden: int = 128,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = _normalize(in_channels, mean, std)
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden), nn.ReLU()
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.body(self.normalize(x)))


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Small CNN (3 conv-BN-ReLU blocks, width 32/64/64, ~60k parameters): the demo's model."""
    return SmallCNN(num_classes, in_channels, **kwargs)


@register_model("mlp")
def mlp(num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """One-hidden-layer perceptron on flattened pixels (needs ``image_size``)."""
    return MLP(num_classes, in_channels, **kwargs)
