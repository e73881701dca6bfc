"""Transferability of adversarial examples (paper sec. 3.3, Figure 3).

Figure 3 plots, per target architecture, (x) the accuracy on the original test set of that
architecture trained on D_det (built from the source model) against (y) the success rate of the
source model's adversarial examples transferred to that architecture trained normally on D.
The paper does not state the transfer attack (docs/paper-notes.md sec. 8.6); the default here is the attack used
to build D_det (l2, the construction eps, 100 steps, targeted toward (y+1) mod C), made on the
source model and replayed unchanged on every target, which ties the two axes to the same
non-robust features. An untargeted variant is available (``targeted=False``). Success is
counted on the test examples that the source *and* the target classify correctly when clean
(so a target's plain errors are not counted as transfer): targeted success = the target predicts
the source's target label; untargeted success = the target's prediction changes away from y.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from empirical.settings import TransferConfig
from empirical.threat import next_label


def transfer_success(
    source: torch.nn.Module,
    targets: Mapping[str, torch.nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TransferConfig = TransferConfig(),
    *,
    num_classes: int,
    device: Any = "cpu",
    subset_seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Success rate of the source model's adversarial examples on each target model.

    The attacked examples are a class-stratified sample of ``cfg.n_examples`` of (x, y) drawn
    with ``subset_seed`` (:func:`empirical.data.stratified_subset`). Returns ``{name:
    {"success_rate", "n_used", "clean_accuracy", "adv_accuracy"}}`` plus an entry ``"__source__"``
    with the white-box success on the source itself and ``"__subset__"`` describing the sample
    (seed, class counts, hash of the indices). Rates are in [0, 1].
    """
    from empirical.attacks import pgd
    from empirical.data import stratified_subset
    from empirical.evaluate import predict

    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    sub = stratified_subset(x, y, cfg.n_examples, seed=subset_seed, name="transfer.n_examples")
    x, y = x[sub.indices].cpu(), y[sub.indices].cpu().to(torch.int64)
    dev = torch.device(device)
    t = next_label(y, num_classes) if cfg.targeted else y
    gen = None
    if cfg.random_start or cfg.restarts > 1:
        gen = torch.Generator(device=dev)
        gen.manual_seed(cfg.seed)
    source.eval()
    x_adv = pgd(source, x.to(dev), t.to(dev), cfg.attack, use_best=True, generator=gen,
                batch_size=cfg.batch_size, precision=cfg.precision).cpu()
    src_clean = predict(source, x, device=dev, batch_size=cfg.batch_size, precision="fp32") == y
    out: dict[str, dict[str, Any]] = {"__subset__": sub.describe()}
    for name, model in {"__source__": source, **dict(targets)}.items():
        clean = predict(model, x, device=dev, batch_size=cfg.batch_size, precision="fp32")
        adv = predict(model, x_adv, device=dev, batch_size=cfg.batch_size, precision="fp32")
        used = src_clean & (clean == y)
        hit = (adv == t) if cfg.targeted else (adv != y)
        k = int(used.sum())
        out[name] = {
            "success_rate": float(hit[used].float().mean()) if k else float("nan"),
            "n_used": k,
            "clean_accuracy": float((clean == y).float().mean()),
            "adv_accuracy": float((adv == y).float().mean()),
        }
    return out
