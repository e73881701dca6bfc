"""Goh's robust-feature leakage probe (empirical/leakage.py): the exact linear certificate, certified
training, planted leakage found (and its absence not invented), determinism, the released-set
reader and the config's checks."""

from __future__ import annotations

import builtins
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from empirical.leakage import (
    LeakageConfig,
    fit_probe,
    leakage_probe,
    linear_certificate,
    linear_features,
    load_released_set,
    robust_logits,
    train_robust_linear,
)

K, D = 4, 24                       # classes, input dimension of the synthetic tasks
FAST = dict(steps=200, lr=0.05)    # the synthetic tasks converge well within this


def _robust_task(n: int, g: torch.Generator, *, r: float = 2.0, s: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Class y has mean r e_y (a robust direction: classes 2r apart) and isotropic noise s."""
    y = torch.randint(0, K, (n,), generator=g)
    x = s * torch.randn(n, D, generator=g)
    x[torch.arange(n), y] += r
    return x, y


def _nonrobust_task(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A weak robust signal (e_y, noise 1) plus a perfect but tiny one: 0.05 e_{K+y}, noise 0.005."""
    y = torch.randint(0, K, (n,), generator=g)
    x = torch.randn(n, D, generator=g)
    x[torch.arange(n), y] += 1.0
    x[:, K:2 * K] *= 0.005
    x[torch.arange(n), K + y] += 0.05
    return x, y


def _predict(W, b, x):
    return (x.double() @ W.double().T + b.double()).argmax(1)


# ---------------------------------------------------------------------------------------------
# the certificate is exact
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_certificate_is_exact_both_ways(seed):
    """Just past the certified radius along w_j - w_c (the minimising j) the prediction flips; just
    inside it, neither that direction, nor random directions, nor an l2 PGD on the best rival
    margin ever flip it."""
    g = torch.Generator().manual_seed(seed)
    c_, d, n = 5, 8, 40
    W, b, x = torch.randn(c_, d, generator=g), torch.randn(c_, generator=g), torch.randn(n, d, generator=g)
    kept, radius = linear_certificate(W, b, x, 0.3)
    assert kept.dtype == torch.bool and radius.dtype == torch.float64
    assert torch.equal(kept, radius > 0.3)
    z = linear_features(W, b, x)
    c = z.argmax(1)
    Wd = W.double()
    for i in range(n):
        diffs = Wd - Wd[c[i]]                                   # w_j - w_c
        norms = diffs.norm(dim=1)
        ratios = (z[i, c[i]] - z[i]) / norms.clamp_min(1e-300)
        ratios[c[i]] = math.inf
        j = int(ratios.argmin())
        assert float(ratios[j]) == pytest.approx(float(radius[i]), rel=1e-12)
        u = diffs[j] / norms[j]
        r = float(radius[i])
        outside = x[i].double() + (r * (1 + 1e-6) + 1e-9) * u
        inside = x[i].double() + r * (1 - 1e-6) * u
        assert int(_predict(W, b, outside[None])) != int(c[i])
        assert int(_predict(W, b, inside[None])) == int(c[i])
        # random directions at 0.999 r
        dirs = torch.randn(200, d, generator=g, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=1, keepdim=True) * (0.999 * r)
        assert bool((_predict(W, b, x[i].double() + dirs) == c[i]).all())
        # l2 PGD on max_{j != c} z_j - z_c inside the ball of radius 0.999 r
        delta = torch.zeros(d, dtype=torch.float64, requires_grad=True)
        for _ in range(60):
            zz = (x[i].double() + delta) @ Wd.T + b.double()
            rival = torch.cat([zz[:c[i]], zz[c[i] + 1:]]).max() - zz[c[i]]
            (grad,) = torch.autograd.grad(rival, delta)
            with torch.no_grad():
                delta += 0.1 * r * grad / grad.norm().clamp_min(1e-300)
                delta *= min(1.0, 0.999 * r / float(delta.norm().clamp_min(1e-300)))
        assert int(_predict(W, b, (x[i].double() + delta.detach())[None])) == int(c[i])


def test_the_certificate_handles_ties_and_identical_rows():
    W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])       # rows 0 and 1 identical
    x = torch.tensor([[5.0, 0.0]])
    kept, radius = linear_certificate(W, torch.tensor([1.0, 0.0, 0.0]), x, 0.25)
    # class 0 beats class 1 by b_0 - b_1 everywhere (radius inf for that pair); z_0 - z_2 = 6 over sqrt(2)
    assert float(radius[0]) == pytest.approx(6 / math.sqrt(2)) and bool(kept[0])
    kept, radius = linear_certificate(W, torch.zeros(3), x, 0.25)   # an exact tie: not kept
    assert float(radius[0]) == 0.0 and not bool(kept[0])
    kept, radius = linear_certificate(W, torch.tensor([0.0, 0.0, 10.0]), torch.tensor([[0.0, 0.0]]), 1.0)
    assert float(radius[0]) == pytest.approx(10 / math.sqrt(2))    # ||w_2 - w_0|| = sqrt(2)


