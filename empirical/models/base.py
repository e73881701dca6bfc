"""The model contract: [0, 1] NCHW input, normalisation inside, logits out, ``features(x)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of every model (conventions sec. 1)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} entries but std has {len(std)}")
        if any(not (s > 0) for s in std):
            raise ValueError(f"std={tuple(std)} must be positive")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class ImageClassifier(nn.Module):
    """``forward(x) = head(features(x))`` with ``features(x) = body(normalize(x))``.

    ``features`` is the penultimate representation g(x) of the paper (sec. 3.1): exactly what the
    final linear layer ``head`` reads. ``arch_config`` holds what ``build_model`` needs to
    rebuild the network (used by :mod:`empirical.checkpoint`).
    """

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, mean: Sequence[float],
                 std: Sequence[float], *, head_scale: float = 1.0, head_bias: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes, bias=head_bias)
        self.head_scale = float(head_scale)
        self.feature_dim = int(feature_dim)
        self.arch_config: dict[str, Any] = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out * self.head_scale if self.head_scale != 1.0 else out


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), act())


def maybe_pool(size: int, kind: str = "max") -> tuple[nn.Module, int]:
    """A 2x2 pool when the feature map is at least 2 pixels wide (so small inputs such as 8x8
    digits pass through deep CIFAR architectures); identity otherwise. Returns (module, new size)."""
    if size >= 2:
        return (nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)), size // 2
    return nn.Identity(), size
