"""How the inversion options change D_R on real CIFAR-10 (the measurements behind the cifar10-cpu defaults).

Usage (after ``robust-features reproduce --preset cifar10-cpu --data imagefolder:DATA --out-dir runs/c``)::

    python docs/experiments/inversion_options.py runs/c/cifar10-cpu --data imagefolder:DATA \\
        --out paper_figures/results/cifar10-cpu/inversion_options.json [--full]

Part 1 (minutes): on a stratified sample of ``--n-loss`` training images, the finished run's robust
model is inverted (start: another training image, as the chain does) with each variant of
:data:`VARIANTS` - step schedule and size, precision (fp32 vs bf16 autocast), straight-through
last nonlinearity, number of steps - and the record keeps the final relative representation
loss ||g(x') - g(x)|| / ||g(x)|| measured in fp32, the l2 distance to x and the wall time.

Part 2 (``--full``, about 6 minutes a variant): for the variants of :data:`FULL`, the whole D_R
stage is rebuilt (all training images) and a standard model trained on it, with the preset's
recipe, then scored like Figure 2 (strong PGD on the preset's evaluation sample): the fraction
of the robust-vs-standard gap it closes, with its paired standard error. Architecture variants
(average-pooled representation; ReLU with and without the straight-through last ReLU) train
their own standard and robust models first. Each variant is a workspace of its own under
``FOLDER/../inversion-options/<name>``, with the finished run's models copied in where they
apply, so the chain's cache does the rest and nothing in FOLDER is changed.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from empirical.attacks import match_representation
from empirical.construct import start_points
from empirical.data import stratified_subset
from empirical.experiments import with_overrides
from empirical.workspace import Workspace
from empirical.reproduce import get_preset
from empirical.stats import gap_fraction
from foundation.records import utc_now, write_record

#: part 1: name -> RepresentationConfig overrides (on top of the preset's)
VARIANTS: dict[str, dict] = {
    "preset": {},
    "constant 0.1 (paper step)": {"step_schedule": "constant", "step_size": 0.1},
    "constant 0.5": {"step_schedule": "constant", "step_size": 0.5},
    "cosine 0.2": {"step_size": 0.2},
    "cosine 1.0": {"step_size": 1.0},
    "linear 0.5": {"step_schedule": "linear"},
    "fp32": {"precision": "fp32"},
    "straight-through": {"straight_through": True},
    "50 steps": {"steps": 50},
    "200 steps": {"steps": 200},
    # the speed issue: half the steps at the preset's loss?
    "50 steps, cosine 1.0": {"steps": 50, "step_size": 1.0},
    "50 steps, cosine 2.0": {"steps": 50, "step_size": 2.0},
    "50 steps, constant 0.5": {"steps": 50, "step_schedule": "constant"},
    "50 steps, constant 1.0": {"steps": 50, "step_schedule": "constant", "step_size": 1.0},
    "70 steps, cosine 1.0": {"steps": 70, "step_size": 1.0},
}

#: part 2: name -> dotted-key overrides of the whole preset
FULL: dict[str, dict] = {
    "preset": {},
    "constant 0.1 (paper step)": {"rep.step_schedule": "constant", "rep.step_size": 0.1},
    "cosine 1.0": {"rep.step_size": 1.0},
    "fp32 inversion": {"rep.precision": "fp32"},
    "avg-pooled representation": {"arch": "fastnet:widths=32-64-128,pool=avg"},
    "relu": {"arch": "fastnet:widths=32-64-128,act=relu"},
    "relu + straight-through": {"arch": "fastnet:widths=32-64-128,act=relu", "rep.straight_through": True},
}


def loss_study(ws: Workspace, n: int, only: list[str] | None = None) -> dict[str, dict[str, float]]:
    d, cfg = ws.data(), ws.cfg
    model = ws.source_model("robust")
    for p in model.parameters():
        p.requires_grad_(False)
    sub = stratified_subset(d.x_train, d.y_train, n, seed=cfg.subset_seed)
    x = d.x_train[sub.indices]
    gen = torch.Generator().manual_seed(cfg.rep.seed)
    start, _ = start_points(cfg.rep.start, d.x_train, sub.indices, tuple(x.shape), gen)
    with torch.no_grad():
        g0 = model.features(x)
    out: dict[str, dict[str, float]] = {}
    for name, ov in VARIANTS.items():
        if only and name not in only:
            continue
        rc = replace(cfg.rep, **ov)
        fn = functools.partial(model.features, straight_through=True) if rc.straight_through else model.features
        t = time.perf_counter()
        xr, _ = match_representation(fn, x, start, steps=rc.steps, step_size=rc.step_size, precision=rc.precision,
                                     step_schedule=rc.step_schedule, normalize_loss=rc.normalize_loss,
                                     use_best=rc.use_best, batch_size=rc.batch_size)
        sec = time.perf_counter() - t
        with torch.no_grad():
            rel = ((model.features(xr) - g0).norm(dim=1) / g0.norm(dim=1)).mean()
            rel0 = ((model.features(start) - g0).norm(dim=1) / g0.norm(dim=1)).mean()
        out[name] = {"rel_rep_loss": float(rel), "rel_rep_loss_at_start": float(rel0),
                     "l2_to_target": float((xr - x).flatten(1).norm(dim=1).mean()), "seconds": sec,
                     "steps": float(rc.steps), "step_size": float(rc.step_size)}
        print(f"{name:<28} rel loss {float(rel):.4f} (start {float(rel0):.3f}) in {sec:.0f} s", flush=True)
    return out


def full_study(folder: Path, cfg, names: list[str], device: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    by_arch: dict[str, Path] = {}
    for name in names:
        vcfg = with_overrides(cfg, FULL[name])
        root = folder.parent / "inversion-options" / name.replace(" ", "_").replace("+", "and").replace("(", "").replace(")", "")
        # reuse source models trained for the same architecture: the finished run's, or an earlier
        # variant's (relu + straight-through uses the relu variant's); the preset variant reuses the
        # run's D_R and its model too, so it costs an evaluation only
        src = folder if vcfg.arch == cfg.arch else by_arch.get(vcfg.arch)
        copies = ["models/standard", "models/robust"] + (["datasets/D_R", "models/std_DR"] if not FULL[name] else [])
        for sub in copies if src is not None else ():
            if (src / sub).exists() and not (root / sub).exists():
                shutil.copytree(src / sub, root / sub)
        by_arch.setdefault(vcfg.arch, root)
        ws = Workspace(cfg=vcfg, root=root, device=device)
        t = time.perf_counter()
        ws.source_model("standard")
        ws.source_model("robust")
        ws.model("std_DR", arch=vcfg.arch, recipe=vcfg.on_dr, train_on="D_R")
        rows = {"std_D": "standard", "adv_D": "robust", "std_DR": "std_DR"}
        acc = {row: ws.evaluate(m) for row, m in rows.items()}
        masks = {row: ws.robust_masks(m) for row, m in rows.items()}
        gf = {a: gap_fraction(masks["std_D"][f"robust_{a}"], masks["adv_D"][f"robust_{a}"],
                              masks["std_DR"][f"robust_{a}"]) for a in ("strong", "paper")}
        man = ws.dataset("D_R").manifest["metrics"]
        out[name] = {"overrides": FULL[name],
                     "metrics": {"gap_fraction_strong": gf["strong"], "gap_fraction_paper": gf["paper"],
                                 **{f"{row}_{k}": 100 * v for row, a in acc.items() for k, v in a.items()
                                    if k in ("clean", "robust_paper", "robust_strong")},
                                 "rep_loss_rel_mean": man.get("rep_loss_rel_mean"),
                                 "seconds": time.perf_counter() - t}}
        g = gf["strong"]
        print(f"{name:<28} D_R closes {100 * g['value']:.1f}% +- {100 * g['stderr']:.1f} of the gap "
              f"(std {100 * acc['std_D']['robust_strong']:.1f}, adv {100 * acc['adv_D']['robust_strong']:.1f}, "
              f"D_R {100 * acc['std_DR']['robust_strong']:.1f})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a finished cifar10-cpu reproduce folder, e.g. runs/c/cifar10-cpu")
    ap.add_argument("--data", required=True, help="the --data the run used, e.g. imagefolder:DATA/cifar10-jpeg")
    ap.add_argument("--seed", type=int, default=0, help="the --seed the run used")
    ap.add_argument("--preset", default="cifar10-cpu")
    ap.add_argument("--n-loss", type=int, default=500, help="training images of the loss study (0: skip it)")
    ap.add_argument("--full", action="store_true", help="also rebuild D_R and train on it per FULL variant")
    ap.add_argument("--only", action="append", default=None, help="with --full: just this FULL variant (repeatable)")
    ap.add_argument("--variant", action="append", default=None, help="part 1: just this VARIANTS entry (repeatable)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True, help="JSON record to write")
    args = ap.parse_args(argv)
    if not (args.folder / "models" / "robust").is_dir():
        raise SystemExit(f"folder={str(args.folder)!r} holds no models/robust; run robust-features reproduce first")
    started, t0 = utc_now(), time.perf_counter()
    cfg = with_overrides(get_preset(args.preset), {"seed": args.seed, "data": args.data})
    ws = Workspace(cfg=cfg, root=args.folder, device=args.device)
    metrics: dict = {"loss": loss_study(ws, args.n_loss, args.variant)} if args.n_loss else {}
    if args.full:
        metrics["full"] = full_study(args.folder, cfg, args.only or list(FULL), args.device)
    numeric = {"loss": metrics.get("loss", {}),
               "full": {k: v["metrics"] for k, v in metrics.get("full", {}).items()}}
    write_record(args.out, experiment="docs.inversion_options",
                 config={"preset": cfg, "folder": str(args.folder), "n_loss": args.n_loss, "variants": VARIANTS,
                         "full": {k: v["overrides"] for k, v in metrics.get("full", {}).items()}},
                 metrics=numeric, seeds={"seed": args.seed, "subset_seed": cfg.subset_seed}, device=args.device,
                 started_at=started, start_time=t0)
    print(f"record {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