def test_robust_logits_are_the_worst_case_in_the_ball():
    """Their argmax is y iff the certificate at eps keeps a correct prediction."""
    g = torch.Generator().manual_seed(3)
    W, b, x = torch.randn(K, D, generator=g), torch.randn(K, generator=g), torch.randn(300, D, generator=g)
    y = _predict(W, b, x)
    zr = robust_logits(linear_features(W, b, x), y, W.double(), 0.4)
    kept, _ = linear_certificate(W, b, x, 0.4)
    ok = zr.argmax(1) == y
    strict = zr.gather(1, y[:, None]).squeeze(1) > zr.scatter(1, y[:, None], -math.inf).max(1).values
    assert torch.equal(strict, kept) and bool((ok | ~kept).all())


# ---------------------------------------------------------------------------------------------
# certified training
# ---------------------------------------------------------------------------------------------
def test_certified_training_certifies_more_than_plain_training():
    g = torch.Generator().manual_seed(0)
    x, y = _nonrobust_task(400, g)
    x_test, _ = _nonrobust_task(400, g)
    plain = train_robust_linear(x, y, K, LeakageConfig(train_eps=0.0, **FAST))
    robust = train_robust_linear(x, y, K, LeakageConfig(train_eps=0.25, **FAST))
    frac_plain = float(linear_certificate(*plain, x_test, 0.25)[0].double().mean())
    frac_robust = float(linear_certificate(*robust, x_test, 0.25)[0].double().mean())
    assert frac_plain < 0.1 and frac_robust > frac_plain + 0.4
    # the plain model leans on the tiny non-robust coordinates, the certified one on the robust ones
    for (W, _), lean in ((plain, "nonrobust"), (robust, "robust")):
        share = float(W[:, K:2 * K].norm() / W[:, :K].norm())
        assert (share > 1) if lean == "nonrobust" else (share < 1)


def test_train_eps_none_means_eps():
    assert LeakageConfig(eps=0.4, train_eps=None).robust_eps == 0.4
    assert LeakageConfig(eps=0.4, train_eps=0.0).robust_eps == 0.0


