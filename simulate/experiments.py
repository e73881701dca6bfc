"""The three simulation experiments behind ``robust-features simulate {theorems,tsipras,pipeline}``.

Each ``run_*`` function is pure (arrays in, a result dict out) and backend-agnostic (``xp``);
:func:`run_and_record` adds the JSON record. Every cross-check is reported as a line
``{"simulated", "stderr", "closed_form", "z", "pass"}`` where z = (simulated - closed_form)/stderr
and pass = |z| <= ``Z_TOL`` (5 standard errors).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import theory
from foundation import checks as C
from simulate import closed_forms as cf
from simulate.backend import XP, device_name, get_xp, make_rng, to_float, to_numpy
from simulate.estimate import Estimate, estimate
from simulate.gaussian import (
    adversarial_training,
    lagrangian_attack,
    mahalanobis_sq,
    mle_fit,
    pgd_l2_attack,
    sample_gaussian_model,
    trust_region_attack,
)
from simulate.linear import (
    gamma_closed_form,
    measure_accuracy,
    measure_usefulness,
    rho_closed_form,
    train_logistic,
)
from simulate.pipeline import (
    accuracy_on_d,
    d_det_threshold,
    expected_accuracy,
    fit_classifier,
    make_d_det,
    make_d_rand,
    match_representation,
)
from simulate.tsipras import (
    robust_feature_share,
    sample_tsipras,
    tsipras_accuracy,
    tsipras_tradeoff_bound,
)

Z_TOL = 5.0
EXPERIMENTS: tuple[str, ...] = ("theorems", "tsipras", "pipeline")


def check_line(sim: Estimate, closed: float, z_tol: float = Z_TOL) -> dict[str, float]:
    """One cross-check line: simulation vs closed form, in standard errors."""
    z = sim.z_score(closed)
    return {
        "simulated": sim.mean,
        "stderr": sim.stderr,
        "n": sim.n,
        "closed_form": float(closed),
        "z": z if math.isfinite(z) else 1e300,
        "pass": int(abs(z) <= z_tol),
    }


def replicate_estimate(values: list[float], seed: int | None = None) -> Estimate:
    return estimate(np.asarray(values, dtype=float), seed=seed)


def attacks_vs_theory(v: np.ndarray, sig: np.ndarray, cs: list[float], eps: float = 0.7) -> dict[str, float]:
    """Largest relative difference between simulate's attackers and theory/'s exact solutions on
    residuals ``v`` (host NumPy): the Lagrangian attacker (gradient ascent, :func:`lagrangian_attack`)
    vs theory's closed-form maximiser delta* = (C Sigma - I)^-1 v
    (:func:`theory.worst_case_perturbation`) at each penalty in ``cs``, and the exact ball attack
    (bisection, :func:`trust_region_attack`) vs theory's Newton solver
    (:func:`theory.trust_region_max`) at radius ``eps``. Independent algorithms for the same
    maximisers, so these differences can fail; the closed forms themselves have one source
    (theory/, via :mod:`simulate.closed_forms`) and are not compared with themselves."""
    a_inv = np.linalg.inv(sig)
    model = theory.GaussianModel(np.zeros(sig.shape[0]), sig)
    ones = np.ones(v.shape[0])
    lag = 0.0
    for c in cs:
        ref = theory.worst_case_perturbation(model, v, ones, c)  # x = v, y = 1, mu = 0: residual v
        lag = max(lag, float(np.abs(lagrangian_attack(v, a_inv, c) - ref).max() / np.abs(ref).max()))
    ref = np.asarray(theory.trust_region_max(a_inv, v, eps).delta)
    return {"worst_case_perturbation": lag,
            "trust_region_max": float(np.abs(trust_region_attack(v, a_inv, eps) - ref).max() / eps)}


def spec_model(xp: XP) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The d = 4 model of docs/paper-notes.md sec. A: eigenvalues (0.05, 0.3, 2, 9), a random
    rotation (seed 0), and mu* = (1, 0.5, -0.3, 2) in the original coordinates."""
    s = np.array([0.05, 0.3, 2.0, 9.0])
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    sigma = q @ np.diag(s) @ q.T
    sigma = (sigma + sigma.T) / 2
    mu = np.array([1.0, 0.5, -0.3, 2.0])
    return xp.asarray(mu), xp.asarray(sigma), mu, sigma


