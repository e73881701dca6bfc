"""Checkpoints: a plain ``state_dict`` (``torch.save``, loadable with ``weights_only=True``) plus a
JSON sidecar with everything needed to rebuild the model (conventions sec. 1: never pickle whole
objects). ``model.pt`` + ``model.json``; :func:`load_model` needs nothing else.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robust_features.records import atomic_write_bytes, atomic_write_json, git_state, to_jsonable, utc_now

CHECKPOINT_SCHEMA = "robust-features/checkpoint/v1"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)      # torch.compile wrapper


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, arch: str, dataset: str, num_classes: int,
                    in_channels: int, image_size: int, mean: Sequence[float], std: Sequence[float],
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``path`` (the state_dict, CPU tensors) and ``path.with_suffix('.json')`` atomically.

    The sidecar holds: schema, arch, dataset, num_classes, in_channels, image_size, mean, std,
    the state_dict's sha256, the git commit, the save time and ``extra`` (e.g. training config,
    threat model, epochs, seed, metrics). Returns ``path``.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    commit, dirty = git_state()
    meta = {
        "schema": CHECKPOINT_SCHEMA, "arch": arch, "dataset": dataset, "num_classes": int(num_classes),
        "in_channels": int(in_channels), "image_size": int(image_size),
        "mean": [float(m) for m in mean], "std": [float(s) for s in std],
        "state_dict_file": path.name, "sha256": file_sha256(path), "git_commit": commit, "git_dirty": dirty,
        "saved_at": utc_now(), "extra": to_jsonable(dict(extra or {})),
    }
    atomic_write_json(sidecar_path(path), meta)
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of checkpoint ``path`` (checked for schema and required keys)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"checkpoint sidecar {side} not found; a checkpoint is {Path(path).name} + "
                                f"{side.name} (written by empirical.checkpoint.save_checkpoint)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint sidecar {side} is not valid JSON: {exc}") from None
    need = ("arch", "num_classes", "in_channels", "image_size", "mean", "std")
    missing = [k for k in need if k not in meta]
    if missing or meta.get("schema") != CHECKPOINT_SCHEMA:
        raise ValueError(f"checkpoint sidecar {side} has schema {meta.get('schema')!r} and lacks {missing}; "
                         f"expected schema {CHECKPOINT_SCHEMA!r} with keys {', '.join(need)}")
    return meta


def load_model(path: str | os.PathLike, *, device: Any = "cpu", verify: bool = True) -> nn.Module:
    """Rebuild the model of checkpoint ``path`` from the file and its sidecar alone (eval mode).

    ``verify`` checks the state_dict's sha256 against the sidecar (a tampered or truncated file
    raises ``ValueError``). Weights are loaded with ``weights_only=True``.
    """
    from empirical.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    meta = read_sidecar(path)
    if verify and meta.get("sha256") and file_sha256(path) != meta["sha256"]:
        raise ValueError(f"checkpoint {path} has sha256 {file_sha256(path)[:16]}..., but its sidecar records "
                         f"{meta['sha256'][:16]}...; the file was changed after saving")
    model = build_model(meta["arch"], num_classes=int(meta["num_classes"]), in_channels=int(meta["in_channels"]),
                        image_size=int(meta["image_size"]), mean=meta["mean"], std=meta["std"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


__all__ = ["CHECKPOINT_SCHEMA", "file_sha256", "load_model", "read_sidecar", "save_checkpoint", "sidecar_path"]
