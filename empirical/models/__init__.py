"""Model zoo for the empirical experiments: ``build_model(arch, ...)``, ``ARCHS``, ``default_arch``.

Every model takes float NCHW images in [0, 1], normalises them inside (first layer), returns
logits, and exposes ``features(x)``, the penultimate representation read by the final linear
layer (the paper's g(x), sec. 3.1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from empirical.models.base import NORMS, Act, ImageClassifier, Normalize, set_norm
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


_FIXED = ("num_classes", "in_channels", "image_size", "mean", "std")


#: architectures without normalisation layers: their ``norm`` option is ``none`` only
_NO_NORM: tuple[str, ...] = ("mlp",)


def arch_options(name: str) -> dict[str, Any]:
    """The options architecture ``name`` accepts, with their defaults (e.g. fastnet: widths, pool, act),
    and ``norm``, the normalisation switch every architecture has (:data:`NORMS`: ``batch`` where the
    architecture has BatchNorm layers, ``none`` for the MLP; :func:`empirical.models.base.set_norm`)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(ARCHS)}")
    sig = inspect.signature(_BUILDERS[name])
    opts = {k: p.default for k, p in sig.parameters.items() if k not in _FIXED and p.default is not inspect._empty}
    return {**opts, "norm": "none" if name in _NO_NORM else "batch"}


def parse_arch(spec: str) -> tuple[str, dict[str, Any]]:
    """``"fastnet"`` or ``"fastnet:widths=32-64-128,pool=avg"`` -> (name, typed options).

    Options are typed by the builder's defaults: integers, and tuples of integers written with
    ``-`` (``32-64-128``); strings otherwise. Unknown names or options list the valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"architecture {spec!r} must be a name such as fastnet or fastnet:pool=avg; "
                         f"valid names: {', '.join(ARCHS)}")
    name, _, rest = spec.strip().partition(":")
    defaults = arch_options(name)
    opts: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or key not in defaults:
            valid = ", ".join(f"{k} (default {_fmt(v)})" for k, v in defaults.items()) or "none"
            raise ValueError(f"architecture option {item!r} of {name!r} is not KEY=VALUE with a known key; "
                             f"valid options: {valid}")
        default = defaults[key]
        try:
            if isinstance(default, tuple):
                opts[key] = tuple(int(t) for t in text.split("-"))
            elif isinstance(default, int) and not isinstance(default, bool):
                opts[key] = int(text)
            else:
                opts[key] = text.strip()
        except ValueError:
            raise ValueError(f"architecture option {key}={text!r} of {name!r} must be like {_fmt(default)}") from None
        # every integer option of the zoo is a width or growth rate: a count of channels or units
        ints = opts[key] if isinstance(opts[key], tuple) else (opts[key],) if isinstance(opts[key], int) else ()
        if any(v < 1 for v in ints) or (isinstance(opts[key], tuple) and not opts[key]):
            raise ValueError(f"architecture option {key}={text!r} of {name!r} must be positive, like {_fmt(default)}")
    norm = opts.get("norm")
    if norm is not None:
        valid = ("none",) if name in _NO_NORM else NORMS
        if norm not in valid:
            raise ValueError(f"architecture option norm={norm!r} of {name!r} is not valid; valid: {', '.join(valid)}"
                             + (" (it has no normalisation layer)" if name in _NO_NORM else ""))
    return name, opts


def _fmt(v: Any) -> str:
    return "-".join(str(t) for t in v) if isinstance(v, tuple) else str(v)


def canonical_arch(spec: str) -> str:
    """The spec with its options in sorted order and defaults dropped (``fastnet:pool=avg``)."""
    name, opts = parse_arch(spec)
    defaults = arch_options(name)
    kept = {k: v for k, v in sorted(opts.items()) if v != defaults[k]}
    return name + (":" + ",".join(f"{k}={_fmt(v)}" for k, v in kept.items()) if kept else "")


def build_model(arch: str, *, num_classes: int, in_channels: int, image_size: int, mean: Sequence[float],
                std: Sequence[float]) -> nn.Module:
    """Build ``arch`` (one of :data:`ARCHS`, optionally with options, see :func:`parse_arch`) for
    the given input shape and normalisation.

    The returned module carries ``arch_config`` (the arguments) so checkpoints can rebuild it.
    Parameter initialisation draws from torch's global RNG: seed it first for reproducibility.
    """
    name, opts = parse_arch(arch)
    for key, v in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key}={v!r} must be a positive integer")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be at least 2")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean={tuple(mean)} and std={tuple(std)} need in_channels={in_channels} entries")
    norm = opts.pop("norm", arch_options(name)["norm"])
    model = set_norm(_BUILDERS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                     mean=mean, std=std, **opts), norm)
    model.arch_config = {"arch": canonical_arch(arch), "num_classes": num_classes, "in_channels": in_channels,
                         "image_size": image_size, "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return model


def in_memory_format(model: nn.Module, channels_last: bool | None, device: Any) -> nn.Module:
    """``model`` in ``channels_last`` memory format when asked (None: on CUDA only, the training
    default), else contiguous: the one rule every stage that runs a model follows, so training,
    a reproduction's evaluation and ``robust-features eval`` run the same kernels."""
    import torch

    if channels_last or (channels_last is None and torch.device(device).type == "cuda"):
        return model.to(memory_format=torch.channels_last)
    return model.to(memory_format=torch.contiguous_format)


__all__ = ["ARCHS", "NORMS", "Act", "ImageClassifier", "Normalize", "arch_options", "set_norm", "build_model", "canonical_arch", "in_memory_format",
           "default_arch", "parse_arch", "cnn_small", "densenet121",
           "fastnet", "inception_small", "mlp", "resnet18", "resnet50", "vgg16"]
