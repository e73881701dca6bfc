"""Theory speed targets (issue 2): prints wall times; not a test.

Targets: at d = 3072 (CIFAR-10's dimension) with a dense Sigma*, robust_covariance,
vulnerability and gradient_alignment each under 2 s on one CPU core with one eigendecomposition
reused; fit_robust at d = 64 converges in under 30 s.

    OMP_NUM_THREADS=1 python benchmarks/bench_theory.py [--d 3072] [--fit-d 64] [--out FILE]

The script pins BLAS to one thread itself (before numpy is imported) unless --threads is given.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=3072)
    parser.add_argument("--fit-d", type=int, default=64)
    parser.add_argument("--fit-samples", type=int, default=20_000)
    parser.add_argument("--fit-eps", type=float, nargs="+", default=[0.1, 0.5, 2.0, 8.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write a JSON record here")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import time

    import numpy as np

    from theory import (GaussianModel, Spectrum, fit_robust, gradient_alignment,
                        robust_covariance, vulnerability)

    def best(fn, repeats=args.repeats):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    d = args.d
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    sigma = a @ a.T + 0.05 * np.eye(d)  # dense, cond ~ 1e2
    mu = rng.standard_normal(d)
    results: dict[str, float] = {}
    results["eigh_full_s"] = best(lambda: Spectrum.of(sigma))
    results["eigvalsh_s"] = best(lambda: Spectrum.of(sigma, vectors=False))
    spec = Spectrum.of(sigma)
    c = 2.0 / spec.min
    results["vulnerability_reused_s"] = best(lambda: vulnerability(spec, c))
    results["vulnerability_cold_s"] = best(lambda: vulnerability(sigma, c))
    results["gradient_alignment_reused_s"] = best(lambda: gradient_alignment(spec, mu))
    results["gradient_alignment_worst_case_cold_s"] = best(lambda: gradient_alignment(sigma))
    results["gradient_alignment_with_mu_cold_s"] = best(lambda: gradient_alignment(sigma, mu))
    results["robust_covariance_reused_s"] = best(lambda: robust_covariance(spec, 1.0))
    results["robust_covariance_cold_s"] = best(lambda: robust_covariance(sigma, 1.0))
    model = GaussianModel(mu, sigma)
    results["gaussian_model_init_s"] = best(lambda: GaussianModel(mu, sigma))
    _ = model.spectrum
    results["all_three_one_eigh_s"] = best(lambda: (
        lambda sp: (robust_covariance(sp, 1.0), vulnerability(sp, 2.0 / sp.min),
                    gradient_alignment(sp, mu)))(Spectrum.of(sigma)), repeats=1)

    print(f"theory benchmark, d={d} dense Sigma*, BLAS threads={args.threads}")
    print(f"  {'quantity':42s} {'seconds':>8s}   target")
    for key, val in results.items():
        target = "< 2 s" if key.endswith("reused_s") or key.startswith("vulnerability_cold") else ""
        print(f"  {key:42s} {val:8.3f}   {target}")

    fd = args.fit_d
    q, _ = np.linalg.qr(rng.standard_normal((fd, fd)))
    s = np.geomspace(0.05, 20.0, fd)
    fmodel = GaussianModel(rng.standard_normal(fd), (q * s) @ q.T)
    x, y = fmodel.sample(args.fit_samples, 1)
    print(f"fit_robust, d={fd}, n={args.fit_samples} (target < 30 s each, cold start)")
    fits = []
    for eps in args.fit_eps:
        t = time.perf_counter()
        fit = fit_robust(fmodel, eps, x=x, y=y)
        dt = time.perf_counter() - t
        fits.append({"eps": eps, "seconds": dt, "iterations": fit.iterations,
                     "stationarity": fit.stationarity, "lam_multiplier": fit.lam_multiplier,
                     "lam_spectral": fit.lam_spectral})
        print(f"  eps={eps:<6g} {dt:7.2f} s  {fit.iterations:4d} iterations  residual "
              f"{fit.stationarity:.1e}  lam_mult={fit.lam_multiplier:.4g} lam_spec={fit.lam_spectral:.4g}")
    if args.out:
        from foundation.records import write_record

        write_record(args.out, experiment="theory.benchmark", config=vars(args),
                     metrics={"d3072": results, "fit_robust": fits}, seeds={"matrix": 0, "fit": 1},
                     start_time=t_start)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
