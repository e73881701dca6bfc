"""The ``train``, ``eval`` and ``attack`` subcommands of `robust-features`.

    robust-features train --data digits --out-dir runs/digits-std
    robust-features train --data synthetic --adv l2:1.0 --epochs 15 --out-dir runs/syn-adv
    robust-features train --config train.toml --set lr=0.1 --out-dir runs/x    # flags win, then --set
    robust-features eval --checkpoint runs/digits-std/model.pt --threat l2:0.25 --threat l2:0.5
    robust-features attack --checkpoint runs/digits-std/model.pt --threat l2:1.0 --targeted next --out-dir runs/adv

Every option is a field of :class:`empirical.options.TrainOptions`, ``EvalOptions`` or
``AttackOptions`` (the worst-case attacks' budget options included, from the registry
:mod:`empirical.suite`) and comes, through the one config grammar of :mod:`foundation.config`,
from the defaults < ``--config FILE.toml`` < ``--set KEY=VALUE`` < explicit flags; ``train``'s
per-dataset defaults are presets (``empirical.options.TRAIN_PRESETS``) filling what is still
absent. Each command resolves its options, calls one run of :mod:`empirical.runs` (which writes
``train.json`` / ``eval.json`` / ``attack.json``) and prints from the record it returns. Torch is
imported only when a command runs.

Before a command starts, :func:`robust_features.cli.main` checks its output locations (``train`` /
``attack``: ``--out-dir``; ``eval``: ``--out``, by default ``eval.json`` beside the checkpoint)
writable and that no file it writes is one it reads (the checkpoint, its sidecar, the ``--config``
file): each command's ``io`` below names them. A non-finite training loss ends ``train`` with one
line on stderr and exit status 3.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from empirical.options import AttackOptions, EvalOptions, TrainOptions
from foundation.runtime import CACHE_DIR_HELP

TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainOptions))   # the --set / TOML keys of `train`
_SET_EXAMPLES = {TrainOptions: "epochs=3", EvalOptions: "threat=l2:0.5,linf:8/255", AttackOptions: "threat=linf:8/255"}
_SECTIONS = {TrainOptions: "train", EvalOptions: "eval", AttackOptions: "attack"}


def _resolve(cls: type, args: argparse.Namespace) -> Any:
    """The options of ``cls``: defaults < TOML file (--config, optionally under [train] / [eval] /
    [attack]) < --set < explicit flags, checked once."""
    from foundation import config as grammar

    layers = grammar.command_layers(config=args.config, sets=args.overrides, flags=grammar.given_flags(args, cls),
                                    section=_SECTIONS[cls], example=_SET_EXAMPLES[cls])
    return grammar.resolve(cls(), layers)


def resolve_train_options(args: argparse.Namespace) -> TrainOptions:
    """defaults < TOML file (--config) < --set < explicit flags. The options the per-dataset presets
    fill (epochs, batch_size, lr, crop_padding, flip) stay absent (None) until the data is loaded
    (:func:`empirical.options.with_presets`)."""
    return _resolve(TrainOptions, args)


def resolve_eval_options(args: argparse.Namespace) -> EvalOptions:
    return _resolve(EvalOptions, args)


def resolve_attack_options(args: argparse.Namespace) -> AttackOptions:
    return _resolve(AttackOptions, args)


def load_toml_config(path: str | Path) -> dict[str, Any]:
    """The `train` options of a TOML file (kebab- or snake-case keys, optionally under [train]),
    typed; unknown keys raise ``ValueError`` listing the valid ones."""
    from foundation import config as grammar

    return grammar.typed(TrainOptions, grammar.load_toml(path, section="train"), source=str(path))


def _cmd_train(args: argparse.Namespace) -> int:
    from empirical.runs import run_train
    from empirical.train import NonFiniteLossError
    from foundation.records import utc_now

    started_at, t0 = utc_now(), time.perf_counter()
    o = resolve_train_options(args)
    try:
        rec = run_train(o, args.out_dir, started_at=started_at, start_time=t0)
    except NonFiniteLossError as exc:        # its own exit status: the settings, not the input, failed
        print(f"robust-features train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 3
    if rec is not None:          # rank 0
        m = rec["metrics"]
        rob = ", ".join(f"{rec['attacks'][k]}: {100 * v:.1f}%" for k, v in m["robust_accuracy"].items())
        print(f"clean {100 * m['clean_accuracy']:.1f}% (n={m['n_test']}) / robust {rob} (n={m['n_robust_eval']}); "
              f"record {Path(args.out_dir) / 'train.json'}")
        if rec.get("stopped_early"):
            print(rec["stopped_early"])
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from empirical.runs import eval_record_path, run_eval
    from foundation.records import utc_now

    started_at, t0 = utc_now(), time.perf_counter()
    o = resolve_eval_options(args)
    rec = run_eval(o, args.checkpoint, args.out, started_at=started_at, start_time=t0)
    if rec is None:              # a rank other than 0 of a torchrun
        return 0
    m = rec["metrics"]
    print(f"clean {100 * m['clean_accuracy']:.2f}% (n={m['n']})")
    if "attack_order" in rec:
        for key, per in m["robust_accuracy"].items():
            steps = ", ".join(f"{a} {100 * v:.2f}%" for a, v in per.items() if a != "worst_case")
            print(f"{rec['threats'][key]}: robust after {steps}; worst case {100 * per['worst_case']:.2f}%")
        for flag, text in rec["sanity_raised"].items():
            print(f"sanity flag {flag}: {text}")
    else:
        for k, v in m["robust_accuracy"].items():
            print(f"robust {100 * v:.2f}% at {rec['attacks'][k]}, n={m['n']}")
    print(f"record {eval_record_path(args.checkpoint, args.out)}")
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from empirical.runs import run_attack
    from foundation.records import utc_now

    started_at, t0 = utc_now(), time.perf_counter()
    o = resolve_attack_options(args)
    rec = run_attack(o, args.checkpoint, args.out_dir, started_at=started_at, start_time=t0)
    m = rec["metrics"]
    print(f"success {100 * m['success_rate']:.1f}% | clean {100 * m['clean_accuracy']:.1f}% -> "
          f"adversarial {100 * m['adversarial_accuracy']:.1f}% at {rec['attack']}, n={rec['config']['n']}; "
          f"record {Path(args.out_dir) / 'attack.json'}")
    return 0


def _config_input(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    return [("the --config file", args.config)]


# each command's io: (output locations (flag, path, kind), the files it writes (how the command line
# names them, path), the files it reads (what, path)), checked by robust_features.cli.check_locations
def _train_io(args: argparse.Namespace) -> Any:
    from empirical.runs import TRAIN_FILES, folder_outputs

    return [("--out-dir", args.out_dir, "folder")], folder_outputs(args.out_dir, TRAIN_FILES), _config_input(args)


def _eval_io(args: argparse.Namespace) -> Any:
    from empirical.runs import checkpoint_inputs, eval_outputs, eval_record_path

    return ([("--out", eval_record_path(args.checkpoint, args.out), "file")], eval_outputs(args.checkpoint, args.out),
            [*checkpoint_inputs(args.checkpoint), *_config_input(args)])


def _attack_io(args: argparse.Namespace) -> Any:
    from empirical.runs import ATTACK_FILES, checkpoint_inputs, folder_outputs

    return ([("--out-dir", args.out_dir, "folder")], folder_outputs(args.out_dir, ATTACK_FILES),
            [*checkpoint_inputs(args.checkpoint), *_config_input(args)])


def _add_options(p: argparse.ArgumentParser, cls: type) -> None:
    """The flags of ``cls``'s fields, then --config and --set (the one grammar: flags win)."""
    from foundation import config as grammar

    grammar.add_flags(p, cls)
    grammar.add_config_options(p, example=_SET_EXAMPLES[cls])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``attack`` to the top-level parser."""
    from foundation import checks as C

    p = subparsers.add_parser("train", help="standard or adversarial training (writes model.pt, train.json)",
                              description="Train a model. Options: defaults (per-dataset presets for what is left "
                                          "absent) < --config TOML < --set KEY=VALUE < explicit flags.")
    p.add_argument("--out-dir", required=True, type=C.path_arg,
                   help="run folder: latest.pt, model.pt + model.json, train.json")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, TrainOptions)
    p.set_defaults(func=_cmd_train, io=_train_io)

    p = subparsers.add_parser("eval", help="clean and PGD robust accuracy of a checkpoint (writes eval.json)",
                              description="Evaluate a checkpoint. Options: defaults < --config TOML < --set "
                                          "KEY=VALUE < explicit flags.")
    p.add_argument("--checkpoint", required=True, type=C.path_arg,
                   help="model.pt written by `train` (with its model.json)")
    p.add_argument("--out", default=None, type=C.path_arg,
                   help="record path (default: eval.json beside the checkpoint)")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, EvalOptions)
    p.set_defaults(func=_cmd_eval, io=_eval_io)

    p = subparsers.add_parser("attack", help="PGD adversarial examples for a checkpoint (adversarial.pt, attack.json)",
                              description="Attack a checkpoint. Options: defaults < --config TOML < --set "
                                          "KEY=VALUE < explicit flags.")
    p.add_argument("--checkpoint", required=True, type=C.path_arg,
                   help="model.pt written by `train` (with its model.json)")
    p.add_argument("--out-dir", required=True, type=C.path_arg, help="folder of adversarial.pt and attack.json")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, AttackOptions)
    p.set_defaults(func=_cmd_attack, io=_attack_io)


__all__ = ["TRAIN_KEYS", "load_toml_config", "register", "resolve_attack_options", "resolve_eval_options",
           "resolve_train_options"]
