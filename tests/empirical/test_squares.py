"""Nakkiran's adversarial squares (empirical/squares.py): the settings, the [0, 1] units, and a
smoke run of train + attack whose numbers are checked against what must hold."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical.squares import (
    OPTIMIZERS,
    SCHEDULES,
    SquaresConfig,
    pixel_std01,
    published,
    run_squares,
    smoke,
    to_unit_pixels,
    unit_eps,
    unit_scale,
)
from simulate.squares import sample_squares

SWEEP = (0.5, 0.89, 1.1, 2.2)   # distribution units: below 1 - a (twice), 1 + a, the whole box


@pytest.fixture(scope="module")
def record():
    """One smoke run (8x8 images, ~2 s on one core) with a budget sweep up to the whole [0, 1] box;
    20 attack steps so that the largest budget can walk to the other class's image."""
    return run_squares(smoke(SquaresConfig(attack_steps=20, eps_sweep=SWEEP, epoch_probe=20)))


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


# ---------------------------------------------------------------------------------------------
# the smoke run
# ---------------------------------------------------------------------------------------------
def test_smoke_run_returns_finite_json_numbers_in_range(record):
    json.dumps(record, allow_nan=False)            # strict JSON: numbers, no NaN
    assert all(math.isfinite(v) for v in _numbers(record))
    net, lin = record["network"], record["linear"]
    for key in ("train_accuracy", "train_accuracy_clean_sign", "test_accuracy", "test_accuracy_clean_sign",
                "robust_accuracy"):
        assert 0.0 <= net[key] <= 1.0 and 0.0 <= lin.get(key, 0.0) <= 1.0
    assert 0.0 <= net["flip"]["fraction"] <= 1.0 and net["flip"]["stderr"] > 0 and net["flip"]["n"] == 200
    # the smoke network learns the sign (it is not asked to memorise the label noise)
    assert net["test_accuracy_clean_sign"] >= 0.9
    assert net["robust_accuracy"] <= net["test_accuracy"] + 1e-12
    assert record["config"]["image_size"] == 8 and record["units"]["d"] == 192
    assert len(record["history"]) == 4 and [p["epoch"] for p in record["probe"]] == [1, 2, 3, 4]
    assert record["seconds"]["total"] >= record["seconds"]["train"] > 0


def test_the_linear_classifier_is_exact_its_flips_are_zero_below_one_minus_a(record):
    lin, cert = record["linear"], record["certificate"]
    assert lin["test_accuracy_clean_sign"] == 1.0                 # sign(1^T x) is the clean sign
    assert lin["flip"]["fraction"] == 0.0 and lin["robust_accuracy"] == lin["test_accuracy"]
    assert lin["closed_form_flip_probability"] == 0.0 and lin["closed_form_robust_accuracy"] == pytest.approx(0.9)
    assert cert["linear_certificate"] == pytest.approx(0.9)
    assert min(cert["min_radius_test"], cert["min_radius_train"]) >= 0.9
    by_eps = {row["eps"]: row["linear_flip"]["fraction"] for row in record["sweep"]}
    assert by_eps[0.5] == 0.0 and by_eps[0.89] == 0.0           # eps < 1 - a: no point flips
    assert by_eps[1.1] == 1.0 and by_eps[2.2] == 1.0             # eps >= 1 + a: every point does


def test_pgd_moves_points_within_the_budget_and_flips_everything_given_the_whole_box(record):
    net, units = record["network"], record["units"]
    assert 0 < net["max_linf01"] <= units["eps01"] + 1e-6         # the attack moved, inside the ball
    whole = {row["eps"]: row for row in record["sweep"]}[2.2]
    assert whole["eps01"] == pytest.approx(1.0)
    # with the whole [0, 1] box an attack can paint the other class's image: a PGD that did nothing
    # (or stayed in a tiny ball) flips nothing
    assert whole["flip"]["fraction"] >= 0.9 and whole["max_linf01"] > 0.5
    for row in record["sweep"]:
        assert row["max_linf01"] <= row["eps01"] + 1e-6


def test_a_seed_reproduces_the_run_and_the_per_epoch_probe_does_not_disturb_training():
    cfg = replace(smoke(), epochs=2, eps=0.0, attack_steps=1)
    a, b = run_squares(cfg), run_squares(replace(cfg, epoch_probe=10))
    # the probe attacks in eval mode between epochs and hands the model back in train mode
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    for key in ("train_accuracy", "test_accuracy", "test_accuracy_clean_sign"):
        assert a["network"][key] == b["network"][key]
    assert a["linear"] == b["linear"] and a["network"]["flip"]["fraction"] == 0.0   # eps = 0 flips nothing
    assert a["probe"] == [] and len(b["probe"]) == 2


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------
@settings(max_examples=30)
@given(a=st.floats(0.0, 0.99), eps=st.floats(0.0, 0.5), seed=st.integers(0, 2**32 - 1))
def test_the_unit_map_keeps_pixels_in_range_and_scales_linf_distances_by_one_over_2_1_plus_a(a, eps, seed):
    s = sample_squares(20, shape=(3, 4, 4), pixel_noise=a, seed=seed)
    x01 = to_unit_pixels(s.x, a)
    assert x01.dtype == np.float32 and x01.min() >= 0.0 and x01.max() <= 1.0
    # the ends of the support go to the ends of the box, 0 to the middle
    np.testing.assert_allclose(to_unit_pixels(np.array([-(1 + a), 0.0, 1 + a]), a), [0.0, 0.5, 1.0], atol=1e-6)
    # an linf move of eps (inside the support) is a move of eps / (2 (1 + a)) = unit_eps in [0, 1] units
    x = np.clip(s.x, -(1 + a) + eps, 1 + a - eps)
    moved = to_unit_pixels(x + eps, a) - to_unit_pixels(x, a)
    np.testing.assert_allclose(moved, unit_eps(eps, a), atol=2e-6)
    assert unit_eps(eps, a) == pytest.approx(eps / unit_scale(a)) and unit_scale(a) == pytest.approx(2 * (1 + a))


