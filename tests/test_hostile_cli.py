"""Trust nothing on disk, from the command line (issue 22): what a command reports about a resumed
or rerun training is true, a non-finite loss or a poisoned latest.pt is one line, an output never
replaces an input and is checked writable before any work (naming the command's own flag), a
results folder without good records is one line, library warnings and Ctrl-C never break the one
line, numbers with digit separators and threats with one record key are refused, and --no-verify
loads a checkpoint whose sidecar records no sha256 (and the record says so)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import empirical.runs as runs
import empirical.train as train_module
from empirical.checkpoint import sidecar_path
from empirical.data import load_dataset
from empirical.models import build_model
from empirical.threat import ThreatModel, parse_fraction
from foundation import runtime
from foundation.records import read_record
from paper_figures.__main__ import main as figures_main
from robust_features.cli import main

TRAIN = ["train", "--data", "digits", "--arch", "mlp", "--epochs", "2", "--no-progress", "--eval-steps", "1",
         "--n-eval", "20"]


def _one_line(capsys) -> str:
    """stderr of the last command: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    return err


def _interrupt_after_epoch(monkeypatch, k: int) -> None:
    """Ctrl-C right after latest.pt of epoch ``k`` was written (a kill between two epochs)."""
    real = train_module._save_latest

    def save_then_interrupt(run, epoch):
        real(run, epoch)
        if epoch == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_latest", save_then_interrupt)


# ---------------------------------------------------------------------------------------------
# 1-2: what train.json says about a resumed run and a rerun
# ---------------------------------------------------------------------------------------------
def test_a_resumed_training_records_this_runs_epochs_seconds_and_rate_and_where_it_resumed(tmp_path, monkeypatch,
                                                                                          capsys):
    out = tmp_path / "run"
    _interrupt_after_epoch(monkeypatch, 1)
    assert main([*TRAIN, "--out-dir", str(out)]) == 130
    assert _one_line(capsys) == "robust-features train: interrupted\n"
    assert not (out / "train.json").exists() and (out / "latest.pt").is_file()
    monkeypatch.undo()
    assert main([*TRAIN, "--out-dir", str(out)]) == 0
    rec = read_record(out / "train.json")
    m, n = rec["metrics"], int(load_dataset("digits").x_train.shape[0])
    assert (m["resumed"], m["resumed_from_epoch"], m["epochs_trained_this_run"], m["epochs_completed"]) == (True, 1, 1, 2)
    assert m["train_images_per_second_this_run"] == pytest.approx(1 * n / m["train_seconds_this_run"])
    per_epoch = sum(h["seconds"] for h in rec["history"])
    assert m["train_seconds"] == m["train_seconds_all_runs"] >= per_epoch
    assert m["train_images_per_second"] == m["train_images_per_second_all_runs"] == pytest.approx(
        2 * n / m["train_seconds_all_runs"])
    assert rec["training_runs"].startswith("resumed after epoch 1: 1 epoch(s) trained in this run")


