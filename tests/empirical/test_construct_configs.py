"""Experiment configs, presets, overrides and the CLI's input validation (no training)."""

from __future__ import annotations

import json

import pytest

from empirical.construct import RepresentationConfig, TargetedConfig
from empirical.experiments import (
    PAPER_NUMBERS,
    EvalConfig,
    Recipe,
    _linear_fit,
    config_from_dict,
    valid_keys,
    with_overrides,
)
from empirical.reproduce import PRESETS, check_claims, get_preset
from empirical.transfer import TransferConfig
from robust_features.cli import main
from foundation.records import to_jsonable


def test_every_preset_and_its_smoke_variant_round_trips_through_json():
    for name in [*PRESETS, *(f"{p}-smoke" for p in PRESETS)]:
        cfg = get_preset(name)
        assert config_from_dict(json.loads(json.dumps(to_jsonable(cfg)))) == cfg
        assert len(cfg.fig3_archs) >= (2 if cfg.data == "synthetic" else 3)
        assert cfg.adv.adv_eps == pytest.approx(2 * cfg.eval.eps)      # the paper's ratio (0.5 vs 0.25)
    smoke = get_preset("paper-smoke")
    assert smoke.arch == "resnet50" and smoke.data == "synthetic" and smoke.std.epochs == 1
    assert get_preset("digits-smoke").data == "digits"


def test_paper_preset_carries_the_papers_budgets():
    p = PRESETS["paper"]
    assert (p.rep.steps, p.rep.step_size, p.rep.start, p.rep.normalize_loss) == (1000, 0.1, "random_image", False)
    assert (p.targeted.eps, p.targeted.steps, p.targeted.step_size, p.targeted.random_start) == (0.5, 100, 0.1, False)
    assert (p.eval.eps, p.eval.paper_steps, p.eval.paper_step) == (0.25, 7, 0.05)
    assert p.adv.adv_eps == 0.5 and p.on_ddet.crop_padding == 0 and p.on_drand.lr == 0.01
    assert PAPER_NUMBERS["table1"]["D_det"] == 43.7 and PAPER_NUMBERS["fig3"]["ResNet-50"] == (44.7, 98.8)


def test_overrides_parse_strings_fractions_and_nested_tables():
    cfg = get_preset("digits")
    new = with_overrides(cfg, {"targeted.eps": "8/255", "std.epochs": "3", "fig3_archs": "mlp,cnn_small",
                               "rep": {"normalize_loss": "true", "start": "noise"}, "n_train": "100"})
    assert new.targeted.eps == pytest.approx(8 / 255) and new.std.epochs == 3
    assert new.fig3_archs == ("mlp", "cnn_small") and new.rep.normalize_loss and new.rep.start == "noise"
    assert new.n_train == 100 and cfg.std.epochs != 3           # frozen original untouched
    assert "targeted.exclude_true_label" in valid_keys(cfg)


def test_bad_configs_raise_errors_naming_the_parameter():
    cfg = get_preset("digits")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) targeted.epz; valid keys: .*targeted.eps"):
        with_overrides(cfg, {"targeted.epz": 1})
    with pytest.raises(ValueError, match=r"targeted.eps='abc' is not a number"):
        with_overrides(cfg, {"targeted.eps": "abc"})
    with pytest.raises(ValueError, match=r"eps=-1.0 must be a positive finite number"):
        with_overrides(cfg, {"targeted.eps": "-1"})
    with pytest.raises(ValueError, match=r"start='zeros' is not a start rule; valid: random_image, noise"):
        RepresentationConfig(start="zeros")
    with pytest.raises(ValueError, match=r"storage='int4' is not a storage precision"):
        TargetedConfig(storage="int4")
    with pytest.raises(ValueError, match=r"schedule='cosine' is not a schedule"):
        Recipe(epochs=1, schedule="cosine")
    with pytest.raises(ValueError, match=r"norm='l3' is not a threat model"):
        EvalConfig(norm="l3")
    with pytest.raises(ValueError, match=r"n_examples=0 must be a positive integer"):
        TransferConfig(n_examples=0)
    with pytest.raises(ValueError, match=r"preset='mnist' is unknown; valid: digits, synthetic, cifar10-cpu, cifar10, paper"):
        get_preset("mnist")


def test_cli_rejects_bad_input_with_one_line_and_status_2(tmp_path, capsys):
    assert main(["reproduce", "--preset", "nope", "--out-dir", str(tmp_path)]) == 2
    assert "preset='nope' is unknown" in capsys.readouterr().err
    assert main(["fig2", "--set", "targeted.epz=1", "--out-dir", str(tmp_path)]) == 2
    assert "unknown config key(s) targeted.epz" in capsys.readouterr().err
    assert main(["table1", "--set", "novalue", "--out-dir", str(tmp_path)]) == 2
    assert "must look like KEY=VALUE" in capsys.readouterr().err
    toml = tmp_path / "c.toml"
    toml.write_text("[targeted]\nepz = 0.5\n")
    assert main(["construct", "D_det", "--config", str(toml), "--out-dir", str(tmp_path)]) == 2
    assert "unknown config key(s) targeted.epz" in capsys.readouterr().err


