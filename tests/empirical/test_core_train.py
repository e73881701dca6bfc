"""empirical.train / evaluate / checkpoint / models: smoke training, planted ground truth,
resume == uninterrupted, non-finite loss, catastrophic-overfitting guard, checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from empirical.checkpoint import load_model, save_checkpoint
from foundation.records import file_sha256, to_jsonable
from empirical.data import Augment, load_dataset, make_synthetic
from empirical.evaluate import AttackSpec, accuracy, evaluate, predict, robust_accuracy
from empirical.models import ARCHS, build_model, default_arch
from empirical.threat import Attack, ThreatModel
from empirical.train import BOOKKEEPING_FIELDS, NonFiniteLossError, TrainConfig, fit, lr_factor


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _model(d, arch="mlp", seed=0):
    torch.manual_seed(seed)
    return build_model(arch, num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                       mean=d.mean, std=d.std)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_normalises_inside_and_its_head_reads_features(arch):
    c, s = (3, 8)
    m = build_model(arch, num_classes=7, in_channels=c, image_size=s, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    m.eval()
    x = torch.rand(2, c, s, s)
    with torch.no_grad():
        f, out = m.features(x), m(x)
        assert out.shape == (2, 7) and f.shape == (2, m.head.in_features)
        torch.testing.assert_close(out, m.head(f) * m.head_scale)
        # normalisation is the first layer: shifting the mean buffer is the same as shifting x
        m.normalize.mean += 0.1
        torch.testing.assert_close(m(x + 0.1), out, atol=1e-4, rtol=1e-4)


def test_model_factory_errors_and_defaults():
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet7'; valid: fastnet, resnet18, resnet50, vgg16"):
        build_model("resnet7", num_classes=10, in_channels=1, image_size=8, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match=r"need in_channels=3 entries"):
        build_model("mlp", num_classes=10, in_channels=3, image_size=8, mean=(0.5,), std=(0.5,))
    assert default_arch("digits") == "cnn_small" and default_arch("cifar10") == "fastnet"
    assert default_arch("imagefolder:/x") == "fastnet"


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def test_smoke_training_on_digits_reaches_high_accuracy_in_seconds(digits):
    m = _model(digits, "cnn_small")
    res = fit(m, digits.x_train, digits.y_train, TrainConfig(epochs=4, batch_size=64, lr=0.05), device="cpu",
              eval_data=(digits.x_test, digits.y_test), progress=False)
    assert res.history[-1]["test_acc"] > 0.95 and len(res.history) == 4
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert not res.model.training


def test_standard_model_uses_the_nonrobust_feature_adversarial_model_the_robust_one():
    """Planted ground truth (empirical.data.make_synthetic): swap only the non-robust pattern of
    test images to class y+1. The standard model follows the swap; the l2-adversarially trained
    model keeps predicting y (the robust pattern's class) and stays robust at eps=0.5."""
    d = make_synthetic(n_train=1500, n_test=300, seed=0)
    nr = d.meta["nonrobust_pattern"]
    y = d.y_test
    y2 = (y + 1) % d.num_classes
    swapped = (d.x_test - nr[y] + nr[y2]).clamp(0, 1)
    cfg = dict(batch_size=64, lr=0.05)
    std = fit(_model(d, "mlp"), d.x_train, d.y_train, TrainConfig(epochs=20, **cfg), device="cpu",
              progress=False).model
    adv = fit(_model(d, "mlp"), d.x_train, d.y_train,
              TrainConfig(epochs=8, **cfg, adv=ThreatModel("l2", 1.0), adv_steps=3), device="cpu", progress=False).model
    p_std, p_adv = predict(std, swapped), predict(adv, swapped)
    assert float((p_std == y2).float().mean()) > 0.9
    assert float((p_adv == y).float().mean()) > 0.6 and float((p_adv == y2).float().mean()) < 0.15
    attack = Attack("l2", 0.5, steps=10, step_size=0.125)
    rob_std = robust_accuracy(std, d.x_test, y, attack)
    rob_adv = robust_accuracy(adv, d.x_test, y, attack)
    assert accuracy(std, d.x_test, y) > 0.97 and rob_std < 0.1 and rob_adv > 0.6
    # clean accuracy of the robust model is capped by the robust feature's agreement (0.8)
    assert accuracy(adv, d.x_test, y) < d.meta["robust_agreement"] + 0.08


def test_resume_after_an_interruption_gives_the_uninterrupted_weights(digits, tmp_path):
    x, y = digits.x_train[:300], digits.y_train[:300]
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, augment=Augment(crop_padding=1, flip=True),
                      adv=ThreatModel("linf", 0.05), adv_steps=2, seed=4)
    ref = fit(_model(digits, seed=1), x, y, cfg, device="cpu", out_dir=tmp_path / "a", progress=False)

    class Crash(RuntimeError):
        pass

    def crash(epoch, model):
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        fit(_model(digits, seed=1), x, y, cfg, device="cpu", out_dir=tmp_path / "b", progress=False,
            on_epoch_end=crash)
    assert torch.load(tmp_path / "b" / "latest.pt", weights_only=True)["epoch"] == 1
    resumed = fit(_model(digits, seed=99), x, y, cfg, device="cpu", out_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 1
    for (k, a), (_, b) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in ref.history] == [h["train_loss"] for h in resumed.history]
    # a finished run resumes to the same model without training
    again = fit(_model(digits, seed=5), x, y, cfg, device="cpu", out_dir=tmp_path / "b", progress=False)
    assert again.resumed_from_epoch == 3 and torch.equal(again.model.head.weight, ref.model.head.weight)
    with pytest.raises(ValueError, match=r"written by a different training config.*--no-resume"):
        fit(_model(digits), x, y, TrainConfig(epochs=4, batch_size=50, lr=0.05), device="cpu",
            out_dir=tmp_path / "b", progress=False)


