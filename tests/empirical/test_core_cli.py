"""`robust-features train / eval / attack`: records, checkpoints, TOML config, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from empirical.checkpoint import load_model
from robust_features.cli import main
from foundation.records import read_record


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--data", "digits", "--arch", "mlp", "--epochs", "3", "--out-dir", str(out),
               "--no-progress", "--eval-eps", "0,0.5", "--n-eval", "120"])
    assert rc == 0
    return out


def test_train_writes_a_record_a_checkpoint_and_the_resolved_config(trained):
    rec = read_record(trained / "train.json")
    assert rec["experiment"] == "empirical.train" and rec["provenance"]["device"] == "cpu"
    assert rec["provenance"]["wall_seconds"] > 0
    m = rec["metrics"]
    assert m["clean_accuracy"] > 0.9 and m["epochs_completed"] == 3 and m["n_robust_eval"] == 120
    r = m["robust_accuracy"]
    assert set(r) == {"l2_eps0_pgd20_r1", "l2_eps0.5_pgd20_r1"} and r["l2_eps0_pgd20_r1"] >= r["l2_eps0.5_pgd20_r1"]
    assert rec["attacks"]["l2_eps0.5_pgd20_r1"] == "l2 eps=0.5, PGD-20 (step 0.0625), 1 restart"
    assert rec["config"]["arch"] == "mlp" and rec["config"]["batch_size"] == 64 and rec["seeds"]["seed"] == 0
    assert len(rec["history"]) == 3
    assert json.loads((trained / "resolved_config.json").read_text())["train_config"]["epochs"] == 3
    assert load_model(trained / "model.pt").arch_config["arch"] == "mlp"


def test_eval_and_attack_on_the_checkpoint(trained, capsys):
    assert main(["eval", "--checkpoint", str(trained / "model.pt"), "--threat", "l2:0.5", "--threat", "linf:8/255",
                 "--n", "100", "--steps", "10"]) == 0
    rec = read_record(trained / "eval.json")
    assert rec["metrics"]["n"] == 100 and set(rec["metrics"]["robust_accuracy"]) == {
        "l2_eps0.5_pgd10_r1", "linf_eps0.0313725_pgd10_r1"}
    assert rec["config"]["data"] == "digits" and rec["config"]["checkpoint_sha256"]
    out = trained / "attack"
    assert main(["attack", "--checkpoint", str(trained / "model.pt"), "--threat", "l2:3", "--targeted", "next",
                 "--steps", "40", "--step-size", "0.2", "--n", "64", "--out-dir", str(out)]) == 0
    rec = read_record(out / "attack.json")
    assert rec["metrics"]["success_rate"] > 0.9 and rec["metrics"]["max_l2"] <= 3 + 1e-4
    t = torch.load(out / "adversarial.pt", weights_only=True)
    assert t["x_adv"].shape == (64, 1, 8, 8) and torch.equal(t["attack_labels"], (t["y"] + 1) % 10)
    assert "success" in capsys.readouterr().out


def test_train_resumes_a_finished_run_and_takes_options_from_toml(tmp_path, trained):
    cfg = tmp_path / "train.toml"
    cfg.write_text('[train]\ndata = "digits"\narch = "mlp"\nepochs = 5\nn-train = 300\nadv = "linf:4/255"\n'
                   'adv-steps = 2\nprogress = false\nn_eval = 50\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out-dir", str(out), "--seed", "3", "--epochs", "2"]) == 0
    rec = read_record(out / "train.json")
    c = rec["config"]
    assert (c["epochs"], c["n_train"], c["adv"], c["seed"]) == (2, 300, "linf:4/255", 3)     # flags beat the file
    assert c["train_config"]["adv"] == {"norm": "linf", "eps": pytest.approx(4 / 255)}
    assert main(["train", "--config", str(cfg), "--out-dir", str(out), "--seed", "3", "--epochs", "2"]) == 0
    w1 = torch.load(out / "model.pt", weights_only=True)
    assert read_record(out / "train.json")["metrics"]["epochs_completed"] == 2
    assert all(torch.equal(v, w1[k]) for k, v in load_model(out / "model.pt").state_dict().items())


def test_bad_cli_input_gives_one_clear_line(tmp_path, capsys):
    cases = [
        (["train", "--data", "digits", "--arch", "resnet7", "--out-dir", str(tmp_path / "a")],
         r"unknown architecture 'resnet7'; valid: fastnet, resnet18"),
        (["train", "--data", "digits", "--adv", "l3:0.5", "--out-dir", str(tmp_path / "b")],
         r"norm='l3' is not a threat model; valid: l2, linf"),
        (["train", "--data", "digits", "--adv", "l2:-1", "--out-dir", str(tmp_path / "c")],
         r"eps=-1.0 must be a finite number >= 0"),
        (["train", "--data", "cifar10", "--data-root", str(tmp_path / "none"), "--out-dir", str(tmp_path / "d")],
         r"expected layout ROOT/cifar-10-batches-py"),
        (["train", "--data", "mnist", "--out-dir", str(tmp_path / "e")], r"unknown dataset 'mnist'; valid:"),
    ]
    for argv, pattern in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert __import__("re").search(pattern, err), (pattern, err)
    bad = tmp_path / "bad.toml"
    bad.write_text('epochz = 3\n')
    assert main(["train", "--config", str(bad), "--out-dir", str(tmp_path / "f")]) == 2
    assert "unknown config key(s) epochz" in capsys.readouterr().err
    bad.write_text('epochs = "three"\n')
    assert main(["train", "--config", str(bad), "--out-dir", str(tmp_path / "g")]) == 2
    assert "epochs='three'" in capsys.readouterr().err


def test_version_does_not_import_torch():
    code = "import sys; from robust_features.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
