"""The model contract: [0, 1] NCHW input, normalisation inside, logits out, ``features(x)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of every model (docs/conventions.md sec. 1)."""

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


class Act(nn.Module):
    """ReLU or GELU with a straight-through switch (the authors' ``fake_relu``).

    With ``straight_through`` set (and autograd recording) the forward value is unchanged but the
    backward pass treats the nonlinearity as the identity: y = x + (f(x) - x).detach(). The
    ``robustness`` library inverts representations this way through the last ReLU, so that the
    gradient of ||g(x') - g(x)|| reaches units that are switched off at x' (docs/paper-notes.md sec. 2.2).
    """

    def __init__(self, kind: str = "relu") -> None:
        super().__init__()
        if kind not in ("relu", "gelu"):
            raise ValueError(f"activation kind={kind!r} is not valid; valid: relu, gelu")
        self.kind = kind
        self.straight_through = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x) if self.kind == "relu" else nn.functional.gelu(x)
        if self.straight_through and torch.is_grad_enabled():
            return x + (y - x).detach()
        return y

    def extra_repr(self) -> str:
        return self.kind


_ACT_TYPES = (nn.ReLU, nn.GELU, Act)


def mark_final_acts(body: nn.Module) -> list[Act]:
    """The last activation module of ``body`` (in registration order), made an :class:`Act` in place.

    A ``nn.ReLU``/``nn.GELU`` is swapped for the equivalent :class:`Act` (no parameters, so the
    state_dict is unchanged). Architectures whose representation ends in several parallel
    activations pass them to :class:`ImageClassifier` themselves.
    """
    # named_modules() is pre-order: a module registered after a sibling's whole subtree comes after it
    last = None
    for qual, m in body.named_modules():
        if isinstance(m, _ACT_TYPES):
            last = qual
    if last is None:
        raise ValueError(f"{type(body).__name__} has no ReLU/GELU module to mark as the representation's last nonlinearity")
    parent_name, _, name = last.rpartition(".")
    parent = body.get_submodule(parent_name) if parent_name else body
    child = getattr(parent, name)
    if not isinstance(child, Act):
        child = Act("gelu" if isinstance(child, nn.GELU) else "relu")
        setattr(parent, name, child)
    return [child]


class ImageClassifier(nn.Module):
    """``forward(x) = head(features(x))`` with ``features(x) = body(normalize(x))``.

    ``features`` is the penultimate representation g(x) of the paper (sec. 3.1): exactly what the
    final linear layer ``head`` reads. ``final_acts`` are the last nonlinearities before it
    (found by :func:`mark_final_acts` unless given); ``features(x, straight_through=True)`` passes
    gradients straight through them. ``arch_config`` holds what ``build_model`` needs to rebuild
    the network (used by :mod:`empirical.checkpoint`).
    """

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, mean: Sequence[float],
                 std: Sequence[float], *, head_scale: float = 1.0, head_bias: bool = True,
                 final_acts: Sequence[Act] | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes, bias=head_bias)
        self.head_scale = float(head_scale)
        self.feature_dim = int(feature_dim)
        self.arch_config: dict[str, Any] = {}
        # a plain list, not a ModuleList: the modules are registered in the body already
        self._final_acts: list[Act] = list(final_acts) if final_acts is not None else mark_final_acts(body)

    def features(self, x: torch.Tensor, *, straight_through: bool = False) -> torch.Tensor:
        if not straight_through:
            return self.body(self.normalize(x)).flatten(1)
        for a in self._final_acts:
            a.straight_through = True
        try:
            return self.body(self.normalize(x)).flatten(1)
        finally:
            for a in self._final_acts:
                a.straight_through = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out * self.head_scale if self.head_scale != 1.0 else out


NORMS: tuple[str, ...] = ("batch", "group", "none")   # the normalisation switch of every architecture
GROUPS = 32          # GroupNorm's groups (Wu & He 2018), or the largest divisor of the channels below it


def group_count(channels: int) -> int:
    """GroupNorm's number of groups for ``channels``: gcd(channels, 32) (32 groups when they divide)."""
    import math

    return math.gcd(int(channels), GROUPS)


def set_norm(model: nn.Module, kind: str) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` replaced in place by ``kind`` (:data:`NORMS`): ``batch``
    keeps them, ``group`` puts a ``GroupNorm`` (:func:`group_count` groups, affine) in each place,
    ``none`` an identity - the switch of Benz, Zhang & Kweon (ICCV 2021), who train the same networks
    with and without BatchNorm. The modules keep their names, so a checkpoint's keys name the layer
    they belong to. Returns ``model``."""
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r} is not a normalisation; valid: {', '.join(NORMS)}")
    if kind == "batch":
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                c = child.num_features
                setattr(parent, name, nn.GroupNorm(group_count(c), c) if kind == "group" else nn.Identity())
    if kind == "none":
        # without a normalisation the default (Kaiming-uniform, a = sqrt(5)) draws shrink the signal by
        # about 1/sqrt(3) per layer, and a deep network's logits start near 1e-5 and never train (measured:
        # fastnet stays at chance); He's fan-in draws keep its variance, as networks without BatchNorm use
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return model


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, act: str = "relu") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), Act(act))


def maybe_pool(size: int, kind: str = "max") -> tuple[nn.Module, int]:
    """A 2x2 pool when the feature map is at least 2 pixels wide (so small inputs such as 8x8
    digits pass through deep CIFAR architectures); identity otherwise. Returns (module, new size)."""
    if size >= 2:
        return (nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)), size // 2
    return nn.Identity(), size
