"""The same engine on CuPy (skipped without a CUDA GPU; see conftest)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cupy_sampler_attacks_and_training_agree_with_closed_forms():
    cp = pytest.importorskip("cupy")
    from simulate.backend import backend_of, make_rng, to_numpy
    from simulate.closed_forms import robust_covariance, vulnerability_closed_form
    from simulate.estimate import estimate
    from simulate.experiments import spec_model
    from simulate.gaussian import (
        adversarial_training, lagrangian_attack, mahalanobis_sq, sample_gaussian_model, trust_region_attack,
    )

    mu, sigma, mu_np, sig_np = spec_model(cp)
    x, y = sample_gaussian_model(mu, sigma, 40_000, make_rng(0, "cupy"))
    assert backend_of(x) is cp
    a = cp.linalg.inv(sigma)
    v = x - y[:, None] * mu
    c = 2.0 / np.linalg.eigvalsh(sig_np)[0]
    gain = estimate(mahalanobis_sq(v + lagrangian_attack(v, a, c), a) - mahalanobis_sq(v, a))
    assert gain.agrees_with(vulnerability_closed_form(sig_np, c))
    d = trust_region_attack(v[:100], a, 0.5)
    np.testing.assert_allclose(to_numpy(cp.linalg.norm(d, axis=1)), 0.5, rtol=1e-8)
    res = adversarial_training(x, y, attack_kind="lagrangian", penalty=c, steps=600, batch=40_000, lr=0.1,
                               rng=make_rng(1, "cupy"))
    from simulate.gaussian import mle_fit

    _, s_hat = mle_fit(x, y)
    np.testing.assert_allclose(to_numpy(res.sigma), robust_covariance(to_numpy(s_hat), c), rtol=1e-5, atol=1e-7)


def test_mixing_numpy_and_cupy_is_an_error():
    cp = pytest.importorskip("cupy")
    from simulate.backend import backend_of

    with pytest.raises(TypeError, match="no silent host/device copies"):
        backend_of(np.zeros(2), cp.zeros(2))


def test_cli_runs_on_cupy(tmp_path):
    pytest.importorskip("cupy")
    from robust_features.cli import main

    assert main(["simulate", "theorems", "--backend", "cupy", "--out-dir", str(tmp_path), "--no-figures"]) == 0
