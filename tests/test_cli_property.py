"""A property of the whole console script: every command line ends with exit status 0, or with
exit status 2 and exactly one non-empty line on stderr, and never with a traceback.

The command lines are drawn from the CLI's own grammar: the argparse parser that
``robust_features.cli.build_parser`` builds is walked for its subcommands, their positionals and
options (flags, typed values, choices, repeatable options), and each is given values of its
kind: zero, negative and huge integers, fractions, NaN, inf and unparsable numbers, empty strings,
unknown names, and valid ones. ``--set`` draws its keys from the command's own key list (the one
config grammar, ``foundation.config.keys``: the experiment config's for the workspace
commands, ``TrainOptions`` / ``EvalOptions`` / ``AttackOptions`` for ``train`` / ``eval`` /
``attack``). Commands run in this process (``main(argv)``), at smoke sizes, so each takes a second
or two:

* cheap options are always added (the ``CHEAP`` table: tiny epochs, sizes and attack budgets, a
  smoke preset) unless the drawn command sets them itself;
* the values drawn for size options are never huge *and* valid where that would be slow;
* commands whose valid forms take longer (``fig2``, ``table1``, ``fig3``, a full ``reproduce``,
  ``theory report``, ``simulate theorems|pipeline``) get one known-bad value appended, so only
  their validation paths run (``reproduce --plan`` and ``construct`` run for real);
* ``--download`` (network) and ``--compile`` (minutes on a CPU) are never drawn, as flags or as
  ``--set`` keys; nor is ``--set lr=...`` (a drawn lr of 2 could end a run with a non-finite loss).

``simulate`` exits 1 when a cross-check fails (its documented status; at tiny ``--n`` they can);
that is allowed for it alone. Honours ``HYPOTHESIS_PROFILE=ci`` (derandomised, no database).
``CLI_PROPERTY_EXAMPLES=N`` draws N command lines instead of 30; ``CLI_PROPERTY_LOG=FILE`` appends
each command line, its exit status and the end of its stderr to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_features.cli import build_parser, main

NEVER = {"download", "compile", "help", "version"}
# (valid, invalid) values per kind; the valid ones are all cheap
INT = (["1", "2"], ["0", "-1", "1.5", "x", "", str(2**64)])
FLOAT = (["0.5", "8/255"], ["0", "-1", "nan", "inf", "1e400", "x", ""])
NAME = ([], ["", "bogus", " "])
SEED = (["0", "3", str(2**32 - 1)], ["-1", str(2**32), str(2**64), "x", "1.5"])
SMALL = (["1", "2"], ["0", "-1", "x", "1.5"])            # counts where huge would be slow
PRESETS = (["digits-smoke", "synthetic-smoke", "cifar10-smoke"], ["", "bogus", "digits-smok", "mnist"])
BAD_SET = ["eval.n_robust=-5", "eval.n_robust=1.7", "eval.paper_steps=0", "std.momentum=2", "name=../x",
           "fig3_archs=mlp,mlp", "bogus.key=1", "novalue", "=3", "targeted.eps=1/0", "rep.storage=int4",
           "std.channels_last=maybe", "eval.suite=bogus", "data_root=", "seed=-1", "std=5", "targets.trend_min_archs=1"]
GOOD_SET = ["eval.n_robust=8", "targeted.eps=0.9", "notes=x", "eval.suite=", "targets.d_det_min=10", "seed=1",
            "eval.n_robust=none", "rep.steps=2", "transfer.n_examples=8", "targeted.eps=8/255", "arch=mlp"]
SET_VALUES = ["0", "-1", "1.5", "nan", "", "none", "true", "abc", "1/0", "8/255", "mlp", "2"]
# --set of train / eval / attack: (valid, invalid) KEY=VALUE items of each command's own keys
SETS: dict[str, tuple[list[str], list[str]]] = {
    "train": (["epochs=1", "lr=8/255", "flip=true", "n_eval=none", "eval_eps=0,0.5", "adv=l2:0.5", "n-train=60",
               "eval_norm=none", "progress=no"],
              ["epochs=0", "epochz=1", "lr=nan", "flip=maybe", "novalue", "=3", "adv=l3:1", "n_train=1.5",
               "batch_size=-1", "device=", "eval_eps=x", "seed=-1", "targeted.eps=0.5"]),
    "eval": (["steps=1", "threat=l2:0.5,linf:8/255", "random_start=true", "restarts=2", "suite=", "data=digits"],
             ["steps=0", "threat=", "split=bogus", "bogus=1", "attack=fab", "precision=fp16", "n=1.5", "novalue"]),
    "attack": (["steps=1", "targeted=next", "threat=linf:8/255", "step_size=1/8", "restarts=2"],
               ["steps=0", "targeted=bogus", "threat=l3:1", "bogus=1", "step_size=0", "threat=", "novalue"]),
}

# per option dest (command-specific first): the values worth drawing
VALUES: dict[str, tuple[list[str], list[str]]] = {
    "train.data": (["digits", "synthetic"], ["", "bogus", "cifar10", "imagefolder:/nonexistent/x"]),
    "eval.data": (["digits"], ["synthetic", "", "bogus"]), "attack.data": (["digits"], ["synthetic", "", "bogus"]),
    "data": (["digits", "synthetic"], ["", "bogus", "cifar10"]),
    "arch": (["mlp", "mlp:width=8", "cnn_small:width=4"],
             ["", "bogus", "mlp:width=0", "mlp:depth=3", "fastnet:widths=0-8-8", "cnn_small:width=-1"]),
    "adv": (["l2:0.5", "linf:8/255"], ["", "l3:1", "l2:-1", "l2:1/0", "l2:1e400", "l2", "l2:nan"]),
    "adv_method": (["pgd", "fgsm"], ["trades", ""]), "schedule": (["onecycle", "step", "constant"], ["cosine", ""]),
    "optimizer": (["sgd", "adam"], ["lbfgs"]), "eval_norm": (["l2", "linf"], ["", "l3"]),
    "eval_eps": (["0.25", "0,0.5"], ["", "-1", "x", "1/0", ","]),
    "device": (["cpu", "auto"], ["", "bogus", "cuda:7", "meta"]),
    "precision": (["auto", "fp32", "bf16"], ["fp16", ""]),
    "epochs": SMALL, "steps": SMALL, "eval_steps": SMALL, "adv_steps": SMALL, "apgd_steps": SMALL,
    "restarts": SMALL, "eval_restarts": SMALL, "square_queries": (["3"], ["0", "-1"]),
    "apgd_targets": (["1", "3", "50"], ["0", "-2"]), "apgd_targets_at_once": (["1", "9"], ["0", "-1"]),
    "batch_size": (["16", str(10**9)], ["0", "-1", "x"]),
    "n_train": (["60", str(10**12)], ["0", "-1", "x"]), "n_eval": (["10", str(10**12)], ["0", "-2"]),
    "eval.n": (["5", str(10**12)], ["0", "-1", "x", "1.5"]), "attack.n": (["5"], ["0", "-1"]),
    "simulate.n": (["200"], ["1", "0", "-5", "x"]),
    "seed": SEED, "data_seed": SEED, "subset_seed": SEED,
    "lr": (["0.05", "1e-3"], ["0", "-0.1", "nan", "inf", "1e400", "x"]),
    "momentum": (["0.9", "0"], ["1", "-0.5", "nan"]), "weight_decay": (["0", "5e-4"], ["-1", "nan", "inf"]),
    "label_smoothing": (["0", "0.1"], ["1", "-0.1", "nan"]),
    "adv_step_size": (["0.1", "1/8"], ["0", "-1", "nan", "1/0"]), "step_size": (["0.1", "1/8"], ["0", "-1", "nan", "x"]),
    "crop_padding": (["0", "2"], ["-1"]),
    "threat": (["l2:0.5", "linf:8/255", "l2:0"], ["", "l3:1", "l2:-1", "l2:x"]),
    "attack": (["pgd", "apgd-ce", "apgd-t", "square"], ["bogus", ""]), "suite": (["standard"], ["bogus"]),
    "preset": PRESETS, "dist_timeout": (["60"], ["0", "-1", "nan", "x"]),
    "backend": (["numpy"], ["cupy", "bogus", ""]), "n_samples": (["100"], ["50", "0", "-1", "x"]),
    "sweep_samples": (["100"], ["99", "0", "x"]),
    "kind": (["D_R", "D_NR", "D_rand", "D_det"], ["bogus", "", "D_r"]),
    "experiment": (["tsipras", "theorems", "pipeline"], ["bogus", ""]),
    "skip": (["theory", "simulate", "reproduce"], ["bogus"]),
    "debate-report.root": (["."], ["", "bogus"]),      # no seed<K>/ folders under either: exit 2, one line
    "split": (["test", "train"], ["bogus"]), "targeted": (["none", "next", "random"], ["bogus"]),
}
CHEAP: dict[str, list[str]] = {     # always added unless drawn
    "train": ["--data", "digits", "--arch", "mlp", "--epochs", "1", "--n-train", "60", "--n-eval", "10",
              "--eval-steps", "1"],
    "eval": ["--n", "8", "--steps", "1", "--apgd-steps", "1", "--square-queries", "3", "--apgd-targets", "2"],
    "attack": ["--n", "8", "--steps", "1"],
    "construct": ["--preset", "digits-smoke"], "fig2": ["--preset", "digits-smoke"],
    "table1": ["--preset", "digits-smoke"], "fig3": ["--preset", "digits-smoke"],
    "reproduce": ["--preset", "digits-smoke", "--no-figures"],
    "debate": ["--preset", "digits-smoke"], "profile": ["--preset", "digits-smoke"],
    "simulate": ["--n", "200", "--no-figures"],
    "all": ["--skip", "theory", "--skip", "simulate", "--skip", "reproduce"],
    "theory report": ["--n-samples", "100", "--sweep-samples", "100", "--no-figures"],
}
# the commands that write a preset's workspace: they share one, so a valid draw reuses its stages
WORKSPACE_COMMANDS = ("construct", "fig2", "table1", "fig3", "reproduce", "debate", "profile")
SLOW_WHEN_VALID = {"fig2": ["--set", "eval.n_robust=-5"], "table1": ["--seed", "-1"],
                   "fig3": ["--set", "fig3_archs=mlp,mlp"], "theory report": ["--seed", "-1"]}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, parser
    for a in subs:
        for name, sub in a.choices.items():
            yield from _leaves(sub, (*path, name))


GRAMMAR = dict(_leaves(build_parser()))


def _values(command: str, action: argparse.Action) -> tuple[list[str], list[str]]:
    dest = action.dest
    for key in (f"{command}.{dest}", f"{command.split()[0]}.{dest}", dest):
        if key in VALUES:
            return VALUES[key]
    if action.choices is not None:
        return list(map(str, action.choices)), ["bogus", ""]
    if action.type is int:
        return INT
    if action.type is float:
        return FLOAT
    return NAME


def _paths(command: str, action: argparse.Action, fresh: Path, checkpoint: Path,
           workspace: Path) -> tuple[list[str], list[str]] | None:
    dest = action.dest
    if dest in ("out_dir", "out"):
        if command in WORKSPACE_COMMANDS:
            return [str(workspace), str(fresh / "out")], [""]
        return [str(fresh / "o")], [""]
    if dest == "checkpoint":
        return [str(checkpoint)], [str(fresh / "none.pt"), "", str(checkpoint.parent), str(checkpoint.with_suffix(".json"))]
    if dest == "config":
        good = ({"ok": "epochs = 1\n", "oldok": "[train]\nn-eval = 10\n"} if command == "train" else
                {"evok": "steps = 1\n", "secok": f"[{command}]\nsteps = 1\n"} if command in ("eval", "attack") else
                {"wsok": "[eval]\nn_robust = 8\n"})
        bad = {"bad": "[[x", "key": "epochz = 1\n", "zero": "epochs = 0\n", "wsbad": "[eval]\nn_robust = -5\n",
               "nested": "std = 5\n"}
        for k, v in {**good, **bad}.items():
            (fresh / f"{k}.toml").write_text(v)
        return [str(fresh / f"{k}.toml") for k in good], [str(fresh / f"{k}.toml") for k in bad] + [
            str(fresh / "missing.toml"), ""]
    if dest == "data_root":
        return [], [str(fresh / "nothing-here"), ""]
    return None


@st.composite
def command_lines(draw, root: Path, checkpoint: Path, workspace: Path):
    """One command line: a subcommand, some of its options, and 0-2 of them given a bad value."""
    command = draw(st.sampled_from(sorted(" ".join(p) for p in GRAMMAR)))
    parser = GRAMMAR[tuple(command.split())]
    fresh = Path(tempfile.mkdtemp(dir=root))
    n_bad = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    chosen: list[tuple[str, argparse.Action, tuple[list[str], list[str]]]] = []
    argv: list[str] = command.split()
    opts: list[list[str]] = []
    for action in parser._actions:
        if action.dest in NEVER or isinstance(action, (argparse._SubParsersAction, argparse._HelpAction)):
            continue
        if not action.option_strings:                                  # a positional (kind, experiment)
            valid, invalid = _values(command, action)
            if n_bad and draw(st.sampled_from([False, False, False, True])):
                if draw(st.booleans()):
                    argv.append(draw(st.sampled_from(invalid)))
                n_bad -= 1                                             # a bad or missing positional
            else:
                argv.append(draw(st.sampled_from(valid)))
            continue
        if not draw(st.sampled_from([False, False, True])):            # each option with p = 1/3
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:                                          # store_true / BooleanOptional
            if isinstance(action, argparse.BooleanOptionalAction):
                flag = draw(st.sampled_from(action.option_strings))
            opts.append([flag])
            continue
        if action.dest == "overrides":
            keys = draw(st.lists(st.sampled_from(_config_keys(command)), max_size=2))
            good, bad = SETS.get(command, (GOOD_SET, BAD_SET))
            pools = (good, bad + [f"{k}={draw(st.sampled_from(SET_VALUES))}" for k in keys])
        else:
            pools = _paths(command, action, fresh, checkpoint, workspace) or _values(command, action)
        chosen.append((flag, action, pools))
    bad_at = set(draw(st.permutations(range(len(chosen))))[:n_bad]) if chosen else set()
    for i, (flag, action, (valid, invalid)) in enumerate(chosen):
        repeats = draw(st.integers(1, 2)) if isinstance(action, argparse._AppendAction) else 1
        for r in range(repeats):
            pool = invalid if (i in bad_at and r == 0) or not valid else valid
            opts.append([flag, draw(st.sampled_from(pool))])
    if draw(st.sampled_from([False] * 19 + [True])):
        opts.append(["--no-such-option"])
    opts = draw(st.permutations(opts))
    argv += list(itertools.chain.from_iterable(opts))
    given = {o[0] for o in opts}
    cheap = CHEAP.get(command, [])
    i = 0
    while i < len(cheap):
        has_value = i + 1 < len(cheap) and not cheap[i + 1].startswith("--")
        if cheap[i] == "--skip" or cheap[i] not in given:
            argv += cheap[i:i + 2] if has_value else [cheap[i]]
        i += 2 if has_value else 1
    if command in ("train", "attack", "simulate", "theory report", "all") and "--out-dir" not in given:
        argv += ["--out-dir", str(fresh / "out")]
    if command in ("eval", "attack") and "--checkpoint" not in given:
        argv += ["--checkpoint", str(checkpoint)]
    if command in WORKSPACE_COMMANDS and "--out-dir" not in given:
        argv += ["--out-dir", str(workspace)]
    slow = SLOW_WHEN_VALID.get(command)
    if command == "reproduce" and "--plan" not in argv:
        slow = ["--set", "eval.paper_steps=0"]
    if command == "simulate" and "tsipras" not in argv:
        slow = ["--seed", "-1"]
    return argv + (slow or [])


_KEYS: dict[str, list[str]] = {}
NEVER_SET = {"download", "compile", "lr"}       # network, minutes on a CPU, a possibly non-finite loss


def _config_keys(command: str) -> list[str]:
    """The keys ``--set`` takes in ``command`` (the one grammar's key list of its config class)."""
    if command not in _KEYS:
        from empirical.options import AttackOptions, EvalOptions, TrainOptions
        from empirical.experiments import ExperimentConfig
        from foundation.config import keys

        cls = {"train": TrainOptions, "eval": EvalOptions, "attack": AttackOptions}.get(command, ExperimentConfig)
        _KEYS[command] = [k for k in keys(cls) if k not in NEVER_SET]
    return _KEYS[command]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-property")
    run = root / "ckpt"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--data", "digits", "--arch", "mlp", "--epochs", "1", "--n-eval", "8", "--eval-steps",
                     "1", "--no-progress", "--out-dir", str(run)]) == 0
    return root, run / "model.pt", root / "workspace"


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:   # only --help/--version may exit; neither is drawn
            raise AssertionError(f"{argv} raised SystemExit({exc.code}) instead of returning") from None
    return rc, err.getvalue()