def test_an_interrupted_run_resumes_with_other_bookkeeping_but_not_with_another_config(digits, tmp_path):
    # precision / channels_last / compile only change how the run computes (BOOKKEEPING_FIELDS):
    # latest.pt written without them resumes with them; a changed defining field is refused
    from empirical.runs import check_rerun

    assert set(BOOKKEEPING_FIELDS) == {"precision", "channels_last", "compile"}
    x, y = digits.x_train[:200], digits.y_train[:200]
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.05, precision="fp32", channels_last=False)

    class Crash(RuntimeError):
        pass

    def crash(epoch, model):
        if epoch == 2:
            raise Crash

    def interrupted(out):
        with pytest.raises(Crash):
            fit(_model(digits), x, y, cfg, device="cpu", out_dir=out, progress=False, on_epoch_end=crash)
        assert torch.load(out / "latest.pt", weights_only=True)["epoch"] == 1

    for change in ({"precision": "bf16"}, {"channels_last": True}):
        out = tmp_path / next(iter(change))
        interrupted(out)
        res = fit(_model(digits, seed=9), x, y, replace(cfg, **change), device="cpu", out_dir=out, progress=False)
        assert res.resumed_from_epoch == 1 and [h["epoch"] for h in res.history] == [1, 2], change
    # compile: the finished run resumes compiled without training (nothing is compiled before a forward)
    again = fit(_model(digits, seed=9), x, y, replace(cfg, compile=True), device="cpu", out_dir=out, progress=False)
    assert again.resumed_from_epoch == 2
    out = tmp_path / "lr"
    interrupted(out)
    with pytest.raises(ValueError, match=r"written by a different training config.*--no-resume"):
        fit(_model(digits), x, y, replace(cfg, lr=0.07), device="cpu", out_dir=out, progress=False)
    # the CLI's rerun check (resolved_config.json) skips the same fields
    (out / "resolved_config.json").write_text(json.dumps({"train_config": to_jsonable(cfg)}))
    for change in ({"precision": "bf16"}, {"channels_last": True}, {"compile": True}):
        check_rerun(out, {"train_config": replace(cfg, **change)}, resume=True)
    with pytest.raises(ValueError, match=r"holds a run with other settings \(lr 0\.05 -> 0\.07\)"):
        check_rerun(out, {"train_config": replace(cfg, lr=0.07)}, resume=True)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    x, y = digits.x_train[:200], digits.y_train[:200]

    def poison(epoch, model):
        if epoch == 2:
            with torch.no_grad():
                model.head.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"non-finite .* in epoch 2.*Last good checkpoint: .*latest.pt \(epoch 1\)"):
        fit(_model(digits), x, y, TrainConfig(epochs=3, batch_size=50, lr=0.05), device="cpu", out_dir=tmp_path,
            progress=False, on_epoch_end=poison)
    ck = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        fit(_model(digits), x, y, TrainConfig(epochs=2, batch_size=50, lr=1e30, momentum=0.0), device="cpu",
            progress=False)


