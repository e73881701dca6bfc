"""The controls that decide between explanations of the paper's datasets (docs/debate.md).

* :func:`run_norm` - BatchNorm through the chain (Benz, Zhang & Kweon, ICCV 2021, "Batch
  Normalization Increases Adversarial Vulnerability and Decreases Adversarial Transferability: A
  Non-Robust Feature Perspective"): the models trained on D (the control), D_rand, D_det and D_R
  trained again with the architecture's normalisation switched (``ARCH:norm=none`` / ``group``;
  :func:`empirical.models.base.set_norm`), everything else equal (same recipe, seed, data), and
  scored beside the BatchNorm ones. Record ``norm.json``.

Each model is a stage of the workspace (named ``<model>_norm-<kind>``, its architecture recorded
with the switch in its canonical spec), so reruns reuse it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from empirical import constructions as registry
from foundation.records import utc_now

#: the models :func:`run_norm` trains again without BatchNorm: D (the control) and the relabelled /
#: robust sets Benz et al. test
NORM_SETS: tuple[str, ...] = ("D", "D_rand", "D_det", "D_R")


def arch_with_norm(spec: str, norm: str) -> str:
    """``spec`` with its normalisation switched to ``norm`` (canonical form: the default dropped)."""
    from empirical.models import canonical_arch, parse_arch

    name, opts = parse_arch(spec)
    opts["norm"] = norm
    text = ",".join(f"{k}={'-'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in opts.items())
    return canonical_arch(f"{name}:{text}")


def _diff(a: float, b: float, n: int) -> dict[str, float]:
    """a - b (percent) of two accuracies on the same n test examples, with the standard error of two
    independent binomial proportions (points)."""
    pa, pb = a / 100.0, b / 100.0
    se = math.sqrt(max(pa * (1 - pa), 0.0) / n + max(pb * (1 - pb), 0.0) / n) if n else float("nan")
    return {"value": a - b, "stderr": 100.0 * se}


def run_norm(ws: Any, *, norm: str = "none", sets: Sequence[str] = NORM_SETS) -> dict[str, Any]:
    """Benz et al.'s test on this workspace: per set of ``sets`` (D = the standard model's data), the
    model of its recipe trained with the preset's architecture (BatchNorm) and with ``norm``; clean
    accuracy on the test set (and on (X, Y + 1) for the shifted sets), the strong PGD's robust
    accuracy for D and D_R; the differences with BatchNorm minus without. Record ``norm.json``."""
    from empirical.models import parse_arch

    started, t0 = utc_now(), time.perf_counter()
    cfg, d = ws.cfg, ws.data()
    base = cfg.arch
    if parse_arch(base)[1].get("norm", "batch") != "batch":
        raise ValueError(f"arch={base!r} already switches its normalisation; run_norm compares it with BatchNorm")
    other = arch_with_norm(base, norm)
    n_test = int(d.y_test.shape[0])
    metrics: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for kind in sets:
        if kind == "D":
            name, recipe, train_on, shifted = "standard", cfg.std, "D", False
            ws.source_model("standard")
        else:
            row = registry.get(kind)
            name, recipe, train_on, shifted = row.model, cfg.recipe(row.recipe), kind, row.shifted
            ws.constructed_model(kind)
        robust = kind in ("D", "D_R")
        alt = f"{name}_norm-{norm}"
        ws.model(alt, arch=other, recipe=recipe, train_on=train_on)
        out: dict[str, Any] = {}
        for label, model in (("batch", name), (norm, alt)):
            ev = ws.evaluate(model, robust=True, strong=robust, shifted=shifted)
            out[label] = {k: 100.0 * v for k, v in ev.items() if k != "n_robust"}
        n_rob = int(ws.eval_subset().n)
        out["batch_minus_" + norm] = {
            "clean": _diff(out["batch"]["clean"], out[norm]["clean"], n_test),
            **({"shifted": _diff(out["batch"]["shifted"], out[norm]["shifted"], n_test)} if shifted else {}),
            **({"robust_strong": _diff(out["batch"]["robust_strong"], out[norm]["robust_strong"], n_rob)}
               if robust else {}),
        }
        metrics[kind] = out
        models[kind] = {"batch": {"name": name, "arch": base}, norm: {"name": alt, "arch": other}}
    metrics["chance"] = 100.0 / d.num_classes
    return ws.record("norm.json", experiment="empirical.controls.norm", metrics=metrics, started_at=started,
                     start_time=t0, extra={"units": "percent", "models": models, "switch": norm,
                                           "attacks": {"paper": cfg.eval.describe("paper"),
                                                       "strong": cfg.eval.describe("strong")},
                                           "source": "Benz, Zhang & Kweon, ICCV 2021 (read off their figures, "
                                                     "+-2 points): ResNet-18, D_rand 68% with BN, 5% without; "
                                                     "D_R clean 84 / 81, robust 45 / 50"})


__all__ = ["NORM_SETS", "arch_with_norm", "run_norm"]
