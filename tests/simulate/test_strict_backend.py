"""simulate/ under a strict CuPy stand-in (tests/simulate/strict_cupy.py): no implicit host copies,
no NumPy calls on device arrays, no mixing, only CuPy's namespace. The same code must run and
give NumPy's numbers (the stand-in draws NumPy's random stream)."""

from __future__ import annotations

import numpy as np
import pytest

from .strict_cupy import DeviceArray, install


@pytest.fixture
def cp(monkeypatch):
    return install(monkeypatch)


def test_the_stand_in_refuses_what_cupy_refuses(cp):
    from simulate.backend import backend_of, get_xp, to_float, to_numpy

    assert get_xp("cupy") is cp
    a = cp.asarray(np.arange(4.0))
    assert backend_of(a) is cp
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="numpy.sum called on a device"):
        np.sum(a)
    with pytest.raises(TypeError):
        np.exp(a)
    with pytest.raises(TypeError, match="mixed with device"):
        a + np.ones(4)
    with pytest.raises(TypeError, match="mixed with device"):
        cp.maximum(a, np.ones(4))
    with pytest.raises(AttributeError):
        cp.linalg.solve_triangular  # noqa: B018 - CuPy keeps it in cupyx.scipy.linalg
    with pytest.raises(TypeError, match="mixing|numpy and cupy"):
        backend_of(np.zeros(2), a)
    assert isinstance(a * 2.0 + 1, DeviceArray)
    assert to_float(cp.sum(a)) == 6.0 and np.array_equal(to_numpy(a), np.arange(4.0))


def test_gaussian_engine_attacks_and_training_run_on_the_stand_in_and_match_numpy(cp):
    from simulate.backend import make_rng, to_numpy
    from simulate.estimate import estimate
    from simulate.experiments import spec_model
    from simulate.gaussian import (
        adversarial_training, lagrangian_attack, mahalanobis_sq, mle_fit, nll, pgd_l2_attack,
        sample_gaussian_model, trust_region_attack,
    )

    out = {}
    for xp in (np, cp):
        mu, sigma, _, sig_np = spec_model(xp)
        x, y = sample_gaussian_model(mu, sigma, 4000, make_rng(0, xp))
        a = xp.linalg.inv(sigma)
        v = x - y[:, None] * mu
        c = 2.0 / np.linalg.eigvalsh(sig_np)[0]
        gain = estimate(mahalanobis_sq(v + lagrangian_attack(v, a, c), a) - mahalanobis_sq(v, a))
        d_tr = trust_region_attack(v[:50], a, 0.5)
        d_pgd = pgd_l2_attack(v[:50], a, 0.5, steps=20)
        loss = nll(x[:10], y[:10], mu, sigma)
        res = adversarial_training(x, y, attack_kind="lagrangian", penalty=c, steps=50, batch=1000, lr=0.1,
                                   rng=make_rng(1, xp))
        m_hat, s_hat = mle_fit(x, y)
        out[xp.__name__] = (gain.mean, to_numpy(d_tr), to_numpy(d_pgd), to_numpy(loss), to_numpy(res.sigma),
                            to_numpy(s_hat))
    for a_np, a_cp in zip(out["numpy"], out["cupy"]):
        np.testing.assert_allclose(a_cp, a_np, rtol=1e-10, atol=1e-12)


def test_linear_and_pipeline_code_run_on_the_stand_in(cp):
    from simulate.experiments import run_pipeline, run_tsipras

    for runner, kw in ((run_tsipras, {"n": 2000, "d": 20, "steps": 40}),
                       (run_pipeline, {"n": 2000, "replicates": 2, "d": 6})):
        a, b = runner(np, **kw), runner(cp, **kw)
        assert a["checks"].keys() == b["checks"].keys()
        for k, line in a["checks"].items():
            if isinstance(line, dict) and "simulated" in line:
                assert b["checks"][k]["simulated"] == pytest.approx(line["simulated"], rel=1e-8, abs=1e-10), k


def test_the_simulate_cli_runs_on_the_stand_in(cp, tmp_path):
    from robust_features.cli import main
    from foundation.records import read_record

    assert main(["simulate", "theorems", "--backend", "cupy", "--n", "4000", "--out-dir", str(tmp_path),
                 "--no-figures"]) in (0, 1)
    rec = read_record(tmp_path / "theorems.json")
    assert rec["config"]["backend"] == "cupy"
    assert rec["provenance"]["device"] == "strict CuPy stand-in (CPU)"
