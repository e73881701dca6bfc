"""The debate report: every published test of the paper's claim beside this toolkit's number.

A debate study is a folder ``<study>/`` holding ``seed<K>/`` folders, each the records of one
``robust-features debate --seed K`` run (``nontransfer.json``, ``preference.json``,
``leakage.json``, ``squares.json``, ``table1.json``, ``fig3.json`` and that seed's ``debate.json``).
:func:`summarise` reads them (schema-checked, each record's config seed checked against its folder)
and writes, beside them:

* ``debate.json`` - a record with one row per test (:data:`empirical.debate.ROWS`): ``test``,
  ``source``, ``published``, ``ours`` (``mean``, ``stderr`` over seeds, ``n_seeds``, ``per_seed``),
  ``criterion``, ``met`` (on the mean, with the seeds' standard error where the criterion asks for
  one) and ``met_per_seed``, and ``from``: the record key each number is read from, with the sha256
  of every record used, so each number is recomputable from the records it cites;
* ``debate.md`` - the table "published test | their setting and number | ours (preset, seeds) |
  same sign and band?", then the per-seed tables of the non-transferable set, the leakage probe,
  the squares and the preference readout.

The rows' definitions and criteria live in one place, :mod:`empirical.debate`; this module only
reads records and renders (it never trains).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from empirical.debate import ROWS, judge, lookup
from empirical.stats import mean_and_stderr
from foundation.records import atomic_write_text, file_sha256, read_record, write_record

RECORDS: tuple[str, ...] = ("nontransfer", "preference", "leakage", "squares", "error_only", "norm", "start_ablation",
                             "table1", "fig3", "fig2", "profile")


def seed_folders(root: Path) -> list[tuple[int, Path]]:
    """The ``seed<K>/`` folders of ``root`` that hold a debate record, by seed."""
    out = []
    for p in Path(root).iterdir():
        if not (p.is_dir() and p.name.startswith("seed") and p.name[4:].isdigit()):
            continue
        if (p / "debate.json").is_file():
            out.append((int(p.name[4:]), p))
        else:        # a run's own layout: seed<K>/<preset>/debate.json (``--out-dir ROOT/seed<K>``)
            inner = sorted(q for q in p.iterdir() if q.is_dir() and (q / "debate.json").is_file())
            if len(inner) > 1:
                raise ValueError(f"{p} holds debate records of several presets ({', '.join(q.name for q in inner)}); "
                                 "summarise one preset's seeds at a time")
            if inner:
                out.append((int(p.name[4:]), inner[0]))
    return sorted(out)


def _read_seed(seed: int, folder: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(record name -> metrics, record name -> sha256, the preset config) of one seed's folder."""
    metrics, shas, config = {}, {}, {}
    for name in RECORDS:
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        rec = read_record(path)
        got = (rec.get("config") or {}).get("seed")
        if got is not None and int(got) != seed:
            raise ValueError(f"{path} was run with seed {got}, not {seed} (its folder's name)")
        metrics[name], shas[name] = rec.get("metrics", {}), file_sha256(path)
        if name == "nontransfer":
            config = rec.get("config") or {}
    return metrics, shas, config


def _f(v: Any, nd: int = 1) -> str:
    return "n/a" if not isinstance(v, (int, float)) or not math.isfinite(float(v)) else f"{float(v):.{nd}f}"


