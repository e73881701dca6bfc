"""The one config grammar (foundation.config) for every command: the same key given by the
defaults or preset, a TOML file, --set and an explicit flag resolves as documented (preset < TOML
< --set < flag); values are typed by the dataclass fields; unknown keys are refused with the valid
list; train's old TOML format still reads. Resolution only: nothing here trains."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from robust_features.cli_core import (
    TRAIN_KEYS,
    load_toml_config,
    resolve_attack_options,
    resolve_eval_options,
    resolve_train_options,
)
from robust_features.cli_construct import resolve_config
from empirical.options import (
    TRAIN_PRESETS,
    AttackOptions,
    EvalOptions,
    TrainOptions,
    train_presets,
    with_presets,
)
from foundation import config as grammar
from foundation.checks import positive_int
from robust_features.cli import build_parser, main

PARSER = build_parser()


def _args(*argv: str):
    return PARSER.parse_args(list(argv))


def _toml(tmp_path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# the engine, on a small nested config
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inner:
    steps: int = 3
    eps: float = 0.5
    on: bool = False

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    root: str | None = "/data"
    archs: tuple[str, ...] = ("mlp",)
    n: int | None = 10
    inner: Inner = field(default_factory=Inner)


def test_strings_are_typed_by_the_declared_field_type_never_evaluated():
    cfg = grammar.with_overrides(Outer(), {"inner.eps": "8/255", "inner.on": "true", "root": "none",
                                           "archs": "mlp, cnn_small,", "n": "7", "inner.steps": "2"})
    assert cfg.inner.eps == pytest.approx(8 / 255) and cfg.inner.on is True and cfg.root is None
    assert cfg.archs == ("mlp", "cnn_small") and cfg.n == 7 and cfg.inner.steps == 2
    for text, value in (("yes", True), ("1", True), ("FALSE", False), ("no", False), ("0", False)):
        assert grammar.with_overrides(Outer(), {"inner.on": text}).inner.on is value
    assert grammar.with_overrides(Outer(), {"archs": ""}).archs == ()
    assert grammar.with_overrides(Outer(), {"n": "null"}).n is None
    assert grammar.with_overrides(Outer(), {"name": "none"}).name == "none"        # str, not optional: kept
    assert grammar.with_overrides(Outer(), {"inner.eps": 1}).inner.eps == 1.0       # TOML int -> float
    assert grammar.with_overrides(Outer(), {"archs": ["a", "b"]}).archs == ("a", "b")  # TOML list -> tuple
    assert grammar.with_overrides(Outer(), {"inner": {"eps": "1/4"}}).inner.eps == 0.25  # a nested table
    with pytest.raises(ValueError, match=r"^inner\.eps=\"__import__\('os'\)\" is not a number$"):
        grammar.with_overrides(Outer(), {"inner.eps": "__import__('os')"})


@pytest.mark.parametrize("overrides, message", [
    ({"inner.eps": "abc"}, r"^inner\.eps='abc' is not a number$"),
    ({"inner.eps": "1/0"}, r"^inner\.eps='1/0' divides by zero$"),
    ({"inner.on": "maybe"}, r"^inner\.on='maybe' must be true or false$"),
    ({"inner.steps": "0"}, r"^inner\.steps=0 must be a positive integer$"),       # the dataclass's check, prefixed
    ({"inner.stepz": "1"}, (r"^unknown config key\(s\) inner\.stepz; valid keys: name, root, archs, n, inner\.steps, "
                            r"inner\.eps, inner\.on$")),
    ({"inner": 5}, r"^unknown config key\(s\) inner; valid keys: "),
])
def test_bad_values_and_unknown_keys_are_one_line_naming_the_dotted_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        grammar.with_overrides(Outer(), overrides)


def test_layers_resolve_later_wins_and_are_checked_once():
    layers = [grammar.Layer({"inner": {"steps": 0}, "n": 1}, source="a.toml"),    # 0 is replaced: never checked
              grammar.Layer({"inner.steps": "5", "n": "2"}),
              grammar.Layer({"n": 3}, parse=False)]
    cfg = grammar.resolve(Outer(), layers)
    assert (cfg.inner.steps, cfg.n) == (5, 3)
    assert grammar.resolve(Outer(), []) == Outer()
    assert grammar.resolve(Outer(), [grammar.Layer({"name": "none"}, parse=False)]).name == "none"
    with pytest.raises(ValueError, match=r"^unknown config key\(s\) bogus in a\.toml; valid keys: name, "):
        grammar.resolve(Outer(), [grammar.Layer({"bogus": 1}, source="a.toml")])


def test_set_items_kebab_keys_and_toml_files(tmp_path):
    assert grammar.parse_sets(["a.b=1", " c =x=y", "d="]) == {"a.b": "1", "c": "x=y", "d": ""}
    for bad in ("novalue", "=3"):
        with pytest.raises(ValueError, match=rf"^--set {bad!r} must look like KEY=VALUE, e\.g\. targeted\.eps=0\.5$"):
            grammar.parse_sets([bad])
    assert grammar.flatten({"n-train": 1, "inner": {"max-steps": 2}}) == {"n_train": 1, "inner.max_steps": 2}
    assert grammar.load_toml(_toml(tmp_path, "[train]\nepochs = 2\n"), section="train") == {"epochs": 2}
    assert grammar.load_toml(_toml(tmp_path, "[train]\nepochs = 2\n")) == {"train": {"epochs": 2}}
    with pytest.raises(FileNotFoundError, match=r"^--config .*missing\.toml does not exist$"):
        grammar.load_toml(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match=r"^--config .*c\.toml is not valid TOML: "):
        grammar.load_toml(_toml(tmp_path, "[[x"))


def test_the_keys_of_a_config_are_its_fields_nested_ones_dotted():
    assert grammar.keys(Outer) == ["name", "root", "archs", "n", "inner.steps", "inner.eps", "inner.on"]
    assert grammar.keys(Outer()) == grammar.keys(Outer)
    assert list(TRAIN_KEYS) == grammar.keys(TrainOptions)
    # every option of train/eval/attack is a flag of the parser and a --set key, and the reverse
    for cls, command in ((TrainOptions, "train"), (EvalOptions, "eval"), (AttackOptions, "attack")):
        sub = next(a for a in PARSER._actions if a.dest == "command").choices[command]
        dests = {a.dest for a in sub._actions}
        assert set(grammar.keys(cls)) <= dests, command
        assert dests - set(grammar.keys(cls)) <= {"help", "out_dir", "out", "checkpoint", "cache_dir", "config",
                                                  "overrides"}, command


# ---------------------------------------------------------------------------------------------
# train: preset < TOML < --set < flag
# ---------------------------------------------------------------------------------------------
def _train(tmp_path, *argv: str, image_size: int = 8) -> TrainOptions:
    o = resolve_train_options(_args("train", "--out-dir", str(tmp_path / "out"), *argv))
    return with_presets(o, train_presets(o.data, image_size))


def test_train_precedence_preset_toml_set_flag(tmp_path):
    toml = _toml(tmp_path, "epochs = 5\nlr = 0.5\nseed = 1\n")
    assert _train(tmp_path).epochs == 15                                         # the digits preset
    assert _train(tmp_path, "--config", toml).epochs == 5                        # the file beats the preset
    assert _train(tmp_path, "--config", toml, "--set", "epochs=4").epochs == 4   # --set beats the file
    o = _train(tmp_path, "--config", toml, "--set", "epochs=4", "--epochs", "3", "--set", "lr=1/8")
    assert (o.epochs, o.lr, o.seed) == (3, 0.125, 1)                              # the flag beats --set
    assert _train(tmp_path, "--epochs", "3", "--set", "epochs=4").epochs == 3    # whatever the order on the line


def test_train_presets_fill_only_absent_options_with_the_documented_values(tmp_path):
    assert TRAIN_PRESETS["small"] == {"epochs": 15, "batch_size": 64, "lr": 0.05}
    assert TRAIN_PRESETS["large"] == {"epochs": 20, "batch_size": 512, "lr": 0.2}
    assert train_presets("digits", 8) == ("small", "below-32x32")
    assert train_presets("synthetic") == ("small",)
    assert train_presets("imagefolder:/x", 32) == train_presets("cifar10", 32) == ("large", "32x32")
    o = _train(tmp_path, "--data", "cifar10", image_size=32)
    assert (o.epochs, o.batch_size, o.lr, o.crop_padding, o.flip) == (20, 512, 0.2, 4, True)
    o = _train(tmp_path, image_size=8)
    assert (o.epochs, o.batch_size, o.lr, o.crop_padding, o.flip) == (15, 64, 0.05, 0, False)
    # an explicit value is kept, 0 and False included; absent means None (none), never 0
    o = _train(tmp_path, "--data", "cifar10", "--crop-padding", "0", "--no-flip", "--set", "batch_size=32",
               image_size=32)
    assert (o.crop_padding, o.flip, o.batch_size, o.epochs) == (0, False, 32, 20)
    assert _train(tmp_path, "--set", "epochs=none").epochs == 15
    for argv, message in ((["--set", "epochs=0"], "epochs=0 must be a positive integer"),
                          (["--epochs", "0"], "epochs=0 must be a positive integer"),
                          (["--set", "lr=0"], "lr=0.0 must be a positive finite number")):
        with pytest.raises(ValueError, match=re.escape(message)):
            _train(tmp_path, *argv)


def test_train_set_values_are_typed_by_the_option_fields(tmp_path):
    o = _train(tmp_path, "--set", "adv_step_size=8/255", "--set", "flip=true", "--set", "progress=no",
               "--set", "n-train=none", "--set", "n_eval=none", "--set", "eval_eps=0,0.5", "--set", "adv=l2:0.5")
    assert o.adv_step_size == pytest.approx(8 / 255) and o.flip is True and o.progress is False
    assert o.n_train is None and o.n_eval is None and o.eval_eps == "0,0.5" and o.adv == "l2:0.5"
    assert _train(tmp_path, "--adv", "none").adv == "none"      # an explicit flag is never re-parsed


def test_train_old_toml_format_still_reads(tmp_path):
    """The format of the old loader: kebab- or snake-case keys, optionally under [train]."""
    text = ('[train]\ndata = "digits"\narch = "mlp"\nepochs = 5\nn-train = 300\nadv = "linf:4/255"\n'
            'adv-steps = 2\nprogress = false\nn_eval = 50\nlr = 1\n')
    toml = _toml(tmp_path, text, "old.toml")
    o = _train(tmp_path, "--config", toml, "--seed", "3", "--epochs", "2")
    assert (o.arch, o.epochs, o.n_train, o.adv, o.adv_steps, o.progress, o.n_eval, o.seed) == (
        "mlp", 2, 300, "linf:4/255", 2, False, 50, 3)
    assert o.lr == 1.0 and isinstance(o.lr, float)
    assert load_toml_config(toml)["n_train"] == 300
    flat = _toml(tmp_path, text.replace("[train]\n", ""), "flat.toml")             # no table: the same
    assert _train(tmp_path, "--config", flat, "--seed", "3", "--epochs", "2") == o


def test_train_unknown_keys_and_bad_values_are_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    bad = _toml(tmp_path, "epochz = 3\n")
    cases = [(["--config", bad], rf"unknown config key\(s\) epochz in {re.escape(bad)}; valid keys: data, data_root, "),
             (["--set", "epochz=3"], r"unknown config key\(s\) epochz; valid keys: data, data_root, .*progress$"),
             (["--set", "epochs"], r"--set 'epochs' must look like KEY=VALUE, e\.g\. epochs=3"),
             (["--set", "epochs=three"], r"epochs='three' is not a number"),
             (["--set", "flip=maybe"], r"flip='maybe' must be true or false"),
             (["--config", _toml(tmp_path, "progress = 3\n", "p.toml")], r"progress=3 must be true or false"),
             (["--config", str(tmp_path / "none.toml")], r"--config .*none\.toml does not exist")]
    for argv, pattern in cases:
        assert main(["train", "--out-dir", str(out), *argv]) == 2, argv
        assert re.search(pattern, _one_line(capsys).strip()), (argv, pattern)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# eval / attack: defaults < TOML < --set < flag
# ---------------------------------------------------------------------------------------------
def test_eval_and_attack_take_config_and_set_with_flags_winning(tmp_path):
    ck = ["--checkpoint", str(tmp_path / "model.pt")]
    toml = _toml(tmp_path, "[eval]\nsteps = 5\nthreat = ['l2:1', 'linf:8/255']\nn = 40\n")
    assert resolve_eval_options(_args("eval", *ck)).threat == ("l2:0.25",)
    o = resolve_eval_options(_args("eval", *ck, "--config", toml))
    assert (o.steps, o.threat, o.n) == (5, ("l2:1", "linf:8/255"), 40)
    o = resolve_eval_options(_args("eval", *ck, "--config", toml, "--set", "steps=4", "--set", "threat=l2:0.5"))
    assert (o.steps, o.threat) == (4, ("l2:0.5",))
    o = resolve_eval_options(_args("eval", *ck, "--config", toml, "--set", "steps=4", "--steps", "3",
                                   "--threat", "l2:2", "--threat", "l2:3", "--set", "suite=standard"))
    assert (o.steps, o.threat, o.suite, o.n) == (3, ("l2:2", "l2:3"), ("standard",), 40)
    toml = _toml(tmp_path, "[attack]\ntargeted = 'next'\nstep-size = '1/8'\n", "a.toml")
    o = resolve_attack_options(_args("attack", *ck, "--out-dir", str(tmp_path / "o"), "--config", toml,
                                     "--set", "targeted=random", "--set", "restarts=2"))
    assert (o.targeted, o.step_size, o.restarts, o.threat) == ("random", 0.125, 2, "l2:0.5")
    o = resolve_attack_options(_args("attack", *ck, "--out-dir", str(tmp_path / "o"), "--config", toml,
                                     "--targeted", "none"))
    assert o.targeted == "none"


def test_eval_and_attack_refuse_unknown_keys_and_bad_values_in_one_line(tmp_path, capsys):
    ck = ["--checkpoint", str(tmp_path / "model.pt")]
    cases = [(["eval", *ck, "--set", "epochs=3"], r"unknown config key\(s\) epochs; valid keys: data, data_root, "),
             (["eval", *ck, "--set", "threat="], r"threat=\(\) must be a list of one or more names"),
             (["eval", *ck, "--set", "split=bogus"], r"split='bogus' is not a split; valid: test, train"),
             (["eval", *ck, "--set", "n=0"], r"n=0 must be a positive integer"),
             (["eval", *ck, "--config", _toml(tmp_path, "steps = 0\n")], r"steps=0 must be a positive integer"),
             (["attack", *ck, "--out-dir", str(tmp_path / "o"), "--set", "targeted=all"],
              r"targeted='all' is not a target rule; valid: none, next, random")]
    for argv, pattern in cases:
        assert main(argv) == 2, argv
        assert re.search(pattern, _one_line(capsys)), (argv, pattern)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# construct / reproduce: preset < TOML < --set < flag
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["construct", "D_det"], ["reproduce"]])
def test_workspace_commands_precedence_preset_toml_set_flag(tmp_path, command):
    def cfg(*argv: str):
        return resolve_config(_args(*command, "--preset", "digits-smoke", "--out-dir", str(tmp_path), *argv))

    toml = _toml(tmp_path, "seed = 1\n[targeted]\neps = 0.7\n[std]\nepochs = 3\n")
    base = cfg()
    assert (base.seed, base.targeted.eps) == (0, 1.0) and base.std.epochs != 3          # the preset
    c = cfg("--config", toml)
    assert (c.seed, c.targeted.eps, c.std.epochs) == (1, 0.7, 3)                          # the file beats it
    c = cfg("--config", toml, "--set", "seed=2", "--set", "targeted.eps=8/255")
    assert (c.seed, c.targeted.eps, c.std.epochs) == (2, pytest.approx(8 / 255), 3)      # --set beats the file
    c = cfg("--config", toml, "--set", "seed=2", "--seed", "3", "--set", "data_root=none", "--data-root", "/d")
    assert (c.seed, c.data_root, c.targeted.eps) == (3, "/d", 0.7)                        # the flag beats --set
    # a value a later layer replaces is not checked: the resolved config is
    bad = _toml(tmp_path, "[eval]\nn_robust = -5\n", "bad.toml")
    assert cfg("--config", bad, "--set", "eval.n_robust=8").eval.n_robust == 8
    with pytest.raises(ValueError, match=r"^eval\.n_robust=-5 must be None or a positive integer"):
        cfg("--config", bad)
    with pytest.raises(ValueError, match=rf"^unknown config key\(s\) targeted\.epz in {re.escape(str(tmp_path))}"):
        cfg("--config", _toml(tmp_path, "[targeted]\nepz = 1\n", "u.toml"))
