"""Throughput of the simulated adversarial-training step (Gaussian model, l2 PGD inner max).

    python benchmarks/bench_simulate.py [--d 3072] [--batch 4096] [--pgd-steps 10] [--backend numpy|cupy]

One step = attack the minibatch with ``pgd_steps`` l2 PGD iterations (each a (batch x d)(d x d)
matmul) + the Cholesky-chart gradient step. Prints samples/second and the memory traffic a step
implies: bytes = (pgd_steps + 3) * (2 * batch * d + d * d) * itemsize (each matmul reads the batch
and Sigma^-1 and writes the batch), and, on a GPU, that traffic over the time as a fraction of the
device's peak bandwidth (by default the H200's 4.8 TB/s, NVIDIA's datasheet; --peak-bandwidth-gbs
for another GPU). On CPU there is no bandwidth bound to report. ``--out FILE.json`` writes a record.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from foundation.records import utc_now, write_record
from simulate.backend import device_name, get_xp, make_rng
from simulate.gaussian import adversarial_training


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--peak-bandwidth-gbs", type=float, default=4800.0, help="default: NVIDIA H200 (4.8 TB/s)")
    ap.add_argument("--out", default=None, help="write a JSON record here")
    args = ap.parse_args(argv)
    started, t_start = utc_now(), time.perf_counter()
    xp = get_xp(args.backend)
    dtype = getattr(xp, args.dtype)
    d, b = args.d, args.batch
    rng = make_rng(0, xp)
    # Sigma* with a spread of eigenvalues (0.05 .. 9), mu* random; data drawn once
    s = xp.asarray(np.geomspace(0.05, 9.0, d), dtype=dtype)
    mu = xp.asarray(np.random.default_rng(0).normal(size=d) / np.sqrt(d), dtype=dtype)
    z = rng.standard_normal((b, d), dtype=dtype)
    y = xp.where(rng.random(b) < 0.5, -1.0, 1.0).astype(dtype)
    x = y[:, None] * mu[None, :] + z * xp.sqrt(s)[None, :]
    init = (mu, xp.diag(s))
    kw = dict(attack_kind="pgd", eps=0.5, batch=b, lr=0.05, pgd_steps=args.pgd_steps, init=init)
    adversarial_training(x, y, steps=2, rng=rng, **kw)  # warm-up
    if xp is not np:
        xp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    adversarial_training(x, y, steps=args.steps, rng=rng, **kw)
    if xp is not np:
        xp.cuda.Device().synchronize()
    wall = time.perf_counter() - t0
    per_step = wall / args.steps
    itemsize = np.dtype(args.dtype).itemsize
    traffic = (args.pgd_steps + 3) * (2 * b * d + d * d) * itemsize
    flops = (args.pgd_steps + 2) * 2 * b * d * d
    print(f"device: {device_name(xp)} ({args.backend}, {args.dtype}); d={d} batch={b} pgd_steps={args.pgd_steps}")
    print(f"adversarial-training step: {per_step * 1e3:.1f} ms, {b / per_step:,.0f} samples/s")
    print(f"implied memory traffic {traffic / per_step / 1e9:.2f} GB/s, compute {flops / per_step / 1e9:.1f} GFLOP/s")
    frac = traffic / per_step / 1e9 / args.peak_bandwidth_gbs if xp is not np else None
    if frac is not None:
        print(f"fraction of peak bandwidth ({args.peak_bandwidth_gbs:.0f} GB/s): {frac:.1%}")
    else:
        print("CuPy: not measured here (no GPU); run with --backend cupy on a GPU machine")
    if args.out:
        write_record(args.out, experiment="benchmarks.simulate", config=vars(args),
                     metrics={"step_seconds": per_step, "samples_per_second": b / per_step,
                              "memory_traffic_gbs": traffic / per_step / 1e9, "gflops": flops / per_step / 1e9,
                              "fraction_of_peak_bandwidth": frac},
                     device=device_name(xp), started_at=started, start_time=t_start)
        print(f"record {args.out}")


if __name__ == "__main__":
    main()