def summarise(root: Path) -> list[Path]:
    """Write ``root/debate.json`` and ``root/debate.md`` from the seed folders of ``root``."""
    import time

    from foundation.records import utc_now

    started, t0 = utc_now(), time.perf_counter()
    root = Path(root)
    folders = seed_folders(root)
    if not folders:
        raise ValueError(f"{root} holds no seed<K>/ folder with a debate.json record")
    per_seed = {seed: _read_seed(seed, folder) for seed, folder in folders}
    preset = next((c.get("name") for _, _, c in per_seed.values() if c.get("name")), root.name)
    rows = []
    for row in ROWS:
        rec = row.ours.partition(":")[0]
        seeds = [s for s, (m, _, _) in per_seed.items() if rec in m]
        if not seeds:
            continue
        c = row.scale
        vals = [c * lookup(per_seed[s][0], row.ours) for s in seeds]
        refs_seed = {s: {k: c * lookup(per_seed[s][0], a) for k, a in row.refs.items()} for s in seeds}
        stats = mean_and_stderr(vals)
        ref_means = {k: mean_and_stderr([refs_seed[s][k] for s in seeds])["mean"] for k in row.refs}
        if len(seeds) > 1:
            se = stats["stderr"]
        else:      # one seed: the binomial standard error its record gives
            se = c * lookup(per_seed[seeds[0]][0], row.ours_stderr) if row.ours_stderr else float("nan")
        verdict = judge(row, stats["mean"], se, ref_means)
        seed_se = {s: c * lookup(per_seed[s][0], row.ours_stderr) if row.ours_stderr else float("nan") for s in seeds}
        rows.append({
            "test": row.test, "source": row.source, "published": row.published,
            "ours": {"mean": stats["mean"], "stderr": se, "n_seeds": len(seeds),
                     "per_seed": {str(s): v for s, v in zip(seeds, vals)}},
            "refs": {k: {"mean": ref_means[k], "per_seed": {str(s): refs_seed[s][k] for s in seeds}} for k in row.refs},
            "criterion": row.criterion_text, "bound": verdict["bound"], "met": verdict["met"],
            "met_per_seed": {str(s): judge(row, v, seed_se[s], refs_seed[s])["met"] for s, v in zip(seeds, vals)},
            "from": {"ours": row.ours, **{k: a for k, a in row.refs.items()}},
            "records": {str(s): {f"seed{s}/{rec}.json": per_seed[s][1][rec]} for s in seeds},
        })
    sources = {f"seed{s}/{n}.json": sha for s, (_, shas, _) in per_seed.items() for n, sha in shas.items()}
    rec = write_record(root / "debate.json", experiment="paper_figures.debate",
                       config={"preset": preset, "seeds": [s for s, _ in folders]},
                       metrics={"n_rows": len(rows), "n_met": sum(r["met"] for r in rows),
                                "means": [r["ours"]["mean"] for r in rows], "met": [r["met"] for r in rows]},
                       seeds={f"seed{s}": s for s, _ in folders}, device="none (rendered from records)",
                       started_at=started, start_time=t0, extra={"rows": rows, "sources": sources, "units": "percent"})
    md = render(rec, per_seed, preset)
    out = [root / "debate.json", atomic_write_text(root / "debate.md", md)]
    figs = [error_only_figure(per_seed, root / "error_only.png"), profile_figure(per_seed, root / "profile.png")]
    return out + [f for f in figs if f is not None]


