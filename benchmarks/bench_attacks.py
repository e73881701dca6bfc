"""Our attacks beside torchattacks', side by side in one run, and the model FLOP rate against this
machine's measured bf16 GEMM ceiling.

For each model (``--checkpoint NAME=model.pt``, e.g. the cifar10-cpu preset's fastnet and resnet18;
or, without checkpoints, freshly initialised ``fastnet:widths=32-64-128`` and ``resnet18:width=16``),
on the same ``--n`` test images (``--data``; the clean-correct ones are attacked by both):

* PGD (l2, ``--steps``, step 2.5 eps / steps, from x): ours in fp32, ours on the fast path (bf16
  autocast + channels_last; the verdict of every point fp32), torchattacks' ``PGDL2``;
* APGD-CE and APGD-T (``--steps``, ``--targets`` target classes): ours fp32 and fast, torchattacks'
  ``APGD`` / ``APGDT``; APGD-T also with every target class in one batch (``targets_at_once``);

each timed once after a warm-up on 16 images: images/s = attacked images / seconds, robust accuracy = the fp32
verdict on the returned points, and the ratio ours (fast) / torchattacks. Then:

* the ceiling: a ``--gemm`` x ``--gemm`` bf16 matmul timed on this machine (TFLOP/s);
* the model FLOP rate of our fast attack steps and of a fast training step (forward FLOPs x 3 per
  image-step, ``torch.utils.flop_counter``), printed as a fraction of that ceiling.

    python benchmarks/bench_attacks.py --data imagefolder:DATA/cifar10-jpeg \\
        --checkpoint fastnet=runs/cifar10-cpu/models/standard/model.pt \\
        --checkpoint resnet18=runs/cifar10-cpu/models/fig3_std_resnet18-width-16/model.pt --out attacks.json

Timed figures live here and in the README, never in tests. Needs torchattacks (``pip install
--no-deps torchattacks==3.5.1``) for its columns.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from foundation.records import utc_now, write_record


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def gemm_ceiling(size: int, repeats: int = 3) -> float:
    """bf16 matmul FLOP/s of this machine: best of ``repeats`` ``size`` x ``size`` products."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2.0 * size**3 / (time.perf_counter() - t))
    return best


def _models(args: argparse.Namespace, d: Any) -> dict[str, torch.nn.Module]:
    from empirical.checkpoint import load_model
    from empirical.models import build_model

    if args.checkpoint:
        return {name: load_model(path).eval() for name, path in (c.split("=", 1) for c in args.checkpoint)}
    torch.manual_seed(0)
    return {arch.split(":")[0]: build_model(arch, num_classes=d.num_classes, in_channels=d.in_channels,
                                            image_size=d.image_size, mean=d.mean, std=d.std).eval()
            for arch in ("fastnet:widths=32-64-128", "resnet18:width=16")}


