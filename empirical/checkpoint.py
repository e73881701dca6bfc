"""Checkpoints: a plain ``state_dict`` (``torch.save``, loadable with ``weights_only=True``) plus a
JSON sidecar with everything needed to rebuild the model (docs/conventions.md sec. 1: never pickle whole
objects). ``model.pt`` + ``model.json``; :func:`load_model` needs nothing else.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from foundation.records import atomic_write_bytes, atomic_write_json, file_sha256, git_state, to_jsonable, utc_now

CHECKPOINT_SCHEMA = "robust-features/checkpoint/v1"


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
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint sidecar {side} holds a JSON {type(meta).__name__}, not an object; expected "
                         f"schema {CHECKPOINT_SCHEMA!r} with keys {', '.join(need)}")
    missing = [k for k in need if k not in meta]
    if missing or meta.get("schema") != CHECKPOINT_SCHEMA:
        raise ValueError(f"checkpoint sidecar {side} has schema {meta.get('schema')!r} and lacks {missing}; "
                         f"expected schema {CHECKPOINT_SCHEMA!r} with keys {', '.join(need)}")
    return meta


def load_torch_file(path: str | os.PathLike, *, what: str = "checkpoint", advice: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers
    only, so a crafted file cannot run code.

    Every way the file itself can be bad becomes one ``ValueError`` line naming ``what``, the
    path and the cause: a refused global (the pickle names something other than tensors and
    plain containers), a truncated or damaged file (torch's zip reader, ``EOFError``, a broken
    pickle). ``advice`` is appended (what to do). An ``OSError`` opening the file propagates.
    """
    path = Path(path)
    tail = f"; {advice}" if advice else ""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise ValueError(f"{what} {path} refers to {refused.group(1)}, which torch.load(weights_only=True) "
                             f"refuses: it holds more than tensors and plain containers, so it was not written "
                             f"by this toolkit or was crafted; it was not loaded{tail}") from None
        raise ValueError(f"{what} {path} is damaged or not a torch.save file (UnpicklingError: "
                         f"{text[:200]}){tail}") from None
    except Exception as exc:  # noqa: BLE001 - torch reports a damaged file as RuntimeError, EOFError, KeyError...
        text = " ".join(str(exc).split()).split(". ")[0][:200] or "unexpected end of file"
        raise ValueError(f"{what} {path} is truncated or damaged and cannot be read ({exc.__class__.__name__}: "
                         f"{text}){tail}") from None


def _mismatch_parts(model: nn.Module, state: Mapping[str, Any]) -> list[str]:
    """Missing, unexpected and reshaped keys of ``state`` against ``model``'s parameters and buffers."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(want[k].shape)}" for k in want
                if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(want[k].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)):
        if items:
            parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
    return parts


def _state_dict_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str:
    """What differs between ``model``'s parameters and ``state``: missing, unexpected and reshaped keys."""
    return "; ".join(_mismatch_parts(model, state)) or "the tensors do not fit"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _retyped(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.dtype, torch.dtype]]:
    """``(key, dtype in state, dtype of the model)`` for every entry ``load_state_dict`` would cast silently."""
    want = model.state_dict()
    return [(k, v.dtype, want[k].dtype) for k, v in state.items() if k in want and v.dtype != want[k].dtype]


def _first_non_finite(state: Mapping[str, torch.Tensor]) -> tuple[str, torch.Tensor] | None:
    for k, v in state.items():
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
            return k, v
    return None


def load_model(path: str | os.PathLike, *, device: Any = "cpu", verify: bool = True) -> nn.Module:
    """Rebuild the model of checkpoint ``path`` from the file and its sidecar alone (eval mode).

    ``verify`` (the default) checks the state_dict's sha256 against the one its sidecar records:
    a tampered or truncated file raises ``ValueError``, and so does a sidecar that records no
    sha256 (nothing to verify against); ``verify=False`` (the command line's ``--no-verify``)
    skips the hash only. Whatever ``verify`` says, weights are loaded with ``weights_only=True``
    (:func:`load_torch_file`) and checked before they reach the model: a file that cannot be
    read, weights that do not fit the sidecar's architecture (keys, shapes), an entry whose dtype
    differs from the model's (``load_state_dict`` would cast it silently) and a NaN or infinite
    weight each raise ``ValueError`` naming the path and the first offending tensor.
    """
    from empirical.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    meta = read_sidecar(path)
    if verify:
        recorded = meta.get("sha256")
        unverified = "the checkpoint cannot be verified; re-save it, or pass verify=False (--no-verify) to load it unverified"
        if recorded is None or recorded == "":
            raise ValueError(f"the sidecar of {path} records no sha256; {unverified}")
        if not isinstance(recorded, str) or not re.fullmatch(r"[0-9a-f]{64}", recorded):
            raise ValueError(f"the sidecar of {path} records sha256={recorded!r}, not a 64-digit hex digest; "
                             f"{unverified}")
        actual = file_sha256(path)
        if actual != recorded:
            raise ValueError(f"checkpoint {path} has sha256 {actual[:16]}..., but its sidecar records "
                             f"{recorded[:16]}...; the file was changed after saving")
    model = build_model(meta["arch"], num_classes=int(meta["num_classes"]), in_channels=int(meta["in_channels"]),
                        image_size=int(meta["image_size"]), mean=meta["mean"], std=meta["std"])
    state = load_torch_file(path, what="checkpoint",
                            advice="re-run the training that wrote it, or restore the file from a copy")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict of tensors "
                         "(written by empirical.checkpoint.save_checkpoint)")
    misfit = (f"checkpoint {path} holds weights that do not fit the architecture {meta['arch']!r} of its sidecar "
              f"{sidecar_path(path).name} ({{}}); the .pt and the .json come from different models: restore the "
              "matching pair")
    if _mismatch_parts(model, state):
        raise ValueError(misfit.format(_state_dict_mismatch(model, state)))
    retyped = _retyped(model, state)
    if retyped:
        key, got, want = retyped[0]
        more = f" (and {len(retyped) - 1} more tensors of another dtype)" if len(retyped) > 1 else ""
        raise ValueError(f"checkpoint {path} holds {key} as {_dtype_name(got)}, but the architecture "
                         f"{meta['arch']!r} of its sidecar {sidecar_path(path).name} keeps it as {_dtype_name(want)}"
                         f"{more}; loading would cast it silently, so the file was not written by save_checkpoint "
                         "for this model or was altered: restore the matching pair")
    bad = _first_non_finite(state)
    if bad is not None:
        key, v = bad
        nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
        raise ValueError(f"checkpoint {path} holds non-finite weights: {key} has {nan} NaN and {inf} infinite "
                         f"values of {v.numel()}; the training that wrote it diverged or the file was altered: "
                         "re-run the training, or restore the file from a copy")
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ValueError(misfit.format(_state_dict_mismatch(model, state))) from None
    return model.to(device).eval()


__all__ = ["CHECKPOINT_SCHEMA", "file_sha256", "load_model", "load_torch_file", "read_sidecar", "save_checkpoint", "sidecar_path"]