def test_fgsm_catastrophic_overfitting_guard_restores_the_best_weights(digits):
    x, y = digits.x_train[:400], digits.y_train[:400]
    snapshots = {}

    def sabotage(epoch, model):
        if epoch == 3:                      # simulate the collapse of PGD robustness
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 3)

    def keep(epoch, model):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        sabotage(epoch, model)

    cfg = TrainConfig(epochs=5, batch_size=50, lr=0.05, adv=ThreatModel("l2", 0.5), adv_method="fgsm",
                      co_probe_size=200, co_probe_steps=5)
    res = fit(_model(digits), x, y, cfg, device="cpu", progress=False, on_epoch_end=keep)
    assert res.stopped_early is not None and "catastrophic overfitting guard" in res.stopped_early
    assert len(res.history) == 3 and res.history[-1].get("co_triggered") == 1.0
    best_epoch = max((1, 2), key=lambda e: res.history[e - 1]["probe_pgd_acc"])
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, snapshots[best_epoch][k]), k


def test_schedules():
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1.0, warmup_frac=0.25)
    f = [lr_factor(cfg, i, 100) for i in range(101)]
    assert f[0] == 0 and max(f) == pytest.approx(1.0) and f.index(max(f)) == 25 and f[100] == 0
    step = TrainConfig(epochs=1, batch_size=1, lr=1.0, schedule="step")
    assert [lr_factor(step, i, 100) for i in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_threat_model_parsing_and_bad_configs():
    assert ThreatModel.parse("linf:8/255").eps == pytest.approx(8 / 255)
    assert ThreatModel.parse("l2:0.5") == ThreatModel("l2", 0.5)
    with pytest.raises(ValueError, match=r"norm='l1' is not a threat model; valid: l2, linf"):
        ThreatModel.parse("l1:0.5")
    with pytest.raises(ValueError, match=r"must look like NORM:EPS"):
        ThreatModel.parse("0.5")
    with pytest.raises(ValueError, match=r"eps=-0.5 must be a finite number >= 0"):
        ThreatModel("l2", -0.5)
    with pytest.raises(ValueError, match=r"eps='x/2' is not a number or fraction"):
        ThreatModel.parse("l2:x/2")
    with pytest.raises(ValueError, match=r"schedule='cosine' is not a schedule; valid: onecycle, step, constant"):
        TrainConfig(epochs=1, batch_size=8, lr=0.1, schedule="cosine")
    with pytest.raises(ValueError, match=r"epochs=0 must be a positive integer"):
        TrainConfig(epochs=0, batch_size=8, lr=0.1)


def test_every_train_config_field_rejects_a_bad_value_naming_it():
    import dataclasses

    bad = {"epochs": 0, "batch_size": True, "lr": float("nan"), "momentum": 1.0, "nesterov": "yes",
           "weight_decay": -1e-4, "schedule": "cosine", "label_smoothing": 1.0, "augment": "crop",
           "adv": "l2:0.5", "adv_method": "trades", "adv_steps": 2.0, "adv_step_size": 0.0, "optimizer": "lbfgs",
           "seed": -1, "precision": "fp16", "channels_last": 1, "compile": None, "warmup_frac": 1.0,
           "step_milestones": (0.5, 1.5), "step_gamma": 0.0, "co_guard": "no", "co_tolerance": 0.0,
           "co_probe_size": 0, "co_probe_steps": -2}
    assert set(bad) == {f.name for f in dataclasses.fields(TrainConfig)}
    for name, value in bad.items():
        kw = {"epochs": 1, "batch_size": 8, "lr": 0.1, name: value}
        with pytest.raises(ValueError, match=rf"^{name}="):
            TrainConfig(**kw)


def test_training_rejects_images_outside_the_unit_box(digits):
    with pytest.raises(ValueError, match=r"x_train has values in \[0, 2\]"):
        fit(_model(digits), digits.x_train * 2, digits.y_train, TrainConfig(epochs=1, batch_size=64, lr=0.1),
            device="cpu", progress=False)


# ---------------------------------------------------------------------------------------------
# evaluation and checkpoints
# ---------------------------------------------------------------------------------------------
def test_evaluate_reports_clean_and_robust_accuracy_with_attack_descriptions(digits):
    m = fit(_model(digits), digits.x_train, digits.y_train, TrainConfig(epochs=3, batch_size=64, lr=0.05),
            device="cpu", progress=False).model
    x, y = digits.x_test[:100], digits.y_test[:100]
    specs = [AttackSpec("l2", 0.0, steps=2), AttackSpec("l2", 0.5, steps=10), AttackSpec("l2", 1.5, steps=10, restarts=2,
                                                                                         random_start=True)]
    out = evaluate(m, x, y, attacks=specs, device="cpu")
    r = list(out["robust"].values())
    assert r[0] == pytest.approx(out["clean"])                  # eps = 0 changes nothing
    assert out["clean"] >= r[1] >= r[2]                          # larger budget, lower accuracy
    assert out["attacks"]["l2_eps0.5_pgd10_r1"] == "l2 eps=0.5, PGD-10 (step 0.125), 1 restart"
    assert "random start, 2 restarts" in specs[2].describe()


def test_checkpoint_round_trip_and_tamper_detection(digits, tmp_path):
    m = _model(digits, "cnn_small").eval()
    p = save_checkpoint(m, tmp_path / "m.pt", arch="cnn_small", dataset="digits", num_classes=10, in_channels=1,
                        image_size=8, mean=digits.mean, std=digits.std, extra={"eps": 0.5})
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["arch"] == "cnn_small" and side["sha256"] == file_sha256(p) and side["extra"]["eps"] == 0.5
    loaded = load_model(p)
    x = digits.x_test[:16]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    # plain state_dict: loadable with weights_only=True and nothing else
    assert set(torch.load(p, weights_only=True)) == set(m.state_dict())
    p.write_bytes(p.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(ValueError, match="was changed after saving"):
        load_model(p)
    (tmp_path / "m.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"sidecar .*m.json not found"):
        load_model(p)


def test_fit_with_out_dir_writes_a_checkpoint_that_load_model_restores(digits, tmp_path):
    res = fit(_model(digits), digits.x_train[:200], digits.y_train[:200], TrainConfig(epochs=1, batch_size=50, lr=0.05),
              device="cpu", out_dir=tmp_path, progress=False, dataset="digits")
    for f in ("latest.pt", "model.pt", "model.json"):
        assert (tmp_path / f).is_file()
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["dataset"] == "digits" and meta["extra"]["train_config"]["epochs"] == 1
    loaded = load_model(tmp_path / "model.pt")
    assert torch.equal(predict(loaded, digits.x_test), predict(res.model, digits.x_test))


@pytest.mark.gpu
def test_gpu_bf16_channels_last_training_runs_and_matches_cpu_accuracy(digits):
    m = _model(digits, "cnn_small")
    res = fit(m, digits.x_train, digits.y_train, TrainConfig(epochs=4, batch_size=64, lr=0.05), device="cuda",
              eval_data=(digits.x_test, digits.y_test), progress=False)
    assert res.history[-1]["test_acc"] > 0.95


@pytest.mark.gpu
def test_gpu_compiled_adversarial_training_runs(digits):
    m = _model(digits, "cnn_small")
    res = fit(m, digits.x_train, digits.y_train,
              TrainConfig(epochs=2, batch_size=128, lr=0.05, adv=ThreatModel("l2", 0.5), adv_steps=3, compile=True),
              device="cuda", progress=False)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in res.history)
