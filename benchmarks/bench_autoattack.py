"""Throughput of our APGD-CE (empirical.autoattack) beside torchattacks' APGD, same model and batch.

Both attacks run ``--steps`` iterations of untargeted APGD on the cross-entropy (one restart) on
the same ``--batch-size`` inputs, labelled with the model's own clean predictions so that every
example is attacked by both (each skips clean-misclassified inputs). Reported: images/s = batch /
seconds of one whole attack, best of ``--repeats`` timed runs after a warm-up, fp32 eager, and the
ratio ours / torchattacks, with the robust accuracy each reached as a check that both did the work.

    python benchmarks/bench_autoattack.py                          # CPU: fastnet:widths=32-64-128, batch 64, 10 steps
    python benchmarks/bench_autoattack.py --device cuda --batch-size 512 --steps 100
    python benchmarks/bench_autoattack.py --arch mlp --image-size 8 --channels 1 --out apgd.json

Writes a record with ``--out FILE.json`` (foundation.records.write_record).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from empirical.autoattack import apgd, torchattacks_reference
from empirical.models import build_model
from foundation.records import utc_now, write_record


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _best_rate(fn, images: int, dev: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """(images / seconds of ``fn()``, best of ``repeats``; the last output)."""
    best, out = 0.0, None
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        out = fn()
        _sync(dev)
        best = max(best, images / (time.perf_counter() - t))
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="fastnet:widths=32-64-128")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--norm", default="linf", choices=("linf", "l2"))
    p.add_argument("--eps", type=float, default=None, help="default 8/255 (linf) or 0.5 (l2)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions, best reported")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--no-torchattacks", action="store_true", help="time ours only")
    p.add_argument("--out", default=None, help="write a JSON record here")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error(f"--repeats={a.repeats} must be >= 1")
    if a.steps < 1 or a.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1")
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    eps = a.eps if a.eps is not None else (8 / 255 if a.norm == "linf" else 0.5)
    started, t0 = utc_now(), time.perf_counter()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"

    torch.manual_seed(0)
    c = a.channels
    model = build_model(a.arch, num_classes=10, in_channels=c, image_size=a.image_size,
                        mean=(0.49, 0.48, 0.45)[:c] if c <= 3 else (0.5,) * c,
                        std=(0.25, 0.24, 0.26)[:c] if c <= 3 else (0.25,) * c).to(dev).eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    x = torch.rand(a.batch_size, c, a.image_size, a.image_size, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.no_grad():
        y = model(x).argmax(1)                       # every example clean-correct: both attack the whole batch

    def robust(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean())

    print(f"device {name}; {a.arch}, batch {a.batch_size}, {c}x{a.image_size}x{a.image_size}, APGD-CE {a.norm} "
          f"eps={eps:.4g}, {a.steps} steps, 1 restart, fp32 eager, best of {a.repeats}")
    ours_fn = lambda: apgd(model, x, y, norm=a.norm, eps=eps, steps=a.steps, precision="fp32")  # noqa: E731
    apgd(model, x, y, norm=a.norm, eps=eps, steps=2, precision="fp32")                           # warm-up
    ours, x_ours = _best_rate(ours_fn, a.batch_size, dev, a.repeats)
    metrics: dict = {"ours_images_per_s": ours, "ours_robust_accuracy": robust(x_ours),
                     "torchattacks_images_per_s": None, "torchattacks_robust_accuracy": None, "speedup": None}
    if not a.no_torchattacks:
        try:
            import torchattacks
        except ImportError:
            print("torchattacks is not installed: timing ours only")
        else:
            del torchattacks
            ref = functools.partial(torchattacks_reference, model, x, y, attack="apgd-ce", norm=a.norm, eps=eps)
            ref(steps=2)                                                                                 # warm-up
            ta, x_ta = _best_rate(lambda: ref(steps=a.steps), a.batch_size, dev, a.repeats)
            metrics.update(torchattacks_images_per_s=ta, torchattacks_robust_accuracy=robust(x_ta), speedup=ours / ta)
    print(f"{'attack':<22} {'images/s':>10} {'robust acc':>11}")
    print(f"{'ours (apgd-ce)':<22} {ours:>10.1f} {metrics['ours_robust_accuracy']:>11.3f}")
    if metrics["torchattacks_images_per_s"]:
        print(f"{'torchattacks.APGD':<22} {metrics['torchattacks_images_per_s']:>10.1f} "
              f"{metrics['torchattacks_robust_accuracy']:>11.3f}")
        print(f"ours / torchattacks: {metrics['speedup']:.2f}x")
    if a.out:
        config = vars(a) | {"eps": eps, "device_name": name}
        write_record(a.out, experiment="benchmarks.autoattack", config=config, metrics=metrics, device=name,
                     started_at=started, start_time=t0)
        print(f"record {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
