"""The ``robust-features theory`` subcommands (the CLI floor: above theory/ and paper_figures/).

    robust-features theory report --out-dir DIR [--seed N] [--n-samples N] [--no-figures] [--processes 1|2]

writes DIR/theory_report.json (every number, with provenance; :func:`theory.report.run_report`)
and, from that record, DIR/figures/*.png|pdf (:func:`paper_figures.theory_figs.render`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``theory`` subcommands to the top-level parser."""
    from foundation import checks as C

    theory = subparsers.add_parser(
        "theory", help="Gaussian robust-features model (paper sec. 4): closed forms, fits, figures")
    sub = theory.add_subparsers(dest="theory_command", metavar="SUBCOMMAND")
    theory.set_defaults(func=_missing_subcommand)
    report = sub.add_parser(
        "report", help="compute every theory number and figure into --out-dir (about 15 s on a 2-core CPU)")
    report.add_argument("--out-dir", type=_out_dir, required=True, help="folder for the record and figures")
    report.add_argument("--seed", type=C.int_arg, default=0, help="sampling seed (default: %(default)s)")
    report.add_argument("--n-samples", type=C.int_arg, default=20_000,
                        help="samples for the 2-D eps-ball fits (default: %(default)s)")
    report.add_argument("--sweep-samples", type=C.int_arg, default=5_000,
                        help="samples for the d=8 eps sweep (default: %(default)s)")
    report.add_argument("--no-figures", action="store_true", help="write the record only")
    report.add_argument("--processes", type=C.int_arg, default=2,
                        help="2 (default): the two eps sweeps run in two processes at once; 1: one after the other "
                             "(same numbers)")
    report.set_defaults(func=_report)


def _out_dir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a non-empty path, got {text!r}")
    return Path(text)


def _missing_subcommand(args: argparse.Namespace) -> int:
    raise ValueError("a subcommand is required: report (see robust-features theory --help)")


def render_report_figures(record: dict, out_dir: str | Path) -> list[Path]:
    """Render the theory figures of a ``theory.report`` record into ``out_dir/figures``."""
    from paper_figures.theory_figs import render

    return render(record, Path(out_dir) / "figures")


def _report(args: argparse.Namespace) -> int:
    from foundation import checks as C
    from theory.report import RECORD_NAME, ReportConfig, run_report

    C.seed("--seed", args.seed)
    if args.n_samples < 100:
        raise ValueError(f"--n-samples={args.n_samples} must be >= 100")
    if args.sweep_samples < 100:
        raise ValueError(f"--sweep-samples={args.sweep_samples} must be >= 100")
    if args.processes not in (1, 2):
        raise ValueError(f"--processes={args.processes} must be 1 or 2")
    cfg = ReportConfig(seed=args.seed, n_samples=args.n_samples, sweep_nd_samples=args.sweep_samples)
    record = run_report(args.out_dir, cfg, processes=args.processes)
    if not args.no_figures:
        record["figures"] = [str(p) for p in render_report_figures(record, args.out_dir)]
    m = record["metrics"]
    wall = record["provenance"]["wall_seconds"]
    print(f"wrote {args.out_dir / RECORD_NAME} ({wall:.1f} s)")
    for key, label in (("sweep_2d", "2-D"), ("sweep_nd", f"d={cfg.sweep_dim}")):
        ls = m[key]["lam_scaling"]
        print(f"  eps<->lam ({label}): log-log slope of mean secular multiplier "
              f"{ls['lam_multiplier_slope_small_eps']:.2f} (small eps), "
              f"{ls['lam_multiplier_slope_large_eps']:.2f} (large eps); paper bounds: -0.5 at small eps")
    v = m["vulnerability_vs_anisotropy"]
    print(f"  vulnerability vs anisotropy: isotropic minimum {v['isotropic_is_minimum']}, "
          f"max |z| closed form vs Monte Carlo {v['paper_mc_max_abs_z']:.2f}")
    for path in record.get("figures", []):
        print(f"  {path}")
    return 0