def test_a_rerun_of_a_finished_training_keeps_the_original_training_figures_and_adds_its_own(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out-dir", str(out)]) == 0
    first = read_record(out / "train.json")
    assert not first["metrics"]["resumed"] and first["metrics"]["epochs_trained_this_run"] == 2
    assert main([*TRAIN, "--out-dir", str(out)]) == 0
    again = read_record(out / "train.json")
    kept = ("epochs_completed", "train_seconds", "train_images_per_second", "train_seconds_all_runs",
            "train_images_per_second_all_runs")
    assert {k: again["metrics"][k] for k in kept} == {k: first["metrics"][k] for k in kept}
    assert again["history"] == first["history"]
    m = again["metrics"]
    assert (m["resumed"], m["resumed_from_epoch"], m["epochs_trained_this_run"]) == (True, 2, 0)
    assert m["train_images_per_second_this_run"] is None and m["train_seconds_this_run"] >= 0
    assert again["training_runs"].startswith("rerun of a finished training (latest.pt at epoch 2 of 2): nothing "
                                             "was trained")


# ---------------------------------------------------------------------------------------------
# 3: a non-finite loss, a poisoned latest.pt
# ---------------------------------------------------------------------------------------------
def test_a_non_finite_loss_is_one_line_on_stderr_with_exit_status_3(tmp_path, capsys):
    assert main([*TRAIN, "--lr", "1e30", "--momentum", "0", "--out-dir", str(tmp_path / "run")]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    assert captured.err.startswith("robust-features train: error: non-finite training loss (nan) in epoch 1")
    assert "Last good checkpoint: none" in captured.err


def test_resume_refuses_a_latest_checkpoint_with_non_finite_weights_instead_of_calling_it_good(tmp_path, monkeypatch,
                                                                                              capsys):
    out = tmp_path / "run"
    _interrupt_after_epoch(monkeypatch, 1)
    assert main([*TRAIN, "--out-dir", str(out)]) == 130
    capsys.readouterr()
    monkeypatch.undo()
    state = torch.load(out / "latest.pt", weights_only=True)
    state["model"]["head.weight"].fill_(float("inf"))
    torch.save(state, out / "latest.pt")
    before = (out / "latest.pt").read_bytes()
    assert main([*TRAIN, "--out-dir", str(out)]) == 2
    err = _one_line(capsys)
    assert f"{out / 'latest.pt'} (epoch 1) holds non-finite values (model.head.weight), so it is not a good " \
           "checkpoint to resume from; delete it or pass resume=False / --no-resume" in err, err
    assert "Last good checkpoint" not in err and (out / "latest.pt").read_bytes() == before
    assert main([*TRAIN, "--no-resume", "--out-dir", str(out)]) == 0          # starting over works


def test_a_state_with_a_non_finite_optimizer_entry_is_never_saved_as_latest(tmp_path):
    d = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=d.mean, std=d.std)
    cfg = train_module.TrainConfig(epochs=3, batch_size=50, lr=0.05)
    opt_of = {}
    real = train_module._build_optimizer

    def keep_optimizer(*a, **k):
        opt_of["opt"], sched = real(*a, **k)
        return opt_of["opt"], sched

    def poison_momentum(epoch, m):        # the weights stay finite: only the saved state is bad
        if epoch == 2:
            for s in opt_of["opt"].state.values():
                s["momentum_buffer"].fill_(float("nan"))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "_build_optimizer", keep_optimizer)
        with pytest.raises(train_module.NonFiniteLossError,
                           match=r"non-finite values \(optimizer\.state\.0\.momentum_buffer.*after epoch 2.*"
                                 r"Last good checkpoint: .*latest\.pt \(epoch 1\)"):
            train_module.fit(model, d.x_train[:200], d.y_train[:200], cfg, device="cpu", out_dir=tmp_path,
                             progress=False, on_epoch_end=poison_momentum)
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------------------------------------
# 4: outputs never replace inputs, and are checked writable first
# ---------------------------------------------------------------------------------------------
def _no_work(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the command started working")

    monkeypatch.setattr(runs, "load_for_checkpoint", refuse)


@pytest.mark.parametrize("target, what", [("model.pt", "the checkpoint"), ("model.json", "the checkpoint's sidecar"),
                                          ("c.toml", "the --config file"), ("link.pt", "the checkpoint")])
def test_eval_refuses_an_out_that_is_a_file_it_reads_before_any_work(checkpoint, monkeypatch, capsys, target, what):
    folder = checkpoint.parent
    (folder / "c.toml").write_text("steps = 1\n")
    os.link(checkpoint, folder / "link.pt")                               # a hard link is the same file
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _no_work(monkeypatch)
    out = folder / target
    assert main(["eval", "--checkpoint", str(checkpoint), "--config", str(folder / "c.toml"), "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"robust-features eval: error: --out {out} would replace {what}"), err
    assert "which `eval` reads; an output never replaces an input: choose another --out\n" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_eval_refuses_a_default_record_that_would_replace_the_checkpoints_sidecar(checkpoint, monkeypatch, capsys):
    ck = checkpoint.with_name("eval.pt")                                  # its sidecar is eval.json
    checkpoint.rename(ck)
    sidecar_path(checkpoint).rename(sidecar_path(ck))
    _no_work(monkeypatch)
    assert main(["eval", "--checkpoint", str(ck)]) == 2
    assert (f"the default --out {ck.with_name('eval.json')} (eval.json beside the checkpoint) would replace the "
            "checkpoint's sidecar, which `eval` reads") in _one_line(capsys)


@pytest.mark.parametrize("name", ["adversarial", "attack"])
def test_attack_refuses_an_out_dir_whose_files_would_replace_the_checkpoint(checkpoint, monkeypatch, capsys, name):
    ck = checkpoint.with_name(f"{name}.pt")
    checkpoint.rename(ck)
    sidecar_path(checkpoint).rename(sidecar_path(ck))
    _no_work(monkeypatch)
    assert main(["attack", "--checkpoint", str(ck), "--out-dir", str(ck.parent)]) == 2
    written, what = (("adversarial.pt", "the checkpoint") if name == "adversarial" else
                     ("attack.json", "the checkpoint's sidecar"))
    assert (f"{written} in --out-dir {ck.parent} would replace {what} {ck.parent / written}, which `attack` reads; "
            "an output never replaces an input: choose another --out-dir") in _one_line(capsys)


def test_a_read_only_checkpoint_folder_fails_eval_at_once_naming_its_out_flag(checkpoint, monkeypatch, capsys):
    real = os.access
    monkeypatch.setattr(runtime.os, "access",
                        lambda p, mode, **k: False if Path(p) == checkpoint.parent else real(p, mode, **k))
    _no_work(monkeypatch)
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 2
    err = _one_line(capsys)
    assert f"[EACCES] ({checkpoint.parent}): permission denied; choose a folder you can write (--out, --cache-dir)" \
           in err and "--out-dir" not in err, err
    assert not checkpoint.with_name("eval.json").exists()


# ---------------------------------------------------------------------------------------------
# 5: python -m paper_figures
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, message", [
    ("missing", "--results {p} does not exist"),
    ("file", "--results {p} is a file, not a folder of records"),
    ("empty", "--results {p} is an empty folder; expected records"),
    ("no-records", "--results {p} holds no record a figure module reads"),
    ("truncated", "record {p}/digits/fig2.json is truncated or not valid JSON"),
    ("truncated-theory", "record {p}/theory/report.json is truncated or not valid JSON"),
])
def test_paper_figures_refuses_a_results_folder_without_good_records_in_one_line(tmp_path, capsys, case, message):
    p = tmp_path / "results"
    if case == "file":
        p.write_text("{}")
    elif case != "missing":
        p.mkdir()
    if case == "no-records":
        (p / "notes.txt").write_text("nothing here")
        (p / "misc").mkdir()
        (p / "misc" / "other.json").write_text("{}")
    if case.startswith("truncated"):
        sub = p / ("theory" if case == "truncated-theory" else "digits")
        sub.mkdir()
        (sub / ("report.json" if case == "truncated-theory" else "fig2.json")).write_text('{"schema": "robust-fe')
    assert figures_main(["--results", str(p)]) == 2
    err = _one_line(capsys)
    assert err.startswith("python -m paper_figures: error: ") and message.format(p=p) in err, err
    assert not list(p.rglob("*.png")) if p.is_dir() else True


# ---------------------------------------------------------------------------------------------
# 6: stderr hygiene: library warnings, Ctrl-C
# ---------------------------------------------------------------------------------------------
def test_a_torch_warning_never_precedes_the_refusal_of_a_pickled_checkpoint(checkpoint, tmp_path):
    # the console script as users run it (no pytest filters): torch warns about the pickle protocol
    bad = tmp_path / "pickled.pt"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    meta = json.loads(sidecar_path(checkpoint).read_text())
    sidecar_path(bad).write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    proc = subprocess.run([sys.executable, "-m", "robust_features", "eval", "--checkpoint", str(bad), "--no-verify"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"robust-features eval: error: checkpoint {bad} is damaged or not a torch.save file")


def test_library_warnings_are_held_back_from_a_failure_and_shown_after_a_success(checkpoint, monkeypatch, capsys):
    def warn_then(fail: bool):
        def run(*a, **k):
            warnings.warn("a library grumbles", UserWarning)
            if fail:
                raise ValueError("refused")
            return {"metrics": {"clean_accuracy": 1.0, "n": 1, "robust_accuracy": {}}}
        return run

    argv = ["eval", "--checkpoint", str(checkpoint), "--out", str(checkpoint.with_name("e.json"))]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(runs, "run_eval", warn_then(True))
        assert main(argv) == 2
        assert _one_line(capsys) == "robust-features eval: error: refused\n"
        monkeypatch.setattr(runs, "run_eval", warn_then(False))
        with pytest.warns(UserWarning, match="a library grumbles"):
            assert main(argv) == 0
    # a filter that makes warnings errors still does (the test suite's filterwarnings = error)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="a library grumbles"):
            main(argv)


@pytest.mark.parametrize("command, module, function", [
    ("train", "empirical.runs", "run_train"), ("eval", "empirical.runs", "run_eval"),
    ("attack", "empirical.runs", "run_attack"), ("construct", "empirical.experiments", "run_construct"),
    ("reproduce", "empirical.reproduce", "run_reproduce"),
])
def test_ctrl_c_in_any_command_is_one_line_interrupted_with_exit_status_130(tmp_path, checkpoint, monkeypatch, capsys,
                                                                            command, module, function):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules.get(module) or __import__(module, fromlist=["_"]), function, interrupted)
    out = str(tmp_path / "out")
    argv = {"train": [*TRAIN, "--out-dir", out],
            "eval": ["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e.json")],
            "attack": ["attack", "--checkpoint", str(checkpoint), "--out-dir", out],
            "construct": ["construct", "D_det", "--preset", "digits-smoke", "--quiet", "--out-dir", out],
            "reproduce": ["reproduce", "--preset", "digits-smoke", "--quiet", "--no-figures", "--out-dir", out]}[command]
    assert main(argv) == 130
    assert _one_line(capsys) == f"robust-features {command}: interrupted\n"


