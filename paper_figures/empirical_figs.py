"""Figure 2(b), Table 1, Figure 3 and the sample grids (Fig. 2(a)-style) from the empirical records.

For every preset folder ``results_root/<preset>/`` holding the records of
``robust-features reproduce`` (``fig2.json``, ``table1.json``, ``fig3.json``,
``constructions.json`` + ``samples.json``), this module writes into ``<preset>/figures/``:

* ``fig2_bars.png``   grouped bars: clean / robust (paper PGD-7) / robust (strong PGD) accuracy for
  std and adv training on D and std training on D_R, D_NR, with the paper's CIFAR-10 bars beside;
* ``table1.md``, ``table1.tex``  Table 1 with the paper's column;
* ``fig3_transfer.png`` scatter of D_det accuracy vs transfer success per architecture, a
  least-squares trend line, and the paper's five points with their trend line;
* ``samples.png``     one row per set (D, D_R, D_NR, D_rand, D_det, and any further construction the
  record holds), same source images, labels shown;
* ``sources.json``    the records (and their sha256) each figure was drawn from.

A *seed study* folder ``results_root/<name>/`` (or ``results_root/<preset>/seeds/``) holding ``seed<K>/`` sub-folders (each the records
of one ``robust-features reproduce --seed K`` run) gets ``<name>/seeds.md`` and ``seeds.json``:
per seed the Figure 2 strong robust accuracies, the D_R and D_NR gaps over the standard model,
Table 1 and the Figure 3 rank correlation, and across seeds the mean, standard deviation and a
two-sided 95% Student-t interval of each, with how many seeds met each claim.

It only reads records; it never trains. A missing record skips that figure.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from empirical.stats import gap_fraction_of_accuracies
from foundation.paper import PAPER_NUMBERS
from foundation.records import atomic_write_bytes, atomic_write_json, atomic_write_text, file_sha256, read_record

_P = PAPER_NUMBERS
PAPER_FIG2 = {row: (v["clean"], v["robust"]) for row, v in _P["fig2"].items()}
PAPER_TABLE1 = {k: _P["table1"][k] for k in ("D", "D_rand", "D_det")}
PAPER_FIG3 = dict(_P["fig3"])
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
    return file_sha256(path)


def fig2_bars(rec: dict, out: Path) -> Path:
    plt = _plt()
    m = rec["metrics"]
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(_ROWS))
    series = (("clean", "clean"), ("robust_paper", "robust, paper PGD"), ("robust_strong", "robust, strong PGD"))
    if any("robust_worst" in m[r] for r, _ in _ROWS):
        series = (*series, ("robust_worst", "robust, worst case (AutoAttack-style suite + PGD)"))
    w = 0.78 / len(series)          # 0.26 for the three PGD series
    for i, (key, label) in enumerate(series):
        vals = [m[r].get(key, np.nan) if m[r].get(key) is not None else np.nan for r, _ in _ROWS]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * w, vals, w, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, [lab for _, lab in _ROWS])
    ax.set_ylabel("accuracy on original test set (%)")
    ax.set_ylim(0, 128)             # headroom for the legend above the bars
    ax.set_title(f"ours ({rec['config'].get('name', '?')}): {rec.get('attacks', {}).get('paper', '')}", fontsize=8)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
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
    # D first, then every constructed set the record holds, in its order (the paper's four, then further ones)
    sets = ["D", *(k for k, v in samples.items() if k != "D" and isinstance(v, dict) and "x" in v)]
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


def _seed_folders(root: Path) -> list[tuple[int, Path]]:
    out = []
    for p in Path(root).iterdir():
        if p.is_dir() and p.name.startswith("seed") and p.name[4:].isdigit() and (p / "fig2.json").is_file():
            out.append((int(p.name[4:]), p))
    return sorted(out)


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def seeds_summary(root: Path) -> list[Path]:
    """Summarise a seed study (``root/seed<K>/`` record folders): ``seeds.md`` and ``seeds.json``."""
    root = Path(root)
    folders = _seed_folders(root)
    if not folders:
        raise ValueError(f"{root} holds no seed<K>/ folder with a fig2.json record")
    rows: list[dict[str, Any]] = []
    sources: list[dict[str, str]] = []
    claims_met: dict[str, int] = {}
    for seed, folder in folders:
        r2 = read_record(folder / "fig2.json")
        if int(r2["config"].get("seed", seed)) != seed:
            raise ValueError(f"{folder}/fig2.json was run with seed {r2['config'].get('seed')}, not {seed}")
        m = r2["metrics"]
        row: dict[str, Any] = {"seed": seed}
        for key in ("std_D", "adv_D", "std_DR", "std_DNR"):
            row[f"{key}_clean"] = float(m[key]["clean"])
            row[f"{key}_robust"] = float(m[key]["robust_strong"])
            if m[key].get("robust_worst") is not None:        # the worst case (eval.suite) where it was run
                row[f"{key}_worst"] = float(m[key]["robust_worst"])
        row["gap_DR"] = row["std_DR_robust"] - row["std_D_robust"]
        row["gap_DNR"] = row["std_DNR_robust"] - row["std_D_robust"]
        # the fraction of the robust-vs-standard gap closed, in percent (paired stderr when recorded)
        for key, col in (("D_R", "frac_DR"), ("D_NR", "frac_DNR")):
            gf = m.get("gap_fraction", {}).get(key, {}).get("strong")
            row_key = "std_DR" if key == "D_R" else "std_DNR"
            v = gf["value"] if gf else gap_fraction_of_accuracies(row["std_D_robust"], row["adv_D_robust"],
                                                                  row[f"{row_key}_robust"])
            row[col] = 100.0 * v
            if gf:
                row[f"{col}_stderr"] = 100.0 * gf["stderr"]
            gw = m.get("gap_fraction", {}).get(key, {}).get("worst")
            if gw and gw.get("value") is not None:
                row[f"{col}_worst"] = 100.0 * gw["value"]
                row[f"{col}_worst_stderr"] = 100.0 * gw["stderr"]
        sources.append({"record": f"{folder.name}/fig2.json", "sha256": _sha(folder / "fig2.json")})
        if (folder / "table1.json").is_file():
            t = read_record(folder / "table1.json")["metrics"]
            row["D_rand"], row["D_det"] = float(t["D_rand"]["clean"]), float(t["D_det"]["clean"])
            sources.append({"record": f"{folder.name}/table1.json", "sha256": _sha(folder / "table1.json")})
        if (folder / "fig3.json").is_file():
            row["fig3_spearman"] = float(read_record(folder / "fig3.json")["metrics"]["trend"]["spearman_rho"])
            sources.append({"record": f"{folder.name}/fig3.json", "sha256": _sha(folder / "fig3.json")})
        if (folder / "reproduce.json").is_file():
            rm = read_record(folder / "reproduce.json")["metrics"]
            row["wall_seconds"] = float(rm["total_wall_seconds"])
            for name, ok in rm.get("claims_met", {}).items():
                claims_met[name] = claims_met.get(name, 0) + int(bool(ok))
            sources.append({"record": f"{folder.name}/reproduce.json", "sha256": _sha(folder / "reproduce.json")})
        rows.append(row)
    keys = [k for k in rows[0] if k != "seed" and not k.endswith("_stderr") and all(k in r for r in rows)]
    stats_: dict[str, dict[str, float]] = {}
    for k in keys:
        v = np.array([r[k] for r in rows], float)
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        se = sd / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        half = _t95(len(v)) * se if len(v) > 1 else float("nan")
        stats_[k] = {"mean": float(v.mean()), "sd": sd, "stderr": float(se), "ci95_low": float(v.mean() - half),
                     "ci95_high": float(v.mean() + half), "min": float(v.min()), "max": float(v.max())}
    # the worst case leads where every seed has it (the strongest evaluation the records hold)
    cols = [("frac_DR_worst", "D_R closes, worst case (%)"), ("std_D_worst", "std D, worst"),
            ("adv_D_worst", "adv D, worst"), ("std_DR_worst", "std D_R, worst"), ("std_DNR_worst", "std D_NR, worst"),
            ("frac_DNR_worst", "D_NR closes, worst (%)"),
            ("frac_DR", "D_R closes, PGD (%)" if "frac_DR_worst" in keys else "D_R closes (%)"),
            ("std_D_robust", "std D"), ("adv_D_robust", "adv D"), ("std_DR_robust", "std D_R"),
            ("std_DNR_robust", "std D_NR"), ("gap_DR", "D_R gap"), ("gap_DNR", "D_NR gap"),
            ("frac_DNR", "D_NR closes (%)"),
            ("D_rand", "D_rand"), ("D_det", "D_det"), ("fig3_spearman", "Fig. 3 rho")]
    cols = [(k, lab) for k, lab in cols if k in keys]
    name = root.parent.name if root.name == "seeds" else root.name      # <preset>/seeds/ or <study>/
    md = [f"# Seed study: {name} ({len(rows)} seeds)", "",
          "Robust accuracy (%) on the original test set for Figure 2: under the worst case (\"worst\": the "
          "strong PGD, then the suite on what still stands) where the records hold it, and under the strong PGD; "
          "gaps are in points over the standard model (strong PGD); \"closes\" is the fraction of the "
          "robust-vs-standard gap the model closes, "
          "(model - std) / (adv - std) in robust accuracy under that attack (per seed +- its paired standard error when "
          "recorded; the paper's D_R closes 56%); Table 1 clean accuracy (%); Figure 3 Spearman rho. se = "
          "standard error of the mean over seeds. Rendered from the records in the seed<K>/ folders by "
          "`python -m paper_figures`.", "",
          "| seed | " + " | ".join(lab for _, lab in cols) + " |", "|---|" + "---|" * len(cols)]
    fmt = lambda k, v: f"{v:.2f}" if k == "fig3_spearman" else f"{v:.1f}"  # noqa: E731
    cell = lambda r, k: fmt(k, r[k]) + (f" +- {fmt(k, r[k + '_stderr'])}" if k + "_stderr" in r else "")  # noqa: E731
    for r in rows:
        md.append(f"| {r['seed']} | " + " | ".join(cell(r, k) for k, _ in cols) + " |")
    md.append("| mean +- sd | " + " | ".join(f"{fmt(k, stats_[k]['mean'])} +- {fmt(k, stats_[k]['sd'])}"
                                            for k, _ in cols) + " |")
    md.append("| mean +- se | " + " | ".join(f"{fmt(k, stats_[k]['mean'])} +- {fmt(k, stats_[k]['stderr'])}"
                                            for k, _ in cols) + " |")
    md.append("| 95% CI | " + " | ".join(f"[{fmt(k, stats_[k]['ci95_low'])}, {fmt(k, stats_[k]['ci95_high'])}]"
                                        for k, _ in cols) + " |")
    if claims_met:
        md += ["", "Claims met (of the seeds with a reproduce.json record):", ""]
        n_rep = sum(1 for _, f in folders if (f / "reproduce.json").is_file())
        md += [f"- `{name}`: {k} / {n_rep}" for name, k in claims_met.items()]
    summary = {"n_seeds": len(rows), "rows": rows, "stats": stats_, "claims_met_count": claims_met,
               "sources": sources}
    return [atomic_write_text(root / "seeds.md", "\n".join(md) + "\n"),
            atomic_write_json(root / "seeds.json", summary)]


def build(results_root: Path) -> list[Path]:
    """Render the empirical figures of every preset folder under ``results_root``, and the
    summary of every seed-study folder (one holding ``seed<K>/`` record folders)."""
    results_root = Path(results_root)
    written: list[Path] = []
    if not results_root.is_dir():
        return written
    for folder in sorted(p for p in results_root.iterdir() if p.is_dir()):
        if any((folder / n).is_file() for n in ("fig2.json", "table1.json", "fig3.json", "constructions.json")):
            written += build_preset(folder)
            if (folder / "seeds").is_dir() and _seed_folders(folder / "seeds"):   # a preset's own seed study
                written += seeds_summary(folder / "seeds")
        elif _seed_folders(folder):
            written += seeds_summary(folder)
    return written
