"""Figure 2(b), Table 1, Figure 3 and the sample grids (Fig. 2(a)-style) from the empirical records.

For every preset folder ``results_root/<preset>/`` holding the records of
``robust-features reproduce`` (``fig2.json``, ``table1.json``, ``fig3.json``,
``constructions.json`` + ``samples.json``), this module writes into ``<preset>/figures/``:

* ``fig2_bars.png``   grouped bars: clean / robust (paper PGD-7) / robust (strong PGD) accuracy for
  std and adv training on D and std training on D_R, D_NR, with the paper's CIFAR-10 bars beside;
* ``table1.md``, ``table1.tex``  Table 1 with the paper's column;
* ``fig3_transfer.png`` scatter of D_det accuracy vs transfer success per architecture, a
  least-squares trend line, and the paper's five points with their trend line;
* ``samples.png``     one row per set (D, D_R, D_NR, D_rand, D_det), same source images, labels shown;
* ``sources.json``    the records (and their sha256) each figure was drawn from.

It only reads records; it never trains. A missing record skips that figure.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from robust_features.records import atomic_write_bytes, atomic_write_json, atomic_write_text, read_record

PAPER_FIG2 = {"std_D": (95.2, 4.6), "adv_D": (90.8, 82.5), "std_DR": (84.2, 48.3), "std_DNR": (87.7, 0.8)}
PAPER_TABLE1 = {"D": 95.3, "D_rand": 63.3, "D_det": 43.7}
PAPER_FIG3 = {"VGG-16": (27.9, 65.7), "Inception-v3": (39.4, 82.7), "ResNet-18": (40.8, 92.1),
              "DenseNet": (41.7, 92.8), "ResNet-50": (44.7, 98.8)}
_ROWS = (("std_D", "Std on D"), ("adv_D", "Adv on D"), ("std_DR", "Std on $D_R$"), ("std_DNR", "Std on $D_{NR}$"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fig2_bars(rec: dict, out: Path) -> Path:
    plt = _plt()
    m = rec["metrics"]
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(_ROWS))
    series = (("clean", "clean"), ("robust_paper", "robust, paper PGD"), ("robust_strong", "robust, strong PGD"))
    w = 0.26
    for i, (key, label) in enumerate(series):
        vals = [m[r].get(key, np.nan) if m[r].get(key) is not None else np.nan for r, _ in _ROWS]
        bars = ax.bar(x + (i - 1) * w, vals, w, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, [lab for _, lab in _ROWS])
    ax.set_ylabel("accuracy on original test set (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"ours ({rec['config'].get('name', '?')}): {rec.get('attacks', {}).get('paper', '')}", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    pv = [PAPER_FIG2[r] for r, _ in _ROWS]
    b1 = axp.bar(x - 0.2, [p[0] for p in pv], 0.4, label="clean", color="C0", alpha=0.6)
    b2 = axp.bar(x + 0.2, [p[1] for p in pv], 0.4, label="robust (l2 0.25, PGD-7)", color="C1", alpha=0.6)
    axp.bar_label(b1, fmt="%.0f", fontsize=7)
    axp.bar_label(b2, fmt="%.0f", fontsize=7)
    axp.set_xticks(x, [lab for _, lab in _ROWS], fontsize=8)
    axp.set_ylim(0, 105)
    axp.set_title("paper, CIFAR-10 (Fig. 2b)", fontsize=8)
    axp.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, out)


def table1_files(rec: dict, folder: Path) -> list[Path]:
    m = rec["metrics"]
    rows = [("D", "$\\mathcal{D}$"), ("D_rand", "$\\widehat{\\mathcal{D}}_{rand}$"),
            ("D_det", "$\\widehat{\\mathcal{D}}_{det}$")]
    md = ["| training set | accuracy on original test set (%) | paper, CIFAR-10 (%) |", "|---|---|---|"]
    tex = ["\\begin{tabular}{lcc}", "\\toprule",
           "Training set & Ours (\\%) & Paper, CIFAR-10 (\\%) \\\\", "\\midrule"]
    for key, texname in rows:
        v = m[key]["clean"]
        md.append(f"| {key} | {v:.1f} | {PAPER_TABLE1[key]:.1f} |")
        tex.append(f"{texname} & {v:.1f} & {PAPER_TABLE1[key]:.1f} \\\\")
    md.append(f"| chance | {m['chance']:.1f} | 10.0 |")
    shifted = m["D_det"].get("shifted")
    if shifted is not None:
        md += ["", f"D_det model, accuracy against the shifted labels (y+1): {shifted:.1f}%."]
    tex += ["\\bottomrule", "\\end{tabular}"]
    return [atomic_write_text(folder / "table1.md", "\n".join(md) + "\n"),
            atomic_write_text(folder / "table1.tex", "\n".join(tex) + "\n")]


def fig3_scatter(rec: dict, out: Path) -> Path:
    plt = _plt()
    pts = rec["metrics"]["points"]
    fig, ax = plt.subplots(figsize=(5.2, 4))
    xs = np.array([p["ddet_accuracy"] for p in pts.values()], float)
    ys = np.array([p["transfer_success"] for p in pts.values()], float)
    ax.scatter(xs, ys, color="C0", zorder=3, label=f"ours (source {rec.get('source_arch', '?')})")
    for name, xv, yv in zip(pts, xs, ys):
        ax.annotate(name, (xv, yv), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.sum() >= 2 and np.ptp(xs[ok]) > 0:
        k, b = np.polyfit(xs[ok], ys[ok], 1)
        g = np.linspace(xs[ok].min(), xs[ok].max(), 10)
        ax.plot(g, k * g + b, "--", color="C0", lw=1)
    px = np.array([v[0] for v in PAPER_FIG3.values()])
    py = np.array([v[1] for v in PAPER_FIG3.values()])
    ax.scatter(px, py, marker="s", color="C3", alpha=0.7, zorder=3, label="paper (CIFAR-10, ResNet-50 source)")
    for name, xv, yv in zip(PAPER_FIG3, px, py):
        ax.annotate(name, (xv, yv), fontsize=6, color="C3", xytext=(3, -8), textcoords="offset points")
    k, b = np.polyfit(px, py, 1)
    g = np.linspace(px.min(), px.max(), 10)
    ax.plot(g, k * g + b, ":", color="C3", lw=1)
    ax.set_xlabel("test accuracy (%; trained on $D_{det}$)")
    ax.set_ylabel("transfer success rate (%)")
    ax.set_title(rec.get("attack", ""), fontsize=7)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, out)


def samples_grid(rec: dict, samples: dict, out: Path) -> Path:
    plt = _plt()
    sets = [k for k in ("D", "D_R", "D_NR", "D_rand", "D_det") if k in samples]
    classes = samples.get("classes") or []
    ncol = len(samples["indices"])
    fig, axes = plt.subplots(len(sets), ncol, figsize=(1.1 * ncol, 1.25 * len(sets)), squeeze=False)
    for r, key in enumerate(sets):
        xs = np.asarray(samples[key]["x"], float)
        for c in range(ncol):
            ax = axes[r, c]
            img = xs[c]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            lab = int(samples[key]["y"][c])
            ax.set_title(str(classes[lab]) if lab < len(classes) else str(lab), fontsize=6, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(key.replace("_", " "), fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def build_preset(root: Path) -> list[Path]:
    """Render every figure whose records exist in one preset folder; return the paths written."""
    root = Path(root)
    figs = root / "figures"
    written: list[Path] = []
    sources: dict[str, list[dict[str, str]]] = {}

    def rec(name: str) -> dict | None:
        p = root / name
        return read_record(p) if p.is_file() else None

    r2, r1, r3, rc = rec("fig2.json"), rec("table1.json"), rec("fig3.json"), rec("constructions.json")
    if r2 is not None:
        written.append(fig2_bars(r2, figs / "fig2_bars.png"))
        sources["fig2_bars.png"] = [{"record": "fig2.json", "sha256": _sha(root / "fig2.json")}]
    if r1 is not None:
        paths = table1_files(r1, figs)
        written += paths
        for p in paths:
            sources[p.name] = [{"record": "table1.json", "sha256": _sha(root / "table1.json")}]
    if r3 is not None:
        written.append(fig3_scatter(r3, figs / "fig3_transfer.png"))
        sources["fig3_transfer.png"] = [{"record": "fig3.json", "sha256": _sha(root / "fig3.json")}]
    if rc is not None:
        ref = rc.get("samples", {})
        spath = root / ref.get("file", "samples.json")
        if spath.is_file():
            if ref.get("sha256") and _sha(spath) != ref["sha256"]:
                raise ValueError(f"{spath} does not match the sha256 recorded in constructions.json")
            written.append(samples_grid(rc, json.loads(spath.read_text()), figs / "samples.png"))
            sources["samples.png"] = [{"record": "constructions.json", "sha256": _sha(root / "constructions.json")},
                                      {"record": spath.name, "sha256": _sha(spath)}]
    if written:
        written.append(atomic_write_json(figs / "sources.json", sources))
    return written


def build(results_root: Path) -> list[Path]:
    """Render the empirical figures of every preset folder under ``results_root``."""
    results_root = Path(results_root)
    written: list[Path] = []
    if not results_root.is_dir():
        return written
    for folder in sorted(p for p in results_root.iterdir() if p.is_dir()):
        if any((folder / n).is_file() for n in ("fig2.json", "table1.json", "fig3.json", "constructions.json")):
            written += build_preset(folder)
    return written
