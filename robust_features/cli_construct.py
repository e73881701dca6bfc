"""Subcommands of `robust-features` for the dataset constructions and experiments.

    robust-features construct D_det --preset digits --out-dir runs
    robust-features fig2    --preset digits --out-dir runs
    robust-features table1  --preset digits --out-dir runs
    robust-features fig3    --preset digits --out-dir runs
    robust-features reproduce [--preset digits] [--out-dir runs] [--data cifar10] [--device cuda]
    robust-features debate --preset cifar10-cpu --data imagefolder:DATA --seed 1 --out-dir runs/seed1
    robust-features debate-report runs
    torchrun --standalone --nproc_per_node=8 -m robust_features construct D_R --preset cifar10

``construct`` also runs under ``torchrun`` (shards split across ranks, rank 0 writes the manifest
and the record; docs/distributed.md); the other subcommands here run in one process.

Every subcommand starts from a preset (``digits``, ``synthetic``, ``cifar10``, ``paper`` or their
``-smoke`` variants), applies a TOML file (``--config``), then ``--set key=value`` overrides (dotted
keys such as ``targeted.eps=0.5``; unknown keys are rejected with the list of valid ones), then the
explicit flags (``--data``, ``--data-root``, ``--seed``): the one config grammar of
:mod:`foundation.config`, which ``train``, ``eval`` and ``attack`` use too. It saves the
resolved config as ``<out-dir>/<preset>/resolved_config.json`` and reuses every stage whose
artifacts are already valid.
"""

from __future__ import annotations

import argparse
from typing import Any

from foundation.runtime import CACHE_DIR_HELP

def _common(p: argparse.ArgumentParser, default_preset: str = "digits") -> None:
    from foundation import checks as C
    from foundation import config as grammar

    p.add_argument("--preset", default=default_preset, type=C.nonempty_arg,
                   help="digits | synthetic | cifar10 | paper, or NAME-smoke (default: %(default)s)")
    grammar.add_config_options(p, example="targeted.eps=0.5 --set std.epochs=10", what="overrides of the preset")
    p.add_argument("--data", type=C.nonempty_arg, help="dataset spec: digits, synthetic, cifar10, imagefolder:PATH")
    p.add_argument("--data-root", type=C.path_arg, help="folder holding the dataset files (torchvision layout)")
    p.add_argument("--cache-dir", help=CACHE_DIR_HELP)
    p.add_argument("--seed", type=C.int_arg, help="base seed of the whole chain")
    p.add_argument("--device", type=C.nonempty_arg,
                   help="auto, cpu, cuda or cuda:N (default auto: cuda if available, else cpu)")
    p.add_argument("--out-dir", default="runs", type=C.path_arg,
                   help="results go to OUT_DIR/<preset> (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--overwrite", action="store_true",
                   help="delete and rebuild a constructed dataset in OUT_DIR/<preset> that was built with other "
                        "settings (default: refuse, naming the differing fields)")


def resolve_config(args: argparse.Namespace) -> Any:
    """Preset < TOML file (--config) < --set < explicit flags (--data, --data-root, --seed), through
    the one config grammar (:mod:`foundation.config`); the result is checked once."""
    from empirical.reproduce import get_preset
    from foundation import config as grammar

    cfg = get_preset(args.preset)
    flags = {k: getattr(args, k) for k in ("data", "data_root", "seed") if getattr(args, k) is not None}
    return grammar.resolve(cfg, grammar.command_layers(config=args.config, sets=args.overrides, flags=flags))


def _device(args: argparse.Namespace, *, require_available: bool = True) -> str:
    from empirical.devices import resolve_device

    return str(resolve_device(args.device, require_available=require_available))


def _workspace(args: argparse.Namespace) -> Any:
    """The workspace of the resolved config (nothing written yet: see ``Workspace.writing``)."""
    from pathlib import Path

    from empirical.workspace import Workspace

    device = _device(args)
    cfg = resolve_config(args)
    root = Path(args.out_dir) / cfg.name
    return Workspace(cfg=cfg, root=root, device=device, progress=not args.quiet, overwrite=args.overwrite)


