"""A Recipe is the preset-facing part of TrainConfig: every field maps onto one, and the checks
are TrainConfig's own (experiments.RECIPE_TO_TRAIN_CONFIG)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from empirical.data import Augment
from empirical.experiments import RECIPE_TO_TRAIN_CONFIG, Recipe
from empirical.threat import ThreatModel
from empirical.train import TrainConfig


def test_every_recipe_field_sets_the_train_config_field_it_names():
    train_fields = {f.name for f in fields(TrainConfig)}
    for f in fields(Recipe):
        assert RECIPE_TO_TRAIN_CONFIG.get(f.name, f.name) in train_fields, f.name
    odd = dict(epochs=3, batch_size=17, lr=0.03, schedule="step", optimizer="adam", momentum=0.5, weight_decay=1e-3,
               label_smoothing=0.1, crop_padding=2, flip=True, adv_norm="linf", adv_eps=0.1, adv_steps=3,
               adv_step_size=0.05, precision="bf16", channels_last=True)
    assert set(odd) == {f.name for f in fields(Recipe)}          # a new Recipe field must be added here
    tc = Recipe(**odd).to_train_config(seed=9)
    for name, value in odd.items():
        if name not in RECIPE_TO_TRAIN_CONFIG:
            assert getattr(tc, name) == value, name
    assert tc.augment == Augment(crop_padding=2, flip=True) and tc.adv == ThreatModel("linf", 0.1) and tc.seed == 9
    assert Recipe(epochs=1, adv_eps=0.5, adv_steps=10).to_train_config(0).adv_step_size == 2.5 * 0.5 / 10


@pytest.mark.parametrize("kw, message", [
    (dict(epochs=0), r"^epochs=0 must be a positive integer$"),
    (dict(epochs=1, schedule="cos"), r"^schedule='cos' is not a schedule; valid: onecycle, step, constant$"),
    (dict(epochs=1, momentum=1.0), r"^momentum=1.0 must be a number in \[0, 1\)$"),
    (dict(epochs=1, adv_norm="l3"), r"^adv_norm='l3' is not a threat model; valid: l2, linf$"),
    (dict(epochs=1, adv_eps=0.5, adv_steps=0), r"^adv_steps=0 must be a positive integer$"),
    (dict(epochs=1, crop_padding=-1), r"^crop_padding=-1 must be"),
])
def test_a_bad_recipe_field_is_one_line_naming_it(kw, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**kw)