def error_only_figure(per_seed: dict[int, Any], path: Path) -> Path | None:
    """Test accuracy against teacher accuracy, one point per seed: the student of Wallace's
    error-only control (x = its teacher's test accuracy) and the D_det model (x = the standard model
    f's test accuracy, D_det's "teacher"), with chance; None when no seed has an error_only record."""
    from paper_figures.empirical_figs import _plt, _save

    seeds = [s for s in sorted(per_seed) if "error_only" in per_seed[s][0]]
    if not seeds:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    pts = {"error-only student": ("error_only:teacher.test_accuracy", "error_only:student.test_accuracy.value", "o"),
           "D_det model": ("error_only:D_det.teacher_test_accuracy", "error_only:D_det.test_accuracy", "s")}
    for label, (xa, ya, mk) in pts.items():
        xs = [lookup(per_seed[s][0], xa) for s in seeds]
        ys = [lookup(per_seed[s][0], ya) for s in seeds]
        ax.scatter(xs, ys, marker=mk, label=label)
    chance = lookup(per_seed[seeds[0]][0], "error_only:chance")
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("teacher's test accuracy (%)")
    ax.set_ylabel("test accuracy on D (%)")
    ax.set_title("Learning from a teacher's labels alone", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def render(rec: dict[str, Any], per_seed: dict[int, Any], preset: str) -> str:
    """``debate.md`` from the summary record and the seeds' metrics."""
    rows = rec["rows"]
    seeds = sorted(per_seed)
    L = [f"# The debate, tested: {preset} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}: "
         f"{', '.join(map(str, seeds))})", "",
         "Each published test of the claim of Ilyas et al. (2019) as a construction or evaluation of this "
         "toolkit, its number beside the published one. Ours: mean +- standard error over seeds (one seed: "
         "the binomial standard error over examples). Rendered by `python -m paper_figures` from the "
         "records of the seed<K>/ folders (`debate.json` names the record key and sha256 behind every "
         "number). Settings and their differences from the published ones: docs/debate.md.", "",
         ]
    lead = next((r for r in rows if r["from"]["ours"] == "fig2:gap_fraction.D_R.worst.value"), None)
    if lead is not None:
        o = lead["ours"]
        pgd = lead["refs"].get("pgd", {}).get("mean")
        L += [f"**Headline: D_R closes {_f(o['mean'])}% +- {_f(o['stderr'])} of the robust-vs-standard gap under the "
              f"worst case** (the strong PGD, then the suite on what still stands; {_f(pgd)}% under the strong PGD "
              f"alone; per seed {', '.join(_f(v) for v in o['per_seed'].values())}; the paper's 56% is PGD's).", ""]
    L += ["| published test | their setting and number | ours | criterion | same sign and band? |",
          "|---|---|---|---|---|"]
    for r in rows:
        o = r["ours"]
        ours = f"{_f(o['mean'], 2)} +- {_f(o['stderr'], 2)}"
        if r["refs"]:
            ours += " (" + ", ".join(f"{k} {_f(v['mean'], 2)}" for k, v in r["refs"].items()) + ")"
        per = "/".join("yes" if v else "no" for v in r["met_per_seed"].values())
        L.append(f"| {r['test']} | {r['published']} ({r['source'].split(',')[0]}) | {ours} | {r['criterion']} | "
                 f"{'**yes**' if r['met'] else '**no**'} (per seed {per}) |")
    L += ["", f"{rec['metrics']['n_met']} of {rec['metrics']['n_rows']} criteria met on the mean.", ""]
    L += (_nontransfer_table(per_seed) + _leakage_table(per_seed) + _squares_table(per_seed)
          + _preference_table(per_seed) + _error_only_table(per_seed) + _norm_table(per_seed)
          + _start_table(per_seed) + _profile_table(per_seed))
    return "\n".join(L) + "\n"


def _mean_se_cell(vals: list[float]) -> str:
    """``mean +- se`` of the seeds' values, ``-`` where there is no number."""
    st = mean_and_stderr(vals)
    return f"{_f(st['mean'])} +- {_f(st['stderr'])}" if math.isfinite(st["mean"]) else "-"


def _mean_row(label: str, cols: list[list[float]]) -> str:
    cells = []
    for c in cols:
        s = mean_and_stderr(c)
        cells.append(f"{_f(s['mean'])} +- {_f(s['stderr'])}")
    return f"| {label} | " + " | ".join(cells) + " |"


def _nontransfer_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "nontransfer" in per_seed[s][0]]
    if not seeds:
        return []
    keys = [("D_det", "success.value", "PGD success"), ("D_nt", "success.value", "non-transf. success"),
            ("D_det", "transfer_same_arch.value", "PGD transfer"), ("D_nt", "transfer_same_arch.value", "non-transf. transfer"),
            ("D_det", "test_xy", "D_det model (X,Y)"), ("D_det", "test_x_y_plus_1", "D_det model (X,Y+1)"),
            ("D_nt", "test_xy", "D_nt model (X,Y)"), ("D_nt", "test_x_y_plus_1", "D_nt model (X,Y+1)")]
    L = ["## Non-transferable targeted examples (Nakkiran) against targeted PGD (D_det), same f and images", "",
         "Success on f; transfer to a fresh model of f's architecture (of the examples f is fooled by and the fresh "
         "model classifies correctly when clean); models trained on each set on the test set, (X, Y) and (X, Y+1). "
         "Percent.", "", "| seed | " + " | ".join(k[2] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    cols: list[list[float]] = [[] for _ in keys]
    for s in seeds:
        m = per_seed[s][0]
        vals = [lookup(m, f"nontransfer:sets.{k}.{p}") for k, p, _ in keys]
        for c, v in zip(cols, vals):
            c.append(v)
        L.append(f"| {s} | " + " | ".join(_f(v) for v in vals) + " |")
    L += [_mean_row("mean +- se", cols), ""]
    archs = sorted((per_seed[seeds[0]][0]["nontransfer"].get("sets", {}).get("D_nt", {}).get("transfer") or {}))
    if archs:
        L += ["Transfer to every Figure 3 architecture (fresh models trained on D), PGD / non-transferable, percent:", "",
              "| seed | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
        for s in seeds:
            m = per_seed[s][0]
            L.append(f"| {s} | " + " | ".join(
                f"{_f(lookup(m, f'nontransfer:sets.D_det.transfer.{a}.value'))} / "
                f"{_f(lookup(m, f'nontransfer:sets.D_nt.transfer.{a}.value'))}" for a in archs) + " |")
        L.append("")
    return L


def _leakage_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "leakage" in per_seed[s][0]]
    if not seeds:
        return []
    sets = [k for k in ("D_rand", "D_det", "D_nt") if k in (per_seed[seeds[0]][0]["leakage"].get("sets") or {})]
    L = ["## Robust-feature leakage probe (Goh)", "",
         "The robust linear model's clean accuracy and certified fraction at its eps; the linear probe on its "
         "features trained on each set, tested on D (percent).", "",
         "| seed | robust linear clean | certified | " + " | ".join(f"probe on {k}" for k in sets) + " |",
         "|---|---|---|" + "---|" * len(sets)]
    cols: list[list[float]] = [[] for _ in range(2 + len(sets))]
    for s in seeds:
        m = per_seed[s][0]
        vals = [lookup(m, "leakage:robust_linear.clean_accuracy"), lookup(m, "leakage:robust_linear.certified_fraction"),
                *[lookup(m, f"leakage:sets.{k}.accuracy") for k in sets]]
        for c, v in zip(cols, vals):
            c.append(v)
        L.append(f"| {s} | " + " | ".join(_f(v) for v in vals) + " |")
    return L + [_mean_row("mean +- se", cols), ""]


def _squares_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "squares" in per_seed[s][0]]
    if not seeds:
        return []
    keys = [("network.train_accuracy", "net train acc."), ("network.test_accuracy", "net test acc. (noisy labels)"),
            ("network.flipped.value", "net flipped at eps"), ("linear.flipped", "linear flipped at eps"),
            ("certificate.sampled_min_radius", "linear min radius (sampled)"), ("certificate.closed_form", "closed form")]
    L = ["## Adversarial squares (Nakkiran)", "", "| seed | " + " | ".join(k[1] for k in keys) + " |",
         "|---|" + "---|" * len(keys)]
    cols: list[list[float]] = [[] for _ in keys]
    for s in seeds:
        vals = [lookup(per_seed[s][0], f"squares:{k}") for k, _ in keys]
        for c, v in zip(cols, vals):
            c.append(v)
        L.append(f"| {s} | " + " | ".join(_f(v, 3) for v in vals) + " |")
    return L + [_mean_row("mean +- se", cols), ""]


def _preference_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "preference" in per_seed[s][0]]
    if not seeds:
        return []
    kinds = [k for k in ("D_rand", "D_det", "D_nt") if k in per_seed[seeds[0]][0]["preference"]]
    keys = [(k, p) for k in kinds for p in ("test_xy", "test_x_y_plus_1", "train_predicts_t.value",
                                            "train_predicts_source_label.value")]
    L = ["## Preference readout of every model trained on a relabelled set", "",
         "Test accuracy on (X, Y) and on (X, Y+1); on its own training images (those whose set label differs from "
         "the source image's label), how often it predicts the set's label t and the source label y. Percent.", "",
         "| model | (X, Y) | (X, Y+1) | train: predicts t | train: predicts source y |", "|---|---|---|---|---|"]
    for k in kinds:
        cells = []
        for p in ("test_xy", "test_x_y_plus_1", "train_predicts_t.value", "train_predicts_source_label.value"):
            s = mean_and_stderr([lookup(per_seed[x][0], f"preference:{k}.{p}") for x in seeds])
            cells.append(f"{_f(s['mean'])} +- {_f(s['stderr'])}")
        L.append(f"| trained on {k} | " + " | ".join(cells) + " |")
    del keys
    return L + [""]


