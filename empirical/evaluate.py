"""Clean and robust accuracy, with the attack described next to every number.

Robust accuracy counts an example as robust when the model classifies it correctly *and* the
PGD adversarial example (untargeted, best iterate, per-example worst case over restarts) is still
classified correctly; both verdicts are fp32 forward passes whatever precision the attack's
steps ran in (:data:`empirical.precision.VERDICT`). Numbers are fractions in [0, 1]. Report format (docs/conventions.md sec. 1):
"clean x% / robust y% at l2 eps=0.25, PGD-20 (step 0.03125), 1 restart, n=10000".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from empirical.attacks import pgd
from empirical.data import check_images
from empirical.precision import VERDICT, autocast
from empirical.threat import Attack


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: Any = "cpu",
            precision: str = VERDICT) -> torch.Tensor:
    """Predicted classes (CPU int64) of ``model`` (put in eval mode) on ``x``, in batches; fp32 by
    default, as every verdict is."""
    dev = torch.device(device)
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        with autocast(dev, precision):
            out.append(model(x[i : i + batch_size].to(dev)).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512, device: Any = "cpu",
             precision: str = VERDICT) -> float:
    """Fraction of ``x`` classified as ``y`` (eval mode)."""
    check_images(x)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("cannot measure accuracy on an empty set")
    pred = predict(model, x, batch_size=batch_size, device=device, precision=precision)
    return float((pred == y.cpu()).float().mean())


def robust_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *, batch_size: int = 512,
                device: Any = "cpu", generator: torch.Generator | None = None,
                precision: str = "auto", progress: Any = None) -> torch.Tensor:
    """Per example (CPU bool): classified correctly both clean and under the untargeted ``attack``
    (:class:`empirical.threat.Attack`: PGD with its restarts batched, best iterate), batch by batch
    in order, every batch's random starts drawn from the one ``generator``."""
    check_images(x)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    _check_untargeted(attack)
    dev = torch.device(device)
    model.eval()
    parts = [_robust_batch(model, x[i : i + batch_size], y[i : i + batch_size], attack, device=dev,
                           generator=generator, precision=precision, progress=progress)
             for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *, batch_size: int = 512,
                    device: Any = "cpu", generator: torch.Generator | None = None,
                    precision: str = "auto") -> float:
    """Fraction of ``x`` that :func:`robust_mask` counts as robust."""
    mask = robust_mask(model, x, y, attack, batch_size=batch_size, device=device, generator=generator,
                       precision=precision)
    return float(mask.sum()) / max(x.shape[0], 1)


def _check_untargeted(attack: Any) -> None:
    if not isinstance(attack, Attack) or attack.targeted or attack.method != "pgd":
        raise ValueError(f"attack {attack!r} must be an untargeted PGD Attack (empirical.threat.Attack)")


def _robust_batch(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, attack: Attack, *, device: torch.device,
                  generator: torch.Generator | None, precision: str = "auto", progress: Any = None) -> torch.Tensor:
    """Which of one batch are classified correctly clean and under ``attack`` (model in eval mode)."""
    xb, yb = xb.to(device), yb.to(device)
    xa = pgd(model, xb, yb, attack, use_best=True, generator=generator, precision=precision, progress=progress)
    with torch.no_grad(), autocast(device, VERDICT):           # the verdict: fp32, whatever the attack ran in
        ok = (model(xb).argmax(1) == yb) & (model(xa).argmax(1) == yb)
    return ok.cpu()


AttackSpec = Attack
"""An evaluation attack is an :class:`empirical.threat.Attack` (untargeted PGD; ``step_size``
None = 2.5 * eps / steps, Madry et al.); ``AttackSpec`` is its name in this module's API."""


def _batch_grid(n: int, batch_size: int, info: Any) -> tuple[int, int]:
    """The batches ``[b0, b1)`` of the global grid (batch b = examples ``[b*bs, (b+1)*bs)``) this rank owns."""
    num_batches = -(-n // batch_size)
    if not info.is_distributed:
        return 0, num_batches
    if num_batches < info.world_size:
        raise ValueError(
            f"world size {info.world_size} is larger than the number of evaluation batches ({num_batches} "
            f"batches of batch_size={batch_size} over n={n} examples); use at most {num_batches} processes "
            "or a smaller batch size"
        )
    from empirical.distributed import shard_range

    return shard_range(num_batches, info.rank, info.world_size)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Sequence[AttackSpec], device: Any,
             batch_size: int = 512, seed: int = 0, dist_info: Any = None) -> dict[str, Any]:
    """Clean accuracy and robust accuracy under each attack.

    Returns ``{"n": N, "clean": acc, "robust": {key: acc}, "attacks": {key: description}}``
    (accuracies as fractions: correct counts divided by N).

    The examples are processed on a fixed grid of batches (batch ``b`` = examples
    ``[b*batch_size, (b+1)*batch_size)``); the random starts of batch ``b`` draw from a generator
    seeded with :func:`empirical.shards.shard_seed` ``(seed, b)``, so a batch's attack does not
    depend on which batches ran before it. Under ``torchrun`` pass ``dist_info``
    (:mod:`empirical.distributed`): rank r attacks a contiguous run of whole batches and the
    correct counts are summed over ranks, so every rank returns exactly the single-process numbers
    (each batch is computed by the same code on the same inputs; the counts are integers). With
    more ranks than batches a ``ValueError`` says how many processes fit.
    """
    from empirical.distributed import SINGLE_PROCESS, reduce_sums
    from empirical.shards import shard_seed

    check_images(x)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    for a in attacks:
        _check_untargeted(a)
    info = dist_info if dist_info is not None else SINGLE_PROCESS
    dev = torch.device(device)
    n = int(x.shape[0])
    b0, b1 = _batch_grid(n, batch_size, info)
    model.eval()
    batches = {b: (x[b * batch_size : (b + 1) * batch_size], y[b * batch_size : (b + 1) * batch_size])
               for b in range(b0, b1)}
    counts: dict[str, float] = {"clean": 0.0}
    for xb, yb in batches.values():
        counts["clean"] += int((predict(model, xb, batch_size=batch_size, device=dev, precision=VERDICT)
                                == yb.cpu()).sum())
    for a in attacks:
        count = 0
        for b, (xb, yb) in batches.items():
            gen = torch.Generator(device=dev)
            gen.manual_seed(shard_seed(seed, b))
            count += int(_robust_batch(model, xb, yb, a, device=dev, generator=gen).sum())
        counts[f"robust/{a.key()}"] = float(count)
    totals = reduce_sums(counts, info)
    out: dict[str, Any] = {"n": n, "clean": totals["clean"] / n, "robust": {}, "attacks": {}}
    for a in attacks:
        out["robust"][a.key()] = totals[f"robust/{a.key()}"] / n
        out["attacks"][a.key()] = a.describe()
    return out


__all__ = ["AttackSpec", "accuracy", "evaluate", "predict", "robust_accuracy", "robust_mask"]
