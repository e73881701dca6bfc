"""Architectures: CIFAR-style ResNet-18/50, VGG-16, DenseNet-121, a small Inception, an
airbench-style fast network, and an MLP / small CNN for digits and synthetic.

Every network accepts any square input size (deep networks skip a 2x2 pooling once the feature
map is 1 pixel wide, and end in global pooling), any channel count and class count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from empirical.models.base import Act, ImageClassifier, conv_bn, maybe_pool


# ---------------------------------------------------------------------------------------------
# small models
# ---------------------------------------------------------------------------------------------
def mlp(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float],
        width: int = 256) -> ImageClassifier:
    """Two hidden ReLU layers of ``width``; features = the second hidden layer."""
    d = in_channels * image_size * image_size
    body = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
    return ImageClassifier(body, width, num_classes, mean, std)


def cnn_small(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float],
              std: Sequence[float], width: int = 32) -> ImageClassifier:
    """conv(w)-conv(2w)-pool-conv(4w)-pool-fc(256): a few seconds to ~98% on 8x8 digits (CPU)."""
    s = image_size
    p1, s = maybe_pool(s)
    p2, s = maybe_pool(s)
    body = nn.Sequential(conv_bn(in_channels, width), conv_bn(width, 2 * width), p1, conv_bn(2 * width, 4 * width), p2,
                         nn.Flatten(), nn.Linear(4 * width * s * s, 256), nn.ReLU())
    return ImageClassifier(body, 256, num_classes, mean, std)


# ---------------------------------------------------------------------------------------------
# fastnet: airbench-style ResNet-9-class network
# ---------------------------------------------------------------------------------------------
class _ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, size: int, act: str = "gelu") -> None:
        pool, _ = maybe_pool(size)
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), pool, nn.BatchNorm2d(c_out), Act(act),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), Act(act))


POOLS: tuple[str, ...] = ("max", "avg")


def fastnet(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float],
            widths: tuple[int, ...] = (64, 256, 256), pool: str = "max", act: str = "gelu") -> ImageClassifier:
    """Keller Jordan's airbench94 layout: stem conv + three (conv, pool, BN, GELU, conv, BN, GELU)
    groups of widths 64/256/256, global max-pool, bias-free linear head scaled by 1/9.
    (airbench reaches 94% on CIFAR-10 in a few GPU-seconds with its training tricks; here it is
    the fast network for speed-critical runs.)

    Options (``fastnet:widths=32-64-128,pool=avg,act=relu``): ``widths`` of the conv groups (the
    stem has half the first, at least 24); ``pool`` the global pooling that forms the
    representation, ``max`` (airbench) or ``avg`` (the authors' ResNets: every location of the
    last feature map receives gradient when the representation is inverted, not one per channel);
    ``act`` the nonlinearity, ``gelu`` (airbench) or ``relu`` (the authors' ResNets)."""
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths={widths!r} must be positive integers, e.g. 64-256-256")
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not a pooling; valid: {', '.join(POOLS)}")
    w0 = max(24, widths[0] // 2)
    s = image_size
    groups = []
    c = w0
    for w in widths:
        groups.append(_ConvGroup(c, w, s, act))
        s = s // 2 if s >= 2 else s
        c = w
    body = nn.Sequential(nn.Conv2d(in_channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), Act(act),
                         *groups, nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1))
    return ImageClassifier(body, widths[-1], num_classes, mean, std, head_scale=1 / 9, head_bias=False)


# ---------------------------------------------------------------------------------------------
# ResNets (CIFAR-style: 3x3 stem, no max-pool)
# ---------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        self.act = Act("relu")     # the block's output ReLU (straight-through-able in the last block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        out_c = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_c)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != out_c:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out_c, 1, stride=stride, bias=False), nn.BatchNorm2d(out_c))
        self.act = Act("relu")     # the block's output ReLU (the authors' fake_relu acts on the last one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.shortcut(x))


def _positive_width(name: str, v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name}={v!r} must be a positive integer")


def _resnet(block: type, layers: tuple[int, ...], *, num_classes: int, in_channels: int, image_size: int,
            mean: Sequence[float], std: Sequence[float], width: int = 64) -> ImageClassifier:
    _positive_width("width", width)
    mods: list[nn.Module] = [conv_bn(in_channels, width)]
    c, s = width, image_size
    for i, (planes, n) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), layers)):
        stride = 1 if i == 0 or s < 2 else 2
        for j in range(n):
            mods.append(block(c, planes, stride if j == 0 else 1))
            c = planes * block.expansion
        if stride == 2:
            s = (s + 1) // 2
    mods.append(nn.AdaptiveAvgPool2d(1))
    return ImageClassifier(nn.Sequential(*mods), c, num_classes, mean, std)


