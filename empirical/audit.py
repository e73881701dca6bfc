"""D_R's robustness audited beyond the PGD of one budget (Li et al., NeurIPS 2023, "Adversarial
Examples Are Not Real Features": a model trained on the released D_R keeps 15.6% under AutoAttack;
ndb796's ResNet-18 on it 38.0% at l2 0.25 but 0.1% at linf 8/255 (ndb796/Pytorch-Adversarial-
Training-CIFAR #1); in Z. Wang's report a ResNet-50 on it 24.9% under rotations up to 30 degrees
against 36.8% for the standard model).

:func:`run_profile` gives every Figure 2 model (standard and robust on D, standard on D_R and
D_NR) a *robustness profile* on the workspace's evaluation sample:

* robust accuracy against eps, l2 and linf (:class:`ProfileConfig`), under the strong PGD and
  under the worst case (:func:`empirical.worst_case.worst_case`: the strong PGD, then the suite,
  each on what still stands), with the fraction of the robust-vs-standard gap D_R closes under
  each, with its paired standard error;
* accuracy under a grid of rotations and translations (Engstrom et al., ICML 2019, "Exploring the
  Landscape of Spatial Robustness": the worst case over the grid, per example).

Every number carries its attack, budget and seed (the workspace's attack seed); every (model,
threat) worst case is a cached stage ``evals/<model>-profile-<threat>.json``. Record
``profile.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from foundation import checks as C
from foundation.records import utc_now

FIG2_MODELS: dict[str, str] = {"std_D": "standard", "adv_D": "robust", "std_DR": "D_R", "std_DNR": "D_NR"}


@dataclass(frozen=True)
class ProfileConfig:
    """The budgets of a robustness profile (``--set profile.KEY=VALUE``): l2 and linf radii (pixel
    units), the suite after the strong PGD (the preset's ``eval`` budgets, ``square_queries``
    replaced when set), the examples (``n``: a class-stratified sample of the evaluation sample,
    nested in it; None = all of it), and the spatial grid (degrees, pixels)."""

    l2_eps: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    linf_eps: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    suite: tuple[str, ...] = ("apgd-ce", "apgd-t", "square")
    rotations: tuple[float, ...] = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0)
    translations: tuple[int, ...] = (-3, 0, 3)
    n: int | None = None               # None = the whole evaluation sample (eval.n_robust)
    square_queries: int | None = None  # None = eval.square_queries

    def __post_init__(self) -> None:
        from empirical import suite as attacks

        if not isinstance(self.suite, tuple) or not all(isinstance(a, str) for a in self.suite):
            raise ValueError(f"suite={self.suite!r} must be a list of attack names, e.g. apgd-ce,apgd-t,square")
        known = attacks.names()
        bad = [a for a in self.suite if a not in known]
        if bad:
            raise ValueError(f"suite={self.suite!r} names {bad[0]!r}; valid: {', '.join(known)}")
        C.optional_positive_int("n", self.n, none=" (None = the whole evaluation sample)")
        C.optional_positive_int("square_queries", self.square_queries, none=" (None = eval.square_queries)")
        for name in ("l2_eps", "linf_eps"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not all(C.is_number(e) and math.isfinite(e) and e > 0 for e in v):
                raise ValueError(f"{name}={v!r} must be a list of positive radii, e.g. 0.125,0.25")
        if not isinstance(self.rotations, tuple) or not all(C.is_number(a) and abs(a) <= 180 for a in self.rotations):
            raise ValueError(f"rotations={self.rotations!r} must be a list of angles in degrees within [-180, 180]")
        if not isinstance(self.translations, tuple) or not all(C.is_int(t) for t in self.translations):
            raise ValueError(f"translations={self.translations!r} must be a list of whole pixels, e.g. -3,0,3")


def threat_id(norm: str, eps: float) -> str:
    """A threat's name in records and stage files, free of dots so a dotted key can address it:
    ``l2_0p25``; linf radii on the 1/255 grid as ``linf_8of255``, others ``linf_0p1``."""
    k = eps * 255
    if norm == "linf" and abs(k - round(k)) < 1e-6 and round(k) >= 1:
        return f"linf_{round(k)}of255"
    return f"{norm}_{eps:.6g}".replace(".", "p").replace("-", "m")


def spatial(x: Any, angle: float, dx: int, dy: int) -> Any:
    """``x`` rotated by ``angle`` degrees about its centre and shifted by (dx, dy) pixels (bilinear,
    zeros outside), the transform of Engstrom et al.; angle 0 and no shift return ``x`` unchanged."""
    import torch
    from torch.nn import functional as F

    if angle == 0 and dx == 0 and dy == 0:
        return x
    n, _, h, w = x.shape
    a = math.radians(angle)
    theta = torch.tensor([[math.cos(a), -math.sin(a), -2.0 * dx / w], [math.sin(a), math.cos(a), -2.0 * dy / h]],
                         dtype=x.dtype, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def spatial_profile(model: Any, x: Any, y: Any, cfg: ProfileConfig, *, device: Any, batch_size: int) -> dict[str, Any]:
    """Accuracy under each (rotation, translation) of the grid and under the worst of them per
    example (an example counts only if every transform keeps it correct); fp32 verdicts."""
    import numpy as np

    from empirical.evaluate import predict
    from empirical.precision import VERDICT

    yc = y.cpu()
    ok = np.ones(int(y.shape[0]), dtype=bool)
    per: dict[str, float] = {}
    for angle in cfg.rotations:
        for dx in cfg.translations:
            for dy in cfg.translations:
                right = (predict(model, spatial(x, angle, dx, dy), device=device, batch_size=batch_size,
                                 precision=VERDICT) == yc).numpy()
                per[f"rot{angle:g}_dx{dx}_dy{dy}"] = 100.0 * float(right.mean())
                ok &= right
    return {"per_transform": per, "worst": 100.0 * float(ok.mean()), "clean": per.get("rot0_dx0_dy0"),
            "n_transforms": len(per)}


def run_profile(ws: Any, cfg: ProfileConfig | None = None) -> dict[str, Any]:
    """The profile of every Figure 2 model (module docstring) with ``cfg`` (None = the workspace
    config's ``profile``); record ``profile.json``."""
    import numpy as np

    from empirical import constructions as registry
    from empirical.stats import gap_fraction
    from empirical.threat import Attack, ThreatModel
    from empirical.worst_case import SEMANTICS, worst_case
    from foundation.records import json_sha256, pack_bits, unpack_bits

    from empirical.data import stratified_subset

    cfg = ws.cfg.profile if cfg is None else cfg
    started, t0 = utc_now(), time.perf_counter()
    ev, d = ws.cfg.eval, ws.data()
    budgets = dict(ev.budgets)
    if cfg.square_queries is not None:
        budgets["square_queries"] = cfg.square_queries
    names: dict[str, str] = {}
    for row, what in FIG2_MODELS.items():
        if what in registry.SOURCE_MODELS:
            ws.source_model(what)
            names[row] = what
        else:
            ws.constructed_model(what)
            names[row] = registry.get(what).model
    outer = ws.eval_subset()
    xo, yo = d.x_test[outer.indices], d.y_test[outer.indices]
    # the profile's examples: a stratified sample of the evaluation sample (nested in it), or all of it
    sub = stratified_subset(xo, yo, cfg.n, seed=ws.cfg.subset_seed, name="profile.n")
    x, y = xo[sub.indices], yo[sub.indices]
    indices = outer.indices[sub.indices]
    subset_sha = json_sha256({"eval": outer.indices_sha256, "profile": sub.indices_sha256})
    threats = [("l2", e) for e in cfg.l2_eps] + [("linf", e) for e in cfg.linf_eps]
    eps_rows: dict[str, Any] = {}
    masks: dict[str, dict[str, dict[str, Any]]] = {}
    for norm, eps in threats:
        tkey = threat_id(norm, eps)
        pgd = Attack(norm, eps, steps=ev.strong_steps, restarts=ev.strong_restarts, random_start=True)
        for row, name in names.items():
            key = json_sha256({"model": ws.model_sha256(name), "pgd": pgd, "suite": cfg.suite, "budgets": budgets,
                               "subset": subset_sha, "seed": ws.attack_seed, "precision": ev.precision,
                               "batch_size": ev.batch_size, "semantics": SEMANTICS, "test": ws.data_sha256})
            path = ws.store.eval_record(f"{name}-profile-{tkey}")
            status = ws.store.check(path, key)
            timer = ws.store.timer()
            if status.valid:
                rec = status.record
                m = {k: np.asarray(unpack_bits(v, sub.n), dtype=bool) for k, v in rec["masks"].items()}
                timer.done(f"profile:{name}:{tkey}", True, built_seconds=rec.get("wall_seconds"))
            else:
                wc = worst_case(ws.loaded_model(name), x, y, ThreatModel(norm, eps), pgd=pgd, attacks=cfg.suite,
                                options=budgets, seed=ws.attack_seed, precision=ev.precision,
                                batch_size=ev.batch_size, device=ws.device, progress=ws.progress)
                m = {"pgd": wc.after["pgd"], "worst": wc.robust}
                rec = {"masks": {k: pack_bits(v) for k, v in m.items()}, "description": wc.describe(),
                       "budgets": wc.budgets, "seeds": wc.seeds}
                ws.store.save(path, key, rec, wall_seconds=timer.seconds)
                timer.done(f"profile:{name}:{tkey}", False)
            masks.setdefault(tkey, {})[row] = m
            eps_rows.setdefault(tkey, {"norm": 0 if norm == "l2" else 1, "eps": eps})[row] = {
                "strong_pgd": 100.0 * float(m["pgd"].mean()), "worst_case": 100.0 * float(m["worst"].mean())}
        mk = masks[tkey]
        for which, k in (("strong_pgd", "pgd"), ("worst_case", "worst")):
            gf = gap_fraction(mk["std_D"][k], mk["adv_D"][k], mk["std_DR"][k])
            eps_rows[tkey].setdefault("dr_gap_fraction", {})[which] = {"value": gf["value"], "stderr": gf["stderr"]}
    spatial_rows = {row: spatial_profile(ws.loaded_model(name), x, y, cfg, device=ws.device, batch_size=ev.batch_size)
                    for row, name in names.items()}
    # per model, its accuracy by threat under each attack, and the spatial worst case against the standard model's
    summary: dict[str, Any] = {row: {which: {t: eps_rows[t][row][which] for t in eps_rows}
                                     for which in ("strong_pgd", "worst_case")} for row in names}
    summary["spatial_worst"] = {row: spatial_rows[row]["worst"] for row in names}
    summary["dr_minus_std_spatial_worst"] = spatial_rows["std_DR"]["worst"] - spatial_rows["std_D"]["worst"]
    metrics = {"eps": eps_rows, "spatial": spatial_rows, "summary": summary, "n": int(sub.n)}
    return ws.record("profile.json", experiment="empirical.audit.profile", metrics=metrics, started_at=started,
                     start_time=t0, extra={"units": "percent", "settings": cfg, "models": names,
                                           "attack_seed": ws.attack_seed, "budgets": budgets,
                                           "examples": {"n": int(sub.n), "of_eval_sample": int(outer.n),
                                                        "test_indices": [int(i) for i in indices],
                                                        "subset_sha256": subset_sha},
                                           "pgd": f"PGD-{ev.strong_steps} x {ev.strong_restarts} restarts, random start",
                                           "threats": {threat_id(n, e): f"{n} eps={e:g}" for n, e in threats},
                                           "source": "Li et al., NeurIPS 2023 (released D_R: 15.6% under AutoAttack; "
                                                     "ndb796 ResNet-18 38.0% at l2 0.25, 0.1% at linf 8/255; "
                                                     "Z. Wang's report: ResNet-50 24.9% under rotations up to 30 "
                                                     "degrees vs 36.8% standard)"})


__all__ = ["FIG2_MODELS", "ProfileConfig", "run_profile", "spatial", "spatial_profile", "threat_id"]
