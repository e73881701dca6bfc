"""The two seams, proved from outside the package (docs/extending.md).

This file defines a construction (``D_noisy``: each image plus Gaussian noise, relabelled with the
standard model's prediction on it) and an evaluation attack (``noise``: random points of the ball,
no gradients), registers each for the duration of a test, and runs them through the command line:
``construct``, ``reproduce`` (build, train on it, evaluate, report, plan) and ``eval`` (the worst
case, its budget option as a flag). Nothing in the package is edited: a construction is its
settings dataclass, its builder and one row; an attack is its run function and one row.

It also holds the one semantics of the worst case to its promise: ``eval`` with the options a
Figure 2 record writes down gives that row's number exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from empirical import constructions, suite
from empirical.construct import BuildRequest, ShardOutput, build_sharded
from empirical.suite import EvalAttack
from foundation import checks as C
from foundation.config import Option
from foundation.records import read_record
from robust_features.cli import main


# ---------------------------------------------------------------------------------------------
# a construction defined here
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoisySettings:
    """Gaussian noise of standard deviation ``sigma`` (pixel units) on every training image."""

    sigma: float = 0.1
    batch_size: int = 256
    seed: int = 0
    shard_size: int = 40
    storage: str = "float32"

    def __post_init__(self) -> None:
        C.positive_float("sigma", self.sigma)
        C.positive_int("batch_size", self.batch_size)
        C.seed("seed", self.seed)
        C.positive_int("shard_size", self.shard_size)


def build_noisy(req: BuildRequest) -> Any:
    """x + sigma * N(0, 1), clamped to [0, 1]; label: the source model's prediction on it."""
    from empirical.evaluate import predict

    s, model = req.settings, req.model

    def make_shard(i: int, xs: torch.Tensor, ys: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> ShardOutput:
        noisy = (xs + s.sigma * torch.randn(xs.shape, generator=gen)).clamp(0, 1)
        t = predict(model, noisy, batch_size=s.batch_size, device=req.device, precision="fp32")
        return ShardOutput(x=noisy, y=t, aux={"label_is_y": t == ys.cpu()})

    def assess(x_st: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"l2": (x_st - x0).flatten(1).norm(dim=1)}

    return build_sharded(req, method="gaussian_noise_relabelled", make_shard=make_shard, assess=assess)


NOISY = constructions.Construction(
    kind="D_noisy", section="noisy", settings=NoisySettings(), build=build_noisy, sources=("standard",),
    recipe="on_ddet", metrics=(("label_is_y_rate", "label = y"), ("l2_mean", "l2 to x (mean)")),
    cost=lambda s, n: (0.0, 2.0 * n), summary="Gaussian noise, labels from the standard model",
    source="tests/empirical/test_extending.py")


def test_a_construction_defined_in_a_test_runs_through_construct_and_reproduce(tmp_path, capsys):
    out = str(tmp_path)
    common = ["--preset", "digits-smoke", "--set", "eval.suite=", "--out-dir", out, "--quiet"]
    with constructions.registered(NOISY):
        # construct: the command lists the kind, its section is a config key, the dataset is built
        assert main(["construct", "D_noisy", *common, "--set", "noisy.sigma=0.2"]) == 0
        rec = read_record(tmp_path / "digits-smoke" / "construct_D_noisy.json")
        assert rec["config"]["noisy"]["sigma"] == 0.2
        assert 0.0 <= rec["metrics"]["label_is_y_rate"] <= 1.0 and rec["metrics"]["l2_mean"] > 0
        manifest = json.loads((tmp_path / "digits-smoke" / "datasets" / "D_noisy" / "manifest.json").read_text())
        assert manifest["settings"]["method"] == "gaussian_noise_relabelled" and manifest["source"]["model"] == "standard"
        # reproduce: built (reused), a model of its recipe trained on it, evaluated, reported
        assert main(["reproduce", *common, "--set", "noisy.sigma=0.2", "--set", "constructions=D_noisy",
                     "--no-figures"]) == 0
        root = tmp_path / "digits-smoke"
        more = read_record(root / "more_constructions.json")
        m = more["metrics"]["D_noisy"]
        assert 0 <= m["clean"] <= 100 and 0 <= m["robust_paper"] <= m["clean"] + 1e-9
        assert m["num_examples"] == 96 and more["constructions"]["D_noisy"]["model"] == "std_Dnoisy"
        timings = read_record(root / "reproduce.json")["metrics"]["stages"]
        assert timings["construct:D_noisy"]["skipped"] and "train:std_Dnoisy" in timings
        report = (root / "report.md").read_text()
        assert "| D_noisy | Gaussian noise, labels from the standard model |" in report
        assert "construct:D_noisy" in report
        # a changed setting of the new section is refused like the paper's own
        capsys.readouterr()
        assert main(["construct", "D_noisy", *common, "--set", "noisy.sigma=0.3"]) == 2
        assert "noisy.sigma 0.2 -> 0.3" in capsys.readouterr().err
        # the cost plan counts it
        assert main(["reproduce", *common, "--set", "constructions=D_noisy", "--plan"]) == 0
        stages = read_record(tmp_path / "digits-smoke" / "plan.json")["metrics"]["stages"]
        assert stages["construct:D_noisy"]["forward_passes"] == 2.0 * 96 and "train:std_Dnoisy" in stages
    # once unregistered it is no construction at all
    assert main(["construct", "D_noisy", *common]) == 2
    assert "invalid choice: 'D_noisy'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# an evaluation attack defined here
# ---------------------------------------------------------------------------------------------
def noise_run(model: Any, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, budget: Any, seed: int,
              precision: str, batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` uniform points of the ball per example; the first misclassified one is kept."""
    from empirical.attacks import random_start

    gen = torch.Generator(device=x.device).manual_seed(seed)
    x_adv, success = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for _ in range(budget["draws"]):
            cand = random_start(x, norm, eps, gen)
            hit = (model(cand).argmax(1) != y) & ~success
            x_adv[hit], success = cand[hit], success | hit
    return x_adv, success


NOISE = EvalAttack(
    name="noise", label="Noise", run=noise_run, white_box=False,
    options=(Option("noise_draws", 3, "random points of the ball per example", C.positive_int),),
    budget_fields={"draws": "noise_draws"}, describe=lambda b: f"Noise-{b['draws']}",
    cost=lambda b, c: (0.0, float(b["draws"])), source="tests/empirical/test_extending.py")


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits-model")
    assert main(["train", "--data", "digits", "--arch", "mlp", "--epochs", "3", "--no-progress", "--eval-steps", "2",
                 "--n-eval", "50", "--out-dir", str(out)]) == 0
    return out / "model.pt"


def test_an_attack_defined_in_a_test_runs_in_eval_and_the_configs_read_its_options(digits_ckpt, tmp_path):
    from empirical.experiments import with_overrides
    from empirical.plan import plan
    from empirical.reproduce import get_preset
    from empirical.settings import EvalConfig

    with suite.registered(NOISE):
        rec_path = tmp_path / "ev.json"
        assert main(["eval", "--checkpoint", str(digits_ckpt), "--threat", "l2:1.0", "--n", "40", "--steps", "3",
                     "--attack", "noise", "--attack", "apgd-ce", "--apgd-steps", "3", "--noise-draws", "4",
                     "--out", str(rec_path)]) == 0
        rec = json.loads(rec_path.read_text())
        assert rec["attack_order"] == ["pgd", "noise", "apgd-ce"]            # the order given, PGD first
        per = rec["metrics"]["robust_accuracy"]["l2_eps1"]
        assert per["worst_case"] <= per["apgd-ce"] <= per["noise"] <= per["pgd"] <= rec["metrics"]["clean_accuracy"]
        assert rec["config"]["worst_case"]["budgets"]["noise"] == {"draws": 4}
        assert rec["budgets_run"]["l2_eps1"]["noise"] == {"draws": 4}
        assert rec["metrics"]["n_attacked"]["l2_eps1"]["noise"] == round(40 * per["pgd"])
        assert "Noise-4" in rec["threats"]["l2_eps1"]
        # the experiment config takes its option as a key, the plan costs it
        cfg = with_overrides(get_preset("digits-smoke"), {"eval.suite": "noise", "eval.noise_draws": "7"})
        assert cfg.eval.suite == ("noise",) and cfg.eval.noise_draws == 7 == EvalConfig(noise_draws=7).noise_draws
        rows = {r["stage"]: r for r in plan(cfg)["stages"]}
        assert rows["eval-suite:standard"]["forward_passes"] == pytest.approx(16 * 7)
    with pytest.raises(ValueError, match="'noise'"):
        EvalConfig(suite=("noise",))


# ---------------------------------------------------------------------------------------------
# one worst case: eval reproduces a Figure 2 record
# ---------------------------------------------------------------------------------------------
def test_eval_with_the_options_a_figure2_record_names_reproduces_its_worst_case_exactly(tmp_path):
    root = tmp_path / "digits-smoke"
    assert main(["reproduce", "--preset", "digits-smoke", "--out-dir", str(tmp_path), "--quiet", "--no-figures"]) == 0
    fig2 = read_record(root / "fig2.json")
    assert fig2["seeds"]["attack_seed"] == fig2["attack_seeds"]["suite"] == fig2["attack_seeds"]["strong"]
    for row in ("std_D", "adv_D"):
        opts = dict(fig2["eval_options"][row])
        sets = []
        for k, v in opts.items():
            if k != "checkpoint":
                text = ",".join(map(str, v)) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)
                sets += ["--set", f"{k}={text}"]
        out = tmp_path / f"{row}.json"
        assert main(["eval", "--checkpoint", str(root / opts["checkpoint"]), *sets, "--out", str(out)]) == 0
        ev = read_record(out)
        (key,) = ev["metrics"]["robust_accuracy"]
        ours = ev["metrics"]["robust_accuracy"][key]
        assert 100 * ours["worst_case"] == pytest.approx(fig2["metrics"][row]["robust_worst"], abs=1e-9)
        assert ev["mask_sha256"][key] == fig2["worst_case"][row]["mask_sha256"]        # the same examples, bit for bit
        assert ev["attack_seeds"][key] == fig2["worst_case"][row]["seeds"]
        assert ev["budgets_run"][key] == fig2["worst_case"][row]["budgets"]
        assert fig2["eval_commands"][row].startswith(f"robust-features eval --checkpoint {opts['checkpoint']} --set ")