def test_trend_fit_recovers_a_planted_line_and_claims_are_judged_from_records():
    fit = _linear_fit([10, 20, 30, 40], [25, 45, 65, 85])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(5.0)
    assert fit["pearson_r"] == pytest.approx(1.0) and fit["spearman_rho"] == pytest.approx(1.0)
    row = lambda r: {"clean": 90.0, "robust_strong": r}  # noqa: E731
    fig2 = {"metrics": {"std_D": row(2.0), "std_DR": row(30.0), "std_DNR": row(5.0)}}
    table1 = {"metrics": {"D_rand": {"clean": 55.0}, "D_det": {"clean": 25.0}}}
    fig3 = {"metrics": {"points": {"a": {}, "b": {}, "c": {}}, "trend": {"spearman_rho": 0.5}}}
    claims = check_claims(fig2, table1, fig3)
    assert {k: v["met"] for k, v in claims.items()} == {
        "d_rand_accuracy_ge_50": True, "d_det_accuracy_ge_30": False, "d_r_robust_well_above_standard": True,
        "d_nr_robust_not_above_standard": True, "transfer_rises_with_d_det_accuracy": True}


def _bad_values(cls, name):
    """Values no field of this declared type accepts: wrong types, NaN, negative counts, ..."""
    from empirical.experiments import _field_type

    base, _ = _field_type(cls, name)
    if base is bool:
        return ["2", 2, "maybe"]
    if base is int:
        return ["-1", -1, "1.5", 1.5, True, "abc"]
    if base is float:
        return ["nan", float("inf"), "abc", True, "1/0"]
    if base is str:
        return [5, True]
    return [5, "bogus-entry"]          # tuples: fig3_archs, eval.suite


def test_every_config_field_rejects_bad_values_with_one_line_naming_the_dotted_key():
    from empirical.experiments import ExperimentConfig
    from foundation import config as grammar

    cfg = get_preset("digits-smoke")
    checked = 0
    for key in valid_keys(cfg):
        cls, inner = grammar.owner(ExperimentConfig, key)       # a field, or a table entry (rep.*, eval.apgd_steps)
        assert inner in grammar.setting_names(cls)
        for bad in _bad_values(cls, inner):
            with pytest.raises(ValueError) as exc:
                with_overrides(cfg, {key: bad})
            msg = str(exc.value)
            assert msg.startswith(f"{key}=") or msg.startswith(f"{key} entry"), (key, bad, msg)
            assert "\n" not in msg
            checked += 1
    assert checked > 300


@pytest.mark.parametrize("key, value, message", [
    ("eval.n_robust", "0", r"^eval\.n_robust=0 must be None or a positive integer"),
    ("eval.n_robust", "-5", r"^eval\.n_robust=-5 must be None or a positive integer"),
    ("eval.n_robust", "1.7", r"^eval\.n_robust=1\.7 must be None or a positive integer"),
    ("eval.paper_steps", "0", r"^eval\.paper_steps=0 must be a positive integer"),
    ("eval.strong_restarts", "0", r"^eval\.strong_restarts=0 must be a positive integer"),
    ("std.momentum", "1", r"^std\.momentum=1\.0 must be a number in \[0, 1\)"),
    ("on_dr.label_smoothing", "-0.1", r"^on_dr\.label_smoothing=-0\.1 must be a number in \[0, 1\)"),
    ("adv.adv_eps", "0", r"^adv\.adv_eps=0\.0 must be None or a positive finite number"),
    ("targeted.restarts", "0", r"^targeted\.restarts=0 must be a positive integer"),
    ("transfer.seed", "-1", r"^transfer\.seed=-1 must be an integer seed in \[0, 4294967295\]"),
    ("rep.seed", str(2**40), r"^rep\.seed=1099511627776 must be an integer seed"),
    ("targets.trend_min_archs", "1", r"^targets\.trend_min_archs=1 must be an integer >= 2"),
    ("targets.d_det_min", "101", r"^targets\.d_det_min=101\.0 must be None or a number in \[0, 100\]"),
    ("fig3_archs", "mlp,alexnet", r"^fig3_archs entry 'alexnet': unknown architecture 'alexnet'"),
    ("fig3_archs", "mlp,mlp", r"^fig3_archs=\('mlp', 'mlp'\) names an architecture twice"),
    ("fig3_archs", "", r"^fig3_archs=\(\) must name at least one architecture"),
    ("name", "../elsewhere", r"^name='\.\./elsewhere' must be a folder name"),
    ("data_root", "", r"^data_root='' must be None or a non-empty string"),
    ("n_train", "0", r"^n_train=0 must be None or a positive integer"),
    ("subset_seed", "-2", r"^subset_seed=-2 must be an integer seed"),
    ("eval.suite", "apgd-ce,apgd-ce", r"^eval\.suite=\('apgd-ce', 'apgd-ce'\) names an attack twice"),
])
def test_issue_examples_fail_with_the_documented_message(key, value, message):
    with pytest.raises(ValueError, match=message):
        with_overrides(get_preset("digits-smoke"), {key: value})


def test_none_and_typed_strings_are_parsed_by_the_declared_type():
    cfg = with_overrides(get_preset("digits-smoke"), {"eval.n_robust": "none", "data_root": "/data/x",
                                                      "std.channels_last": "true", "adv.adv_step_size": "1/8"})
    assert cfg.eval.n_robust is None and cfg.data_root == "/data/x" and cfg.std.channels_last is True
    assert cfg.adv.adv_step_size == 0.125


def test_a_bad_value_fails_before_anything_is_written(tmp_path, capsys):
    for argv in (["reproduce", "--set", "eval.n_robust=-5"], ["fig2", "--set", "eval.paper_steps=0"],
                 ["construct", "D_det", "--seed", "-1"], ["reproduce", "--plan", "--set", "std.epochs=0"]):
        assert main([*argv, "--preset", "digits-smoke", "--out-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "out").exists()
