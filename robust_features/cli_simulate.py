"""The ``robust-features simulate`` subcommand (the CLI floor: above simulate/ and paper_figures/).

    robust-features simulate {theorems,tsipras,pipeline} --backend numpy|cupy --out-dir DIR
                             [--seed N] [--n N] [--no-figures]

Each writes DIR/<experiment>.json (a full record; :func:`simulate.experiments.run_and_record`)
and, unless --no-figures, the matching figure DIR/<experiment>.png rendered from that record
(:func:`paper_figures.simulate_figs.render_record`: simulation points with error bars over the
closed-form curves).
"""

from __future__ import annotations

import argparse


def _cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simulate.experiments import run_and_record

    result, path = run_and_record(
        args.experiment, backend=args.backend, out_dir=args.out_dir, seed=args.seed, n=args.n
    )
    summary = result["metrics"]["summary"]
    print(f"wrote {path}")
    print(
        f"simulate {args.experiment}: {summary['n_passed']}/{summary['n_checks']} cross-checks pass; "
        f"largest |simulation - closed form| = {summary['max_abs_z']:.2f} standard errors"
    )
    for name, line in result["metrics"]["checks"].items():
        if "z" in line:
            print(f"  {name:42s} sim {line['simulated']:.6g} ± {line['stderr']:.2g}  "
                  f"closed {line['closed_form']:.6g}  z {line['z']:+.2f}  {'ok' if line['pass'] else 'FAIL'}")
        else:
            print(f"  {name:42s} {'ok' if line['pass'] else 'FAIL'}")
    if not args.no_figures:
        from paper_figures.simulate_figs import render_record

        for fig in render_record(Path(path)):
            print(f"wrote {fig}")
    return 0 if summary["n_passed"] == summary["n_checks"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand to the top-level parser."""
    p = subparsers.add_parser(
        "simulate",
        help="Monte-Carlo cross-checks of the Gaussian theory (NumPy or CuPy)",
        description="Simulate the Gaussian robust-features model with a real adversary and compare "
        "with the closed forms (Theorems 1-3, section 2, the Tsipras toy, the section-3 pipeline).",
    )
    p.add_argument("experiment", choices=("theorems", "tsipras", "pipeline"))
    p.add_argument("--backend", default="numpy",
                   help="array backend: numpy (CPU) or cupy (GPU) (default: %(default)s)")
    from foundation import checks as C

    p.add_argument("--out-dir", required=True, type=C.path_arg, help="folder for the JSON record and figure")
    p.add_argument("--seed", type=C.int_arg, default=0, help="base seed (default: %(default)s)")
    p.add_argument("--n", type=C.int_arg, default=None,
                   help="sample size per replicate (default: the experiment's; 3-10 s per experiment "
                   "on an idle 2-core CPU, several times that on a busy one)")
    p.add_argument("--no-figures", action="store_true", help="write only the JSON record")
    p.set_defaults(func=_cmd)
