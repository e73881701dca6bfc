"""The controls that decide between explanations of the paper's datasets (docs/debate.md).

* :func:`run_error_only` - Wallace's error-only distillation (Distill 2019, response 6): a briefly
  trained teacher relabels the training set, a fresh model learns from its mistakes alone (the
  D_err construction), tested on D beside D_det and D_rand. Record ``error_only.json``.
* :func:`run_start_ablation` - D_R / D_NR from noise instead of another training image (Li et
  al., NeurIPS 2023), in a sibling workspace that shares the source models. Record
  ``start_ablation.json``.
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


def run_error_only(ws: Any) -> dict[str, Any]:
    """Wallace's control (the D_err construction): the teacher's accuracy (on its training set and
    the test set), its mistakes, and the model trained on them alone (with the teacher's labels)
    tested on D, beside the models trained on D_det and D_rand and with f's own accuracy as D_det's
    "teacher" (the points of one plot of test accuracy against teacher accuracy). Record
    ``error_only.json``."""
    from empirical.evaluate import accuracy
    from empirical.precision import VERDICT

    started, t0 = utc_now(), time.perf_counter()
    cfg, d = ws.cfg, ws.data()
    row = registry.get("D_err")
    ds = ws.dataset("D_err")
    teacher_name = ws.extra_models("D_err")[0].name
    teacher = ws.loaded_model(teacher_name) or ws.source_models("D_err")[teacher_name]
    ws.constructed_model("D_err")
    wrong = ds.aux["teacher_wrong"].bool()
    student = ws.evaluate(row.model, robust=False)["clean"]
    n_test = int(d.y_test.shape[0])
    se = lambda p: 100.0 * math.sqrt(max(p * (1 - p), 0.0) / n_test)  # noqa: E731
    teacher_test = accuracy(teacher, d.x_test, d.y_test, batch_size=cfg.eval.batch_size, device=ws.device,
                            precision=VERDICT)
    others = {}
    for kind in ("D_det", "D_rand"):
        r = registry.get(kind)
        ws.constructed_model(kind)
        others[kind] = 100.0 * ws.evaluate(r.model, robust=True, strong=False, shifted=r.shifted)["clean"]
    f_test = 100.0 * ws.evaluate("standard", robust=True, strong=True)["clean"] if ws.loaded_model("standard") \
        else float("nan")
    student_pct = 100.0 * student
    metrics = {
        "teacher": {"train_accuracy": 100.0 * (1.0 - float(wrong.float().mean())), "test_accuracy": 100.0 * teacher_test,
                    "mistakes": int(wrong.sum()), "n_train": int(wrong.shape[0])},
        "student": {"test_accuracy": {"value": student_pct, "stderr": se(student), "n": n_test}},
        "D_det": {"test_accuracy": others["D_det"], "teacher_test_accuracy": f_test},
        "D_rand": {"test_accuracy": others["D_rand"]},
        "closer_to_D_det": abs(student_pct - others["D_det"]) < abs(student_pct - others["D_rand"]),
        "chance": 100.0 / d.num_classes,
    }
    return ws.record("error_only.json", experiment="empirical.controls.error_only", metrics=metrics,
                     started_at=started, start_time=t0,
                     extra={"units": "percent", "teacher": {"name": teacher_name,
                                                             "arch": ws.extra_models("D_err")[0].arch,
                                                             "epochs": cfg.settings("D_err").teacher_epochs},
                            "student": row.model, "content_sha256": ds.content_sha256,
                            "source": "Wallace, Distill 2019 (response 6): ResNet-18 teacher, 2 epochs, 63.1% test; "
                                      "18,768 mistakes of 50k; student 49.7%"})


def run_start_ablation(ws: Any, *, start: str = "noise") -> dict[str, Any]:
    """D_R / D_NR built from another start (``rep.start``: ``random_image``, the paper's x' ~ D, or
    ``noise``, the official notebook's randn/20 + 0.5; Li et al. 2023 report D_NR ~30 points lower
    from noise) beside this workspace's own Figure 2 rows.

    The other start is a sibling workspace under ``ROOT/ablations/start-<start>/`` whose config
    differs in ``rep.start`` only; the standard and robust models are the same stages (same keys),
    so their folders are copied in and checked by the stage store, never retrained. Its D_R / D_NR,
    the models trained on them and their evaluations are its own stages. Record
    ``start_ablation.json`` with both starts' rows and the gap fractions."""
    import dataclasses
    import shutil

    from empirical.experiments import fig2_gap_fractions
    from empirical.workspace import Workspace

    started, t0 = utc_now(), time.perf_counter()
    cfg = ws.cfg
    if start == cfg.rep.start:
        raise ValueError(f"start={start!r} is this workspace's own rep.start; give the other one")
    sibling_cfg = dataclasses.replace(cfg, rep=dataclasses.replace(cfg.rep, start=start))
    root = ws.root / "ablations" / f"start-{start}"
    for name in ("standard", "robust"):          # the same stages: copied, then validated like any other
        ws.source_model(name)
        src, dst = ws.root / "models" / name, root / "models" / name
        if not (dst / "stage.json").is_file():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        ws.evaluate(name)                        # and their Figure 2 evaluations (the same key there too)
        ev_src, ev_dst = ws.store.eval_record(name), root / "evals" / ws.store.eval_record(name).name
        if ev_src.is_file() and not ev_dst.is_file():
            ev_dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ev_src, ev_dst)
    other = Workspace(cfg=sibling_cfg, root=root, device=ws.device, progress=ws.progress)
    rows: dict[str, Any] = {}
    for label, w in ((cfg.rep.start, ws), (start, other)):
        names = {"std_D": "standard", "adv_D": "robust"}
        for row_name, kind in (("std_DR", "D_R"), ("std_DNR", "D_NR")):
            w.constructed_model(kind)
            names[row_name] = registry.get(kind).model
        w.source_model("standard")
        w.source_model("robust")
        ev = {r: w.evaluate(m) for r, m in names.items()}
        rows[label] = {r: {k: (v if k == "n_robust" else 100.0 * v) for k, v in e.items()} for r, e in ev.items()}
        rows[label]["gap_fraction"] = fig2_gap_fractions({r: w.robust_masks(m) for r, m in names.items()})
        rows[label]["rep_loss_rel_mean"] = {k: w.dataset(k).manifest.get("metrics", {}).get("rep_loss_rel_mean")
                                            for k in ("D_R", "D_NR")}
    base, alt = rows[cfg.rep.start], rows[start]
    metrics = {"starts": rows,
               "dnr_clean_drop": base["std_DNR"]["clean"] - alt["std_DNR"]["clean"],
               "dr_clean_drop": base["std_DR"]["clean"] - alt["std_DR"]["clean"],
               "dr_robust_change": alt["std_DR"]["robust_strong"] - base["std_DR"]["robust_strong"]}
    return ws.record("start_ablation.json", experiment="empirical.controls.start_ablation", metrics=metrics,
                     started_at=started, start_time=t0,
                     extra={"units": "percent", "starts": [cfg.rep.start, start], "sibling": str(root),
                            "source": "Li et al., 'Adversarial Examples Are Not Real Features', NeurIPS 2023: "
                                      "~30 points lower accuracy when D_NR starts from noise"})


__all__ = ["NORM_SETS", "arch_with_norm", "run_error_only", "run_norm", "run_start_ablation"]
