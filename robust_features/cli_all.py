"""``robust-features all``: the README's main job, every half of the toolkit in one command.

    robust-features all --out-dir runs          # CPU, no download, about 5 minutes on 2 cores

Runs, in order and in this process:

1. ``robust-features theory report --out-dir OUT/theory`` (paper sec. 4: Figure 4, Theorems 1-3);
2. ``robust-features simulate {theorems,tsipras,pipeline} --backend numpy --out-dir OUT/simulate``
   (Monte-Carlo cross-checks of every closed form);
3. ``robust-features reproduce --preset digits --out-dir OUT`` (paper sec. 3: D_R, D_NR, D_rand,
   D_det, Figure 2, Table 1, Figure 3, ``OUT/digits/report.md``).

Each step writes its own records and figures and is skipped-where-valid on a rerun exactly as
when run alone (the reproduce stages resume from their artifacts). The exit status is the first
non-zero status of a step (1 = a cross-check failed), after all steps ran; ``OUT/all.json``
records each step's status and wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("theory", ("theory", "report", "--out-dir", "{out}/theory")),
    ("simulate:theorems", ("simulate", "theorems", "--backend", "numpy", "--out-dir", "{out}/simulate")),
    ("simulate:tsipras", ("simulate", "tsipras", "--backend", "numpy", "--out-dir", "{out}/simulate")),
    ("simulate:pipeline", ("simulate", "pipeline", "--backend", "numpy", "--out-dir", "{out}/simulate")),
    ("reproduce:digits", ("reproduce", "--preset", "digits", "--out-dir", "{out}")),
)

# ``--smoke``: the same wiring at sizes that run in about a minute (an install check, and the test).
SMOKE_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("theory", ("theory", "report", "--out-dir", "{out}/theory", "--n-samples", "400", "--sweep-samples", "200",
                "--no-figures")),
    ("simulate:tsipras", ("simulate", "tsipras", "--backend", "numpy", "--out-dir", "{out}/simulate",
                          "--n", "3000", "--no-figures")),
    ("reproduce:digits", ("reproduce", "--preset", "digits-smoke", "--out-dir", "{out}", "--no-figures")),
)


def _cmd(args: argparse.Namespace) -> int:
    from robust_features.cli import main
    from foundation.records import utc_now, write_record

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = utc_now(), time.perf_counter()
    steps = SMOKE_STEPS if args.smoke else STEPS
    selected = [s for s in steps if not args.skip or not any(s[0].startswith(k) for k in args.skip)]
    status: dict[str, dict[str, float | int]] = {}
    for name, argv in selected:
        print(f"== robust-features all: {name} ==", flush=True)
        s0 = time.perf_counter()
        rc = main([a.format(out=out) for a in argv])
        status[name] = {"exit_status": int(rc), "wall_seconds": time.perf_counter() - s0}
    rc = next((v["exit_status"] for v in status.values() if v["exit_status"]), 0)
    write_record(out / "all.json", experiment="robust_features.all",
                 config={"out_dir": str(out), "smoke": bool(args.smoke), "steps": [n for n, _ in selected]},
                 metrics={"steps": status, "total_wall_seconds": time.perf_counter() - t0,
                          "exit_status": rc},
                 seeds={"seed": 0}, device="cpu", started_at=started, start_time=t0)
    print("== robust-features all: " + ", ".join(f"{n} {v['wall_seconds']:.0f} s (exit {v['exit_status']})"
                                                for n, v in status.items()))
    return rc


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``all`` subcommand."""
    valid = sorted({n.split(":")[0] for n, _ in STEPS})
    p = subparsers.add_parser(
        "all", help="the main job: theory report + simulations + the digits reproduction (CPU, ~5 min)",
        description="Run the theory report, the three simulations and `reproduce --preset digits` "
        "into one folder (see robust_features/cli_all.py).")
    from foundation.checks import path_arg

    p.add_argument("--out-dir", required=True, type=path_arg, help="folder for every record, figure and report")
    p.add_argument("--skip", action="append", default=[], choices=valid,
                   help="leave out a step (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (about a minute): checks an install end to end, numbers not meaningful")
    p.set_defaults(func=_cmd)