# ---------------------------------------------------------------------------------------------
# theorems 1-3 and section 2
# ---------------------------------------------------------------------------------------------


def run_theorems(
    xp: XP, *, seed: int = 0, n: int = 40_000, replicates: int = 6, train_steps: int = 300
) -> dict[str, Any]:
    """Theorems 1-3 and the section-2 rho/gamma, simulated against their closed forms."""
    mu_x, sig_x, mu, sig = spec_model(xp)
    d = mu.size
    s_min = float(np.linalg.eigvalsh(sig)[0])
    checks: dict[str, dict[str, float]] = {}
    curves: dict[str, Any] = {}
    rng = make_rng(seed, xp)
    x, y = sample_gaussian_model(mu_x, sig_x, n, rng)
    v = x - y[:, None] * mu_x[None, :]
    a_inv = xp.linalg.inv(sig_x)

    # ---- Theorem 1: loss increase under a real (Lagrangian) attacker -------------------------
    t1 = {"c_over_cmin": [], "simulated": [], "stderr": [], "closed_form": []}
    for c_rel in (1.2, 1.5, 2.0, 4.0, 8.0):
        c = c_rel / s_min
        delta = lagrangian_attack(v, a_inv, c)
        gain = estimate(mahalanobis_sq(v + delta, a_inv) - mahalanobis_sq(v, a_inv), seed=seed)
        closed = cf.vulnerability_closed_form(sig, c)
        checks[f"thm1_vulnerability_C{c_rel:g}"] = check_line(gain, closed)
        t1["c_over_cmin"].append(c_rel)
        t1["simulated"].append(gain.mean)
        t1["stderr"].append(gain.stderr)
        t1["closed_form"].append(closed)
    # the isotropic covariance with the same trace is the least vulnerable (Theorem 1, part 2)
    k = float(np.trace(sig))
    iso = (k / d) * xp.eye(d)
    c = 1.5 / s_min
    v_iso = v @ xp.linalg.cholesky(iso).T @ xp.linalg.inv(xp.linalg.cholesky(sig_x)).T
    iso_inv = xp.linalg.inv(iso)
    d_iso = lagrangian_attack(v_iso, iso_inv, c)
    gain_iso = estimate(mahalanobis_sq(v_iso + d_iso, iso_inv) - mahalanobis_sq(v_iso, iso_inv))
    checks["thm1_isotropic_same_trace"] = check_line(gain_iso, cf.vulnerability_closed_form(to_numpy(iso), c))
    checks["thm1_isotropic_same_trace"]["less_vulnerable"] = int(
        gain_iso.mean + Z_TOL * gain_iso.stderr < t1["simulated"][1]
    )
    curves["thm1"] = t1

    # ---- l2-ball adversary: PGD vs the exact trust-region maximiser --------------------------
    ball = {"eps": [], "pgd": [], "trust_region": [], "pgd_shortfall_stderr": []}
    for eps in (0.1, 0.5, 1.0, 2.0):
        f_pgd = mahalanobis_sq(v + pgd_l2_attack(v, a_inv, eps), a_inv)
        f_tr = mahalanobis_sq(v + trust_region_attack(v, a_inv, eps), a_inv)
        base = mahalanobis_sq(v, a_inv)
        short = estimate(f_tr - f_pgd)
        ball["eps"].append(eps)
        ball["pgd"].append(to_float((f_pgd - base).mean()))
        ball["trust_region"].append(to_float((f_tr - base).mean()))
        ball["pgd_shortfall_stderr"].append(short.stderr)
        checks[f"ball_pgd_vs_exact_eps{eps:g}"] = {
            "simulated": to_float((f_pgd - base).mean()),
            "closed_form": to_float((f_tr - base).mean()),
            "relative_shortfall": short.mean / max(to_float((f_tr - base).mean()), 1e-300),
            "pass": int(short.mean <= 1e-3 * to_float((f_tr - base).mean()) and to_float(xp.min(f_tr - f_pgd)) >= -1e-8),
        }
    curves["ball"] = ball

    # ---- Theorem 2: adversarial training with a real attacker vs the closed form -------------
    t2: dict[str, list[float]] = {"lam": [], "r_closed": [], "r_sim": [], "r_sim_se": []}
    s_star, q_star = np.linalg.eigh(sig)
    t3: dict[str, list[float]] = {"lam": [], "cos_sim": [], "cos_sim_se": [], "cos_closed": [],
                                  "worst_sim": [], "worst_sim_se": [], "worst_closed": []}
    std_cos, std_worst = [], []
    for r in range(replicates):
        xr, yr = sample_gaussian_model(mu_x, sig_x, n, make_rng(seed + 1000 + r, xp))
        m_hat, s_hat = (to_numpy(a) for a in mle_fit(xr, yr))
        std_cos.append(cf.mean_cosine(s_hat, mu))
        std_worst.append(cf.worst_case_cosine(s_hat))
    std_cos_e, std_worst_e = replicate_estimate(std_cos), replicate_estimate(std_worst)
    checks["thm3_standard_cosine"] = check_line(std_cos_e, cf.mean_cosine(sig, mu))
    for c_rel in (0.05, 0.3, 2.0, 16.0):
        lam = c_rel / s_min
        closed = cf.robust_covariance(sig, lam)
        sig_runs, mu_runs, cos_runs, worst_runs = [], [], [], []
        for r in range(replicates):
            rr = make_rng(seed + 2000 + 17 * r, xp)
            xr, yr = sample_gaussian_model(mu_x, sig_x, n, rr)
            res = adversarial_training(xr, yr, attack_kind="lagrangian", penalty=lam,
                                       steps=train_steps, batch=1024, lr=0.05, rng=rr)
            s_l = to_numpy(res.sigma)
            sig_runs.append(s_l)
            mu_runs.append(to_numpy(res.mu))
            cos_runs.append(cf.mean_cosine(s_l, mu))
            worst_runs.append(cf.worst_case_cosine(s_l))
        sig_runs_a = np.stack(sig_runs)
        # entries of Sigma in the eigenbasis of Sigma*: the diagonal holds the robust eigenvalues
        rot = np.einsum("ji,rjk,kl->ril", q_star, sig_runs_a, q_star)
        closed_rot = q_star.T @ closed @ q_star
        worst_z = 0.0
        for i in range(d):
            for j in range(i, d):
                e = replicate_estimate(list(rot[:, i, j]))
                z = abs(e.z_score(closed_rot[i, j]))
                worst_z = max(worst_z, z if math.isfinite(z) else 1e300)
        diag_est = [replicate_estimate(list(rot[:, i, i])) for i in range(d)]
        checks[f"thm2_sigma_lam{c_rel:g}"] = {
            "max_abs_z_over_entries": worst_z,
            "relative_error": float(np.linalg.norm(sig_runs_a.mean(0) - closed) / np.linalg.norm(closed)),
            "pass": int(worst_z <= Z_TOL),
        }
        mu_z = max(abs(replicate_estimate([m[i] for m in mu_runs]).z_score(mu[i])) for i in range(d))
        checks[f"thm2_mu_stays_lam{c_rel:g}"] = {"max_abs_z": mu_z, "pass": int(mu_z <= Z_TOL)}
        t2["lam"].append(lam)
        t2["r_closed"].append(list(cf.robust_eigenvalues(s_star, lam)))
        t2["r_sim"].append([e.mean for e in diag_est])
        t2["r_sim_se"].append([e.stderr for e in diag_est])
        cos_e, worst_e = replicate_estimate(cos_runs), replicate_estimate(worst_runs)
        checks[f"thm3_robust_cosine_lam{c_rel:g}"] = check_line(cos_e, cf.mean_cosine(closed, mu))
        checks[f"thm3_robust_worst_cosine_lam{c_rel:g}"] = check_line(worst_e, cf.worst_case_cosine(closed))
        checks[f"thm3_robust_worst_cosine_lam{c_rel:g}"]["exceeds_standard"] = int(
            worst_e.mean - Z_TOL * worst_e.stderr > std_worst_e.mean + Z_TOL * std_worst_e.stderr
        )
        for key, val in (("lam", lam), ("cos_sim", cos_e.mean), ("cos_sim_se", cos_e.stderr),
                         ("cos_closed", cf.mean_cosine(closed, mu)), ("worst_sim", worst_e.mean),
                         ("worst_sim_se", worst_e.stderr), ("worst_closed", cf.worst_case_cosine(closed))):
            t3[key].append(val)
    t3["standard_cos"] = [std_cos_e.mean, std_cos_e.stderr, cf.mean_cosine(sig, mu)]
    t3["standard_worst"] = [std_worst_e.mean, std_worst_e.stderr, cf.worst_case_cosine(sig)]
    curves["thm2"] = t2
    curves["thm3"] = t3

    # l2-ball adversarial training with real PGD: where it sits on the Theorem-2 family
    ball_train: dict[str, list[float]] = {"eps": [], "best_lam": [], "residual": [], "mu_max_abs_err": []}
    for eps in (0.25, 1.0):
        rr = make_rng(seed + 3000, xp)
        xr, yr = sample_gaussian_model(mu_x, sig_x, n // 2, rr)
        res = adversarial_training(xr, yr, attack_kind="pgd", eps=eps, steps=train_steps // 2,
                                   batch=1024, lr=0.05, rng=rr)
        lam_fit, resid = cf.best_fit_lambda(to_numpy(res.sigma), sig)
        mu_z = float(np.max(np.abs(to_numpy(res.mu) - mu) / np.sqrt(np.diag(sig) / (n // 2))))
        # theory/'s deterministic solver on the SAME sample (exact ball adversary); the
        # simulated minibatch PGD training must land on it up to SGD noise
        ref = theory.fit_robust(theory.GaussianModel(mu, sig), eps, x=to_numpy(xr), y=to_numpy(yr))
        diff = float(np.linalg.norm(to_numpy(res.sigma) - ref.sigma) / np.linalg.norm(ref.sigma))
        checks[f"thm2_ball_pgd_vs_theory_fit_robust_eps{eps:g}"] = {
            "relative_sigma_difference": diff, "theory_lam_multiplier": float(ref.lam_multiplier),
            "theory_lam_spectral": float(ref.lam_spectral), "simulate_best_fit_lam": lam_fit,
            "pass": int(diff <= 0.02),
        }
        # an l2-ball adversary has a per-sample multiplier, so its Sigma is only close to the
        # Theorem-2 family; 2% (Frobenius) is the documented tolerance, ~0.5% is typical
        checks[f"thm2_ball_pgd_training_eps{eps:g}"] = {
            "best_fit_lam": lam_fit, "relative_residual": resid, "mu_max_abs_z": mu_z,
            "pass": int(resid <= 0.02 and mu_z <= Z_TOL),
        }
        ball_train["eps"].append(eps)
        ball_train["best_lam"].append(lam_fit)
        ball_train["residual"].append(float(resid))
        ball_train["mu_max_abs_err"].append(float(np.abs(to_numpy(res.mu) - mu).max()))
    curves["ball_training"] = ball_train

    v_ref = np.random.default_rng(0).normal(size=(256, d)) @ np.linalg.cholesky(sig).T
    agree = attacks_vs_theory(v_ref, sig, cs=[c_rel / s_min for c_rel in t1["c_over_cmin"]])
    checks["attacks_agree_with_theory"] = {**{f"max_rel_diff_{k}": val for k, val in agree.items()},
                                           "pass": int(max(agree.values()) <= 1e-8)}

    # ---- section 2: rho and gamma of linear features ----------------------------------------
    feats = {"standard_w": np.linalg.solve(sig, mu), "mean_w": mu, "e0": np.eye(d)[0], "e3": np.eye(d)[3]}
    for name, w in feats.items():
        w_x = xp.asarray(w)
        rho = measure_usefulness(x, y, w_x, mu_x, sig_x, seed=seed)
        checks[f"sec2_rho_{name}"] = check_line(rho, rho_closed_form(w, mu, sig))
        for norm, eps in (("l2", 0.5), ("linf", 0.25)):
            gam = measure_usefulness(x, y, w_x, mu_x, sig_x, eps=eps, norm=norm, seed=seed)
            checks[f"sec2_gamma_{name}_{norm}"] = check_line(gam, gamma_closed_form(w, mu, sig, eps, norm))
    return {
        "config": {"n": n, "replicates": replicates, "train_steps": train_steps, "seed": seed,
                   "mu": mu, "sigma": sig, "z_tol": Z_TOL},
        "checks": checks,
        "curves": curves,
    }


# ---------------------------------------------------------------------------------------------
# Tsipras toy
# ---------------------------------------------------------------------------------------------


def run_tsipras(
    xp: XP, *, seed: int = 0, n: int = 10_000, d: int = 50, p: float = 0.9, steps: int = 300
) -> dict[str, Any]:
    """Standard vs linf-adversarial logistic training on the Tsipras toy (eta = 2/sqrt(d),
    eps = 2 eta), accuracies measured with a real PGD attack vs the closed form of the learned w."""
    eta = 2 / math.sqrt(d)
    eps = 2 * eta
    rng = make_rng(seed, xp)
    x, y = sample_tsipras(n, p=p, eta=eta, d=d, rng=rng)
    xt, yt = sample_tsipras(2 * n, p=p, eta=eta, d=d, rng=rng)
    checks: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name, e in (("standard", 0.0), ("robust", eps)):
        m = train_logistic(x, y, eps=e, norm="linf", steps=steps, lr=0.5)
        w = to_numpy(m.w)
        clean = measure_accuracy(xt, yt, m.w, m.b, seed=seed)
        rob = measure_accuracy(xt, yt, m.w, m.b, eps=eps, norm="linf", seed=seed)
        checks[f"{name}_clean_accuracy"] = check_line(clean, tsipras_accuracy(w, m.b, p=p, eta=eta))
        checks[f"{name}_robust_accuracy"] = check_line(
            rob, tsipras_accuracy(w, m.b, p=p, eta=eta, eps=eps, norm="linf"))
        share = robust_feature_share(w, p=p, eta=eta)
        models[name] = {"w0": float(w[0]), "w_rest_mean": float(w[1:].mean()),
                        "w_rest_abs_mean": float(np.abs(w[1:]).mean()), "b": m.b,
                        "robust_feature_share": share, "clean": clean.mean, "robust": rob.mean}
    std, rob = models["standard"], models["robust"]
    bound = tsipras_tradeoff_bound(std["clean"], p=p)
    checks["standard_uses_nonrobust_features"] = {"robust_feature_share": std["robust_feature_share"],
                                                  "pass": int(std["robust_feature_share"] < 0.5)}
    checks["robust_uses_robust_feature"] = {"robust_feature_share": rob["robust_feature_share"],
                                            "pass": int(rob["robust_feature_share"] > 0.9)}
    checks["standard_high_clean_low_robust"] = {
        "clean": std["clean"], "robust": std["robust"], "pass": int(std["clean"] > p and std["robust"] < 0.1)}
    checks["tsipras_bound"] = {"robust": std["robust"], "bound": bound,
                               "pass": int(std["robust"] <= bound + Z_TOL * checks["standard_robust_accuracy"]["stderr"])}
    return {"config": {"n": n, "d": d, "p": p, "eta": eta, "eps": eps, "norm": "linf",
                       "steps": steps, "seed": seed, "z_tol": Z_TOL},
            "checks": checks, "curves": {"models": models}}


# ---------------------------------------------------------------------------------------------
# section-3 pipeline in the Gaussian world
# ---------------------------------------------------------------------------------------------


def pipeline_model(xp: XP, d: int = 10) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """A d-dim world with one clearly non-robust regime: eigenvalues geomspace(0.02, 4), a random
    rotation (seed 1), and mu* with equal weight 0.3 on every eigen-direction."""
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(d, d)))
    s = np.geomspace(0.02, 4.0, d)
    sigma = q @ np.diag(s) @ q.T
    sigma = (sigma + sigma.T) / 2
    mu = q @ (0.3 * np.ones(d))
    return xp.asarray(mu), xp.asarray(sigma), mu, sigma


def run_pipeline(
    xp: XP, *, seed: int = 0, n: int = 20_000, replicates: int = 8, d: int = 10,
    eps_grid: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 1.0, 1.5), eval_eps: float = 0.5,
    lam_rel: float = 0.2,
) -> dict[str, Any]:
    """D_det / D_rand / D_R / D_NR built with real attacks and real representation matching in the
    Gaussian world; accuracy on D of the classifier learned from each vs the closed forms in
    :mod:`simulate.pipeline`. Replicates over seeds give the standard errors."""
    mu_x, sig_x, mu, sig = pipeline_model(xp, d)
    s_min = float(np.linalg.eigvalsh(sig)[0])
    lam = lam_rel / s_min
    w_std_pop = np.linalg.solve(sig, mu)
    w_rob_pop = np.linalg.solve(cf.robust_covariance(sig, lam), mu)
    checks: dict[str, Any] = {}
    curves: dict[str, Any] = {"eps": list(eps_grid)}
    acc: dict[str, list[list[float]]] = {"d_det": [[] for _ in eps_grid], "d_rand": [[] for _ in eps_grid]}
    rep_acc: dict[str, list[float]] = {k: [] for k in ("d_r", "d_nr", "d_r_robust", "d_nr_robust",
                                                       "robust_model", "robust_model_robust")}
    for r in range(replicates):
        rng = make_rng(seed + 100 * r, xp)
        x, y = sample_gaussian_model(mu_x, sig_x, n, rng)
        w = fit_classifier(x, y)
        for i, eps in enumerate(eps_grid):
            xd, td = make_d_det(x, y, w, eps)
            acc["d_det"][i].append(accuracy_on_d(to_numpy(fit_classifier(xd, td)), mu, sig))
            xr, tr = make_d_rand(x, y, w, eps, rng=rng)
            acc["d_rand"][i].append(accuracy_on_d(to_numpy(fit_classifier(xr, tr)), mu, sig))
        # robust classifier by simulated adversarial training (real Lagrangian attacker)
        res = adversarial_training(x, y, attack_kind="lagrangian", penalty=lam, steps=200,
                                   batch=2048, lr=0.05, rng=rng)
        w_r = xp.linalg.solve(res.sigma, res.mu)
        # these classifiers sit at (or near) an accuracy optimum, where the exact accuracy of a
        # learned w is biased low by O(d/n); measure them on a fresh test set from D instead, with
        # a real l2 PGD attack for the robust accuracy (the MC error then dominates the bias)
        xt, yt = sample_gaussian_model(mu_x, sig_x, n, rng)
        rep_acc["robust_model"].append(measure_accuracy(xt, yt, w_r).mean)
        rep_acc["robust_model_robust"].append(measure_accuracy(xt, yt, w_r, eps=eval_eps).mean)
        for key, g in (("d_r", w_r), ("d_nr", w)):
            z, yz = match_representation(x, y, g, rng=rng)
            w_new = fit_classifier(z, yz)
            rep_acc[key].append(measure_accuracy(xt, yt, w_new).mean)
            rep_acc[f"{key}_robust"].append(measure_accuracy(xt, yt, w_new, eps=eval_eps).mean)
    for kind in ("d_det", "d_rand"):
        sims, ses, closed = [], [], []
        for i, eps in enumerate(eps_grid):
            e = replicate_estimate(acc[kind][i], seed=seed)
            cl = expected_accuracy(kind, mu, sig, eps=eps)
            checks[f"{kind}_eps{eps:g}"] = check_line(e, cl)
            sims.append(e.mean)
            ses.append(e.stderr)
            closed.append(cl)
        curves[kind] = {"simulated": sims, "stderr": ses, "closed_form": closed}
    fine = np.linspace(0.0, max(eps_grid) * 1.1, 60)[1:]
    curves["closed_fine"] = {
        "eps": list(fine),
        "d_det": [expected_accuracy("d_det", mu, sig, eps=float(e)) for e in fine],
        "d_rand": [expected_accuracy("d_rand", mu, sig, eps=float(e)) for e in fine],
    }
    closed_rep = {
        "d_r": expected_accuracy("d_r", mu, sig, w_source=w_rob_pop),
        "d_r_robust": expected_accuracy("d_r", mu, sig, w_source=w_rob_pop, eval_eps=eval_eps),
        "d_nr": expected_accuracy("d_nr", mu, sig, w_source=w_std_pop),
        "d_nr_robust": expected_accuracy("d_nr", mu, sig, w_source=w_std_pop, eval_eps=eval_eps),
        "robust_model": accuracy_on_d(w_rob_pop, mu, sig),
        "robust_model_robust": accuracy_on_d(w_rob_pop, mu, sig, eps=eval_eps),
        "standard_model": accuracy_on_d(w_std_pop, mu, sig),
        "standard_model_robust": accuracy_on_d(w_std_pop, mu, sig, eps=eval_eps),
    }
    bars = {}
    for key, vals in rep_acc.items():
        e = replicate_estimate(vals, seed=seed)
        checks[key] = check_line(e, closed_rep[key])
        bars[key] = {"simulated": e.mean, "stderr": e.stderr, "closed_form": closed_rep[key]}
    bars["standard_model"] = {"closed_form": closed_rep["standard_model"]}
    bars["standard_model_robust"] = {"closed_form": closed_rep["standard_model_robust"]}
    curves["bars"] = bars
    curves["d_det_threshold"] = d_det_threshold(mu, sig)
    return {"config": {"n": n, "replicates": replicates, "d": d, "eps_grid": list(eps_grid),
                       "eval_eps": eval_eps, "lam": lam, "lam_over_lam_min": lam_rel, "seed": seed,
                       "mu": mu, "sigma": sig, "z_tol": Z_TOL},
            "checks": checks, "curves": curves}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "theorems": run_theorems, "tsipras": run_tsipras, "pipeline": run_pipeline,
}


def summarise(checks: dict[str, Any]) -> dict[str, float]:
    """Counts of passed checks and the largest |z| among the z-scored lines."""
    zs = [abs(c["z"]) for c in checks.values() if "z" in c]
    return {"n_checks": len(checks), "n_passed": sum(int(c["pass"]) for c in checks.values()),
            "max_abs_z": max(zs) if zs else 0.0}


def run_and_record(
    name: str, *, backend: str = "numpy", out_dir: str | Path, seed: int = 0, n: int | None = None
) -> tuple[dict[str, Any], Path]:
    """Run experiment ``name`` on ``backend`` and write ``out_dir/<name>.json`` (a full record)."""
    from foundation.records import utc_now, write_record

    if name not in RUNNERS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    if n is not None:
        C.int_at_least("--n", n, 2)
    xp = get_xp(backend)
    started, t0 = utc_now(), time.perf_counter()
    kwargs: dict[str, Any] = {"seed": seed}
    if n is not None:
        kwargs["n"] = n
    result = RUNNERS[name](xp, **kwargs)
    metrics = {"summary": summarise(result["checks"]), "checks": result["checks"]}
    path = Path(out_dir) / f"{name}.json"
    write_record(
        path, experiment=f"simulate.{name}", config={**result["config"], "backend": backend},
        metrics=metrics, seeds={"seed": seed}, device=device_name(xp), started_at=started,
        start_time=t0, extra={"curves": result["curves"]},
    )
    return {"metrics": metrics, **result}, path
