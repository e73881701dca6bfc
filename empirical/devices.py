"""The one check of a ``--device`` value, shared by every command (train, eval, attack, construct,
fig2, table1, fig3, reproduce) before any work starts.

:func:`resolve_device` accepts ``auto`` (or ``None``: CUDA when available, else the CPU),
``cpu``, ``cuda`` and ``cuda:N``; anything else -- ``gpu``, ``tpu``, a typo, CUDA on a machine
without it, an index past the last GPU -- raises ``ValueError`` with one line naming the value and
what is valid (``robust-features`` prints it and exits with status 2).
"""

from __future__ import annotations

from typing import Any

VALID_DEVICES = "auto, cpu, cuda, cuda:N"
_HINTS = {
    "gpu": "; for an NVIDIA GPU use --device cuda",
    "gpus": "; for an NVIDIA GPU use --device cuda",
    "nvidia": "; for an NVIDIA GPU use --device cuda",
    "tpu": "; TPUs are not supported (PyTorch/XLA is not wired in): use cuda or cpu",
    "xla": "; TPUs are not supported (PyTorch/XLA is not wired in): use cuda or cpu",
    "mps": "; Apple's mps backend is not supported: use cpu",
}


def resolve_device(name: Any, *, option: str = "--device", require_available: bool = True) -> Any:
    """``name`` -> ``torch.device``, checked against this machine (``ValueError`` otherwise).

    ``require_available=False`` checks the name only (``reproduce --plan`` runs nothing, so it may
    plan a CUDA run on a machine without CUDA)."""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        text = str(name)
    elif isinstance(name, str):
        text = name.strip()
    else:
        raise ValueError(f"{option}={name!r} is not a device; valid: {VALID_DEVICES}")
    hint = _HINTS.get(text.lower().split(":")[0], "")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{option}={name!r} is not a device; valid: {VALID_DEVICES}{hint}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"{option}={name!r}: device type {dev.type!r} is not supported; valid: {VALID_DEVICES}{hint}")
    if not require_available:
        return dev
    if not torch.cuda.is_available():
        why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"{option}={name!r} requested but CUDA is not available ({why}); use --device cpu "
                         "(or auto: CUDA when present, else the CPU)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"{option}={name!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return dev


__all__ = ["VALID_DEVICES", "resolve_device"]
