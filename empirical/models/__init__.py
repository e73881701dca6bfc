"""Model zoo for the empirical experiments: ``build_model(arch, ...)``, ``ARCHS``, ``default_arch``.

Every model takes float NCHW images in [0, 1], normalises them inside (first layer), returns
logits, and exposes ``features(x)``, the penultimate representation read by the final linear
layer (the paper's g(x), sec. 3.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from empirical.models.base import ImageClassifier, Normalize
from empirical.models.nets import cnn_small, densenet121, fastnet, inception_small, mlp, resnet18, resnet50, vgg16

_BUILDERS: dict[str, Callable[..., ImageClassifier]] = {
    "fastnet": fastnet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "densenet121": densenet121,
    "inception_small": inception_small,
    "mlp": mlp,
    "cnn_small": cnn_small,
}
ARCHS: tuple[str, ...] = tuple(_BUILDERS)

_DEFAULT_ARCH = {"digits": "cnn_small", "synthetic": "cnn_small", "cifar10": "fastnet", "imagefolder": "fastnet"}


def default_arch(dataset_name: str) -> str:
    """The default architecture per dataset: ``cnn_small`` for digits/synthetic, ``fastnet``
    for CIFAR-10 and image folders."""
    key = dataset_name.split(":", 1)[0]
    if key not in _DEFAULT_ARCH:
        raise ValueError(f"no default architecture for dataset {dataset_name!r}; known: {', '.join(_DEFAULT_ARCH)}")
    return _DEFAULT_ARCH[key]


def build_model(arch: str, *, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float],
                std: Sequence[float]) -> nn.Module:
    """Build ``arch`` (one of :data:`ARCHS`) for the given input shape and normalisation.

    The returned module carries ``arch_config`` (the arguments) so checkpoints can rebuild it.
    Parameter initialisation draws from torch's global RNG: seed it first for reproducibility.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be at least 2")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean={tuple(mean)} and std={tuple(std)} need in_channels={in_channels} entries")
    model = _BUILDERS[arch](num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                            mean=mean, std=std)
    model.arch_config = {"arch": arch, "num_classes": num_classes, "in_channels": in_channels,
                         "image_size": image_size, "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return model


__all__ = ["ARCHS", "ImageClassifier", "Normalize", "build_model", "default_arch", "cnn_small", "densenet121",
           "fastnet", "inception_small", "mlp", "resnet18", "resnet50", "vgg16"]
