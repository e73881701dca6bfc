"""The one place that decides the arithmetic of a forward pass: fp32, or bf16 autocast.

``precision`` is one of :data:`PRECISIONS`:

* ``"auto"`` - bf16 autocast on CUDA, fp32 elsewhere (the fast path where it pays, exact numbers
  on a CPU); this is every default in the toolkit;
* ``"fp32"`` - no autocast on any device (what the paper's authors ran);
* ``"bf16"`` - bf16 autocast on any device, CPU included: the CUDA code path, runnable in CI
  (torch autocasts convolutions and matmuls to bf16 on CPU as on CUDA).

Attacks, inversion, training and evaluation all call :func:`autocast`; losses and attack
objectives are always taken in fp32 (``logits.float()``), and the iterates stay fp32.

**Verdicts are fp32.** An attack's iterations may run in bf16 (its ``precision``), but whether a
point is classified correctly - clean accuracy, "this adversarial input breaks the model", a
robust mask - is always decided by a forward pass in :data:`VERDICT` precision, fp32, so a number
recorded as an accuracy never depends on the arithmetic the attack chose.

Torch is imported when a forward pass is set up, not with the module, so the settings that name
a precision (:mod:`empirical.settings`) can check it without torch.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
VERDICT = "fp32"          # the precision every accuracy and every "broken" is decided in


def check_precision(precision: Any, *, name: str = "precision") -> str:
    """Return ``precision`` if valid, else raise ``ValueError`` naming the valid values."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name}={precision!r} is not a precision; valid: {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: Any) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` means on ``device`` (``auto`` -> bf16 on CUDA only)."""
    check_precision(precision)
    if precision == "auto":
        import torch

        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast(device: Any, precision: str = "auto"):
    """A context manager running the enclosed forward passes in ``precision`` on ``device``."""
    import torch

    dev = torch.device(device)
    if resolve_precision(precision, dev) == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return nullcontext()


__all__ = ["PRECISIONS", "VERDICT", "autocast", "check_precision", "resolve_precision"]
