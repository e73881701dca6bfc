"""Ours vs torchattacks at equal budget, on the same trained models: robust accuracy and per-example agreement.

The models are the test suite's: an MLP trained on ``digits`` and on ``synthetic`` (the first 200
test images each), attacked at the linf and l2 eps where its robust accuracy is mid-range, by our
APGD-CE (100 steps), APGD-T (50 steps, 9 targets, linf) and Square (1000 queries) and by
torchattacks' APGD, APGDT and Square with the same budget
(:func:`empirical.autoattack.torchattacks_reference`). Printed and recorded per case: robust
accuracy ours / theirs, the difference in points (negative = ours stronger), the fraction of
examples on which both agree, and the examples only one of them left robust.

    python benchmarks/crosscheck_autoattack.py [--n 200] [--out crosscheck.json]
"""

from __future__ import annotations

import argparse
import time

import torch

from empirical.autoattack import apgd, square, torchattacks_reference
from empirical.data import load_dataset
from empirical.models import build_model
from empirical.train import TrainConfig, fit
from foundation.records import utc_now, write_record

#: data set -> norm -> eps (the tests' BUDGETS)
BUDGETS = {"digits": {"linf": 0.1, "l2": 0.6}, "synthetic": {"linf": 0.013, "l2": 0.27}}
CASES = (("apgd-ce", "linf"), ("apgd-ce", "l2"), ("apgd-t", "linf"), ("square", "linf"), ("square", "l2"))


def _model(name: str, n: int):
    torch.manual_seed(0)
    d = load_dataset(name)
    model = build_model("mlp", num_classes=d.num_classes, in_channels=d.x_train.shape[1],
                        image_size=d.x_train.shape[-1], mean=d.mean, std=d.std)
    fit(model, d.x_train, d.y_train, TrainConfig(epochs=8, batch_size=64, lr=0.05), device="cpu", progress=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, d.x_test[:n], d.y_test[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="test images per data set")
    ap.add_argument("--out", default=None, help="write a record (JSON) here")
    args = ap.parse_args(argv)
    started, t0 = utc_now(), time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    print(f"{'case':<34} {'ours':>6} {'theirs':>6} {'diff':>6} {'agree':>6} {'only ours':>9} {'only theirs':>11}")
    for data in BUDGETS:
        model, x, y = _model(data, args.n)
        for attack, norm in CASES:
            eps = BUDGETS[data][norm]
            if attack == "square":
                xa, budget = square(model, x, y, norm=norm, eps=eps, queries=1000), {"queries": 1000}
            else:
                steps = 100 if attack == "apgd-ce" else 50
                loss = {"loss": "dlr-targeted", "n_target_classes": 9} if attack == "apgd-t" else {}
                xa, budget = apgd(model, x, y, norm=norm, eps=eps, steps=steps, **loss), {"steps": steps}
            xt = torchattacks_reference(model, x, y, attack=attack, norm=norm, eps=eps, **budget)
            with torch.no_grad():
                ours, theirs = model(xa).argmax(1) == y, model(xt).argmax(1) == y
            r = {"eps": eps, "robust_ours": float(ours.float().mean()), "robust_theirs": float(theirs.float().mean()),
                 "agreement": float((ours == theirs).float().mean()),
                 "only_ours_robust": int((ours & ~theirs).sum()), "only_theirs_robust": int((~ours & theirs).sum())}
            key = f"{data} {attack} {norm} eps={eps:g}"
            rows[key] = r
            print(f"{key:<34} {100 * r['robust_ours']:6.1f} {100 * r['robust_theirs']:6.1f} "
                  f"{100 * (r['robust_ours'] - r['robust_theirs']):+6.1f} {100 * r['agreement']:5.1f}% "
                  f"{r['only_ours_robust']:9d} {r['only_theirs_robust']:11d}", flush=True)
    if args.out:
        import torchattacks

        write_record(args.out, experiment="benchmarks.crosscheck_autoattack",
                     config={"n": args.n, "budgets": BUDGETS, "cases": [list(c) for c in CASES],
                             "torchattacks": torchattacks.__version__},
                     metrics=rows, seeds={"torch": 0, "attacks": 0}, device="cpu", started_at=started, start_time=t0)
        print(f"record {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