def _single_process_only(command: str) -> None:
    from empirical.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise ValueError(
            f"`robust-features {command}` runs in one process; under torchrun use `robust-features construct "
            "KIND` (sharded across ranks), `train` (DDP) and `eval` (split by example), then run "
            f"`{command}` without torchrun to reuse their results"
        )


def _distributed_workspace(args: argparse.Namespace) -> Any:
    """The workspace of ``construct`` under torchrun: process group up, same config on every rank,
    and enough shards for the ranks (checked on every rank before anything is written)."""
    from pathlib import Path

    from empirical.distributed import (
        check_same_config,
        init_distributed,
        local_device,
        owned_shards,
    )
    from empirical.shards import num_shards
    from empirical.workspace import Workspace

    device = _device(args)
    cfg = resolve_config(args)
    root = Path(args.out_dir) / cfg.name
    info = init_distributed(device, timeout_s=args.dist_timeout)
    device = str(local_device(device, info))
    check_same_config({"command": "construct", "kind": args.kind, "config": cfg, "root": str(root),
                       "overwrite": bool(args.overwrite)}, info)
    ws = Workspace(cfg=cfg, root=root, device=device, progress=not args.quiet and info.is_main, dist_info=info,
                   overwrite=args.overwrite)
    # fail on every rank before any training when there are fewer shards than ranks
    shard_size = cfg.settings(args.kind).shard_size
    owned_shards(num_shards(ws.data().y_train.shape[0], shard_size), info)
    return ws


def _cmd_construct(args: argparse.Namespace) -> int:
    import time

    from empirical.distributed import launched_by_torchrun, shutdown
    from empirical.experiments import run_construct
    from foundation.records import utc_now

    started, t0 = utc_now(), time.perf_counter()
    distributed = launched_by_torchrun()
    try:
        ws = _distributed_workspace(args) if distributed else _workspace(args)
        # the workspace's lock (rank 0), the reuse check, then resolved_config.json
        with ws.writing((args.kind,)):
            rec = run_construct(ws, args.kind, started_at=started, start_time=t0)
            if rec is None:       # a rank other than 0 of a torchrun
                return 0
    finally:
        if distributed:
            shutdown()
    print(f"{args.kind}: {rec['metrics']['num_examples']} examples in {rec['dataset']} "
          f"(sha256 {rec['content_sha256'][:16]}...)")
    return 0


def _cmd_experiment(which: str):
    def run(args: argparse.Namespace) -> int:
        from empirical import experiments as E

        _single_process_only(which)
        ws = _workspace(args)
        with ws.writing(E.EXPERIMENT_DATASETS[which]):
            rec = {"fig2": E.run_fig2, "table1": E.run_table1, "fig3": E.run_fig3}[which](ws)
        print(f"{which}: record {ws.root / (which + '.json')}")
        print({k: v for k, v in rec["metrics"].items()})
        return 0

    return run


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from empirical.reproduce import run_reproduce

    _single_process_only("reproduce")
    device = _device(args, require_available=not args.plan)   # a plan runs nothing: the name is checked
    cfg = resolve_config(args)
    if args.plan:
        return _plan(cfg, Path(args.out_dir) / cfg.name)
    if args.check is not None:
        return _check(cfg, Path(args.check), Path(args.out_dir), device, quiet=args.quiet)
    # run_reproduce locks OUT_DIR/<preset>, checks reuse, then writes resolved_config.json
    render = None
    if not args.no_figures:      # the CLI floor hands the painter to the run
        from paper_figures.empirical_figs import build_preset as render
    rec = run_reproduce(cfg, out_dir=args.out_dir, device=device, progress=not args.quiet,
                        render=render, overwrite=args.overwrite)
    root = Path(args.out_dir) / cfg.name
    print((root / "report.md").read_text())
    m = rec["metrics"]
    print(f"total wall time {m['total_wall_seconds']:.1f} s; records and figures in {root}")
    missed = [k for k, ok in m["claims_met"].items() if not ok]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 0


