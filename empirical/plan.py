"""The cost plan of a reproduction: image passes per stage and the seconds they should take.

``robust-features reproduce --preset P --plan --out-dir DIR`` runs nothing heavy: it counts, for
every stage of the chain (:mod:`empirical.reproduce`), the forward+backward image passes (a
training step, or an attack / inversion step, on one image) and the forward-only passes
(clean predictions, attack scoring, sanity checks), and turns them into seconds

* on this CPU, from the throughput table measured here (``benchmarks/bench_empirical.py
  --table``, committed as ``empirical/throughput_cpu.json``): images/s per architecture for
  training and attack steps, in fp32 and in the fast bf16 + channels_last mode, whichever the
  stage runs in; an architecture missing from the table is scaled from the nearest measured one
  by forward FLOPs;
* on an NVIDIA H200, from model FLOPs and a stated achieved FLOP rate (:data:`H200_ANCHOR`):
  airbench94's published A100 training run, scaled to an H200.

A pass is counted as 3 forward passes of FLOPs (forward + backward), for attack steps too (their
backward needs no weight gradients, so this errs on the slow side). Stage names match the
per-stage timings of ``reproduce.json``, so a plan can be checked against a finished run
(:func:`compare_with_run`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

#: The H200 rate model, with its sources. airbench94 (K. Jordan, "94% on CIFAR-10 in 3.29 seconds
#: on a single GPU", 2024; github.com/KellerJordan/cifar10-airbench README): 0.36 PFLOPs of
#: training in 3.83 s (eager) on one A100, i.e. 94 TFLOP/s achieved, 30% of the A100's 312 TFLOP/s
#: dense bf16 peak. An H200 has 989 TFLOP/s dense bf16 (3.2x) and 4.8 TB/s of HBM3e (2.4x the
#: A100-40GB's 2.0 TB/s); small CIFAR networks are bound by both, so the plan takes 2.0x an A100,
#: below either ratio. fp32 stages run convolutions in TF32 (torch's cuDNN default), taken at half
#: the bf16 rate.
H200_ANCHOR: dict[str, Any] = {
    "device": "NVIDIA H200",
    "a100_achieved_tflops": 0.36e15 / 3.83 / 1e12,
    "h200_over_a100": 2.0,
    "fp32_over_bf16": 0.5,
    "flops_per_pass_over_forward": 3.0,
    "source": ("airbench94 README (github.com/KellerJordan/cifar10-airbench): 0.36 PFLOPs in 3.83 s on one "
               "A100 = 94 TFLOP/s; H200 taken as 2.0x an A100 (bf16 peak 989 vs 312 TFLOP/s, HBM 4.8 vs 2.0 TB/s); "
               "fp32 (TF32 convolutions) at half the bf16 rate; a training or attack pass = 3 forward passes"),
}


def h200_tflops(precision: str) -> float:
    """The achieved model-FLOP rate the plan assumes on an H200 for a stage run in ``precision``."""
    r = H200_ANCHOR["a100_achieved_tflops"] * H200_ANCHOR["h200_over_a100"]
    return r if precision == "bf16" else r * H200_ANCHOR["fp32_over_bf16"]


@lru_cache(maxsize=None)
def forward_flops(arch: str, *, image_size: int = 32, in_channels: int = 3, num_classes: int = 10) -> float:
    """Forward FLOPs per image of ``arch`` (``torch.utils.flop_counter``: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from empirical.models import build_model

    m = build_model(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    mean=(0.5,) * in_channels, std=(0.25,) * in_channels).eval()
    x = torch.zeros(2, in_channels, image_size, image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(x)
    return float(fc.get_total_flops()) / 2


@lru_cache(maxsize=None)
def cpu_table() -> dict[str, Any]:
    """The committed CPU throughput table (``empirical/throughput_cpu.json``)."""
    text = resources.files("empirical").joinpath("throughput_cpu.json").read_text()
    return json.loads(text)


def cpu_rate(arch: str, mode: str, precision: str, *, image_size: int = 32, in_channels: int = 3,
             num_classes: int = 10) -> tuple[float, str]:
    """Images/s on this CPU for ``mode`` (``train`` or ``attack``) steps of ``arch`` in ``precision``.

    Measured when the table has the architecture; otherwise scaled by forward FLOPs from the
    measured architecture nearest in FLOPs. Returns (rate, where it came from).
    """
    from empirical.models import canonical_arch

    table = cpu_table()
    key = f"{mode}_{'fast' if precision == 'bf16' else 'fp32'}"
    rates = table["rates"]
    spec = canonical_arch(arch)
    size_ok = image_size == table["image_size"]
    if spec in rates and size_ok:
        return float(rates[spec][key]), "measured"
    f = forward_flops(spec, image_size=image_size, in_channels=in_channels, num_classes=num_classes)
    ref = min(rates, key=lambda a: abs(math.log(rates[a]["forward_flops_per_image"] / max(f, 1.0))))
    rate = float(rates[ref][key]) * rates[ref]["forward_flops_per_image"] / max(f, 1.0)
    return rate, f"scaled from {ref} by forward FLOPs"


@dataclass
class Stage:
    """One stage of the chain: what runs, on which architecture, how many image passes."""

    stage: str
    arch: str
    what: str
    precision: str                     # fp32 or bf16, as the stage runs on the planned device
    passes: float = 0.0                # forward+backward image passes (training or attack steps)
    forward: float = 0.0               # forward-only image passes
    mode: str = "attack"               # the CPU rate used for the passes: train or attack steps
    notes: dict[str, Any] = field(default_factory=dict)


def _sizes(cfg: Any) -> dict[str, int]:
    """Training/test set sizes and image shape of ``cfg``'s data, without decoding it."""
    known = {"digits": (1437, 360, 1, 8), "synthetic": (3000, 1000, 3, 16), "cifar10": (50000, 10000, 3, 32)}
    name = cfg.data.split(":", 1)[0]
    if name in known:
        n_tr, n_te, c, s = known[name]
    elif name == "imagefolder":
        from empirical.data import IMAGE_SUFFIXES

        path = Path(cfg.data.partition(":")[2] or cfg.data_root or "")
        counts = []
        first = None
        for split in ("train", "test"):
            folder = path / split
            if not folder.is_dir():
                raise FileNotFoundError(f"imagefolder root {path} has no '{split}' folder (needed to plan)")
            files = [f for c_ in folder.iterdir() if c_.is_dir() for f in c_.iterdir()
                     if f.suffix.lower() in IMAGE_SUFFIXES]
            counts.append(len(files))
            first = first or (files[0] if files else None)
        n_tr, n_te = counts
        c, s = 3, 32
        if first is not None:
            from PIL import Image

            with Image.open(first) as im:
                s = im.size[0]
                c = 1 if im.mode in ("L", "1", "I", "F") else 3
    else:  # pragma: no cover - check_dataset_spec rejects it earlier
        raise ValueError(f"cannot plan for dataset {cfg.data!r}")
    if cfg.n_train is not None:
        n_tr = min(n_tr, cfg.n_train)
    if cfg.n_test is not None:
        n_te = min(n_te, cfg.n_test)
    return {"n_train": n_tr, "n_test": n_te, "channels": c, "image_size": s}


def _num_classes(cfg: Any) -> int:
    """The classes of ``cfg``'s data without decoding it (an image folder: its class folders)."""
    if cfg.data.split(":", 1)[0] == "imagefolder":
        path = Path(cfg.data.partition(":")[2] or cfg.data_root or "") / "train"
        return sum(1 for c in path.iterdir() if c.is_dir()) if path.is_dir() else 10
    return 10


def stages(cfg: Any, device: str = "cuda") -> list[Stage]:
    """Every stage of ``run_reproduce(cfg)`` with its image passes, in the order the chain runs them."""
    from empirical import constructions as registry
    from empirical import suite
    from empirical.models import canonical_arch
    from empirical.precision import resolve_precision

    sz = _sizes(cfg)
    n, nt = sz["n_train"], sz["n_test"]
    ev = cfg.eval
    nr = nt if ev.n_robust is None else min(ev.n_robust, nt)
    ne = min(cfg.transfer.n_examples, nt)
    p = lambda prec: resolve_precision(prec, device)  # noqa: E731
    src = canonical_arch(cfg.arch)
    out: list[Stage] = []

    def train(name: str, arch: str, recipe: Any, n_images: int, what: str) -> None:
        prec = p(recipe.precision)
        s = Stage(f"train:{name}", canonical_arch(arch), what, prec, mode="train",
                  passes=recipe.epochs * n_images, notes={"epochs": recipe.epochs, "n": n_images})
        out.append(s)
        if recipe.adv_eps is not None:   # the PGD steps that make each adversarial batch
            out.append(Stage(f"train:{name}/attack", canonical_arch(arch), f"PGD-{recipe.adv_steps} of {what}",
                             prec, passes=recipe.epochs * n_images * recipe.adv_steps,
                             notes={"epochs": recipe.epochs, "steps": recipe.adv_steps}))

    train("standard", src, cfg.std, n, "standard model on D")
    train("robust", src, cfg.adv, n, "adversarially trained model on D")
    kinds = (*registry.PAPER_KINDS, *cfg.constructions)
    for kind in kinds:                     # each construction's cost, as its registry row states it
        row, settings = registry.get(kind), cfg.settings(kind)
        for m in (row.extra_models(settings, cfg.arch, cfg.seed) if row.extra_models else ()):
            from dataclasses import replace as _replace

            train(m.name, m.arch, _replace(cfg.std, **m.recipe), n, f"{kind}'s further source model on D")
        passes, forward = row.cost(settings, n) if row.cost is not None else (0.0, 0.0)
        out.append(Stage(f"construct:{kind}", src, f"{kind} from the {' + '.join(row.sources)} model: {row.summary}",
                         p(getattr(settings, "precision", "auto")), passes=passes, forward=forward,
                         notes={"n": n, **{k: getattr(settings, k) for k in ("steps", "restarts") if hasattr(settings, k)}}))
    for kind in ("D_R", "D_NR"):
        row = registry.get(kind)
        train(row.model, src, cfg.recipe(row.recipe), n, f"standard model on {kind}")
    pe = p(ev.precision)
    strong = nr * ev.strong_restarts * ev.strong_steps
    fig2_models = ("standard", "robust", registry.get("D_R").model, registry.get("D_NR").model)
    for name in fig2_models:
        out.append(Stage(f"eval:{name}", src, f"clean on {nt}, PGD-{ev.paper_steps} and PGD-{ev.strong_steps} x "
                         f"{ev.strong_restarts} on {nr}", pe, passes=nr * ev.paper_steps + strong,
                         forward=nt + nr * (3 + ev.strong_restarts + 2), notes={"n_test": nt, "n_robust": nr}))
    if ev.suite:   # an upper bound: every attack of the suite on every example the strong PGD attacked
        classes = _num_classes(cfg)
        costs = {a: suite.get(a).cost(suite.get(a).budget(ev.budgets, classes), classes) for a in ev.suite
                 if suite.get(a).cost is not None}
        grad, fwd = sum(c[0] for c in costs.values()), sum(c[1] for c in costs.values())
        for name in fig2_models:
            out.append(Stage(f"eval-suite:{name}", src, f"{' -> '.join(ev.suite)} on {nr} (upper bound: every "
                             "example reaches every attack)", pe, passes=nr * grad, forward=nr * fwd,
                             notes={"n_robust": nr, "gradient_steps": grad, "forward_per_image": fwd}))
    for kind in ("D_rand", "D_det"):
        row = registry.get(kind)
        train(row.model, src, cfg.recipe(row.recipe), n, f"standard model on {kind}")
    for name, shifted in ((registry.get("D_rand").model, registry.get("D_rand").shifted),
                          (registry.get("D_det").model, registry.get("D_det").shifted)):
        out.append(Stage(f"eval:{name}", src, f"clean on {nt}, PGD-{ev.paper_steps} on {nr}", pe,
                         passes=nr * ev.paper_steps, forward=nt * (2 if shifted else 1) + nr * 3,
                         notes={"n_test": nt, "n_robust": nr}))
    from empirical.experiments import arch_slug

    for arch in cfg.fig3_archs:
        train(f"fig3_std_{arch_slug(arch)}", arch, cfg.std, n, f"Figure 3 target {arch} on D")
        if canonical_arch(arch) != src:
            train(f"fig3_ddet_{arch_slug(arch)}", arch, cfg.on_ddet, n, f"Figure 3 {arch} on D_det")
            out.append(Stage(f"eval:fig3_ddet_{arch_slug(arch)}", canonical_arch(arch), f"clean on {nt}", pe,
                             forward=nt))
    for kind in cfg.constructions:          # the further constructions: a model on each, clean + paper PGD
        row = registry.get(kind)
        train(row.model, src, cfg.recipe(row.recipe), n, f"standard model on {kind}")
        out.append(Stage(f"eval:{row.model}", src, f"clean on {nt}, PGD-{ev.paper_steps} on {nr}", pe,
                         passes=nr * ev.paper_steps, forward=nt * (2 if row.shifted else 1) + nr * 3,
                         notes={"n_test": nt, "n_robust": nr}))
    tr = cfg.transfer
    out.append(Stage("transfer", src, f"PGD-{tr.steps} on the source, replayed on {len(cfg.fig3_archs)} targets",
                     p(tr.precision), passes=ne * tr.steps * tr.restarts, forward=ne * (2 + tr.restarts),
                     notes={"n_examples": ne, "targets_forward": 2 * ne * len(cfg.fig3_archs)}))
    return out


def plan(cfg: Any) -> dict[str, Any]:
    """The cost plan of ``cfg``: per stage passes, FLOPs, CPU and H200 seconds; and the totals.

    Each estimate takes the stage's precision as it resolves on that device (``auto``: bf16 on
    CUDA, fp32 on the CPU).
    """
    sz = _sizes(cfg)
    kw = {"image_size": sz["image_size"], "in_channels": sz["channels"]}
    cpu_st = {s.stage: s for s in stages(cfg, "cpu")}
    rows: list[dict[str, Any]] = []
    for s in stages(cfg, "cuda"):
        f = forward_flops(s.arch, **kw)
        flops = (s.passes * H200_ANCHOR["flops_per_pass_over_forward"] + s.forward) * f
        c = cpu_st[s.stage]
        rate, where = cpu_rate(s.arch, s.mode, c.precision, **kw)
        rows.append({"stage": s.stage, "arch": s.arch, "what": s.what, "passes": s.passes,
                     "forward_passes": s.forward, "forward_flops_per_image": f, "model_flops": flops,
                     "estimated_s_cpu": (c.passes + c.forward / 3.0) / rate, "cpu_precision": c.precision,
                     "cpu_rate_images_per_s": rate, "cpu_rate_source": where,
                     "estimated_s_h200": flops / (h200_tflops(s.precision) * 1e12), "h200_precision": s.precision,
                     **({"notes": s.notes} if s.notes else {})})
    total = {k: sum(r[k] for r in rows) for k in ("passes", "forward_passes", "model_flops", "estimated_s_cpu",
                                                   "estimated_s_h200")}
    return {"preset": cfg.name, "sizes": sz, "stages": rows,
            "total_passes": total["passes"], "total_forward_passes": total["forward_passes"],
            "total_model_flops": total["model_flops"],
            "estimated_total_s_cpu": total["estimated_s_cpu"], "estimated_total_s_h200": total["estimated_s_h200"],
            "h200_anchor": H200_ANCHOR,
            "cpu_table": {k: cpu_table()[k] for k in ("device", "batch", "image_size", "threads", "measured_at")}}


def compare_with_run(plan_: dict[str, Any], reproduce_record: dict[str, Any]) -> list[dict[str, Any]]:
    """Planned vs measured seconds per stage, for a finished ``reproduce.json`` (training stages
    include their attack sub-stage; a stage the run skipped counts the seconds it took when built)."""
    measured = reproduce_record["metrics"]["stages"]
    planned: dict[str, float] = {}
    key = "estimated_s_cpu" if str(reproduce_record.get("provenance", {}).get("device", "cpu")).startswith("cpu") \
        else "estimated_s_h200"
    for r in plan_["stages"]:
        planned[r["stage"].split("/", 1)[0]] = planned.get(r["stage"].split("/", 1)[0], 0.0) + r[key]
    out = []
    for stage, sec in planned.items():
        m = measured.get(stage)
        if m is None:
            continue
        # a stage a rerun skipped carries the seconds it took when it was built
        took = m.get("built_seconds") if m.get("skipped") else m.get("wall_seconds")
        if took is not None:
            out.append({"stage": stage, "planned_s": sec, "measured_s": float(took),
                        "ratio": float(took) / sec if sec > 0 else float("nan")})
    return out


def run_plan(cfg: Any, root: str | Path) -> dict[str, Any]:
    """``reproduce --plan``: the plan of ``cfg`` recorded as ``root/plan.json`` (with planned vs
    measured seconds per stage when ``root`` holds a finished ``reproduce.json``). Returns the
    record, with the plan itself under ``plan`` (not written)."""
    import time

    from foundation.records import read_record, utc_now, write_record

    root = Path(root)
    started, t0 = utc_now(), time.perf_counter()
    p = plan(cfg)
    extra: dict[str, Any] = {}
    if (root / "reproduce.json").is_file():        # a finished run in the folder: planned vs measured
        extra["measured"] = compare_with_run(p, read_record(root / "reproduce.json"))
    numeric = ("passes", "forward_passes", "forward_flops_per_image", "model_flops", "estimated_s_cpu",
               "cpu_rate_images_per_s", "estimated_s_h200")
    metrics = {"stages": {r["stage"]: {k: r[k] for k in numeric} for r in p["stages"]},
               "sizes": p["sizes"], **{k: v for k, v in p.items() if k.startswith(("total_", "estimated_total_"))}}
    info = {r["stage"]: {k: v for k, v in r.items() if k not in numeric and k != "stage"} for r in p["stages"]}
    rec = write_record(root / "plan.json", experiment="empirical.plan", config=cfg, metrics=metrics,
                       device="none (plan)", started_at=started, start_time=t0,
                       extra={"stage_info": info, "h200_anchor": p["h200_anchor"], "cpu_table": p["cpu_table"],
                              **extra})
    return {**rec, "plan": p}


def format_plan(p: dict[str, Any]) -> str:
    """The plan as a fixed-width table (what ``--plan`` prints)."""
    lines = [f"cost plan: preset {p['preset']} ({p['sizes']['n_train']} train / {p['sizes']['n_test']} test images, "
             f"{p['sizes']['channels']}x{p['sizes']['image_size']}x{p['sizes']['image_size']})",
             f"{'stage':<34} {'arch':<30} {'prec':>5} {'passes':>12} {'fwd':>10} {'GFLOP/img':>9} "
             f"{'CPU s':>9} {'H200 s':>8}"]
    for r in p["stages"]:
        lines.append(f"{r['stage']:<34} {r['arch'][:30]:<30} {r['h200_precision']:>5} {r['passes']:>12.3g} "
                     f"{r['forward_passes']:>10.3g} {r['forward_flops_per_image'] / 1e9:>9.3f} "
                     f"{r['estimated_s_cpu']:>9.1f} {r['estimated_s_h200']:>8.1f}")
    lines.append(f"{'total':<34} {'':<30} {'':>5} {p['total_passes']:>12.3g} {p['total_forward_passes']:>10.3g} "
                 f"{'':>9} {p['estimated_total_s_cpu']:>9.1f} {p['estimated_total_s_h200']:>8.1f}")
    lines.append(f"CPU: {p['cpu_table']['device']}, table measured {p['cpu_table']['measured_at']}; "
                 f"H200: {H200_ANCHOR['source']}")
    return "\n".join(lines)


__all__ = ["H200_ANCHOR", "Stage", "compare_with_run", "cpu_rate", "cpu_table", "format_plan", "forward_flops",
           "h200_tflops", "plan", "run_plan", "stages"]