def test_ctrl_c_in_a_step_of_all_stops_all_with_one_line(tmp_path, monkeypatch, capsys):
    import empirical.reproduce
    import theory.report

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    later = []
    monkeypatch.setattr(theory.report, "run_report", interrupted)
    monkeypatch.setattr(empirical.reproduce, "run_reproduce", lambda *a, **k: later.append(1))
    assert main(["all", "--smoke", "--skip", "simulate", "--out-dir", str(tmp_path)]) == 130
    assert _one_line(capsys) == "robust-features all: interrupted\n"
    assert not later and not (tmp_path / "all.json").exists()       # the steps after it did not run


# ---------------------------------------------------------------------------------------------
# 7: argument parsing
# ---------------------------------------------------------------------------------------------
def test_digit_separators_in_a_budget_are_refused_not_read_as_another_number(tmp_path, checkpoint, capsys):
    for text in ("1_0", "0.2_5", "8/2_55"):
        with pytest.raises(ValueError, match=r"'_' digit separators are not accepted"):
            parse_fraction(text)
        with pytest.raises(ValueError, match=rf"eps='{text}' is not a number or fraction"):
            ThreatModel.parse(f"l2:{text}")
    cases = [(["eval", "--checkpoint", str(checkpoint), "--threat", "l2:1_0"], "eps='1_0'"),
             (["attack", "--checkpoint", str(checkpoint), "--threat", "linf:8/2_55", "--out-dir", str(tmp_path / "a")],
              "eps='8/2_55'"),
             ([*TRAIN, "--adv", "l2:0.5_0", "--out-dir", str(tmp_path / "t")], "eps='0.5_0'"),
             ([*TRAIN, "--eval-eps", "0.25,1_0", "--out-dir", str(tmp_path / "t")], "eval_eps='1_0'")]
    for argv, value in cases:
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert f"{value} is not a number or fraction such as 0.5 or 8/255 ('_' digit separators are not accepted)" \
               in err, err
    assert not (tmp_path / "t").exists() and not (tmp_path / "a").exists()
    # every number of every command: flags (int and float) and --set
    cases = [(["eval", "--checkpoint", str(checkpoint), "--steps", "1_0"],
              "argument --steps: must be an integer without '_' separators, got '1_0'"),
             (["eval", "--checkpoint", str(checkpoint), "--step-size", "1_0"],
              "argument --step-size: must be a finite number such as 0.5 or 8/255, got '1_0'"),
             (["eval", "--checkpoint", str(checkpoint), "--set", "steps=1_0"],
              "steps='1_0' is not a number ('_' digit separators are not accepted)"),
             (["reproduce", "--preset", "digits-smoke", "--seed", "1_0", "--out-dir", str(tmp_path / "r")],
              "argument --seed: must be an integer without '_' separators, got '1_0'"),
             (["theory", "report", "--n-samples", "1_000", "--out-dir", str(tmp_path / "th")],
              "argument --n-samples: must be an integer without '_' separators, got '1_000'")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in _one_line(capsys)
    assert not (tmp_path / "r").exists() and not (tmp_path / "th").exists()


def test_two_threats_with_one_record_key_are_refused_naming_both(tmp_path, checkpoint, capsys):
    assert main(["eval", "--checkpoint", str(checkpoint), "--threat", "l2:0.25", "--threat", "l2:0.2500001",
                 "--out", str(tmp_path / "e.json")]) == 2
    assert ("threat: l2:0.25 and l2:0.2500001 are one threat model in the records (l2 eps=0.25, key l2_eps0.25), so "
            "one result would replace the other; give each threat model once") in _one_line(capsys)
    assert main([*TRAIN, "--eval-eps", "0.5,1/2", "--out-dir", str(tmp_path / "t")]) == 2
    assert "eval_eps='0.5,1/2': 0.5 and 1/2 are one budget in the records (eps0.5)" in _one_line(capsys)
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "t").exists()


