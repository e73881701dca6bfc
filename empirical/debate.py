"""The debate's tests as experiments of the chain (docs/debate.md): each reads and writes the same
workspace as ``reproduce`` (its models, datasets and evaluations are stages, reused when valid).

* :func:`run_nontransfer` - Nakkiran's non-transferable targeted examples (Distill 2019, response 5):
  the D_nt set (:mod:`empirical.constructions`) beside D_det, made with the same attack on the same
  standard model f and the same training images: success on f, transfer to fresh models (f's
  architecture and the other Figure 3 ones), the model trained on each set scored on (X, Y) and on
  (X, Y + 1), and D_nt's point placed against Figure 3's trend line. Record ``nontransfer.json``.
* :func:`run_preference` - the preference readout of every model trained on a relabelled set
  (D_rand, D_det, D_nt): test accuracy on (X, Y) and on (X, Y + 1), and on its own training set how
  often it predicts the new label t and the label its source image had. Record ``preference.json``.
* :func:`run_leakage` - Goh's robust-feature leakage probe (Distill 2019, response 2) on this
  workspace's D_rand, D_det (and D_nt) (:mod:`empirical.leakage`). Record ``leakage.json``.
* :func:`run_squares` - Nakkiran's adversarial-squares toy (:mod:`empirical.squares`,
  :mod:`simulate.squares`). Record ``squares.json``.
* :func:`run_debate` - all four, then ``debate.json``: one row per published test with this
  seed's number (``paper_figures.debate`` puts the seeds together).

Rates in the records are percent, each with its binomial standard error over the examples it
counts (``stderr``, points); the seeds' standard error is the figures floor's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from empirical import constructions as registry
from empirical.experiments import arch_slug, run_fig2, run_fig3, run_table1
from empirical.threat import next_label
from foundation.records import utc_now

#: the relabelled constructions whose models get the preference readout (those registered)
RELABELLED: tuple[str, ...] = ("D_rand", "D_det", "D_nt")


def _rate(hits: Any) -> dict[str, float]:
    """Percent of ``hits`` (bool tensor / array) with its binomial standard error (points) and n."""
    import numpy as np

    h = np.asarray(hits, dtype=np.float64).ravel()
    n = int(h.shape[0])
    if n == 0:
        return {"value": float("nan"), "stderr": float("nan"), "n": 0}
    p = float(h.mean())
    return {"value": 100.0 * p, "stderr": 100.0 * math.sqrt(max(p * (1 - p), 0.0) / n), "n": n}


def transfer_sample(ws: Any) -> Any:
    """The training examples whose adversarial versions are replayed on the other models: a seeded,
    class-stratified sample of ``transfer.n_examples`` of the training set (every relabelled set is
    index-aligned with it: example i of D_det and of D_nt both start from training image i)."""
    from empirical.data import stratified_subset

    d = ws.data()
    return stratified_subset(d.x_train, d.y_train, ws.cfg.transfer.n_examples, seed=ws.cfg.subset_seed,
                             name="transfer.n_examples")


def set_transfer(source: Any, targets: Mapping[str, Any], x: Any, x_adv: Any, y: Any, t: Any, *,
                 device: Any, batch_size: int) -> dict[str, Any]:
    """How a relabelled set's images x_adv (made from x toward t on ``source``) act on each model.

    ``success``: the source predicts t (on this sample). Per target: ``transfer`` = it predicts t, counted over the
    examples where the source succeeded and the target classifies the clean x correctly (Figure 3's
    rule: a target's plain errors are not transfer); ``keeps_y`` = it still predicts y there. Every
    rate in percent with its binomial standard error; verdicts in fp32."""
    import torch

    from empirical.evaluate import predict
    from empirical.precision import VERDICT

    y, t = y.cpu().to(torch.int64), t.cpu().to(torch.int64)
    succ = predict(source, x_adv, device=device, batch_size=batch_size, precision=VERDICT) == t
    out: dict[str, Any] = {"success": _rate(succ.numpy())}
    for name, model in targets.items():
        clean = predict(model, x, device=device, batch_size=batch_size, precision=VERDICT) == y
        adv = predict(model, x_adv, device=device, batch_size=batch_size, precision=VERDICT)
        used = succ & clean
        out[name] = {"transfer": _rate((adv == t)[used].numpy()), "keeps_y": _rate((adv == y)[used].numpy()),
                     "clean_accuracy": _rate(clean.numpy())}
    return out


def _trend_placement(fig3: Mapping[str, Any], x: float, y: float) -> dict[str, Any]:
    """Where the point (x, y) lies against Figure 3's least-squares line: its predicted y, the
    residual, and whether it fits - within twice the root-mean-square residual of Figure 3's own
    points (the authors' reply says the non-transferable set "fits the trendline")."""
    pts = list((fig3.get("points") or {}).values())
    trend = fig3.get("trend") or {}
    slope, intercept = trend.get("slope"), trend.get("intercept")
    if slope is None or not math.isfinite(float(slope)) or len(pts) < 2:
        return {"x": x, "y": y, "predicted_y": float("nan"), "residual": float("nan"), "band": float("nan"),
                "fits": False, "rule": "no Figure 3 trend (fewer than 2 architectures)"}
    res = [p["transfer_success"] - (slope * p["ddet_accuracy"] + intercept) for p in pts]
    rms = math.sqrt(sum(r * r for r in res) / len(res))
    pred = slope * x + intercept
    return {"x": x, "y": y, "predicted_y": pred, "residual": y - pred, "band": 2 * rms,
            "fig3_residuals": res, "fits": abs(y - pred) <= 2 * rms,
            "rule": "|y - (slope x + intercept)| <= 2 x the RMS residual of Figure 3's points"}


def run_nontransfer(ws: Any, *, fig3: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Nakkiran's test (module docstring): D_nt against D_det, both from f = the standard model.

    Targets (the issue's, cifar10-cpu): success >= 95%; transfer to the fresh model of f's
    architecture <= 0.1 x D_det's; the D_nt model at most chance + 3 on (X, Y) while the D_det model
    is >= chance + 15; the D_nt model's (X, Y + 1) accuracy above the D_det model's."""
    from empirical.evaluate import predict
    from empirical.models import canonical_arch
    from empirical.precision import VERDICT

    started, t0 = utc_now(), time.perf_counter()
    cfg, d = ws.cfg, ws.data()
    fig3 = dict(fig3 or run_fig3(ws))
    f = ws.source_model("standard")
    targets = {}
    for arch in cfg.fig3_archs:          # fresh models trained on D (Figure 3's, other seeds than f)
        name = f"fig3_std_{arch_slug(arch)}"
        targets[arch] = ws.loaded_model(name)
        if targets[arch] is None:
            raise RuntimeError(f"model {name} is not loaded; run_fig3 trains it")
    same = next((a for a in cfg.fig3_archs if canonical_arch(a) == canonical_arch(cfg.arch)), None)
    sub = transfer_sample(ws)
    idx = sub.indices
    x, y = d.x_train[idx], d.y_train[idx]
    chance = 100.0 / d.num_classes
    sets: dict[str, Any] = {}
    info: dict[str, Any] = {}
    # D_nt's ensemble: the in-ensemble transfer of both sets (what the attack held at y)
    ensemble = {name: m for name, m in ws.source_models("D_nt").items() if name not in registry.get("D_nt").sources}
    for kind in ("D_det", "D_nt"):
        row = registry.get(kind)
        ds = ws.dataset(kind)
        ws.constructed_model(kind)
        ev = ws.evaluate(row.model, robust=True, strong=False, shifted=True)
        t = ds.y[idx]
        if not bool((t == next_label(y, d.num_classes)).all()):
            raise ValueError(f"{ds.root}: its labels are not (y + 1) mod C of the training set it claims to start from")
        tr = set_transfer(f, {**targets, **ensemble}, x, ds.x[idx], y, t, device=ws.device,
                          batch_size=cfg.eval.batch_size)
        # success on f over the whole set (every training image), the transfer sample's beside it
        whole = predict(f, ds.x, device=ws.device, batch_size=cfg.eval.batch_size, precision=VERDICT) == ds.y
        sets[kind] = {
            "test_xy": 100.0 * ev["clean"], "test_x_y_plus_1": 100.0 * ev["shifted"],
            "success": _rate(whole.numpy()), "success_sample": tr["success"],
            "transfer": {a: tr[a]["transfer"] for a in targets},
            "transfer_same_arch": tr[same]["transfer"] if same is not None else None,
            "transfer_ensemble": {n: tr[n]["transfer"] for n in ensemble},
            "construction": ds.manifest.get("metrics", {}),
        }
        info[kind] = {"model": row.model, "content_sha256": ds.content_sha256,
                      "attack": (cfg.targeted if kind == "D_det" else cfg.settings("D_nt")).attack.describe()}
    nt, det = sets["D_nt"], sets["D_det"]
    tr_nt = nt["transfer_same_arch"]["value"] if same is not None else float("nan")
    tr_det = det["transfer_same_arch"]["value"] if same is not None else float("nan")
    placement = _trend_placement(fig3.get("metrics", fig3), nt["test_xy"], tr_nt)
    targets_met = {
        "success_at_least_95": {"value": nt["success"]["value"], "met": nt["success"]["value"] >= 95.0},
        "transfer_at_most_0.1x_pgd": {"value": tr_nt, "pgd": tr_det, "ratio": tr_nt / tr_det if tr_det else float("nan"),
                                      "met": tr_nt <= 0.1 * tr_det},
        "dnt_model_at_most_chance_plus_3": {"value": nt["test_xy"], "bound": chance + 3.0,
                                            "met": nt["test_xy"] <= chance + 3.0},
        "ddet_model_at_least_chance_plus_15": {"value": det["test_xy"], "bound": chance + 15.0,
                                               "met": det["test_xy"] >= chance + 15.0},
        "dnt_shifted_above_ddet": {"value": nt["test_x_y_plus_1"], "pgd": det["test_x_y_plus_1"],
                                   "met": nt["test_x_y_plus_1"] > det["test_x_y_plus_1"]},
        "fits_fig3_trendline": {"value": placement["residual"], "band": placement["band"], "met": placement["fits"]},
    }
    rule = placement.pop("rule")
    metrics = {"sets": sets, "chance": chance, "fig3_placement": placement, "targets": targets_met}
    return ws.record("nontransfer.json", experiment="empirical.debate.nontransfer", metrics=metrics,
                     started_at=started, start_time=t0,
                     extra={"units": "percent", "sample": sub.describe(), "sets_info": info, "same_arch": same,
                            "fig3_placement_rule": rule,
                            "source": registry.get("D_nt").source,
                            "published": PUBLISHED["nontransfer"]})


def preference_readout(ws: Any, kind: str) -> dict[str, Any]:
    """The readout of the model trained on relabelled set ``kind``: on the test set, accuracy on
    (X, Y) and on (X, Y + 1); on its own training images, how often it predicts the set's label t and
    the label y its source image had (the training set is index-aligned with D)."""
    import torch

    from empirical.evaluate import predict
    from empirical.precision import VERDICT

    row, d = registry.get(kind), ws.data()
    ds = ws.dataset(kind)
    model = ws.constructed_model(kind)
    ev = ws.evaluate(row.model, robust=True, strong=False, shifted=True)
    pred = predict(model, ds.x, device=ws.device, batch_size=ws.cfg.eval.batch_size, precision=VERDICT)
    y_src = d.y_train.to(torch.int64)
    differs = ds.y != y_src           # where the set's label is not the source label (all of D_det; ~90% of D_rand)
    return {"test_xy": 100.0 * ev["clean"], "test_x_y_plus_1": 100.0 * ev["shifted"],
            "train_predicts_t": _rate((pred == ds.y)[differs].numpy()),
            "train_predicts_source_label": _rate((pred == y_src)[differs].numpy()),
            "n_label_differs": int(differs.sum())}


def run_preference(ws: Any, kinds: Sequence[str] = RELABELLED) -> dict[str, Any]:
    """:func:`preference_readout` for every relabelled set; record ``preference.json``."""
    started, t0 = utc_now(), time.perf_counter()
    metrics: dict[str, Any] = {k: preference_readout(ws, k) for k in kinds}
    metrics["chance"] = 100.0 / ws.data().num_classes
    return ws.record("preference.json", experiment="empirical.debate.preference", metrics=metrics,
                     started_at=started, start_time=t0,
                     extra={"units": "percent", "models": {k: registry.get(k).model for k in kinds},
                            "reading": "train_* are counted over the training images whose set label differs from "
                                       "the source image's label"})


def run_leakage(ws: Any, kinds: Sequence[str] = RELABELLED, *, released: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """Goh's probe (:func:`empirical.leakage.leakage_probe`) on this workspace's relabelled sets,
    and on the authors' released sets a user points to (``released``: name -> folder holding
    ``CIFAR_ims`` / ``CIFAR_lab``, e.g. ``{"D_rand": ".../drand_CIFAR"}``; probed as
    ``released_<name>``, read by :func:`empirical.leakage.load_released_set`, never unpickling code);
    record ``leakage.json``."""
    from empirical.leakage import leakage_probe, load_released_set

    started, t0 = utc_now(), time.perf_counter()
    d = ws.data()
    # D itself (its true labels) is the control: the probe's ceiling on these ten features
    sets = {"D": (d.x_train, d.y_train), **{k: (ws.dataset(k).x, ws.dataset(k).y) for k in kinds}}
    shape = tuple(int(v) for v in d.x_train.shape[1:])
    for name, folder in (released or {}).items():
        sets[f"released_{name}"] = load_released_set(folder, num_classes=d.num_classes, image_shape=shape)
    out = leakage_probe(d.x_train, d.y_train, d.x_test, d.y_test, sets, d.num_classes, ws.cfg.leakage)
    pct = lambda v: 100.0 * float(v)  # noqa: E731
    rm = out["robust_model"]
    metrics = {
        "chance": pct(out["chance"]),
        "robust_linear": {"clean_accuracy": pct(rm["clean_accuracy"]), "certified_fraction": pct(rm["certified_fraction"]),
                          "certified_accuracy": pct(rm["certified_accuracy"]), "eps": rm["eps"],
                          "train_eps": rm["train_eps"], "median_radius": rm["median_radius"],
                          "meets_certified_min": rm["meets_certified_min"], "gamma": rm["gamma"]},
        "sets": {k: {"accuracy": pct(p["test_accuracy"]), "stderr": pct(p["test_stderr"]),
                     "predicts_y_plus_1": pct(p["test_accuracy_shifted"]), "train_accuracy": pct(p["train_accuracy"]),
                     **({"null_mean": pct(p["null_mean"]), "null_sd": pct(p["null_sd"]), "z_vs_null": p["z_vs_null"]}
                        if "null_mean" in p else {})}
                 for k, p in out["probes"].items()},
    }
    return ws.record("leakage.json", experiment="empirical.debate.leakage", metrics=metrics, started_at=started,
                     start_time=t0, extra={"units": "percent (radii in l2 pixel units)", "probe": out,
                                           "published": PUBLISHED["leakage"],
                                           "sets": {k: ws.dataset(k).content_sha256 for k in kinds},
                                           "released": {k: str(v) for k, v in (released or {}).items()}})


def run_squares(ws: Any) -> dict[str, Any]:
    """Nakkiran's adversarial squares (:func:`empirical.squares.run_squares`) with the config's
    ``squares`` settings and the chain's seed; record ``squares.json``."""
    from dataclasses import replace

    from empirical.squares import run_squares as run

    from foundation.records import json_sha256

    started, t0 = utc_now(), time.perf_counter()
    s = replace(ws.cfg.squares, seed=ws.cfg.squares.seed + ws.cfg.seed)
    # a stage like the chain's evaluations: reused while its settings (and the device) are the same
    path, key = ws.store.eval_record("squares"), json_sha256({"squares": s, "device": str(ws.device)})
    timer = ws.store.timer()
    status = ws.store.check(path, key)
    if status.valid and isinstance(status.record.get("run"), dict):
        out = status.record["run"]
        timer.done("squares", True, built_seconds=status.record.get("wall_seconds"))
    else:
        out = run(s, device=ws.device, progress=ws.progress)
        ws.store.save(path, key, {"run": out}, wall_seconds=timer.seconds)
        timer.done("squares", False)
    pct = lambda v: 100.0 * float(v)  # noqa: E731
    net, lin, cert = out["network"], out["linear"], out["certificate"]
    metrics = {
        "network": {"train_accuracy": pct(net["train_accuracy"]), "test_accuracy": pct(net["test_accuracy"]),
                    "test_accuracy_clean_sign": pct(net["test_accuracy_clean_sign"]),
                    "train_noisy_labels_fit": pct(net["train_noisy_labels_fit"]),
                    "flipped": {"value": pct(net["flip"]["fraction"]), "stderr": pct(net["flip"]["stderr"]),
                                "n": int(net["flip"]["n"])},
                    "robust_accuracy": pct(net["robust_accuracy"])},
        "linear": {"flipped": pct(lin["flip"]["fraction"]), "test_accuracy": pct(lin["test_accuracy"]),
                   "robust_accuracy": pct(lin["robust_accuracy"]),
                   "closed_form_robust_accuracy": pct(lin["closed_form_robust_accuracy"])},
        "certificate": {"closed_form": float(cert["linear_certificate"]),
                        "sampled_min_radius": min(float(cert["min_radius_test"]), float(cert["min_radius_train"])),
                        "eps": float(out["units"]["eps"]), "eps01": float(out["units"]["eps01"])},
    }
    return ws.record("squares.json", experiment="empirical.debate.squares", metrics=metrics, started_at=started,
                     start_time=t0, extra={"settings": s, "units": "percent (radii and eps in the distribution's "
                                           "pixel units)", "run": out, "published": PUBLISHED["squares"]})


# ---------------------------------------------------------------------------------------------
# the published numbers each test is set beside (docs/debate.md; ../shared/docs/related-work.md)
# ---------------------------------------------------------------------------------------------
_R5 = ("Nakkiran, 'Adversarial Examples are Just Bugs, Too', Distill 2019 (response 5), "
       "distillpub/post--ilyas-response-5 public/index.html")
_R2 = ("Goh, 'Robust Feature Leakage', Distill 2019 (response 2), https://distill.pub/2019/advex-bugs-discussion/"
       "response-2 ; distillpub/post--ilyas-response-2")
PUBLISHED: dict[str, Any] = {
    "nontransfer": {"source": _R5, "setting": "CIFAR-10, ResNet-18 f, K = 10 fresh ResNet-18s, l2 eps 2.5 step 0.5 "
                    "and linf 8/255 step 2/255, 10 steps from x",
                    "l2": {"pgd": {"success": 99.9, "transfer": 82.5, "test_xy": 33.2, "test_x_y_plus_1": 27.3},
                           "nontransfer": {"success": 99.3, "transfer": 1.7, "test_xy": 2.8, "test_x_y_plus_1": 70.8}},
                    "linf": {"pgd": {"success": 99.6, "transfer": 52.1, "test_xy": 23.7, "test_x_y_plus_1": 40.4},
                             "nontransfer": {"success": 98.6, "transfer": 0.8, "test_xy": 2.5,
                                             "test_x_y_plus_1": 75.9}}},
    "leakage": {"source": _R2, "setting": "CIFAR-10, ten class-wise features of a robust linear model certified at "
                "l2 0.25 (>= 80% of test points keep their prediction); a linear classifier on them trained on "
                "D_rand / D_det (probably the released sets), tested on D",
                "D_rand": 23.5, "D_det": 6.81, "chance": 10.0},
    "squares": {"source": _R5, "setting": "CIFAR-sized all-black / all-white images, pixel noise U[-0.1, 0.1], 10% "
                "label noise, 10k samples, ResNet-18, Adam 1e-5, batch 128, 20 epochs (99.9% train accuracy)",
                "linear_certificate_linf": 0.9, "network_flipped_at_eps": 0.01,
                "network_flipped": "almost all test examples (no number given)"},
}


def run_debate(ws: Any, *, squares: bool = True, controls: bool = True,
               released: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every test of this module on ``ws`` (Table 1 and Figure 3 first, whose models they reuse), the
    controls of :mod:`empirical.controls` (``controls``), then this seed's ``debate.json``
    (:func:`debate_rows`). Returns {record name: record}."""
    started, t0 = utc_now(), time.perf_counter()
    out: dict[str, Any] = {"table1": run_table1(ws)}
    out["fig3"] = run_fig3(ws)
    out["nontransfer"] = run_nontransfer(ws, fig3=out["fig3"])
    out["preference"] = run_preference(ws)
    out["leakage"] = run_leakage(ws, released=released)
    if squares:
        out["squares"] = run_squares(ws)
    if controls:
        from empirical.controls import run_error_only, run_norm, run_start_ablation

        out["error_only"] = run_error_only(ws)
        out["norm"] = run_norm(ws)
        out["start_ablation"] = run_start_ablation(ws, start="noise" if ws.cfg.rep.start != "noise" else "random_image")
        # D_R audited beyond PGD (Li et al.): Figure 2 under the preset's evaluation (the worst case where its
        # eval.suite names one) and the robustness profile of every Figure 2 model
        from empirical.audit import run_profile

        out["fig2"] = run_fig2(ws)
        out["profile"] = run_profile(ws)
    rows = debate_rows({k: v.get("metrics", {}) for k, v in out.items()})
    out["debate"] = ws.record("debate.json", experiment="empirical.debate",
                              metrics={"n_rows": len(rows), "n_met": sum(r["met"] for r in rows),
                                       "values": [r["ours"]["value"] for r in rows], "met": [r["met"] for r in rows]},
                              started_at=started, start_time=t0,
                              extra={"rows": rows, "records": sorted(f"{k}.json" for k in out), "units": "percent",
                                     "stages": ws.timings})
    return out


# ---------------------------------------------------------------------------------------------
# the debate table: one row per published test, each number read from a record by its key
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of the debate table.

    ``ours`` and every entry of ``refs`` are ``record:dotted.key`` addresses into a record's metrics
    (``nontransfer:sets.D_nt.success.value``), so each number is recomputable from the records it
    cites. ``criterion`` is (op, rhs): rhs a number or (ref name, factor, offset) =
    factor * refs[name] + offset; ops ``ge``, ``le``, ``gt``, ``lt``, ``abs_le`` on the value, and
    ``clearly_gt`` (value - 2 stderr > rhs) / ``not_clearly_gt`` (value - 2 stderr <= rhs) with the
    value's standard error (``ours_stderr``: a binomial one within a seed, the seeds' across
    seeds); ``scale`` multiplies every number read (a record's fraction shown in percent)."""

    test: str
    source: str
    published: str
    ours: str
    criterion: tuple[str, Any]
    criterion_text: str
    refs: Mapping[str, str] = field(default_factory=dict)
    ours_stderr: str | None = None
    scale: float = 1.0           # multiplies ours, its stderr and the refs (a record's fraction shown in percent)


OPS: tuple[str, ...] = ("ge", "le", "gt", "lt", "abs_le", "clearly_gt", "not_clearly_gt")

_NT, _LK, _SQ, _BN, _PF = "nontransfer", "leakage", "squares", "norm", "profile"
_LI = ("Li, Wang, Guo & Wang, 'Adversarial Examples Are Not Real Features', NeurIPS 2023 (AutoAttack on a ResNet-18 "
       "trained on the released D_R: PKU-ML/AdvNotRealFeatures issue #4)")
_NDB = "ndb796/Pytorch-Adversarial-Training-CIFAR issue #1 (a ResNet-18 trained on the released D_R)"
_ZW = ("Z. Wang, 'Understanding (Non-)Robust Feature Disentanglement and Flaws of the Current Supervised Learning "
       "Paradigm' (report; draft_main/Results.tex, Table 'spatialattack': ResNet-50 on D and on the released D_R)")
_BENZ = ("Benz, Zhang & Kweon, 'Batch Normalization Increases Adversarial Vulnerability and Decreases Adversarial "
         "Transferability: A Non-Robust Feature Perspective', ICCV 2021 (ResNet-18; read off their figures, +-2 points)")
ROWS: tuple[Row, ...] = (
    # the headline first (the issue: the README and the report lead with it)
    Row("D_R audited: the fraction of the robust-vs-standard gap D_R closes under the worst case (Figure 2's "
        "threat and sample; PGD's beside it)", _LI,
        "the paper's 56% is PGD's; a ResNet-18 on the released D_R keeps 15.55% under AutoAttack",
        "fig2:gap_fraction.D_R.worst.value", ("clearly_gt", 0.0),
        "above 0 by 2 standard errors (D_R keeps part of its robustness under the worst case)",
        refs={"pgd": "fig2:gap_fraction.D_R.strong.value"}, ours_stderr="fig2:gap_fraction.D_R.worst.stderr",
        scale=100.0),
    Row("Non-transferable targeted examples: success on f", _R5, "99.3% (l2; linf 98.6%)",
        f"{_NT}:sets.D_nt.success.value", ("ge", 95.0), ">= 95%", ours_stderr=f"{_NT}:sets.D_nt.success.stderr"),
    Row("Non-transferable targeted examples: transfer to a fresh model of f's architecture", _R5,
        "1.7% against PGD's 82.5% (l2; linf 0.8 / 52.1)", f"{_NT}:sets.D_nt.transfer_same_arch.value",
        ("le", ("pgd", 0.1, 0.0)), "<= 0.1 x PGD's transfer", refs={"pgd": f"{_NT}:sets.D_det.transfer_same_arch.value"},
        ours_stderr=f"{_NT}:sets.D_nt.transfer_same_arch.stderr"),
    Row("Model trained on the non-transferable set, tested on (X, Y)", _R5, "2.8% (l2; linf 2.5%)",
        f"{_NT}:sets.D_nt.test_xy", ("le", ("chance", 1.0, 3.0)), "<= chance + 3", refs={"chance": f"{_NT}:chance"}),
    Row("Model trained on PGD's set (D_det), tested on (X, Y)", _R5, "33.2% (l2; linf 23.7%)",
        f"{_NT}:sets.D_det.test_xy", ("ge", ("chance", 1.0, 15.0)), ">= chance + 15", refs={"chance": f"{_NT}:chance"}),
    Row("Model trained on the non-transferable set, tested on (X, Y + 1)", _R5,
        "70.8% against PGD's 27.3% (l2; linf 75.9 / 40.4)", f"{_NT}:sets.D_nt.test_x_y_plus_1",
        ("gt", ("pgd", 1.0, 0.0)), "above the D_det model's", refs={"pgd": f"{_NT}:sets.D_det.test_x_y_plus_1"}),
    Row("The non-transferable set on Figure 3's trend line (the authors' reply: it fits)",
        "Ilyas et al., reply to response 5 (Distill 2019)", "'fits neatly onto the trendline' (no number)",
        f"{_NT}:fig3_placement.residual", ("abs_le", ("band", 1.0, 0.0)),
        "|residual| <= 2 x RMS residual of Figure 3's points", refs={"band": f"{_NT}:fig3_placement.band"}),
    Row("Adversarial squares: the linear classifier's certified linf radius (infimum)", _R5, "0.9",
        f"{_SQ}:certificate.sampled_min_radius", ("ge", ("closed_form", 1.0, 0.0)),
        ">= the closed form 1 - pixel noise (every sampled point)", refs={"closed_form": f"{_SQ}:certificate.closed_form"}),
    Row("Adversarial squares: test points a network flips at linf eps 0.01", _R5, "'almost all'",
        f"{_SQ}:network.flipped.value", ("ge", 50.0), ">= 50% (most)", ours_stderr=f"{_SQ}:network.flipped.stderr"),
    Row("Robust-feature leakage: the robust linear model's test points certified at l2 0.25", _R2, ">= 80%",
        f"{_LK}:robust_linear.certified_fraction", ("ge", 80.0), ">= 80%"),
    Row("Robust-feature leakage: linear probe on robust features trained on D_rand, tested on D", _R2, "23.5%",
        f"{_LK}:sets.D_rand.accuracy", ("clearly_gt", ("chance", 1.0, 0.0)), "above chance by 2 standard errors",
        refs={"chance": f"{_LK}:chance"}, ours_stderr=f"{_LK}:sets.D_rand.stderr"),
    Row("Robust-feature leakage: linear probe on robust features trained on D_det, tested on D", _R2, "6.81%",
        f"{_LK}:sets.D_det.accuracy", ("not_clearly_gt", ("chance", 1.0, 0.0)),
        "at or below chance (not above it by 2 standard errors)", refs={"chance": f"{_LK}:chance"},
        ours_stderr=f"{_LK}:sets.D_det.stderr"),
    Row("Error-only distillation: a model trained on a weak teacher's mistakes alone, tested on D",
        "Wallace, 'Learning from Incorrectly Labeled Data', Distill 2019 (response 6), "
        "distillpub/post--ilyas-response-6", "49.7% (ResNet-18, teacher 2 epochs, 63.1%; 18,768 mistakes)",
        "error_only:student.test_accuracy.value", ("clearly_gt", ("chance", 1.0, 0.0)),
        "above chance by 2 standard errors", refs={"chance": "error_only:chance"},
        ours_stderr="error_only:student.test_accuracy.stderr"),
    Row("D_NR started from noise instead of another training image: the D_NR model's clean accuracy drop",
        "Li et al., 'Adversarial Examples Are Not Real Features', NeurIPS 2023", "~30 points lower from noise",
        "start_ablation:dnr_clean_drop", ("gt", 0.0), "> 0 (the same sign)"),
    Row("BatchNorm: the D_rand model's test accuracy with BatchNorm minus without", _BENZ, "68% - 5% = +63 points",
        f"{_BN}:D_rand.batch_minus_none.clean.value", ("gt", 0.0), "> 0 (the same sign)",
        ours_stderr=f"{_BN}:D_rand.batch_minus_none.clean.stderr"),
    Row("BatchNorm: the D_R model's clean accuracy with BatchNorm minus without", _BENZ, "84% - 81% = +3 points",
        f"{_BN}:D_R.batch_minus_none.clean.value", ("gt", 0.0), "> 0 (the same sign)",
        ours_stderr=f"{_BN}:D_R.batch_minus_none.clean.stderr"),
    Row("BatchNorm: the D_R model's robust accuracy with BatchNorm minus without", _BENZ, "45% - 50% = -5 points",
        f"{_BN}:D_R.batch_minus_none.robust_strong.value", ("lt", 0.0), "< 0 (the same sign)",
        ours_stderr=f"{_BN}:D_R.batch_minus_none.robust_strong.stderr"),
    Row("D_R audited: the D_R model's worst-case accuracy at linf 8/255 against at l2 0.25 (robustness profile)",
        _NDB, "0.1% against 38.0% (ndb796's ResNet-18 on the released D_R)",
        f"{_PF}:summary.std_DR.worst_case.linf_8of255", ("lt", ("l2", 1.0, 0.0)),
        "below its l2 0.25 worst case (the same direction)", refs={"l2": f"{_PF}:summary.std_DR.worst_case.l2_0p25"}),
    Row("D_R audited: the D_R model's accuracy under the worst rotation and translation minus the standard "
        "model's (robustness profile)", _ZW,
        "rotations and translations (grid775): 9.88% - 15.28% = -5.4 points; rotations alone (rot30): 24.94% - "
        "36.77% = -11.8 (ResNet-50)",
        f"{_PF}:summary.dr_minus_std_spatial_worst", ("lt", 0.0), "< 0 (the same sign)"),
)


def lookup(records: Mapping[str, Mapping[str, Any]], address: str) -> float:
    """The number at ``record:dotted.key`` of ``records`` (record name -> its metrics); NaN if absent."""
    name, _, path = address.partition(":")
    v: Any = records.get(name)
    for part in path.split("."):
        if not isinstance(v, Mapping) or part not in v:
            return float("nan")
        v = v[part]
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def judge(row: Row, value: float, stderr: float, refs: Mapping[str, float]) -> dict[str, Any]:
    """Row ``row``'s criterion on ``value`` (with its ``stderr``) and its references' values."""
    op, rhs = row.criterion
    if op not in OPS:
        raise ValueError(f"criterion op {op!r} is not one of {', '.join(OPS)}")
    bound = float(rhs) if isinstance(rhs, (int, float)) else rhs[1] * refs[rhs[0]] + rhs[2]
    se = stderr if math.isfinite(stderr) else 0.0
    if not (math.isfinite(value) and math.isfinite(bound)):
        met = False
    elif op == "ge":
        met = value >= bound
    elif op == "le":
        met = value <= bound
    elif op == "gt":
        met = value > bound
    elif op == "lt":
        met = value < bound
    elif op == "abs_le":
        met = abs(value) <= bound
    elif op == "clearly_gt":
        met = value - 2 * se > bound
    else:
        met = value - 2 * se <= bound
    return {"bound": bound, "met": bool(met)}


def debate_rows(m: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One seed's rows of the debate table from the metrics of its records (record name without
    ``.json`` -> metrics): test, source, published, ours (value, binomial stderr), the references,
    the criterion, its bound and whether it is met. Rows whose record is absent are left out."""
    out = []
    for row in ROWS:
        if row.ours.partition(":")[0] not in m:
            continue
        value = row.scale * lookup(m, row.ours)
        se = row.scale * lookup(m, row.ours_stderr) if row.ours_stderr else float("nan")
        refs = {k: row.scale * lookup(m, a) for k, a in row.refs.items()}
        out.append({"test": row.test, "source": row.source, "published": row.published,
                    "ours": {"value": value, "stderr": se}, "from": row.ours, "refs": refs,
                    "ref_addresses": dict(row.refs), "criterion": row.criterion_text, **judge(row, value, se, refs)})
    return out