def _fast(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def bench_model(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace) -> dict:
    import torchattacks

    from empirical.attacks import pgd
    from empirical.autoattack import run_apgd
    from empirical.evaluate import predict
    from empirical.threat import Attack

    for prm in model.parameters():
        prm.requires_grad_(False)
    keep = predict(model, x) == y                     # both attack the clean-correct images
    x, y = x[keep], y[keep]
    n = int(x.shape[0])
    fast = _fast(model)
    xc = x.contiguous(memory_format=torch.channels_last)
    eps = a.eps

    def robust(xa: torch.Tensor) -> float:
        return float((predict(model, xa) == y).float().mean())

    pgd_attack = Attack("l2", eps, steps=a.steps)
    bs = a.batch_size

    def apgd(m: Any, loss: str, precision: str, **kw: Any) -> Any:
        targets = {"n_target_classes": a.targets} if loss == "dlr-targeted" else {}
        return lambda x, y, xc, seed: run_apgd(m, xc if m is fast else x, y, norm="l2", eps=eps, steps=a.steps,
                                               loss=loss, precision=precision, batch_size=bs, seed=seed,
                                               **targets, **kw)[0]

    ta_pgd = torchattacks.PGDL2(model, eps=eps, alpha=pgd_attack.step, steps=a.steps, random_start=False)

    def ta_apgd(x: torch.Tensor, y: torch.Tensor, xc: torch.Tensor, seed: int) -> torch.Tensor:
        return torchattacks.APGD(model, norm="L2", eps=eps, steps=a.steps, n_restarts=1, loss="ce", seed=seed)(x, y)

    def ta_apgdt(x: torch.Tensor, y: torch.Tensor, xc: torch.Tensor, seed: int) -> torch.Tensor:
        return torchattacks.APGDT(model, norm="L2", eps=eps, steps=a.steps, n_restarts=1, n_classes=a.targets + 1,
                                  seed=seed)(x, y)

    runs = {
        "pgd": {"ours fp32": lambda x, y, xc, seed: pgd(model, x, y, pgd_attack, precision="fp32", batch_size=bs),
                "ours fast": lambda x, y, xc, seed: pgd(fast, xc, y, pgd_attack, precision="bf16", batch_size=bs),
                "torchattacks": lambda x, y, xc, seed: ta_pgd(x, y)},
        "apgd-ce": {"ours fp32": apgd(model, "ce", "fp32"), "ours fast": apgd(fast, "ce", "bf16"),
                    "torchattacks": ta_apgd},
        "apgd-t": {"ours fp32": apgd(model, "dlr-targeted", "fp32"), "ours fast": apgd(fast, "dlr-targeted", "bf16"),
                   "ours fast, targets batched": apgd(fast, "dlr-targeted", "bf16", targets_at_once=a.targets),
                   "torchattacks": ta_apgdt},
    }
    if not a.batched_targets:
        del runs["apgd-t"]["ours fast, targets batched"]
    out: dict[str, Any] = {"n": n}
    for attack in a.attacks:
        impls = runs[attack]
        # PGD here starts at x (no random start): one run says it all; the APGDs draw their starts from the seed
        seeds = [0] if attack == "pgd" else list(range(a.seeds))
        out[attack] = {}
        for impl, fn in impls.items():
            fn(x[:16], y[:16], xc[:16], 0)               # warm-up: kernels chosen, buffers allocated
            secs, accs = [], []
            for seed in seeds:
                seconds, xa = _timed(lambda: fn(x, y, xc, seed))
                secs.append(seconds)
                accs.append(robust(xa))
            out[attack][impl] = {"images_per_s": n * len(seeds) / sum(secs), "seconds": sum(secs),
                                 "robust_accuracy": sum(accs) / len(accs), "robust_accuracy_by_seed": accs,
                                 "seeds": seeds}
        ta = out[attack]["torchattacks"]
        out[attack]["speedup_fast_over_torchattacks"] = out[attack]["ours fast"]["images_per_s"] / ta["images_per_s"]
        out[attack]["speedup_fp32_over_torchattacks"] = out[attack]["ours fp32"]["images_per_s"] / ta["images_per_s"]
        # robust accuracy of the fast path minus torchattacks' (points, mean over seeds): <= 0 = as strong or stronger
        out[attack]["fast_minus_torchattacks_points"] = 100 * (out[attack]["ours fast"]["robust_accuracy"]
                                                               - ta["robust_accuracy"])
        out[attack]["fast_minus_fp32_points"] = 100 * (out[attack]["ours fast"]["robust_accuracy"]
                                                       - out[attack]["ours fp32"]["robust_accuracy"])
        print(f"{name:<9} {attack:<8} " + "  ".join(
            f"{impl} {v['images_per_s']:7.1f} img/s (robust {100 * v['robust_accuracy']:5.2f}%)"
            for impl, v in out[attack].items() if isinstance(v, dict))
            + f"  | fast/torchattacks {out[attack]['speedup_fast_over_torchattacks']:.2f}x, robust "
              f"{out[attack]['fast_minus_torchattacks_points']:+.2f} points"
            + (f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else ""), flush=True)
    return out


def flop_rates(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ceiling: float,
               a: argparse.Namespace) -> dict:
    """Model FLOP/s of our fast attack steps and of a fast training step, and their fraction of ``ceiling``."""
    from torch.utils.flop_counter import FlopCounterMode

    from empirical.attacks import pgd
    from empirical.precision import autocast
    from empirical.threat import Attack

    fast = _fast(model)
    xb, yb = x[: a.batch_size].contiguous(memory_format=torch.channels_last), y[: a.batch_size]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fast(xb[:2])
    fwd = fc.get_total_flops() / 2                          # per image (a multiply-add counts 2 flops)
    steps = 10
    pgd(fast, xb, yb, Attack("l2", a.eps, steps=2), precision="bf16")
    sec, _ = _timed(lambda: pgd(fast, xb, yb, Attack("l2", a.eps, steps=steps), precision="bf16", use_best=False))
    attack_rate = 3 * fwd * xb.shape[0] * steps / sec
    train = _fast(model).train()
    for prm in train.parameters():
        prm.requires_grad_(True)
    opt = torch.optim.SGD(train.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast("cpu", "bf16"):
            loss = torch.nn.functional.cross_entropy(train(xb), yb)
        loss.backward()
        opt.step()

    step()
    sec, _ = _timed(lambda: [step() for _ in range(steps)])
    train_rate = 3 * fwd * xb.shape[0] * steps / sec
    out = {"forward_flops_per_image": fwd, "attack_flops_per_s": attack_rate, "train_flops_per_s": train_rate,
           "attack_fraction_of_ceiling": attack_rate / ceiling, "train_fraction_of_ceiling": train_rate / ceiling}
    print(f"{name:<9} model FLOP rate (fast path, batch {xb.shape[0]}): attack steps {attack_rate / 1e12:.3f} TFLOP/s "
          f"= {100 * out['attack_fraction_of_ceiling']:.1f}% of the ceiling; training steps {train_rate / 1e12:.3f} "
          f"TFLOP/s = {100 * out['train_fraction_of_ceiling']:.1f}%", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="dataset spec (imagefolder:PATH for CIFAR-10)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--n", type=int, default=500, help="test images (a seeded class-stratified sample)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--targets", type=int, default=3, help="APGD-T target classes")
    p.add_argument("--eps", type=float, default=0.5, help="l2 budget")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--gemm", type=int, default=4096, help="side of the bf16 matmul that measures the ceiling")
    p.add_argument("--attacks", default="pgd,apgd-ce,apgd-t", help="which to run, comma-separated")
    p.add_argument("--seeds", type=int, default=1,
                   help="APGD-CE / APGD-T runs per implementation, seeds 0..N-1 (robust accuracy: their mean)")
    p.add_argument("--no-batched-targets", dest="batched_targets", action="store_false",
                   help="leave out the APGD-T row with every target class in one batch")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    a.attacks = [t for t in a.attacks.split(",") if t]
    bad = [t for t in a.attacks if t not in ("pgd", "apgd-ce", "apgd-t")]
    if bad or not a.attacks or a.seeds < 1 or a.steps < 1 or a.n < 1:
        p.error(f"--attacks={','.join(a.attacks)!r} (valid: pgd, apgd-ce, apgd-t), --seeds={a.seeds}, "
                f"--steps={a.steps}, --n={a.n}: attacks from the list, the numbers >= 1")
    from empirical.data import load_dataset, stratified_subset

    started, t0 = utc_now(), time.perf_counter()
    d = load_dataset(a.data)
    sub = stratified_subset(d.x_test, d.y_test, a.n, seed=0)
    x, y = d.x_test[sub.indices], d.y_test[sub.indices]
    ceiling = gemm_ceiling(a.gemm)
    print(f"cpu, {torch.get_num_threads()} threads; bf16 GEMM ceiling ({a.gemm}^2): {ceiling / 1e12:.3f} TFLOP/s; "
          f"{a.data}, n={sub.n}, l2 eps={a.eps}, {a.steps} steps, APGD-T {a.targets} targets, {a.seeds} seed(s)",
          flush=True)
    metrics: dict[str, Any] = {"gemm_bf16_flops_per_s": ceiling, "models": {}}
    for name, model in _models(a, d).items():
        metrics["models"][name] = {**bench_model(name, model, x, y, a), **flop_rates(name, model, x, y, ceiling, a)}
    if a.out:
        write_record(a.out, experiment="benchmarks.attacks", config=vars(a) | {"subset": sub.describe()},
                     metrics=metrics, device=f"cpu ({torch.get_num_threads()} threads)", started_at=started,
                     start_time=t0)
        print(f"record {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