def resnet18(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float],
             width: int = 64) -> ImageClassifier:
    """CIFAR-style ResNet-18 (He et al. 2016; the kuangliu/robustness-library layout), 512-d features.
    Option ``width`` (default 64): the first stage's channels, doubled per stage (8 x width features)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels,
                   image_size=image_size, mean=mean, std=std, width=width)


def resnet50(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float],
             width: int = 64) -> ImageClassifier:
    """CIFAR-style ResNet-50, the paper's architecture; 2048-d features (docs/paper-notes.md sec. 2.1).
    Option ``width`` as for resnet18 (32 x width features)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels,
                   image_size=image_size, mean=mean, std=std, width=width)


# ---------------------------------------------------------------------------------------------
# VGG-16 (with BatchNorm, CIFAR head)
# ---------------------------------------------------------------------------------------------
def vgg16(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float],
          std: Sequence[float], width: int = 64) -> ImageClassifier:
    """VGG-16 with BatchNorm (Simonyan & Zisserman 2015, CIFAR variant): 13 convs, 512-d features.
    Option ``width`` (default 64): the first block's channels (8 x width features)."""
    _positive_width("width", width)
    k = width
    cfg = (k, k, "M", 2 * k, 2 * k, "M", 4 * k, 4 * k, 4 * k, "M", 8 * k, 8 * k, 8 * k, "M", 8 * k, 8 * k, 8 * k, "M")
    mods: list[nn.Module] = []
    c, s = in_channels, image_size
    for v in cfg:
        if v == "M":
            pool, s = maybe_pool(s)
            mods.append(pool)
        else:
            mods.append(conv_bn(c, int(v)))
            c = int(v)
    mods.append(nn.AdaptiveAvgPool2d(1))
    return ImageClassifier(nn.Sequential(*mods), 8 * k, num_classes, mean, std)


# ---------------------------------------------------------------------------------------------
# DenseNet-121 (CIFAR stem)
# ---------------------------------------------------------------------------------------------
class _DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, 4 * growth, 1, bias=False),
                                 nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                 nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x), x], 1)


def densenet121(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float],
                std: Sequence[float], growth: int = 32) -> ImageClassifier:
    """DenseNet-121 (Huang et al. 2017; blocks 6/12/24/16, growth 32, compression 0.5), CIFAR stem."""
    c = 2 * growth
    mods: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
    s = image_size
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            mods.append(_DenseLayer(c, growth))
            c += growth
        if i < 3:
            out = c // 2
            pool, s = maybe_pool(s, "avg")
            mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, out, 1, bias=False), pool]
            c = out
    mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
    return ImageClassifier(nn.Sequential(*mods), c, num_classes, mean, std)


# ---------------------------------------------------------------------------------------------
# small Inception (Zhang et al. 2017, "Understanding deep learning requires rethinking generalization")
# ---------------------------------------------------------------------------------------------
class _Inception(nn.Module):
    def __init__(self, c_in: int, c1: int, c3: int) -> None:
        super().__init__()
        self.b1 = conv_bn(c_in, c1, 1)
        self.b3 = conv_bn(c_in, c3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x)], 1)


class _Downsample(nn.Module):
    def __init__(self, c_in: int, c3: int, size: int) -> None:
        super().__init__()
        stride = 2 if size >= 2 else 1
        self.conv = conv_bn(c_in, c3, 3, stride=stride)
        self.pool = nn.MaxPool2d(3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], 1)


def inception_small(*, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> ImageClassifier:
    """The small Inception of Zhang et al. (2017) for CIFAR-10, standing in for the paper's
    Inception-v3 in Fig. 3: conv96, 2 inception, downsample, 4 inception, downsample,
    2 inception, global average pool (336-d features)."""
    s = image_size
    mods: list[nn.Module] = [conv_bn(in_channels, 96, 3), _Inception(96, 32, 32), _Inception(64, 32, 48),
                             _Downsample(80, 80, s)]
    s = (s + 1) // 2 if s >= 2 else s
    mods += [_Inception(160, 112, 48), _Inception(160, 96, 64), _Inception(160, 80, 80), _Inception(160, 48, 96),
             _Downsample(144, 96, s), _Inception(240, 176, 160), _Inception(336, 176, 160), nn.AdaptiveAvgPool2d(1)]
    last = mods[-2]          # the representation is the concatenation of both branches' ReLUs
    return ImageClassifier(nn.Sequential(*mods), 336, num_classes, mean, std,
                           final_acts=[last.b1[2], last.b3[2]])