def test_the_default_budget_and_attack_in_both_units():
    cfg = SquaresConfig()
    assert cfg.eps == 0.01 and cfg.eps01 == pytest.approx(0.01 / 2.2)
    atk = cfg.attack()
    assert atk.norm == "linf" and atk.eps == pytest.approx(0.01 / 2.2) and atk.steps == 10
    assert atk.step == pytest.approx(2.5 * 0.01 / 2.2 / 10) and not atk.random_start
    assert replace(cfg, attack_step_size=0.002).attack().step == pytest.approx(0.002 / 2.2)
    assert cfg.attack(2.2).eps == pytest.approx(1.0)
    # the pixels' population std in [0, 1] units: sqrt(1 + a^2/3) / 2.2, matched by samples
    x01 = to_unit_pixels(sample_squares(2000, shape=(16,), seed=0).x, 0.1)
    assert x01.std() == pytest.approx(pixel_std01(0.1), rel=0.02) and x01.mean() == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
def test_defaults_published_setting_and_smoke_variant():
    cfg = SquaresConfig()
    assert (cfg.n_train, cfg.n_test, cfg.image_size, cfg.channels, cfg.pixel_noise, cfg.label_noise,
            cfg.batch_size, cfg.optimizer) == (10_000, 1_000, 32, 3, 0.1, 0.1, 128, "adam")
    assert cfg.d == 3072 and cfg.shape == (3, 32, 32)
    pub = published()
    assert (pub.arch, pub.lr, pub.epochs, pub.schedule, pub.optimizer, pub.batch_size, pub.weight_decay) == \
        ("resnet18", 1e-5, 20, "constant", "adam", 128, 0.0)
    assert published(seed=3).seed == 3
    s = smoke(cfg)
    assert s.image_size == 8 and s.n_train < cfg.n_train and s.arch == cfg.arch and s.eps == cfg.eps
    tc = cfg.train_config()
    assert (tc.optimizer, tc.lr, tc.epochs, tc.batch_size, tc.schedule, tc.weight_decay, tc.seed) == \
        ("adam", cfg.lr, cfg.epochs, 128, cfg.schedule, 0.0, 0)


def test_torch_free_vocabularies_agree_with_the_trainer():
    from empirical.train import OPTIMIZERS as TRAIN_OPTIMIZERS
    from empirical.train import SCHEDULES as TRAIN_SCHEDULES

    assert OPTIMIZERS == TRAIN_OPTIMIZERS and SCHEDULES == TRAIN_SCHEDULES


def test_the_settings_import_no_torch():
    code = "import sys, empirical.squares as s; s.SquaresConfig(); s.smoke(); s.published(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("change, message", [
    ({"n_train": 1}, r"n_train=1 must be an integer >= 2"),
    ({"n_test": 0}, r"n_test=0 must be an integer >= 2"),
    ({"image_size": 0}, r"image_size=0 must be a positive integer"),
    ({"epochs": 2.0}, r"epochs=2.0 must be a positive integer"),
    ({"pixel_noise": 1.0}, r"pixel_noise=1.0 must be a number in \[0, 1\)"),
    ({"label_noise": -0.1}, r"label_noise=-0.1 must be a number in \[0, 1\]"),
    ({"arch": ""}, r"arch='' must be a non-empty string"),
    ({"optimizer": "rmsprop"}, r"optimizer='rmsprop' is not an optimizer; valid: sgd, adam"),
    ({"schedule": "cosine"}, r"schedule='cosine' is not a schedule; valid: onecycle, step, constant"),
    ({"lr": 0.0}, r"lr=0.0 must be a positive finite number"),
    ({"eps": -0.01}, r"eps=-0.01 must be a finite number >= 0"),
    ({"eps_sweep": (0.1, math.inf)}, r"eps_sweep=\(0.1, inf\) holds inf; every budget must be a finite number >= 0"),
    ({"eps_sweep": 0.1}, r"eps_sweep=0.1 must be a tuple of budgets"),
    ({"epoch_probe": 1}, r"epoch_probe=1 must be 0 \(off\) or an integer >= 2"),
    ({"seed": -1}, r"seed=-1 must be an integer seed"),
    ({"precision": "fp16"}, r"precision='fp16' is not a precision; valid: auto, fp32, bf16"),
    ({"channels_last": "yes"}, r"channels_last='yes' must be true, false or None"),
    ({"attack_step_size": 0.0}, r"attack_step_size=0.0 must be None or a positive finite number"),
])
def test_bad_settings_are_one_value_error_naming_the_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        SquaresConfig(**change)


def test_run_squares_refuses_what_is_not_a_config_and_an_unknown_device():
    with pytest.raises(TypeError, match="cfg must be a SquaresConfig"):
        run_squares({"n_train": 10})
    with pytest.raises(ValueError, match=r"device='gpu' is not a device"):
        run_squares(smoke(), device="gpu")
