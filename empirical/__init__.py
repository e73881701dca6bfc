"""PyTorch experiments: data, models, attacks, training, evaluation, checkpoints, and (built on
them) the paper's dataset constructions.

The core's public names are listed here explicitly and resolved lazily (PEP 562), so that
``import robust_features.cli_core`` (done by ``robust-features --version``) does not import torch;
``from empirical import pgd`` works as usual. The construction modules (``construct``,
``shards``, ``experiments``, ``reproduce``, ``transfer``, ``distributed``) are imported from
their own modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # empirical.data
    "DATASETS": "empirical.data", "Augment": "empirical.data", "ImageData": "empirical.data",
    "Loader": "empirical.data", "check_images": "empirical.data", "download_cifar10": "empirical.data",
    "load_dataset": "empirical.data", "make_synthetic": "empirical.data",
    "planted_feature_scores": "empirical.data",
    # empirical.models
    "ARCHS": "empirical.models", "build_model": "empirical.models", "default_arch": "empirical.models",
    # empirical.threat (the one attack vocabulary)
    "NORMS": "empirical.threat", "Attack": "empirical.threat", "ThreatModel": "empirical.threat",
    "default_step_size": "empirical.threat", "parse_fraction": "empirical.threat",
    # empirical.attacks
    "fgsm_rs": "empirical.attacks", "match_representation": "empirical.attacks",
    "pgd": "empirical.attacks", "project": "empirical.attacks", "random_start": "empirical.attacks",
    # empirical.train
    "NonFiniteLossError": "empirical.train", "TrainConfig": "empirical.train",
    "TrainResult": "empirical.train", "fit": "empirical.train",
    # empirical.evaluate
    "AttackSpec": "empirical.evaluate", "accuracy": "empirical.evaluate", "evaluate": "empirical.evaluate",
    "predict": "empirical.evaluate", "robust_accuracy": "empirical.evaluate",
    # empirical.checkpoint
    "file_sha256": "foundation.records", "load_model": "empirical.checkpoint",
    "read_sidecar": "empirical.checkpoint", "save_checkpoint": "empirical.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'empirical' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
