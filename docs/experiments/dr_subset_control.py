"""D_R on digits: is the D_R model's robustness limited by the images the robust model gets wrong?

Usage (after ``robust-features reproduce --seed K --out-dir runs/seeds/sK``)::

    python docs/experiments/dr_subset_control.py runs/seeds/sK/digits --seed K --out subset_control.json

For one finished ``digits`` reproduction folder it reuses the cached robust model and D_R, and
trains three standard models with the preset's D_R recipe (same architecture, epochs, seed):

* ``dr_all``             on all of D_R (a replicate of the chain's ``std_DR`` row);
* ``dr_source_agrees``   on the D_R images the robust model itself labels y;
* ``d_source_correct``   the control: on the *original* D images the robust model labels y.

Each is scored like Figure 2 (clean, and strong l2 PGD with restarts at the preset's eps) on the
original test set. If ``dr_source_agrees`` beats ``dr_all`` but the control does as well, the gain
comes from dropping the hard training images, not from the D_R construction. The record carries
the config, seeds, versions, git commit, device and wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from empirical.evaluate import accuracy, robust_accuracy
from empirical.experiments import with_overrides
from empirical.workspace import Workspace
from empirical.models import build_model
from empirical.reproduce import get_preset
from empirical.threat import ThreatModel
from empirical.train import fit
from foundation.records import utc_now, write_record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a finished reproduce folder, e.g. runs/seeds/s1/digits")
    ap.add_argument("--seed", type=int, required=True, help="the --seed that reproduce ran with")
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--out", type=Path, required=True, help="JSON record to write")
    args = ap.parse_args(argv)
    if not (args.folder / "models" / "robust").is_dir():
        raise SystemExit(f"folder={str(args.folder)!r} holds no models/robust; run robust-features reproduce first")
    started, t0 = utc_now(), time.perf_counter()
    cfg = with_overrides(get_preset(args.preset), {"seed": args.seed})
    ws = Workspace(cfg=cfg, root=args.folder)
    d = ws.data()
    robust = ws.source_model("robust")
    dr = ws.dataset("D_R")
    with torch.no_grad():
        agrees_r = robust(dr.x).argmax(1) == dr.y
        correct_x = robust(d.x_train).argmax(1) == d.y_train
    sets = {"dr_all": (dr.x, dr.y), "dr_source_agrees": (dr.x[agrees_r], dr.y[agrees_r]),
            "d_source_correct": (d.x_train[correct_x], d.y_train[correct_x])}
    ev = cfg.eval
    threat = ThreatModel(norm=ev.norm, eps=ev.eps)
    metrics: dict[str, dict[str, float]] = {}
    for name, (x, y) in sets.items():
        torch.manual_seed(args.seed)
        model = build_model(cfg.arch, num_classes=d.num_classes, in_channels=d.in_channels,
                            image_size=d.image_size, mean=d.mean, std=d.std)
        model = fit(model, x, y, cfg.on_dr.to_train_config(args.seed), device="cpu", progress=False).model.eval()
        gen = torch.Generator()
        gen.manual_seed(args.seed + 12345)
        metrics[name] = {
            "n_train": float(y.shape[0]),
            "clean": 100 * accuracy(model, d.x_test, d.y_test),
            "robust_strong": 100 * robust_accuracy(model, d.x_test, d.y_test, threat=threat, steps=ev.strong_steps,
                                                   step_size=ev.strong_step, restarts=ev.strong_restarts,
                                                   random_start=True, generator=gen)}
        print(name, {k: round(v, 1) for k, v in metrics[name].items()}, flush=True)
    ws.source_model("standard")
    std_robust = 100 * ws.evaluate("standard")["robust_strong"]
    metrics["standard_robust_strong"] = std_robust
    metrics["robust_model_train_accuracy"] = 100 * float(correct_x.float().mean())
    metrics["robust_model_agrees_on_dr"] = 100 * float(agrees_r.float().mean())
    write_record(args.out, experiment="docs.dr_subset_control", config={"preset": cfg, "folder": str(args.folder)},
                 metrics=metrics, seeds={"seed": args.seed}, started_at=started, start_time=t0)
    print(f"standard model strong robust {std_robust:.1f}; record {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
