"""Theory figures (paper sec. 4): Figure 4 and the theory plots, rendered from report records.

``build(results_root)`` finds ``results_root/theory/*.json`` records of experiment
``theory.report`` (written by ``robust-features theory report``) and renders, next to them in
``figures/``, PNG and PDF versions of:

* ``fig4_gaussian_robust_fits``: the paper's Figure 4 (ML fit with the l2 and Sigma*^-1 unit
  balls; robust fits with the exact eps-ball adversary at eps = 0 / 1 / 10 and their decision
  boundaries, the closed form Sigma_r(lam) at the effective lam dashed);
* ``vulnerability_vs_anisotropy`` (Theorem 1), ``robust_eigenvalues`` (Theorem 2, against eps and
  lam), ``gradient_alignment_vs_eps`` (Theorem 3) and ``lam_vs_eps`` (the eps <-> lam relation
  against the paper's stated bounds).

Only records are read; theory curves that are cheap are recomputed live from the record's
parameters. A ``figures_manifest.json`` lists the record each figure came from.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

EXPERIMENT = "theory.report"
FIGURE_NAMES = ("fig4_gaussian_robust_fits", "vulnerability_vs_anisotropy", "robust_eigenvalues",
                "gradient_alignment_vs_eps", "lam_vs_eps")


def _save(fig: Any, out_dir: Path, name: str) -> list[Path]:
    from foundation.records import atomic_write_bytes

    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150 if ext == "png" else None, bbox_inches="tight",
                    metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(atomic_write_bytes(out_dir / f"{name}.{ext}", buf.getvalue()))
    return paths


def _ellipse(ax: Any, center: np.ndarray, sigma: np.ndarray, k: float, **kw: Any) -> None:
    t = np.linspace(0, 2 * np.pi, 200)
    s, q = np.linalg.eigh(np.asarray(sigma))
    pts = (q * np.sqrt(s)) @ np.stack([np.cos(t), np.sin(t)]) * k
    ax.plot(center[0] + pts[0], center[1] + pts[1], **kw)


def _boundary(ax: Any, w: np.ndarray, **kw: Any) -> None:
    """The line w . x = 0 over the panel."""
    w = np.asarray(w, float)
    if abs(w[1]) > 1e-12 * abs(w[0]):
        x1 = np.array([-20.0, 20.0])
        ax.plot(x1, -w[0] * x1 / w[1], **kw)
    else:
        ax.plot([0.0, 0.0], [-10.0, 10.0], **kw)


def _density(ax: Any, mu: np.ndarray, sigma: np.ndarray, cmap: str) -> None:
    x1, x2 = np.meshgrid(np.linspace(-20, 20, 241), np.linspace(-10, 10, 121))
    pts = np.stack([x1 - mu[0], x2 - mu[1]], axis=-1)
    prec = np.linalg.inv(sigma)
    dens = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, prec, pts))
    ax.contourf(x1, x2, dens, levels=np.linspace(0.05, 1, 8), cmap=cmap, alpha=0.55)


def fig4(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    f4 = metrics["fig4"]
    sigma_star = np.array(f4["sigma_star"])
    fits = f4["fits"]
    fig, axes = plt.subplots(1, 1 + len(fits), figsize=(4.2 * (1 + len(fits)), 3.4))
    ax = axes[0]
    _density(ax, np.zeros(2), np.array(fits[0]["sigma"]), "Greys")
    _ellipse(ax, np.zeros(2), np.eye(2), 1.0, color="k", ls="--", lw=1.2, label=r"$\ell_2$ unit ball")
    _ellipse(ax, np.zeros(2), sigma_star, 1.0, color="tab:green", lw=1.5,
             label=r"$\Sigma_*^{-1}$-induced unit ball")
    ax.set_title("Maximum likelihood estimate")
    ax.legend(loc="lower left", fontsize=7)
    w0 = np.array(fits[0]["w"])
    for ax, fit in zip(axes[1:], fits):
        mu, sig = np.array(fit["mu"]), np.array(fit["sigma"])
        _density(ax, mu, sig, "Reds")
        _density(ax, -mu, sig, "Blues")
        if fit["eps"] > 0:
            closed = np.array(fit["closed_form_sigma_at_lam_spectral"])
            for c in (mu, -mu):
                _ellipse(ax, c, closed, 2.0, color="k", ls=":", lw=1.0)
            _boundary(ax, np.linalg.solve(closed, mu), color="k", ls=":", lw=1.2,
                      label=rf"closed form, $\lambda$={fit['lam_spectral']:.3g}")
            _boundary(ax, w0, color="0.5", lw=1.0, alpha=0.6, label="standard boundary")
            title = rf"Robust parameters, $\epsilon$ = {fit['eps']:g}"
        else:
            title = r"True parameters ($\epsilon$ = 0)"
        _boundary(ax, np.array(fit["w"]), color="k", lw=1.6, label="learned boundary")
        ax.set_title(title)
        ax.legend(loc="lower left", fontsize=6)
    for ax in axes:
        ax.set_xlim(-20, 20)
        ax.set_ylim(-10, 10)
        ax.set_xlabel("Feature $x_1$")
    axes[0].set_ylabel("Feature $x_2$")
    fig.tight_layout()
    paths = _save(fig, out_dir, "fig4_gaussian_robust_fits")
    plt.close(fig)
    return paths


def vulnerability_fig(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    v = metrics["vulnerability_vs_anisotropy"]
    k = np.array(v["kappa"])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    styles = {"paper": "-", "half_nll": "--", "penalized": "-.", "half_nll_penalized": ":"}
    for conv, ls in styles.items():
        ax.plot(k, v[conv], ls=ls, color="k" if conv == "paper" else "0.5",
                label=f"closed form ({conv})")
    ax.plot(k, v["paper_numeric"], "o", mfc="none", color="tab:blue", ms=5, label="numeric (paper)")
    ax.errorbar(k, v["paper_mc_mean"], yerr=5 * np.array(v["paper_mc_stderr"]), fmt="x",
                color="tab:red", ms=4, label="Monte Carlo $\\pm$5 s.e. (paper)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"anisotropy $\kappa(\Sigma_*)$ at fixed trace")
    ax.set_ylabel("vulnerability (Theorem 1)")
    ax.set_title(f"d={v['dim']}, C={v['penalty']:.3g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = _save(fig, out_dir, "vulnerability_vs_anisotropy")
    plt.close(fig)
    return paths


def eigenvalues_fig(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from theory.robust_learning import robust_eigenvalues

    fits = metrics["sweep_nd"]["fits"][1:]
    eps = np.array([f["eps"] for f in fits])
    learned = np.array([f["eigenvalues_in_reference_basis"] for f in fits])
    ref = np.array(fits[0]["reference_eigenvalues"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    colors = plt.cm.viridis(np.linspace(0, 1, learned.shape[1]))
    lam_fine_eps = np.geomspace(eps.min(), eps.max(), 100)
    lam_fit = np.exp(np.interp(np.log(lam_fine_eps), np.log(eps),
                               np.log([f["lam_spectral"] for f in fits])))
    for i in range(learned.shape[1]):
        a.plot(eps, learned[:, i], "o", ms=3, color=colors[i])
        a.plot(lam_fine_eps, [robust_eigenvalues(ref[i], lam) for lam in lam_fit], "-",
               color=colors[i], lw=0.8)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel(r"$\epsilon$ ($\ell_2$ ball)")
    a.set_ylabel(r"eigenvalues of learned $\Sigma$")
    a.set_title(r"eps-ball fit (dots) vs $\Sigma_r(\lambda_{\rm eff})$ (lines)", fontsize=9)
    ev = metrics["eigenvalues_vs_lam"]
    lam = np.array(ev["lam"])
    vals = np.array(ev["eigenvalues"])
    for i in range(vals.shape[1]):
        b.plot(lam, vals[:, i], color=colors[i])
        b.axhline(ev["sigma_star_eigenvalues"][i], color=colors[i], ls=":", lw=0.7)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel(r"$\lambda$")
    b.set_ylabel(r"eigenvalues of $\Sigma_r(\lambda)$ (Theorem 2)")
    b.set_title(r"closed form; dotted: $\Sigma_*$", fontsize=9)
    fig.tight_layout()
    paths = _save(fig, out_dir, "robust_eigenvalues")
    plt.close(fig)
    return paths


def alignment_fig(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key, color, label in (("sweep_2d", "tab:blue", "2-D (Fig. 4 model)"),
                              ("sweep_nd", "tab:orange", "d=8")):
        fits = metrics[key]["fits"][1:]
        eps = [f["eps"] for f in fits]
        ax.plot(eps, [f["worst_case_cosine"] for f in fits], "o-", color=color, ms=3,
                label=f"{label}: worst case")
        ax.plot(eps, [f["closed_form_worst_case_cosine_at_lam_spectral"] for f in fits], "k:",
                lw=0.8)
        ax.plot(eps, [f["cosine"] for f in fits], "s--", color=color, ms=3, mfc="none",
                label=f"{label}: at $\\mu_*$")
        ax.axhline(metrics[key]["fits"][0]["worst_case_cosine"], color=color, lw=0.6, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel(r"$\epsilon$")
    ax.set_ylabel(r"cos($\mu$, $\Sigma^{-1}\mu$)")
    ax.set_title("Gradient alignment (Theorem 3); dotted: closed form", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = _save(fig, out_dir, "gradient_alignment_vs_eps")
    plt.close(fig)
    return paths


def lam_fig(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, color, label in (("sweep_2d", "tab:blue", "2-D"), ("sweep_nd", "tab:orange", "d=8")):
        ls = metrics[key]["lam_scaling"]
        eps = np.array(ls["eps"])
        ax.plot(eps, ls["lam_multiplier"], "o-", color=color, ms=3,
                label=f"{label}: mean secular $\\nu$ (slope {ls['lam_multiplier_slope_small_eps']:.2f}"
                      f" / {ls['lam_multiplier_slope_large_eps']:.2f})")
        ax.plot(eps, ls["lam_spectral"], "s--", color=color, ms=3, mfc="none",
                label=f"{label}: spectral fit")
        ax.plot(eps, ls["norm_matching_heuristic"], ":", color=color, lw=0.8)
        if "small_eps_asymptote" in ls:
            ax.plot(eps, ls["small_eps_asymptote"], "-", color=color, lw=3, alpha=0.2)
            ax.plot(eps, ls["large_eps_asymptote"], "-", color=color, lw=3, alpha=0.2)
    eps = np.array(metrics["sweep_2d"]["lam_scaling"]["eps"])
    ax.plot(eps, metrics["sweep_2d"]["lam_scaling"]["paper_lower_shape"], "k-", lw=0.8,
            label="paper lower-bound shape (const. 1)")
    ax.plot(eps, metrics["sweep_2d"]["lam_scaling"]["paper_upper_shape"], "k--", lw=0.8,
            label="paper upper-bound shape (const. 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\epsilon$")
    ax.set_ylabel(r"effective $\lambda$")
    ax.set_title(r"$\epsilon \leftrightarrow \lambda$; dotted $\sqrt{\mathrm{tr}\,\Sigma_*^{-1}}/\epsilon$; "
                 r"bands $E\|\Sigma_*^{-1}v\|/\epsilon$, $d/\epsilon^2$", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths = _save(fig, out_dir, "lam_vs_eps")
    plt.close(fig)
    return paths


def render(record: dict[str, Any], out_dir: str | Path, *, source: str | None = None) -> list[Path]:
    """Render every theory figure from one ``theory.report`` record into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    from foundation.records import atomic_write_json

    if record.get("experiment") != EXPERIMENT:
        raise ValueError(f"record has experiment {record.get('experiment')!r}; expected {EXPERIMENT!r}")
    out_dir = Path(out_dir)
    metrics = record["metrics"]
    paths: list[Path] = []
    for fn in (fig4, vulnerability_fig, eigenvalues_fig, alignment_fig, lam_fig):
        paths.extend(fn(metrics, out_dir))
    atomic_write_json(out_dir / "figures_manifest.json", {
        "record": source, "git_commit": record.get("provenance", {}).get("git_commit"),
        "figures": [p.name for p in paths]})
    return paths


def build(results_root: Path) -> list[Path]:
    """Re-render the theory figures from ``results_root/theory/*.json`` report records."""
    from foundation.records import read_record

    folder = Path(results_root) / "theory"
    written: list[Path] = []
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            rec = read_record(path)
        except ValueError:
            continue  # not a record (e.g. a manifest)
        if rec.get("experiment") == EXPERIMENT:
            records.append((path, rec))
    for path, rec in records:
        out = folder / "figures" if len(records) == 1 else folder / f"figures_{path.stem}"
        written.extend(render(rec, out, source=str(path.relative_to(folder.parent)
                                                   if folder.parent in path.parents else path)))
    return written


def _load(path: Path) -> dict[str, Any]:  # pragma: no cover - convenience for interactive use
    return json.loads(Path(path).read_text())
