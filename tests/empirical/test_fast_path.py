"""The CUDA fast path (bf16 autocast, channels_last, torch.compile) switched on for the CPU, checked
against fp32 eager at tiny size: training, PGD, inversion, a targeted construction, evaluation.

Stated tolerances (digits, 360 test images; one image is 0.28 points):
* training: test accuracy within 5 points of fp32's, same init and batches;
* PGD / evaluation: attack success and robust accuracy within 3 points of fp32's;
* targeted construction: source-model success within 3 points of fp32's;
* inversion: mean final representation loss within 5% of the starting distance of fp32's.
benchmarks/gpu_run.sh runs this file on the GPU too (there ``auto`` precision is the bf16 path).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from empirical.attacks import match_representation, pgd
from empirical.construct import TargetedConfig, build_targeted_dataset
from empirical.data import load_dataset
from empirical.evaluate import robust_accuracy
from empirical.models import build_model
from empirical.threat import Attack
from empirical.train import TrainConfig, fit

FAST = {"precision": "bf16", "channels_last": True}
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _net(d):
    torch.manual_seed(0)
    return build_model("cnn_small", num_classes=10, in_channels=1, image_size=8, mean=d.mean, std=d.std)


@pytest.fixture(scope="module")
def trained(digits):
    m = _net(digits)
    fit(m, digits.x_train, digits.y_train, TrainConfig(epochs=6, batch_size=64, lr=0.05, precision="fp32"),
        device=DEV, progress=False)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _acc(m, x, y, **kw):
    with torch.no_grad():
        return float((m(x.to(DEV)).argmax(1).cpu() == y).float().mean())


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compiled"])
def test_fast_training_reaches_the_fp32_accuracy(digits, compile_):
    if compile_:
        pytest.importorskip("torch._inductor")
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, precision="fp32")
    ref = fit(_net(digits), digits.x_train, digits.y_train, cfg, device=DEV, progress=False).model
    fast_cfg = replace(cfg, compile=compile_, **FAST)
    fast = fit(_net(digits), digits.x_train, digits.y_train, fast_cfg, device=DEV, progress=False).model
    assert fast.body[0][0].weight.is_contiguous(memory_format=torch.channels_last)   # the fast path ran
    a_ref, a_fast = _acc(ref.eval(), digits.x_test, digits.y_test), _acc(fast.eval(), digits.x_test, digits.y_test)
    print(f"fast path: training ({'compiled' if compile_ else 'eager'}) test accuracy fp32 {a_ref:.4f}, "
          f"bf16+channels_last {a_fast:.4f}")
    assert a_ref > 0.85
    assert abs(a_fast - a_ref) <= 0.05, (a_fast, a_ref)


def test_bf16_channels_last_pgd_is_as_strong_as_fp32(digits, trained):
    x, y = digits.x_test.to(DEV), digits.y_test.to(DEV)
    attack = Attack("l2", 0.75, steps=10, step_size=0.2)
    ref = pgd(trained, x, y, attack, precision="fp32")
    cl = trained.to(memory_format=torch.channels_last)
    fast = pgd(cl, x.contiguous(memory_format=torch.channels_last), y, attack, precision="bf16")
    trained.to(memory_format=torch.contiguous_format)
    s_ref = 1 - _acc(trained, ref, digits.y_test)
    s_fast = 1 - _acc(trained, fast, digits.y_test)
    print(f"fast path: PGD success fp32 {s_ref:.4f}, bf16+channels_last {s_fast:.4f}")
    assert s_ref > 0.3                                        # the attack does something
    assert abs(s_fast - s_ref) <= 0.03, (s_fast, s_ref)
    assert float((fast - x).flatten(1).norm(dim=1).max()) <= 0.75 + 1e-5


def test_bf16_evaluation_matches_fp32_robust_accuracy(digits, trained):
    attack = Attack("l2", 0.75, steps=10, step_size=2.5 * 0.75 / 10)
    r32 = robust_accuracy(trained, digits.x_test, digits.y_test, attack, precision="fp32", device=DEV)
    r16 = robust_accuracy(trained, digits.x_test, digits.y_test, attack, precision="bf16", device=DEV)
    print(f"fast path: robust accuracy fp32 {r32:.4f}, bf16 {r16:.4f}")
    assert 0.05 < r32 < 0.95
    assert abs(r16 - r32) <= 0.03, (r16, r32)


def test_bf16_targeted_construction_matches_fp32_success(tmp_path, digits, trained):
    out = {}
    for prec in ("fp32", "bf16"):
        cfg = TargetedConfig(eps=1.0, steps=10, step_size=0.25, precision=prec, shard_size=200, batch_size=200)
        res = build_targeted_dataset(tmp_path / prec, kind="D_det", model=trained, x=digits.x_train[:400],
                                     y=digits.y_train[:400], num_classes=10, cfg=cfg, device=DEV)
        out[prec] = res.manifest["metrics"]["target_success_rate"]
    print(f"fast path: targeted construction success fp32 {out['fp32']:.4f}, bf16 {out['bf16']:.4f}")
    assert out["fp32"] > 0.3
    assert abs(out["bf16"] - out["fp32"]) <= 0.03, out


def test_bf16_inversion_reaches_the_fp32_loss(digits, trained):
    g = torch.Generator().manual_seed(1)
    x = digits.x_train[:64].to(DEV)
    start = digits.x_train[torch.randperm(digits.x_train.shape[0], generator=g)[:64]].to(DEV)
    kw = dict(steps=30, step_size=0.3, step_schedule="cosine")
    _, l32 = match_representation(trained.features, x, start, precision="fp32", **kw)
    _, l16 = match_representation(trained.features, x, start, precision="bf16", **kw)
    with torch.no_grad():
        d0 = (trained.features(start) - trained.features(x)).norm(dim=1).mean()
    print(f"fast path: inversion loss fp32 {float(l32.mean()):.4f}, bf16 {float(l16.mean()):.4f} (start {float(d0):.4f})")
    assert float(l32.mean()) < 0.5 * float(d0)
    assert abs(float(l16.mean()) - float(l32.mean())) <= 0.05 * float(d0), (float(l16.mean()), float(l32.mean()))
