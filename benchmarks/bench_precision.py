"""bf16 attack steps with fp32 verdicts against fp32 throughout, on a preset's Figure 2 models.

For each model of a finished reproduction (``--models DIR``: ``DIR/<name>/model.pt``, the preset's
``standard``, ``robust``, ``std_DR`` and ``std_DNR``), on the preset's evaluation sample (its
``eval.n_robust`` stratified test examples, or ``--n``), under the preset's threat model and in the
memory format the model trained in, the whole Figure 2 evaluation runs three ways:

* ``fp32``: every attack step in fp32 (the reference);
* ``bf16``: every attack step (the paper's PGD-7, the strong PGD, APGD-CE, APGD-T, Square's
  queries) under bf16 autocast;
* ``pgd-fp32/suite-bf16``: the two PGDs in fp32, the suite's attacks under bf16;
* ``fp32/targets-batched`` and ``bf16/targets-batched``: as ``fp32`` / ``bf16`` with APGD-T's target
  classes in one batch (``apgd_targets_at_once`` 9);

every verdict (clean, and whether the point an attack returns is misclassified) by the fp32 model
(:data:`empirical.precision.VERDICT`). Printed and recorded per model and mode: the robust accuracy
after each attack (percent, cumulative), the seconds of each, and the largest excess of a bf16
accuracy over the fp32 one (positive = bf16 weaker), which the issue bounds at 0.5 points.

    python benchmarks/bench_precision.py --preset cifar10-cpu --data imagefolder:DATA/cifar10-jpeg \\
        --models runs/cifar10-cpu/models --n 1000 --out precision.json

Timed figures live here, never in tests.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from foundation.records import utc_now, write_record

MODES = {"fp32": ("fp32", "fp32", {}), "bf16": ("bf16", "bf16", {}), "pgd-fp32/suite-bf16": ("fp32", "bf16", {}),
         "fp32/targets-batched": ("fp32", "fp32", {"apgd_targets_at_once": 9}),
         "bf16/targets-batched": ("bf16", "bf16", {"apgd_targets_at_once": 9})}


def _recipe_of(name: str) -> str:
    """The recipe field a reproduction trained model ``name`` with: a source model's
    (:data:`empirical.constructions.SOURCE_MODELS`) or its construction row's."""
    from empirical import constructions as registry

    if name in registry.SOURCE_MODELS:
        return registry.SOURCE_MODELS[name]
    row = registry.by_model(name)
    if row is None:
        raise SystemExit(f"--names: {name!r} is not a model a reproduction trains; valid: "
                         f"{', '.join([*registry.SOURCE_MODELS, *(registry.get(k).model for k in registry.kinds())])}")
    return row.recipe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--data", default=None, help="the preset's data (default: the preset's own)")
    ap.add_argument("--models", required=True, help="a reproduction's models/ folder")
    ap.add_argument("--names", default="standard,robust,std_DR,std_DNR")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--suite", default=None,
                    help="the suite after the strong PGD (default: the preset's eval.suite, or 'standard' if it has none)")
    ap.add_argument("--n", type=int, default=None, help="evaluation sample (default: the preset's eval.n_robust)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from empirical.checkpoint import load_model
    from empirical.data import load_dataset, stratified_subset
    from empirical.models import in_memory_format
    from empirical.reproduce import get_preset
    from empirical.threat import ThreatModel
    from empirical.worst_case import worst_case

    cfg = get_preset(args.preset)
    ev = cfg.eval
    attacks = tuple(args.suite.split(",")) if args.suite else (ev.suite or ("standard",))
    d = load_dataset(args.data or cfg.data, seed=args.seed)
    n = args.n if args.n is not None else ev.n_robust
    sub = stratified_subset(d.x_test, d.y_test, n, seed=args.seed, name="n_test")
    x, y = d.x_test[sub.indices], d.y_test[sub.indices]
    threat = ThreatModel(ev.norm, ev.eps)
    attack_seed = args.seed + 12345
    modes = [m for m in args.modes.split(",") if m]
    rows: dict[str, Any] = {}
    t_all, started = time.perf_counter(), utc_now()
    print(f"{args.preset}: {x.shape[0]} test examples, {threat.describe()}, suite {', '.join(attacks)}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    for name in [s for s in args.names.split(",") if s]:
        channels_last = cfg.recipe(_recipe_of(name)).channels_last
        for mode in modes:
            pgd_prec, suite_prec, extra_options = MODES[mode]
            model = in_memory_format(load_model(f"{args.models}/{name}/model.pt"), channels_last, "cpu").eval()
            t = time.perf_counter()
            paper = worst_case(model, x, y, threat, pgd=ev.attack("paper"), seed=attack_seed, precision=pgd_prec,
                               batch_size=ev.batch_size)
            t_paper = time.perf_counter() - t
            strong = worst_case(model, x, y, threat, pgd=ev.attack("strong"), seed=attack_seed, precision=pgd_prec,
                                batch_size=ev.batch_size)
            wc = worst_case(model, x, y, threat, pgd=ev.attack("strong"), attacks=attacks,
                            options={**dict(ev.budgets), **extra_options},
                            seed=attack_seed, precision=suite_prec, batch_size=ev.batch_size,
                            pgd_mask=strong.robust, sanity_examples=8)
            acc = {"clean": 100.0 * float(wc.clean.mean()), "pgd-paper": 100.0 * float(paper.robust.mean()),
                   **{a: 100.0 * float(m.mean()) for a, m in wc.after.items()},
                   "worst_case": 100.0 * float(wc.robust.mean())}
            secs = {"pgd-paper": t_paper, "pgd": strong.seconds.get("pgd", 0.0),
                    **{a: s for a, s in wc.seconds.items() if a != "pgd"}}
            rows[f"{name}/{mode}"] = {"model": name, "mode": mode, "pgd_precision": pgd_prec,
                                      "suite_precision": suite_prec, "options": extra_options,
                                      "robust_accuracy": acc, "seconds": secs,
                                      "total_seconds": sum(secs.values()), "n_attacked": dict(wc.n_attacked)}
            print(f"{name:8s} {mode:20s} {sum(secs.values()):7.1f} s  "
                  + " ".join(f"{a} {v:.2f}" for a, v in acc.items())
                  + "   secs " + " ".join(f"{a} {s:.1f}" for a, s in secs.items()), flush=True)
        ref = rows.get(f"{name}/fp32")
        for mode in modes:
            r = rows[f"{name}/{mode}"]
            if ref is not None and mode != "fp32":
                r["max_excess_points"] = max(r["robust_accuracy"][k] - ref["robust_accuracy"][k]
                                             for k in ref["robust_accuracy"] if k != "clean")
                r["speedup"] = ref["total_seconds"] / r["total_seconds"]
                print(f"{name:8s} {mode:20s} largest excess over fp32 {r['max_excess_points']:+.2f} points "
                      f"(<= 0.5 asked), {r['speedup']:.2f}x the speed", flush=True)
    if args.out:
        write_record(args.out, experiment="benchmarks.precision",
                     config=vars(args) | {"n": int(x.shape[0]), "threat": threat.describe(), "suite": list(attacks),
                                          "subset": sub.describe()},
                     metrics={k: {kk: vv for kk, vv in r.items() if kk not in ("model", "mode", "pgd_precision",
                                                                             "suite_precision", "options")} for k, r in rows.items()},
                     seeds={"data": args.seed, "attacks": attack_seed},
                     device=f"cpu ({torch.get_num_threads()} threads)", started_at=started, start_time=t_all,
                     extra={"modes": {k: {"pgd": v[0], "suite": v[1], "options": v[2]} for k, v in MODES.items()
                                      if k in modes}})
        print(f"record {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
