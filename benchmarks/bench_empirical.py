"""Throughput of the empirical core: training and PGD-step images/s, fast path vs plain fp32 eager.

For each architecture (default: fastnet and resnet18) it measures, side by side in one run:

* ``train``  images/s of SGD steps (forward + backward + update) at ``--batch-size``;
* ``pgd``    images/s of one l2 PGD step (forward + input gradient + step + projection),
  i.e. ``steps * batch / time``;
* ``torchattacks`` the same PGD step through ``torchattacks.PGDL2`` (fp32 eager, as the library
  runs) when torchattacks is installed,

in two modes on any device: ``fast`` = the CUDA code path (bf16 autocast + channels_last, plus
``torch.compile`` with ``--compile``) and ``fp32`` = fp32 eager, NCHW. It also reports each
architecture's forward FLOPs per image (``torch.utils.flop_counter``) and the model-FLOP rate
the fast mode reaches (a training or attack pass counted as 3 forward passes, the convention of
airbench's and PaLM's MFU), with the utilisation of the device's bf16 peak where it is known
(``--peak-tflops``; the H200's dense bf16 peak, 989 TFLOP/s, is used for an H200).

    python benchmarks/bench_empirical.py                       # CPU: batch 32, 3 iters, best of 3
    python benchmarks/bench_empirical.py --archs fastnet:widths=32-64-128,mlp --batch-size 256
    python benchmarks/bench_empirical.py --device cuda --batch-size 512 --iters 20 --compile
    python benchmarks/bench_empirical.py --device cuda --cifar-root DATA --epochs 10

Prints a table and writes a record with ``--out FILE.json``; ``--table FILE.json`` writes the
throughput table that ``robust-features reproduce --plan`` reads (see empirical/plan.py).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from empirical.threat import Attack
from empirical.attacks import pgd
from empirical.models import build_model
from empirical.plan import forward_flops
from empirical.precision import autocast
from foundation.records import atomic_write_json, utc_now, write_record

H200_BF16_PEAK_TFLOPS = 989.0   # NVIDIA H200 SXM datasheet, dense bf16 tensor-core peak


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


#: timed repetitions per measurement; the best (highest images/s) is reported, which filters out
#: interference from other jobs on a shared machine. Set by ``--repeats``.
REPEATS = 1


def _best_rate(fn, images: int, dev: torch.device) -> float:
    """images / seconds of ``fn()``, best of :data:`REPEATS` timed runs."""
    best = 0.0
    for _ in range(REPEATS):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = max(best, images / (time.perf_counter() - t))
    return best


def _model(arch: str, dev: torch.device, fast: bool, compile_: bool, image_size: int):
    torch.manual_seed(0)
    m = build_model(arch, num_classes=10, in_channels=3, image_size=image_size, mean=(0.49, 0.48, 0.45),
                    std=(0.25, 0.24, 0.26)).to(dev)
    if fast:
        m = m.to(memory_format=torch.channels_last)
    run = torch.compile(m) if (fast and compile_) else m
    return m, run


def _input(batch: int, size: int, dev: torch.device, fast: bool) -> torch.Tensor:
    x = torch.rand(batch, 3, size, size, device=dev)
    return x.contiguous(memory_format=torch.channels_last) if fast else x


def bench_train(arch: str, dev: torch.device, fast: bool, compile_: bool, batch: int, size: int, iters: int) -> float:
    m, run = _model(arch, dev, fast, compile_, size)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = _input(batch, size, dev, fast)
    y = torch.randint(0, 10, (batch,), device=dev)
    precision = "bf16" if fast else "fp32"
    m.train()

    def step():
        with autocast(dev, precision):
            loss = F.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2 if not compile_ else 3):
        step()

    def timed():
        for _ in range(iters):
            step()

    return _best_rate(timed, iters * batch, dev)


def bench_pgd(arch: str, dev: torch.device, fast: bool, compile_: bool, batch: int, size: int, iters: int) -> float:
    m, run = _model(arch, dev, fast, compile_, size)
    run.eval()
    x = _input(batch, size, dev, fast)
    y = torch.randint(0, 10, (batch,), device=dev)
    precision = "bf16" if fast else "fp32"
    pgd(run, x, y, Attack("l2", 0.5, steps=2, step_size=0.1), precision=precision)   # warm-up (and compile)
    attack = Attack("l2", 0.5, steps=iters, step_size=0.1)
    return _best_rate(lambda: pgd(run, x, y, attack, use_best=False, precision=precision), iters * batch, dev)


def bench_torchattacks(arch: str, dev: torch.device, batch: int, size: int, iters: int) -> float | None:
    try:
        import torchattacks
    except ImportError:
        return None
    m, _ = _model(arch, dev, False, False, size)
    m.eval()
    x = torch.rand(batch, 3, size, size, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    torchattacks.PGDL2(m, eps=0.5, alpha=0.1, steps=2, random_start=False)(x, y)
    _sync(dev)
    atk = torchattacks.PGDL2(m, eps=0.5, alpha=0.1, steps=iters, random_start=False)
    return _best_rate(lambda: atk(x, y), iters * batch, dev)


def bench_cifar_fastnet(root: str, dev: torch.device, epochs: int, compile_: bool) -> dict[str, float]:
    """Full fastnet CIFAR-10 run: wall seconds of training (data already on the device) and test accuracy."""
    from empirical.data import Augment, load_dataset
    from empirical.evaluate import accuracy
    from empirical.train import TrainConfig, fit

    d = load_dataset(root if root.startswith("imagefolder:") else "cifar10", root=root)
    torch.manual_seed(0)
    m = build_model("fastnet", num_classes=10, in_channels=3, image_size=32, mean=d.mean, std=d.std)
    cfg = TrainConfig(epochs=epochs, batch_size=512, lr=0.2, weight_decay=5e-4, label_smoothing=0.2,
                      augment=Augment(crop_padding=2, flip=True, padding_mode="reflect"), compile=compile_)
    res = fit(m, d.x_train, d.y_train, cfg, device=dev, progress=False)
    _sync(dev)
    return {"train_seconds": res.wall_seconds, "test_accuracy": accuracy(res.model, d.x_test, d.y_test, device=dev),
            "epochs": epochs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", default="fastnet,resnet18")
    p.add_argument("--batch-size", type=int, default=None, help="default 512 on CUDA, 32 on CPU")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 20 on CUDA, 3 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile in the fast mode")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repetitions per figure, best reported (default 3 on CPU, 1 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak for the utilisation estimate (default: 989 on an H200)")
    p.add_argument("--no-torchattacks", action="store_true", help="skip the torchattacks comparison")
    p.add_argument("--cifar-root", default=None, help="also time a full fastnet CIFAR-10 run (cifar10 root or imagefolder:PATH)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the fastnet CIFAR-10 run")
    p.add_argument("--out", default=None, help="write a JSON record here")
    p.add_argument("--table", default=None, help="write the throughput table for `reproduce --plan` here")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = dev.type == "cuda"
    batch = a.batch_size or (512 if cuda else 32)
    iters = a.iters or (20 if cuda else 3)
    global REPEATS
    REPEATS = a.repeats or (1 if cuda else 3)
    if REPEATS < 1:
        p.error(f"--repeats={a.repeats} must be >= 1")
    started, t0 = utc_now(), time.perf_counter()
    name = torch.cuda.get_device_name(dev) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    peak = a.peak_tflops if a.peak_tflops is not None else (H200_BF16_PEAK_TFLOPS if "H200" in name else None)
    print(f"device {name}; batch {batch}, {a.image_size}x{a.image_size}, {iters} timed iterations, best of {REPEATS}; "
          "fast = bf16 autocast + channels_last" + (" + torch.compile" if a.compile else ""))
    rows: dict[str, dict[str, float | None]] = {}
    print(f"{'arch':<28} {'train fast':>11} {'train fp32':>11} {'pgd fast':>10} {'pgd fp32':>10} {'torchattacks':>13} "
          f"{'pgd fast/fp32':>14} {'fast/ta':>8} {'GFLOP/img':>10} {'TFLOP/s':>8}   (images/s)")
    for arch in a.archs.split(","):
        flops = forward_flops(arch, image_size=a.image_size)
        r: dict[str, float | None] = {
            "forward_flops_per_image": flops,
            "train_fast": bench_train(arch, dev, True, a.compile, batch, a.image_size, iters),
            "train_fp32": bench_train(arch, dev, False, False, batch, a.image_size, iters),
            "pgd_fast": bench_pgd(arch, dev, True, a.compile, batch, a.image_size, iters),
            "pgd_fp32": bench_pgd(arch, dev, False, False, batch, a.image_size, iters),
            "pgd_torchattacks": None if a.no_torchattacks else bench_torchattacks(arch, dev, batch, a.image_size, iters),
        }
        r["pgd_speedup_vs_fp32"] = r["pgd_fast"] / r["pgd_fp32"]
        r["pgd_speedup_vs_torchattacks"] = r["pgd_fast"] / r["pgd_torchattacks"] if r["pgd_torchattacks"] else None
        # model FLOP rate: a pass (train step or attack step) = 3 forward passes of FLOPs
        r["train_tflops"] = r["train_fast"] * 3 * flops / 1e12
        r["pgd_tflops"] = r["pgd_fast"] * 3 * flops / 1e12
        r["train_mfu"] = r["train_tflops"] / peak if peak else None
        r["pgd_mfu"] = r["pgd_tflops"] / peak if peak else None
        rows[arch] = r
        ta = f"{r['pgd_torchattacks']:>13.0f}" if r["pgd_torchattacks"] else f"{'n/a':>13}"
        vs = f"{r['pgd_speedup_vs_torchattacks']:>8.2f}" if r["pgd_speedup_vs_torchattacks"] else f"{'n/a':>8}"
        print(f"{arch:<28} {r['train_fast']:>11.0f} {r['train_fp32']:>11.0f} {r['pgd_fast']:>10.0f} {r['pgd_fp32']:>10.0f} "
              f"{ta} {r['pgd_speedup_vs_fp32']:>14.2f} {vs} {flops / 1e9:>10.3f} {r['train_tflops']:>8.3f}")
    if peak:
        print("model-FLOP utilisation of the bf16 peak (" + f"{peak:g} TFLOP/s): "
              + ", ".join(f"{k} train {v['train_mfu']:.1%} / pgd {v['pgd_mfu']:.1%}" for k, v in rows.items()))
    metrics: dict = {"throughput": rows, "peak_tflops": peak}
    if a.cifar_root:
        c = bench_cifar_fastnet(a.cifar_root, dev, a.epochs, a.compile)
        metrics["cifar10_fastnet"] = c
        print(f"fastnet CIFAR-10: {c['test_accuracy'] * 100:.2f}% test accuracy after {c['epochs']} epochs in "
              f"{c['train_seconds']:.1f} s of training")
    config = vars(a) | {"batch": batch, "iters": iters, "repeats": REPEATS}
    if a.out:
        write_record(a.out, experiment="benchmarks.empirical", config=config,
                     metrics=metrics, device=name, started_at=started, start_time=t0)
        print(f"record {a.out}")
    if a.table:
        from foundation.records import provenance

        table = {"device": name, "kind": "cuda" if cuda else "cpu", "batch": batch, "image_size": a.image_size,
                 "threads": torch.get_num_threads(), "measured_at": started,
                 "rates": {arch: {"train_fast": r["train_fast"], "train_fp32": r["train_fp32"],
                                  "attack_fast": r["pgd_fast"], "attack_fp32": r["pgd_fp32"],
                                  "forward_flops_per_image": r["forward_flops_per_image"]} for arch, r in rows.items()},
                 "provenance": provenance(device=name, started_at=started,
                                                 wall_seconds=time.perf_counter() - t0)}
        atomic_write_json(a.table, table)
        print(f"throughput table {a.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
