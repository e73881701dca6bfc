"""Figures of the simulate/ experiments: simulation points with error bars over closed-form
curves computed live from each record's config (figure scripts never simulate).

``build(results_root)`` renders every ``results_root/simulate/*.json`` record next to it and
writes ``results_root/simulate/figures_sources.json`` listing the records used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _theorems(rec: dict, out: Path) -> Path:
    from simulate import closed_forms as cf

    plt = _plt()
    cfg, cur = rec["config"], rec["curves"]
    sig, mu = np.asarray(cfg["sigma"]), np.asarray(cfg["mu"])
    s = np.linalg.eigvalsh(sig)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    t1 = cur["thm1"]
    grid = np.geomspace(1.05, 10, 80)
    ax[0].plot(grid, [cf.vulnerability_closed_form(sig, g / s[0]) for g in grid], "k-",
               label="closed form tr[(I+(CΣ*-I)^-1)^2]-d")
    ax[0].errorbar(t1["c_over_cmin"], t1["simulated"], yerr=np.multiply(5, t1["stderr"]), fmt="o",
                   color="C3", capsize=3, label="simulated attacker (±5 SE)")
    ax[0].set_xscale("log"), ax[0].set_yscale("log")
    ax[0].set_xlabel("penalty C · σ_min(Σ*)"), ax[0].set_ylabel("loss increase L_adv - L")
    ax[0].set_title("Theorem 1: vulnerability"), ax[0].legend(fontsize=8)
    t2 = cur["thm2"]
    lam_grid = np.geomspace(min(t2["lam"]) / 2, max(t2["lam"]) * 2, 80)
    for i, si in enumerate(s):
        ax[1].plot(lam_grid, [float(cf.robust_eigenvalues(si, lv)) for lv in lam_grid], "-",
                   color=f"C{i}", label=f"closed form, s={si:.3g}")
        ax[1].errorbar(t2["lam"], [r[i] for r in t2["r_sim"]], yerr=[5 * e[i] for e in t2["r_sim_se"]],
                       fmt="o", color=f"C{i}", capsize=3)
    ax[1].set_xscale("log"), ax[1].set_yscale("log")
    ax[1].set_xlabel("λ (Lagrange multiplier)"), ax[1].set_ylabel("eigenvalue of learned Σ")
    ax[1].set_title("Theorem 2: adversarially trained Σ (points ±5 SE)"), ax[1].legend(fontsize=7)
    t3 = cur["thm3"]
    ax[2].plot(lam_grid, [cf.mean_cosine(cf.robust_covariance(sig, lv), mu) for lv in lam_grid], "C0-",
               label="cos(μ*, Σ_r^-1 μ*) closed form")
    ax[2].plot(lam_grid, [cf.worst_case_cosine(cf.robust_covariance(sig, lv)) for lv in lam_grid], "C1-",
               label="worst-case (Kantorovich) closed form")
    ax[2].errorbar(t3["lam"], t3["cos_sim"], yerr=np.multiply(5, t3["cos_sim_se"]), fmt="o", color="C0", capsize=3)
    ax[2].errorbar(t3["lam"], t3["worst_sim"], yerr=np.multiply(5, t3["worst_sim_se"]), fmt="s", color="C1", capsize=3)
    ax[2].axhline(t3["standard_cos"][2], color="C0", ls=":", label="standard MLE")
    ax[2].axhline(t3["standard_worst"][2], color="C1", ls=":")
    ax[2].set_xscale("log"), ax[2].set_xlabel("λ (small λ = large ε)"), ax[2].set_ylabel("cosine")
    ax[2].set_title("Theorem 3: gradient alignment"), ax[2].legend(fontsize=7)
    from matplotlib.ticker import NullFormatter

    for a in ax:
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    return _save(fig, out)


def _tsipras(rec: dict, out: Path) -> Path:
    plt = _plt()
    models = rec["curves"]["models"]
    checks = rec["metrics"]["checks"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    names = ["standard", "robust"]
    xpos = np.arange(2)
    for j, kind in enumerate(("clean", "robust")):
        vals = [checks[f"{m}_{kind}_accuracy"]["simulated"] for m in names]
        errs = [5 * checks[f"{m}_{kind}_accuracy"]["stderr"] for m in names]
        ax[0].bar(xpos + 0.38 * j, vals, 0.36, yerr=errs, capsize=3, label=f"{kind} (simulated, ±5 SE)")
        ax[0].plot(xpos + 0.38 * j, [checks[f"{m}_{kind}_accuracy"]["closed_form"] for m in names],
                   "k_", ms=20, mew=2)
    ax[0].set_xticks(xpos + 0.19, ["standard training", "linf adversarial training"])
    ax[0].set_ylabel("accuracy (black: closed form)"), ax[0].legend(fontsize=8)
    ax[0].set_title(f"Tsipras toy, eps = 2η = {rec['config']['eps']:.3f} (linf)")
    ax[1].bar(xpos, [models[m]["robust_feature_share"] for m in names], 0.5)
    ax[1].set_xticks(xpos, ["standard", "robust"]), ax[1].set_ylim(0, 1.05)
    ax[1].set_ylabel("share of margin from the robust feature x_0")
    fig.tight_layout()
    return _save(fig, out)


def _pipeline(rec: dict, out: Path) -> Path:
    from simulate.pipeline import d_det_threshold, expected_accuracy

    plt = _plt()
    cfg, cur = rec["config"], rec["curves"]
    mu, sig = np.asarray(cfg["mu"]), np.asarray(cfg["sigma"])
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    grid = np.linspace(0.005, max(cfg["eps_grid"]) * 1.1, 120)
    for kind, col in (("d_det", "C3"), ("d_rand", "C0")):
        ax[0].plot(grid, [expected_accuracy(kind, mu, sig, eps=float(e)) for e in grid], "-", color=col,
                   label=f"{kind} closed form")
        ax[0].errorbar(cfg["eps_grid"], cur[kind]["simulated"], yerr=np.multiply(5, cur[kind]["stderr"]),
                       fmt="o", color=col, capsize=3, label=f"{kind} simulated (±5 SE)")
    ax[0].axvline(d_det_threshold(mu, sig), color="k", ls=":", label="ε* = μᵀΣ⁻¹μ/‖Σ⁻¹μ‖")
    ax[0].axhline(0.5, color="grey", lw=0.5)
    ax[0].set_xlabel("ε of the targeted l2 perturbation"), ax[0].set_ylabel("accuracy on D")
    ax[0].set_title("Gaussian world: learning from D_det / D_rand"), ax[0].legend(fontsize=7)
    bars = cur["bars"]
    keys = ["robust_model", "d_r", "d_nr"]
    labels = ["robust model\n(adv. trained)", "std. training\non D_R", "std. training\non D_NR"]
    xpos = np.arange(len(keys))
    for j, (suffix, lab) in enumerate((("", "clean"), ("_robust", f"l2 ε={cfg['eval_eps']}"))):
        vals = [bars[k + suffix]["simulated"] for k in keys]
        errs = [5 * bars[k + suffix]["stderr"] for k in keys]
        ax[1].bar(xpos + 0.38 * j, vals, 0.36, yerr=errs, capsize=3, label=f"{lab} (simulated)")
        ax[1].plot(xpos + 0.38 * j, [bars[k + suffix]["closed_form"] for k in keys], "k_", ms=20, mew=2)
    ax[1].set_xticks(xpos + 0.19, labels), ax[1].set_ylabel("accuracy on D (black: closed form)")
    ax[1].set_title("D_R / D_NR by representation matching"), ax[1].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    import io

    from foundation.records import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return atomic_write_bytes(out, buf.getvalue())


_RENDERERS = {"simulate.theorems": _theorems, "simulate.tsipras": _tsipras, "simulate.pipeline": _pipeline}


def render_record(path: Path) -> list[Path]:
    """Render the figure of one simulate record (``<record>.png`` beside it)."""
    from foundation.records import read_record

    rec = read_record(path)
    renderer = _RENDERERS.get(rec.get("experiment"))
    if renderer is None:
        raise ValueError(f"record {path} has experiment {rec.get('experiment')!r}; "
                         f"valid: {', '.join(_RENDERERS)}")
    return [renderer(rec, Path(path).with_suffix(".png"))]


def build(results_root: Path) -> list[Path]:
    """Re-render every ``results_root/simulate/*.json`` simulate record; returns the paths written."""
    from foundation.records import atomic_write_json

    folder = Path(results_root) / "simulate"
    written: list[Path] = []
    used: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            exp = json.loads(path.read_text()).get("experiment")
        except (json.JSONDecodeError, OSError):
            continue
        if exp not in _RENDERERS:
            continue
        written.extend(render_record(path))
        used.append(path.name)
    if used:
        written.append(atomic_write_json(folder / "figures_sources.json", {"records": used}))
    return written