# ---------------------------------------------------------------------------------------------
# planted ground truth
# ---------------------------------------------------------------------------------------------
def _sets(g: torch.Generator, n: int = 400) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``leak``: images of y carrying half of class t's robust feature, labelled t ~ U (D_rand
    with leakage); ``none``: the images of y untouched, labelled t ~ U (D_rand without); ``det``:
    images of y with a tiny non-robust mark of t = y + 1, labelled t (D_det)."""
    idx = torch.arange(n)
    xa, _ = _robust_task(n, g)
    ta = torch.randint(0, K, (n,), generator=g)
    xa[idx, ta] += 1.0
    xn, _ = _robust_task(n, g)
    tn = torch.randint(0, K, (n,), generator=g)
    xd, yd = _robust_task(n, g)
    td = (yd + 1) % K
    xd[idx, K + td] += 0.05
    return {"leak": (xa, ta), "none": (xn, tn), "det": (xd, td)}


def test_planted_leakage_is_found_and_d_det_falls_below_chance():
    g = torch.Generator().manual_seed(0)
    x, y = _robust_task(400, g)
    x_test, y_test = _robust_task(400, g)
    cfg = LeakageConfig(eps=0.25, train_eps=0.25, null_permutations=20, **FAST)
    r = leakage_probe(x, y, x_test, y_test, _sets(g), K, cfg)
    json.dumps(r)                                          # JSON-able as returned
    m = r["robust_model"]
    assert m["meets_certified_min"] and m["certified_fraction"] >= 0.8 and m["clean_accuracy"] > 0.95
    assert m["certified_accuracy"] <= min(m["clean_accuracy"], m["certified_fraction"])
    assert r["chance"] == 0.25 and all(gm > 0 for gm in m["gamma"])
    p = r["probes"]
    se = p["leak"]["test_stderr"]
    assert se == pytest.approx(math.sqrt(p["leak"]["test_accuracy"] * (1 - p["leak"]["test_accuracy"]) / 400))
    assert p["leak"]["test_accuracy"] > 0.25 + 5 * max(se, 0.02)        # robust features of t leaked in
    assert p["leak"]["z_vs_null"] > 4
    # no robust feature of t: the probe's accuracy is one draw of its permutation null. That null
    # is wide (strong features of y give a probe that maps y to a random class, so the test
    # accuracy varies far more than the binomial stderr says), which is why it is reported
    assert abs(p["none"]["z_vs_null"]) < 3 and p["none"]["null_sd"] > 2 * p["none"]["test_stderr"]
    assert len(p["none"]["null_accuracies"]) == 20
    assert p["det"]["test_accuracy"] < 0.25                             # robust features of y under y + 1
    assert p["det"]["test_accuracy_shifted"] > 0.9 and p["det"]["train_accuracy"] > 0.9
    for q in p.values():
        assert q["n_train"] == 400 and q["n_test"] == 400 and isinstance(q["test_accuracy"], float)


def test_the_probe_is_multinomial_logistic_regression_with_its_own_standardisation():
    """Standardised or not, the probe fits the same separable problem; a constant feature is harmless."""
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 3, (300,), generator=g)
    f = torch.randn(300, 4, generator=g, dtype=torch.float64)
    f[:, 0] += 3.0 * y
    f[:, 1] = 7.0                                             # constant: sd 0, kept at 1
    for standardize in (True, False):
        probe = fit_probe(f * 1000.0, y, 3, LeakageConfig(standardize=standardize))
        assert probe.accuracy(f * 1000.0, y) > 0.9 and math.isfinite(probe.loss)
    probe = fit_probe(f, y, 3, LeakageConfig())
    assert torch.allclose(probe.mean, f.mean(0)) and float(probe.sd[1]) == 1.0


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------
def _strip_seconds(o):
    if isinstance(o, dict):
        return {k: _strip_seconds(v) for k, v in o.items() if k != "seconds"}
    return o


def test_same_config_same_result_and_minibatch_order_follows_the_seed():
    g = torch.Generator().manual_seed(1)
    x, y = _robust_task(300, g)
    x_test, y_test = _robust_task(200, g)
    sets = _sets(g, 200)
    cfg = LeakageConfig(train_eps=0.25, **FAST)
    a = leakage_probe(x, y, x_test, y_test, sets, K, cfg)
    b = leakage_probe(x, y, x_test, y_test, sets, K, cfg)
    assert _strip_seconds(a) == _strip_seconds(b)
    mb = dict(train_eps=0.25, steps=30, lr=0.05, batch_size=64)
    w0, b0 = train_robust_linear(x, y, K, LeakageConfig(seed=0, **mb))
    w1, b1 = train_robust_linear(x, y, K, LeakageConfig(seed=0, **mb))
    w2, _ = train_robust_linear(x, y, K, LeakageConfig(seed=1, **mb))
    assert torch.equal(w0, w1) and torch.equal(b0, b1) and not torch.equal(w0, w2)


def test_bad_inputs_are_named():
    x, y = torch.rand(10, D), torch.randint(0, K, (10,))
    with pytest.raises(ValueError, match=r"train_robust_linear: labels lie in \[4, 4\]; they must lie in \[0, 4\)"):
        train_robust_linear(x, torch.full((10,), K), K, LeakageConfig())
    with pytest.raises(ValueError, match="10 inputs but 9 labels"):
        train_robust_linear(x, y[:9], K, LeakageConfig())
    with pytest.raises(ValueError, match="sets must map at least one name"):
        leakage_probe(x, y, x, y, {}, K, LeakageConfig(steps=1))


# ---------------------------------------------------------------------------------------------
# the released sets
# ---------------------------------------------------------------------------------------------
def _write(folder: Path, ims, lab) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ims, folder / "CIFAR_ims")
    torch.save(lab, folder / "CIFAR_lab")
    return folder


def test_released_sets_in_both_layouts_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=g)
    y = torch.tensor([0, 9, 3, 3, 1])
    xs, ys = load_released_set(_write(tmp_path / "drand_CIFAR", [x[:2], x[2:]], [y[:2], y[2:]]))
    assert xs.dtype == torch.float32 and ys.dtype == torch.int64 and torch.equal(xs, x) and torch.equal(ys, y)
    u8 = (torch.rand(4, 32, 32, 3, generator=g) * 255).to(torch.uint8)              # NHWC 0..255
    xs, ys = load_released_set(_write(tmp_path / "ddet_CIFAR", u8, torch.tensor([1, 2, 3, 4], dtype=torch.int32)))
    assert xs.shape == (4, 3, 32, 32) and torch.equal(xs, u8.permute(0, 3, 1, 2).float() / 255)
    assert ys.dtype == torch.int64


@pytest.mark.parametrize("ims, lab, file, problem", [
    (torch.full((2, 3, 32, 32), 1.5), torch.tensor([0, 1]), "CIFAR_ims", r"values lie in \[1\.5, 1\.5\]"),
    (torch.full((2, 3, 32, 32), float("nan")), torch.tensor([0, 1]), "CIFAR_ims", "NaN or infinite"),
    (torch.rand(2, 3, 31, 32), torch.tensor([0, 1]), "CIFAR_ims", r"shape \(2, 3, 31, 32\); expected"),
    (torch.rand(2, 3072), torch.tensor([0, 1]), "CIFAR_ims", r"shape \(2, 3072\)"),
    ([torch.rand(2, 3, 32, 32), torch.rand(1, 3, 16, 16)], torch.tensor([0, 1, 2]), "CIFAR_ims", "differ in shape"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int32), torch.tensor([0, 1]), "CIFAR_ims", "dtype int32"),
    (torch.rand(3, 3, 32, 32), torch.tensor([0, 1]), "CIFAR_lab", "2 labels for the 3 images"),
    (torch.rand(2, 3, 32, 32), torch.tensor([0, 10]), "CIFAR_lab", r"labels lie in \[0, 10\]; expected \[0, 10\)"),
    (torch.rand(2, 3, 32, 32), torch.tensor([-1, 2]), "CIFAR_lab", r"labels lie in \[-1, 2\]"),
    (torch.rand(2, 3, 32, 32), torch.tensor([0.0, 1.0]), "CIFAR_lab", "dtype float32"),
    (torch.rand(2, 3, 32, 32), "labels", "CIFAR_lab", "must hold a tensor"),
])
def test_bad_released_sets_are_refused_naming_the_file(tmp_path, ims, lab, file, problem):
    folder = _write(tmp_path / "set", ims, lab)
    with pytest.raises(ValueError, match=re.escape(str(folder / file)) + ".*" + problem):
        load_released_set(folder)


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_a_released_set_holding_code_is_not_run(tmp_path):
    marker = tmp_path / "marker"
    payload = _Payload(builtins.exec, f"open({str(marker)!r}, 'w')")
    folder = _write(tmp_path / "evil", [torch.rand(2, 3, 32, 32), payload], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=re.escape(str(folder / "CIFAR_ims")) + ".*weights_only=True"):
        load_released_set(folder)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="CIFAR_ims and CIFAR_lab"):
        load_released_set(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("eps", 0.0), ("eps", -1.0), ("eps", float("nan")), ("certified_min", 1.5), ("train_eps", -0.1),
    ("train_eps", float("inf")), ("train_eps", "1"), ("steps", 0), ("steps", 2.0), ("lr", 0.0),
    ("weight_decay", -1e-3), ("batch_size", 0), ("probe_steps", True), ("probe_l2", -1.0),
    ("standardize", 1), ("null_permutations", -1), ("seed", -1),
])
def test_bad_config_values_are_named(field, value):
    with pytest.raises(ValueError, match=rf"^{field}={re.escape(repr(value))} must"):
        LeakageConfig(**{field: value})


def test_the_config_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from empirical.leakage import LeakageConfig\n"
            "print(LeakageConfig().eps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.25"