def _cmd_debate(args: argparse.Namespace) -> int:
    """``robust-features debate``: the debate's tests on a preset's workspace (empirical.debate),
    then this run's rows printed; every stage ``reproduce`` already made is reused."""
    from empirical.debate import run_debate

    _single_process_only("debate")
    ws = _workspace(args)
    released = dict(args.released or [])
    with ws.writing(("D_rand", "D_det", "D_nt", *(() if args.no_controls else ("D_R", "D_NR", "D_err")))):
        out = run_debate(ws, squares=not args.no_squares, controls=not args.no_controls, released=released)
    rows = out["debate"]["rows"]
    num = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731 - a NaN is recorded as null
    for r in rows:
        v = r["ours"]
        print(f"{'met ' if r['met'] else 'MISS'} {r['test']}: ours {num(v['value'])} +- {num(v['stderr'])} "
              f"({r['criterion']}; bound {num(r['bound'])}); published {r['published']}")
    print(f"{sum(r['met'] for r in rows)} of {len(rows)} criteria met; records in {ws.root} "
          f"(debate.json, nontransfer.json, preference.json, leakage.json"
          f"{'' if args.no_squares else ', squares.json'}); several seeds: robust-features debate-report ROOT")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    """``robust-features profile``: the robustness profile of every Figure 2 model (empirical.audit)."""
    from empirical.audit import run_profile

    _single_process_only("profile")
    ws = _workspace(args)
    with ws.writing(("D_R", "D_NR")):
        rec = run_profile(ws)
    num = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    for t, row in rec["metrics"]["eps"].items():
        cells = "  ".join(f"{r} {num(row[r]['strong_pgd'])}/{num(row[r]['worst_case'])}"
                          for r in ("std_D", "adv_D", "std_DR", "std_DNR"))
        gf = row["dr_gap_fraction"]["worst_case"]
        print(f"{t:12s} PGD/worst: {cells}  D_R closes (worst) {num(None if gf['value'] is None else 100 * gf['value'])}%")
    for r, sp in rec["metrics"]["spatial"].items():
        print(f"spatial {r}: clean {num(sp['clean'])}, worst over {sp['n_transforms']} transforms {num(sp['worst'])}")
    print(f"record {ws.root / 'profile.json'}")
    return 0


def _released_arg(text: str) -> tuple[str, str]:
    import re

    name, sep, folder = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or not folder:
        raise argparse.ArgumentTypeError(f"must be NAME=FOLDER (e.g. D_rand=DATA/drand_CIFAR), got {text!r}")
    return name, folder


def _cmd_debate_report(args: argparse.Namespace) -> int:
    """``robust-features debate-report ROOT``: the seeds of ROOT (seed<K>/[<preset>/]debate.json)
    summarised into ROOT/debate.json and ROOT/debate.md (paper_figures.debate)."""
    from pathlib import Path

    from paper_figures.debate import summarise

    paths = summarise(Path(args.root))
    print(Path(paths[1]).read_text())
    print(f"written: {', '.join(map(str, paths))}")
    return 0


def _check(cfg: Any, committed: Any, out_dir: Any, device: str, *, quiet: bool) -> int:
    """``reproduce --check DIR``: rerun the preset in ``OUT_DIR`` and compare with the records in
    ``DIR`` (:func:`empirical.golden.run_check`); exit 0 when they are reproduced, 1 when not."""
    from empirical.golden import run_check
    from foundation.runtime import same_file

    if same_file(committed, out_dir / cfg.name):
        raise ValueError(f"--check {committed} is the folder the rerun would write (--out-dir {out_dir}); an output "
                         "never replaces an input: choose another --out-dir")
    rec = run_check(cfg, committed, scratch=out_dir, device=device, progress=not quiet)
    diffs = rec["differences"]
    made = ", ".join(sorted({str((v or {}).get("git_commit"))[:7] for v in rec["made_by"].values()}))
    verdict = "reproduced" if not diffs else f"NOT reproduced: {len(diffs)} differences"
    print(f"{committed} (made by {made}): {verdict} by the current code; {committed / 'check.json'}")
    for d in diffs[:20]:
        print(f"  {d}")
    return 0 if not diffs else 1


