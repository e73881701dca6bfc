"""``robust-features theory report``: every theory number behind the figures, in one record.

Computes (all on CPU: about 13 s on two cores, the two eps sweeps in two processes; 23 s on one):

* Figure 4 (paper sec. 4): robust fits of a 2-D Gaussian with the exact l2-ball adversary at
  eps = 0, 1, 10, with the closed form Sigma_r(lam) at the effective lam overlaid;
* a sweep of eps for the 2-D model and for a random d = 8 model: learned eigenvalues, the two
  effective multipliers, the gradient-alignment cosines, accuracies, and the eps <-> lam scaling
  compared with the paper's stated bounds (docs/paper-notes.md sec. 5.3);
* vulnerability against anisotropy at fixed trace (Theorem 1), closed form vs numeric vs Monte
  Carlo, in every convention;
* the Theorem 2 eigenvalues against lam (closed form);
* section 2 usefulness / robust usefulness of the coordinate features and the Bayes feature.

The record is written with :func:`foundation.records.write_record`; the figures are
rendered from the record alone by :mod:`paper_figures.theory_figs` (the command does it, in
:mod:`robust_features.cli_theory`; this module never imports paper_figures).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundation import checks as C
from theory.alignment import gradient_alignment
from theory.features import linear_accuracy, linear_robust_accuracy, robust_usefulness, usefulness
from theory.misalignment import VULNERABILITY_CONVENTIONS, vulnerability
from theory.model import GaussianModel, Spectrum
from theory.monte_carlo import vulnerability_mc
from theory.robust_fit import RobustFit, fit_robust
from theory.robust_learning import robust_covariance, robust_eigenvalues

RECORD_NAME = "theory_report.json"
EXPERIMENT = "theory.report"


@dataclass(frozen=True)
class ReportConfig:
    """Everything the report computes is fixed by these values (and the code version)."""

    seed: int = 0
    n_samples: int = 20_000
    fig4_mu: tuple[float, ...] = (-10.0, 1.0)
    fig4_sigma_diag: tuple[float, ...] = (25.0, 0.5)
    fig4_eps: tuple[float, ...] = (0.0, 1.0, 10.0)
    sweep_eps: tuple[float, ...] = tuple(float(e) for e in np.round(np.geomspace(0.02, 20.0, 13), 6))
    sweep_dim: int = 8
    sweep_nd_samples: int = 5_000
    lam_grid: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1e-3, 1e3, 61))
    anisotropy_dim: int = 10
    anisotropy_kappa: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1.0, 1e3, 25))
    anisotropy_penalty_factor: float = 1.5
    mc_samples: int = 50_000
    feature_eps: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)

    def __post_init__(self) -> None:
        C.int_at_least("n_samples", self.n_samples, 100)
        C.int_at_least("sweep_nd_samples", self.sweep_nd_samples, 100)
        if len(self.fig4_mu) != 2 or len(self.fig4_sigma_diag) != 2:
            raise ValueError("fig4_mu and fig4_sigma_diag must have length 2 (Figure 4 is 2-D)")
        if any(e < 0 for e in (*self.fig4_eps, *self.sweep_eps, *self.feature_eps)):
            raise ValueError("every eps in the report config must be >= 0")
        C.int_at_least("mc_samples", self.mc_samples, 2)


def fig4_model(cfg: ReportConfig) -> GaussianModel:
    return GaussianModel(np.array(cfg.fig4_mu), np.diag(cfg.fig4_sigma_diag))


def sweep_model(cfg: ReportConfig) -> GaussianModel:
    """A random d-dimensional model with eigenvalues log-spaced over [0.05, 20]."""
    rng = np.random.default_rng(cfg.seed + 1)
    d = cfg.sweep_dim
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.geomspace(0.05, 20.0, d)
    sigma = (q * s) @ q.T
    return GaussianModel(rng.standard_normal(d), (sigma + sigma.T) / 2)


def _fit_summary(model: GaussianModel, fit: RobustFit) -> dict[str, Any]:
    ref = Spectrum.of(fit.reference_sigma, "reference_sigma")
    learned_in_ref = np.einsum("ij,jk,ki->i", ref.vectors.T, fit.sigma, ref.vectors)
    out: dict[str, Any] = {
        "eps": fit.eps,
        "mu": fit.mu,
        "sigma": fit.sigma,
        "reference_sigma": fit.reference_sigma,
        "eigenvalues": np.linalg.eigvalsh(fit.sigma),
        "eigenvalues_in_reference_basis": learned_in_ref,
        "reference_eigenvalues": ref.values,
        "condition_number": float(np.linalg.cond(fit.sigma)),
        "lam_multiplier": fit.lam_multiplier,
        "lam_multiplier_median": fit.lam_multiplier_median,
        "lam_spectral": fit.lam_spectral,
        "objective": fit.objective,
        "stationarity": fit.stationarity,
        "iterations": fit.iterations,
        "mu_error": float(np.linalg.norm(fit.mu - model.mu)),
    }
    ga = gradient_alignment(fit.sigma, model.mu)
    out["worst_case_cosine"] = ga.worst_case
    out["cosine"] = ga.cosine
    w = np.linalg.solve(fit.sigma, fit.mu)
    out["w"] = w
    out["accuracy"] = linear_accuracy(w, 0.0, model)
    out["robust_accuracy"] = linear_robust_accuracy(w, 0.0, model, fit.eps) if fit.eps > 0 else out["accuracy"]
    for key in ("lam_multiplier", "lam_spectral"):
        lam = getattr(fit, key)
        closed = robust_covariance(ref, lam)
        out[f"closed_form_sigma_at_{key}"] = closed
        out[f"closed_form_eigenvalues_at_{key}"] = robust_eigenvalues(ref.values, lam)
        out[f"closed_form_relative_error_at_{key}"] = float(
            np.linalg.norm(closed - fit.sigma) / np.linalg.norm(fit.sigma))
        out[f"closed_form_worst_case_cosine_at_{key}"] = gradient_alignment(closed).worst_case
    return out


def _sweep(model: GaussianModel, eps_grid: tuple[float, ...], cfg: ReportConfig,
           n_samples: int) -> list[dict[str, Any]]:
    x, y = model.sample(n_samples, cfg.seed)
    rows = []
    fit = None
    for eps in (0.0, *sorted(eps_grid)):
        fit = fit_robust(model, eps, x=x, y=y, init=fit)
        rows.append(_fit_summary(model, fit))
    return rows


def paper_lambda_bounds(eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shapes of the paper's stated bounds (docs/paper-notes.md sec. 5.3), constants set to 1:
    lower (1 + eps^1/2) / (eps^1/2 + eps^3/2), upper (1 + eps^1/2) / eps^1/2."""
    r = np.sqrt(eps)
    return (1 + r) / (r + r**3), (1 + r) / r


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def lam_scaling(rows: list[dict[str, Any]], sigma_star: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Measured eps <-> lam relation vs the paper's bounds and two asymptotes.

    Small eps: the secular root is nu ~ ||Sigma*^-1 v|| / eps, so lam ~ E||Sigma*^-1 v|| / eps
    (estimated here by Monte Carlo, v ~ N(0, Sigma*)). Large eps: the learned Sigma approaches
    (eps^2/d) I and nu -> lambda_max(Sigma^-1), so lam ~ d / eps^2.
    """
    eps = np.array([r["eps"] for r in rows if r["eps"] > 0])
    out: dict[str, Any] = {"eps": eps}
    d = sigma_star.shape[0]
    rng = np.random.default_rng(seed)
    v = rng.multivariate_normal(np.zeros(d), sigma_star, size=200_000)
    const = float(np.mean(np.linalg.norm(np.linalg.solve(sigma_star, v.T), axis=0)))
    out["small_eps_constant"] = const
    out["small_eps_asymptote"] = const / eps
    out["large_eps_asymptote"] = d / eps**2
    lower, upper = paper_lambda_bounds(eps)
    out["paper_lower_shape"], out["paper_upper_shape"] = lower, upper
    heuristic = np.sqrt(np.trace(np.linalg.inv(sigma_star))) / eps
    out["norm_matching_heuristic"] = heuristic
    small, large = eps <= np.sort(eps)[4], eps >= np.sort(eps)[-5]
    for key in ("lam_multiplier", "lam_multiplier_median", "lam_spectral"):
        lam = np.array([r[key] for r in rows if r["eps"] > 0])
        out[key] = lam
        out[f"{key}_slope_small_eps"] = _loglog_slope(eps[small], lam[small])
        out[f"{key}_slope_large_eps"] = _loglog_slope(eps[large], lam[large])
        out[f"{key}_times_eps"] = lam * eps
        out[f"{key}_over_paper_lower"] = lam / lower
        out[f"{key}_over_paper_upper"] = lam / upper
    out["paper_slope_small_eps"] = -0.5
    out["paper_lower_slope_large_eps"] = -1.0
    out["paper_upper_slope_large_eps"] = 0.0
    return out


def _anisotropy(cfg: ReportConfig) -> dict[str, Any]:
    d = cfg.anisotropy_dim
    kappas = np.array(cfg.anisotropy_kappa)
    spectra = []
    for k in kappas:
        s = np.geomspace(1.0, k, d)
        spectra.append(s * d / s.sum())  # fixed trace d
    c = cfg.anisotropy_penalty_factor / min(s.min() for s in spectra)
    out: dict[str, Any] = {"kappa": kappas, "penalty": c, "dim": d, "trace": float(d)}
    for conv in VULNERABILITY_CONVENTIONS:
        out[conv] = [vulnerability(np.diag(s), c, conv) for s in spectra]
    out["paper_numeric"] = [vulnerability(np.diag(s), c, "paper", method="numeric") for s in spectra]
    ests = [vulnerability_mc(Spectrum.of(np.diag(s)), c, "paper", n_samples=cfg.mc_samples,
                             seed=cfg.seed + i) for i, s in enumerate(spectra)]
    out["paper_mc_mean"] = [e.mean for e in ests]
    out["paper_mc_stderr"] = [e.stderr for e in ests]
    out["paper_mc_max_abs_z"] = float(max(abs(e.z_score(v)) for e, v in zip(ests, out["paper"])))
    out["isotropic_is_minimum"] = bool(np.all(np.array(out["paper"]) >= out["paper"][0] - 1e-12))
    return out


def _features(model: GaussianModel, cfg: ReportConfig) -> dict[str, Any]:
    # coordinate features oriented so that E[y f(x)] >= 0
    feats = {"x1": np.sign(model.mu[0] or 1.0) * np.array([1.0, 0.0]),
             "x2": np.sign(model.mu[1] or 1.0) * np.array([0.0, 1.0]),
             "bayes": model.bayes_direction}
    out: dict[str, Any] = {"eps": cfg.feature_eps}
    for name, w in feats.items():
        out[name] = {
            "rho": usefulness(w, model),
            "gamma_l2": [robust_usefulness(w, model, e, "l2") for e in cfg.feature_eps],
            "gamma_linf": [robust_usefulness(w, model, e, "linf") for e in cfg.feature_eps],
            "accuracy": linear_accuracy(w, 0.0, model),
            "robust_accuracy_l2": [linear_robust_accuracy(w, 0.0, model, e) for e in cfg.feature_eps],
        }
    return out


def _timed_sweep(model: GaussianModel, eps_grid: tuple[float, ...], cfg: ReportConfig,
                 n_samples: int) -> tuple[list[dict[str, Any]], float]:
    t = time.perf_counter()
    rows = _sweep(model, eps_grid, cfg, n_samples)
    return rows, time.perf_counter() - t


def _sweep_child(conn: Any, *args: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)         # Ctrl-C is the parent's to handle (it stops this one)
    try:
        conn.send(("ok", _timed_sweep(*args)))
    except Exception as e:                                # noqa: BLE001 - handed to the parent, raised there
        conn.send(("error", e))
    finally:
        conn.close()


class _SweepProcess:
    """:func:`_timed_sweep` in a second process (``spawn``: safe whatever the caller has loaded,
    torch's thread pools included); :meth:`result` waits for it, :meth:`stop` ends it early."""

    def __init__(self, *args: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_sweep_child, args=(send, *args), daemon=True)
        self._proc.start()
        send.close()

    def result(self) -> tuple[list[dict[str, Any]], float]:
        try:
            status, value = self._recv.recv()
        except EOFError:
            self._proc.join()
            raise RuntimeError(f"the sweep's second process ended without a result (exit code {self._proc.exitcode})")
        self._proc.join()
        if status != "ok":
            raise value
        return value

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._recv.close()


def run_report(out_dir: str | Path, cfg: ReportConfig | None = None, *, processes: int = 2) -> dict[str, Any]:
    """Compute every number and write ``out_dir/theory_report.json``. Returns the record.

    ``processes``: 2 (default) runs the d-dimensional sweep in a second process beside the 2-D one
    (same numbers, about 40% less wall time on two cores); 1 runs everything here.

    The figures are not drawn here (theory/ sits below paper_figures/): the CLI layer renders
    them from the returned record (:mod:`robust_features.cli_theory`)."""
    from foundation.records import utc_now, write_record

    if not C.is_int(processes) or processes not in (1, 2):
        raise ValueError(f"processes={processes!r} must be 1 or 2")
    cfg = cfg or ReportConfig()
    started, t0 = utc_now(), time.perf_counter()
    out_dir = Path(out_dir)
    m2 = fig4_model(cfg)
    md = sweep_model(cfg)
    timings: dict[str, float] = {}

    # The two sweeps are independent (each warm-starts only along its own eps grid) and single-threaded
    # NumPy/SciPy: with ``processes=2`` the d-dimensional one runs in a second process while this one
    # does the 2-D sweep and the anisotropy study, so a 2-core machine does both at once. The numbers are
    # the same either way (same calls, same seeds); only the wall time changes.
    eps_2d = tuple(sorted(set(cfg.sweep_eps) | set(cfg.fig4_eps) - {0.0}))
    second = _SweepProcess(md, cfg.sweep_eps, cfg, cfg.sweep_nd_samples) if processes == 2 else None
    try:
        sweep2, timings["sweep_2d_seconds"] = _timed_sweep(m2, eps_2d, cfg, cfg.n_samples)
        t = time.perf_counter()
        aniso = _anisotropy(cfg)
        timings["anisotropy_seconds"] = time.perf_counter() - t
        sweepd, timings["sweep_nd_seconds"] = (second.result() if second is not None
                                               else _timed_sweep(md, cfg.sweep_eps, cfg, cfg.sweep_nd_samples))
    finally:
        if second is not None:
            second.stop()
    timings["processes"] = processes
    fig4 = [r for r in sweep2 if any(np.isclose(r["eps"], e) for e in cfg.fig4_eps)]
    lam_grid = np.array(cfg.lam_grid)
    metrics = {
        "fig4": {"mu_star": m2.mu, "sigma_star": m2.sigma, "fits": fig4},
        "sweep_2d": {"mu_star": m2.mu, "sigma_star": m2.sigma, "fits": sweep2,
                     "lam_scaling": lam_scaling(sweep2, m2.sigma, cfg.seed)},
        "sweep_nd": {"mu_star": md.mu, "sigma_star": md.sigma, "fits": sweepd,
                     "lam_scaling": lam_scaling(sweepd, md.sigma, cfg.seed)},
        "eigenvalues_vs_lam": {
            "lam": lam_grid,
            "sigma_star_eigenvalues": md.spectrum.values,
            "eigenvalues": np.stack([robust_eigenvalues(md.spectrum.values, lam) for lam in lam_grid]),
            "worst_case_cosine": [gradient_alignment(robust_covariance(md, lam)).worst_case
                                  for lam in lam_grid],
            "standard_worst_case_cosine": gradient_alignment(md).worst_case,
        },
        "vulnerability_vs_anisotropy": aniso,
        "features_2d": _features(m2, cfg),
        "bayes_accuracy_2d": m2.bayes_accuracy,
        "timings": timings,
    }
    record = write_record(out_dir / RECORD_NAME, experiment=EXPERIMENT, config=asdict(cfg),
                          metrics=metrics, seeds={"seed": cfg.seed, "sweep_model_seed": cfg.seed + 1},
                          started_at=started, start_time=t0)
    return record