def test_a_config_that_is_a_folder_is_named_a_folder_not_missing(tmp_path, checkpoint, capsys):
    folder = tmp_path / "conf"
    folder.mkdir()
    for argv in (["eval", "--checkpoint", str(checkpoint), "--config", str(folder)],
                 [*TRAIN, "--config", str(folder), "--out-dir", str(tmp_path / "t")],
                 ["construct", "D_det", "--preset", "digits-smoke", "--config", str(folder), "--out-dir",
                  str(tmp_path / "w")]):
        assert main(argv) == 2
        err = _one_line(capsys)
        assert f"error: --config {folder} is a folder, not a TOML file" in err and "does not exist" not in err, err
    assert main(["eval", "--checkpoint", str(checkpoint), "--config", str(tmp_path / "none.toml")]) == 2
    assert f"--config {tmp_path / 'none.toml'} does not exist" in _one_line(capsys)


# ---------------------------------------------------------------------------------------------
# 8: --no-verify
# ---------------------------------------------------------------------------------------------
def test_no_verify_loads_a_checkpoint_whose_sidecar_records_no_sha256_and_the_record_says_so(tmp_path, checkpoint,
                                                                                            capsys):
    small = ["--n", "10", "--steps", "1"]
    assert main(["eval", "--checkpoint", str(checkpoint), *small, "--out", str(tmp_path / "v.json")]) == 0
    assert read_record(tmp_path / "v.json")["config"]["verified"] is True
    side = sidecar_path(checkpoint)
    side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "sha256"}))
    assert main(["eval", "--checkpoint", str(checkpoint), *small, "--out", str(tmp_path / "r.json")]) == 2
    assert f"the sidecar of {checkpoint} records no sha256" in _one_line(capsys)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(checkpoint), *small, "--no-verify", "--out", str(tmp_path / "u.json")]) == 0
    assert read_record(tmp_path / "u.json")["config"]["verified"] is False
    assert main(["attack", "--checkpoint", str(checkpoint), *small, "--no-verify", "--out-dir", str(tmp_path / "a")]) == 0
    assert read_record(tmp_path / "a" / "attack.json")["config"]["verified"] is False