def _error_only_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "error_only" in per_seed[s][0]]
    if not seeds:
        return []
    keys = [("teacher.train_accuracy", "teacher train acc."), ("teacher.test_accuracy", "teacher test acc."),
            ("teacher.mistakes", "mistakes (student's set)"), ("student.test_accuracy.value", "student on D"),
            ("D_det.test_accuracy", "D_det model on D"), ("D_rand.test_accuracy", "D_rand model on D")]
    L = ["## Error-only distillation (Wallace)", "",
         "A teacher trained briefly relabels the training set; a fresh model trained on its mistakes alone (with its "
         "labels) is tested on D (percent; `error_only.png` plots it against the teacher's accuracy beside D_det).", "",
         "| seed | " + " | ".join(k[1] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    cols: list[list[float]] = [[] for _ in keys]
    for s in seeds:
        vals = [lookup(per_seed[s][0], f"error_only:{k}") for k, _ in keys]
        for c, v in zip(cols, vals):
            c.append(v)
        L.append(f"| {s} | " + " | ".join(_f(v) for v in vals) + " |")
    return L + [_mean_row("mean +- se", cols), ""]


def _start_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "start_ablation" in per_seed[s][0]]
    if not seeds:
        return []
    starts = list((per_seed[seeds[0]][0]["start_ablation"].get("starts") or {}))
    L = ["## D_R / D_NR from another start (Li et al.)", "",
         "The models trained on D_R and D_NR built from each start: clean and strong-PGD robust accuracy (percent) "
         "and the fraction of the robust-vs-standard gap D_R closes, mean +- se over seeds.", "",
         "| start | D_R clean | D_R robust | D_R closes (%) | D_NR clean | D_NR robust |", "|---|---|---|---|---|---|"]
    for st in starts:
        def cell(path: str, scale: float = 1.0) -> str:
            v = mean_and_stderr([scale * lookup(per_seed[s][0], f"start_ablation:starts.{st}.{path}") for s in seeds])
            return f"{_f(v['mean'])} +- {_f(v['stderr'])}"
        L.append(f"| {st} | {cell('std_DR.clean')} | {cell('std_DR.robust_strong')} | "
                 f"{cell('gap_fraction.D_R.strong.value', 100.0)} | {cell('std_DNR.clean')} | {cell('std_DNR.robust_strong')} |")
    return L + [""]


def _norm_table(per_seed: dict[int, Any]) -> list[str]:
    seeds = [s for s in sorted(per_seed) if "norm" in per_seed[s][0]]
    if not seeds:
        return []
    m0 = per_seed[seeds[0]][0]["norm"]
    kinds = [k for k in ("D", "D_rand", "D_det", "D_R") if k in m0]
    other = next((k for k in m0.get(kinds[0], {}) if k not in ("batch",) and not k.startswith("batch_minus_")), "none")
    L = ["## BatchNorm through the chain (Benz et al.)", "",
         f"Each model trained with the preset's architecture (BatchNorm) and with norm={other}, all else equal: clean "
         "test accuracy (and the strong PGD's robust accuracy for D and D_R), percent, mean +- se over seeds.", "",
         f"| trained on | clean, BN | clean, {other} | BN minus {other} | robust, BN | robust, {other} | BN minus {other} |",
         "|---|---|---|---|---|---|---|"]
    for k in kinds:
        def cell(path: str) -> str:
            return _mean_se_cell([lookup(per_seed[s][0], f"norm:{k}.{path}") for s in seeds])
        L.append(f"| {k} | {cell('batch.clean')} | {cell(other + '.clean')} | {cell('batch_minus_' + other + '.clean.value')} | "
                 f"{cell('batch.robust_strong')} | {cell(other + '.robust_strong')} | "
                 f"{cell('batch_minus_' + other + '.robust_strong.value')} |")
    return L + [""]


_PROFILE_ROWS = {"std_D": "standard on D", "adv_D": "robust on D", "std_DR": "standard on D_R", "std_DNR": "standard on D_NR"}


def _profile_seeds(per_seed: dict[int, Any]) -> list[int]:
    return [s for s in sorted(per_seed) if "profile" in per_seed[s][0]]


def _profile_table(per_seed: dict[int, Any]) -> list[str]:
    """Robust accuracy of every Figure 2 model against each radius under the strong PGD and the worst
    case, the gap fraction D_R closes under each, and the spatial grid's worst case; mean +- se."""
    seeds = _profile_seeds(per_seed)
    if not seeds:
        return []
    m0 = per_seed[seeds[0]][0]["profile"]
    threats = list(m0.get("eps", {}))
    L = ["## D_R audited: robustness profiles (Li et al.)", "",
         f"Robust accuracy (percent) of each Figure 2 model under the strong PGD / the worst case (the PGD, then the "
         f"suite on what still stands) at each radius, on {_f(m0.get('n'), 0)} test images per seed (the budgets, "
         "attack seed and images are in each seed's profile.json), and the fraction of the robust-vs-standard gap "
         "D_R closes under each (where the robust model's lead over the standard one is a few points, as at the "
         "smallest radii, that fraction is a ratio of small numbers and says little); mean +- se over seeds.", "",
         "| threat | " + " | ".join(_PROFILE_ROWS.values()) + " | gap robust - standard, worst (points) | "
         "D_R closes, PGD (%) | D_R closes, worst (%) |",
         "|---|" + "---|" * (len(_PROFILE_ROWS) + 3)]

    def cell(path: str, scale: float = 1.0) -> str:
        return _mean_se_cell([scale * lookup(per_seed[s][0], f"profile:{path}") for s in seeds])

    def gap(t: str) -> str:      # the denominator of the fraction: where it is a few points the fraction means little
        return _mean_se_cell([lookup(per_seed[s][0], f"profile:eps.{t}.adv_D.worst_case")
                              - lookup(per_seed[s][0], f"profile:eps.{t}.std_D.worst_case") for s in seeds])

    for t in threats:
        cells = [f"{cell(f'eps.{t}.{r}.strong_pgd')} / {cell(f'eps.{t}.{r}.worst_case')}" for r in _PROFILE_ROWS]
        L.append(f"| {t} | " + " | ".join(cells) + f" | {gap(t)} | {cell(f'eps.{t}.dr_gap_fraction.strong_pgd.value', 100.0)} | "
                 f"{cell(f'eps.{t}.dr_gap_fraction.worst_case.value', 100.0)} |")
    L += ["", "Rotations and translations (Engstrom et al.'s grid; an image counts only if every transform keeps it "
          "correct): clean and worst-of-grid accuracy, percent.", "",
          "| model | clean | worst over the grid |", "|---|---|---|"]
    for r, label in _PROFILE_ROWS.items():
        L.append(f"| {label} | {cell(f'spatial.{r}.clean')} | {cell(f'spatial.{r}.worst')} |")
    return L + [""]


def profile_figure(per_seed: dict[int, Any], path: Path) -> Path | None:
    """Robust accuracy against eps (l2 and linf panels) for every Figure 2 model, the worst case solid
    and the strong PGD dashed, mean over seeds with the seeds' standard error as bars; None without
    a profile record."""
    from paper_figures.empirical_figs import _plt, _save

    seeds = _profile_seeds(per_seed)
    if not seeds:
        return None
    m0 = per_seed[seeds[0]][0]["profile"]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, norm in zip(axes, (0, 1)):
        ts = sorted((t for t, v in m0["eps"].items() if v.get("norm") == norm), key=lambda t: m0["eps"][t]["eps"])
        if not ts:
            ax.set_visible(False)
            continue
        xs = [m0["eps"][t]["eps"] * (255 if norm == 1 else 1) for t in ts]
        for i, (r, label) in enumerate(_PROFILE_ROWS.items()):
            for which, ls in (("worst_case", "-"), ("strong_pgd", "--")):
                st = [mean_and_stderr([lookup(per_seed[s][0], f"profile:eps.{t}.{r}.{which}") for s in seeds]) for t in ts]
                ax.errorbar(xs, [v["mean"] for v in st], yerr=[v["stderr"] if math.isfinite(v["stderr"]) else 0 for v in st],
                            ls=ls, marker="o", ms=3, color=f"C{i}", label=label if which == "worst_case" else None)
        ax.set_xlabel("l2 eps" if norm == 0 else "linf eps (x 1/255)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=7, title="solid: worst case; dashed: PGD", title_fontsize=7)
    fig.suptitle(f"Robustness profiles of the Figure 2 models ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})",
                 fontsize=9)
    return _save(fig, path)


def build(results_root: Path) -> list[Path]:
    """Summarise every debate study under ``results_root/debate/`` (folders holding seed<K>/ debate records)."""
    base = Path(results_root) / "debate"
    written: list[Path] = []
    if not base.is_dir():
        return written
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if seed_folders(folder):
            written += summarise(folder)
    return written


__all__ = ["RECORDS", "build", "profile_figure", "render", "seed_folders", "summarise"]
