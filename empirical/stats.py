"""Small statistics on per-example outcomes, shared by the experiments and the figures.

Pure NumPy (no torch), so :mod:`paper_figures` can use it on records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def gap_fraction(std: Sequence[bool] | np.ndarray, adv: Sequence[bool] | np.ndarray,
                 other: Sequence[bool] | np.ndarray) -> dict[str, float]:
    """The fraction of the robust-vs-standard gap that ``other`` closes, with its standard error.

    ``std``, ``adv``, ``other``: per test example, robust (1) or not (0) for the standard model,
    the adversarially trained one and the model in question (e.g. trained on D_R), on the *same*
    examples under the same attack. The fraction is

        f = (acc_other - acc_std) / (acc_adv - acc_std) = mean(a) / mean(b),
        a_i = other_i - std_i,  b_i = adv_i - std_i,

    (the paper's CIFAR-10 D_R closes (48.3 - 4.6) / (82.5 - 4.6) = 56% of it). Its standard
    error is the delta-method one of a ratio of paired means, which keeps the correlation of the
    three models' outcomes on the same images: se(f) = sd(a - f b) / (sqrt(n) |mean(b)|). Returns
    ``{"value", "stderr", "n", "gap_points", "closed_points"}`` (points = percent); value and
    stderr are NaN when the standard and robust models are equally robust.
    """
    s, a_, o = (np.asarray(v, dtype=np.float64).ravel() for v in (std, adv, other))
    n = s.shape[0]
    if a_.shape[0] != n or o.shape[0] != n:
        raise ValueError(f"std, adv and other must cover the same examples; got {n}, {a_.shape[0]}, {o.shape[0]}")
    if n == 0:
        raise ValueError("gap_fraction needs at least one example")
    a, b = o - s, a_ - s
    mb = float(b.mean())
    out = {"n": float(n), "gap_points": 100.0 * mb, "closed_points": 100.0 * float(a.mean())}
    if mb == 0.0:
        return {**out, "value": float("nan"), "stderr": float("nan")}
    f = float(a.mean()) / mb
    resid = a - f * b
    se = float(resid.std(ddof=1)) / (math.sqrt(n) * abs(mb)) if n > 1 else float("nan")
    return {**out, "value": f, "stderr": se}


def gap_fraction_of_accuracies(std: float, adv: float, other: float) -> float:
    """(other - std) / (adv - std) from accuracies alone (no standard error); NaN for a zero gap."""
    gap = adv - std
    return float("nan") if gap == 0 else (other - std) / gap


def mean_and_stderr(values: Sequence[float]) -> dict[str, Any]:
    """Mean over runs (e.g. seeds) and the standard error of that mean, sd / sqrt(k)."""
    v = np.asarray(values, dtype=np.float64)
    k = int(v.shape[0])
    if k == 0:
        raise ValueError("mean_and_stderr needs at least one value")
    sd = float(v.std(ddof=1)) if k > 1 else float("nan")
    return {"mean": float(v.mean()), "stderr": sd / math.sqrt(k) if k > 1 else float("nan"), "sd": sd, "k": k}


__all__ = ["gap_fraction", "gap_fraction_of_accuracies", "mean_and_stderr"]