def test_the_grammar_walk_reaches_every_subcommand_and_option():
    commands = {" ".join(p) for p in GRAMMAR}
    assert {"train", "eval", "attack", "construct", "fig2", "table1", "fig3", "reproduce", "theory report",
            "simulate", "all"} <= commands
    dests = {a.dest for p in GRAMMAR.values() for a in p._actions}
    assert {"epochs", "batch_size", "lr", "n", "overrides", "threat", "kind", "plan", "overwrite"} <= dests


# the loaded profile (tests/conftest.py; HYPOTHESIS_PROFILE=ci: derandomised, no database) supplies
# everything but the example count; CLI_PROPERTY_EXAMPLES=300 hunts longer
@settings(max_examples=int(os.environ.get("CLI_PROPERTY_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_line_exits_0_or_2_with_one_clear_line_and_never_a_traceback(places, data):
    root, checkpoint, workspace = places
    argv = data.draw(command_lines(root, checkpoint, workspace), label="argv")
    rc, err = run_cli(argv)
    if os.environ.get("CLI_PROPERTY_LOG"):                 # CLI_PROPERTY_LOG=FILE: one line per command
        with open(os.environ["CLI_PROPERTY_LOG"], "a") as fh:
            fh.write(f"rc={rc} {argv} :: {err.strip()[-300:]!r}\n")
    assert "Traceback" not in err, (argv, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 2:
        assert len(lines) == 1 and "error: " in lines[0], (argv, err)
    elif rc == 1:
        assert argv[0] == "simulate", (argv, err)      # a failed cross-check, its documented status
    else:
        assert rc == 0, (argv, rc, err)