def _plan(cfg: Any, root: Any) -> int:
    """``reproduce --plan``: the cost plan (no training), printed and written to ``plan.json``."""
    from empirical.plan import format_plan, run_plan

    rec = run_plan(cfg, root)
    p = rec["plan"]
    print(format_plan(p))
    for row in rec.get("measured", []):
        print(f"measured {row['stage']:<34} {row['measured_s']:>8.1f} s, planned {row['planned_s']:>8.1f} s "
              f"(ratio {row['ratio']:.2f})")
    print(f"plan {root / 'plan.json'}: estimated {p['estimated_total_s_cpu']:.0f} s on this CPU, "
          f"{p['estimated_total_s_h200']:.0f} s on an H200")
    return 0


def _positive_seconds(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the construction / experiment / reproduce subcommands to the top-level parser."""
    from empirical import constructions
    from foundation import checks as C

    kinds = constructions.kinds()
    p = subparsers.add_parser("construct", help=f"build one of {', '.join(kinds)} (sharded, resumable)",
                              description="Build a constructed dataset (a row of the registry "
                                          "empirical.constructions): " + "; ".join(
                                              f"{k}: {constructions.get(k).summary}" for k in kinds))
    p.add_argument("kind", choices=kinds)
    _common(p)
    p.add_argument("--dist-timeout", type=_positive_seconds, default=86400.0, metavar="SECONDS",
                   help="under torchrun: how long ranks wait for each other, e.g. while rank 0 trains a "
                        "missing source model (default: %(default)s)")
    p.set_defaults(func=_cmd_construct)
    for which, text in (("fig2", "Figure 2: std/adv training on D, std training on D_R and D_NR"),
                        ("table1", "Table 1: std training on D, D_rand, D_det"),
                        ("fig3", "Figure 3: D_det accuracy vs transfer success across architectures")):
        p = subparsers.add_parser(which, help=text)
        _common(p)
        p.set_defaults(func=_cmd_experiment(which))
    p = subparsers.add_parser("debate", help="the published tests of the claim on a preset's workspace: non-transferable "
                              "targeted examples, the leakage probe, the adversarial squares, the preference readout "
                              "(docs/debate.md)")
    _common(p)
    p.add_argument("--no-squares", action="store_true", help="leave out the adversarial-squares toy")
    p.add_argument("--no-controls", action="store_true",
                   help="leave out the controls (error-only distillation, BatchNorm through the chain, D_R / "
                        "D_NR from noise: empirical.controls)")
    p.add_argument("--released", type=_released_arg, action="append", metavar="NAME=FOLDER",
                   help="also probe one of the authors' released sets (a folder holding CIFAR_ims and CIFAR_lab, "
                        "e.g. D_rand=DATA/drand_CIFAR); repeatable")
    p.set_defaults(func=_cmd_debate)
    p = subparsers.add_parser("profile", help="the robustness profile of every Figure 2 model: robust accuracy against "
                              "l2 / linf eps under the strong PGD and the worst case, and a rotation/translation grid")
    _common(p)
    p.set_defaults(func=_cmd_profile)
    p = subparsers.add_parser("debate-report", help="summarise debate runs of several seeds (ROOT/seed<K>/) into "
                              "ROOT/debate.json and ROOT/debate.md")
    p.add_argument("root", type=C.path_arg, metavar="ROOT")
    p.set_defaults(func=_cmd_debate_report)
    p = subparsers.add_parser("reproduce", help="the whole section-3 chain + figures + report (default preset digits)")
    _common(p)
    p.add_argument("--no-figures", action="store_true", help="skip rendering the figures")
    p.add_argument("--plan", action="store_true",
                   help="run nothing: print and record (plan.json) each stage's image passes and estimated "
                        "seconds on this CPU and on an H200")
    p.add_argument("--check", metavar="DIR", type=C.path_arg, default=None,
                   help="rerun the preset in OUT_DIR and compare its records number for number with the committed "
                        "ones in DIR (wall times aside); write DIR/check.json; exit 1 when they differ")
    p.set_defaults(func=_cmd_reproduce)
