"""PGD under l2 / linf (Madry et al. 2018) and the representation-matching optimiser (paper sec. 3.1).

Conventions (docs/conventions.md sec. 1, docs/paper-notes.md sec. 2.2 / 3.1):

* images and budgets in [0, 1] pixel units; every iterate stays in the eps-ball of ``x`` and in
  the [0, 1] box (project onto the ball, then clamp, which never leaves the ball because x is in
  the box);
* l2 steps are normalised-gradient steps x <- x + a g / ||g||_2, linf steps are sign steps
  x <- x + a sign(g) (the ``robustness`` library's L2Step / LinfStep);
* untargeted PGD ascends CE(f(x'), y); targeted PGD (``y`` = target) descends CE(f(x'), y);
* random start: uniform in the l2 ball (direction ~ Gaussian, radius eps U^(1/d)) or the linf
  cube, then clamped to the box;
* "best for the attacker": first success (untargeted: prediction != y; targeted: == target),
  then the objective. ``use_best`` keeps each example's best iterate (including the start);
  with ``restarts`` > 1 all restarts run as one batch and the per-example best is kept.
  Restart r draws its start from ``generator`` in order, so restart 0 is exactly the
  single-start attack and more restarts are never weaker;
* forward passes in ``precision`` (:mod:`empirical.precision`: ``auto`` = bf16 autocast on CUDA,
  fp32 on CPU; ``fp32``; ``bf16`` on any device), objectives and iterates in fp32; model
  parameters never receive gradients and the model's train/eval mode is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from empirical.precision import autocast, check_precision
from empirical.threat import STEP_SCHEDULES, Attack
from foundation import checks as C

def step_factor(schedule: str, it: int, steps: int) -> float:
    """Multiplier of the step size at iteration ``it`` (0-based) of ``steps``.

    ``constant`` 1; ``linear`` 1 - it/steps; ``cosine`` (1 + cos(pi it/steps)) / 2. Both decays
    start at 1 and reach 1/steps-ish of the step at the last iteration, so late iterations
    refine instead of oscillating around the optimum at a fixed distance step_size / 2.
    """
    if schedule == "constant":
        return 1.0
    t = it / max(steps, 1)
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"step_schedule={schedule!r} is not a schedule; valid: {', '.join(STEP_SCHEDULES)}")


def _check_inputs(x: torch.Tensor, y: torch.Tensor | None = None, name: str = "x") -> None:
    if not x.is_floating_point() or x.ndim < 2:
        raise ValueError(f"{name} must be a floating batch (N, ...); got dtype {x.dtype}, shape {tuple(x.shape)}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}]; images must lie in [0, 1]")
    if y is not None and (y.ndim != 1 or y.shape[0] != x.shape[0]):
        raise ValueError(f"labels must have shape ({x.shape[0]},); got {tuple(y.shape)}")


def _norms(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Euclidean projection of each perturbation onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = _norms(delta)
    return delta * torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform random point of the eps-ball around ``x``, clamped to [0, 1]."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = (2 * u - 1) * eps
    else:
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = x[0].numel()
        r = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        delta = g / _norms(g).clamp_min(1e-12) * (eps * r).view(-1, *([1] * (x.ndim - 1)))
    return (x + delta).clamp(0, 1)


def _step(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / _norms(g).clamp_min(1e-12)


def _objective(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective to ascend, success) per example."""
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    pred = logits.argmax(1)
    if targeted:
        return -ce, pred == y
    return ce, pred != y


def _better(obj_new: torch.Tensor, succ_new: torch.Tensor, obj_old: torch.Tensor, succ_old: torch.Tensor) -> torch.Tensor:
    return (succ_new & ~succ_old) | ((succ_new == succ_old) & (obj_new > obj_old))


def _pgd_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int,
               step_size: float, targeted: bool, random_start_: bool, restarts: int, use_best: bool,
               generator: torch.Generator | None, precision: str,
               progress: Callable[[int], None] | None = None,
               objective: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
               ) -> torch.Tensor:
    """One batch of :func:`pgd`. ``objective(x_adv, labels)`` -> (objective to ascend, success) per
    example replaces the model's cross-entropy when given (``labels`` are ``y`` repeated per restart,
    whatever their shape: :func:`nontransferable_pgd` passes (target, source label) pairs)."""
    n = x.shape[0]
    starts = []
    for r in range(restarts):
        if random_start_ or r > 0:
            starts.append(random_start(x, norm, eps, generator))
        else:
            starts.append(x.clone())
    x0 = x.repeat(restarts, *([1] * (x.ndim - 1)))
    yy = y.repeat(restarts, *([1] * (y.ndim - 1)))
    xa = torch.cat(starts).detach()
    best_x = xa.clone()
    best_obj = torch.full((xa.shape[0],), -math.inf, device=x.device)
    best_succ = torch.zeros(xa.shape[0], dtype=torch.bool, device=x.device)
    dev = x.device
    for it in range(steps + 1):
        if it == steps and not use_best and restarts == 1:
            return xa.detach()                      # last iterate, no scoring pass needed
        xa.requires_grad_(True)
        if objective is not None:
            obj, succ = objective(xa, yy)
        else:
            with autocast(dev, precision):
                logits = model(xa)
            obj, succ = _objective(logits, yy, targeted)
        if use_best or it == steps:
            with torch.no_grad():
                upd = _better(obj, succ, best_obj, best_succ) if use_best else torch.ones_like(succ)
                best_x[upd] = xa.detach()[upd]
                best_obj = torch.where(upd, obj.detach(), best_obj)
                best_succ = torch.where(upd, succ, best_succ)
        if it == steps:
            break
        (grad,) = torch.autograd.grad(obj.sum(), xa)
        with torch.no_grad():
            xa = xa.detach() + step_size * _step(grad.float().to(xa.dtype), norm)
            xa = (x0 + project(xa - x0, norm, eps)).clamp(0, 1)
        if progress is not None:
            progress(int(xa.shape[0]))
    if restarts == 1:
        return best_x.detach()
    obj_r = best_obj.view(restarts, n)
    succ_r = best_succ.view(restarts, n)
    pick = torch.zeros(n, dtype=torch.long, device=dev)
    cur_obj, cur_succ = obj_r[0], succ_r[0]
    for r in range(1, restarts):
        upd = _better(obj_r[r], succ_r[r], cur_obj, cur_succ)
        pick = torch.where(upd, torch.full_like(pick, r), pick)
        cur_obj = torch.where(upd, obj_r[r], cur_obj)
        cur_succ = torch.where(upd, succ_r[r], cur_succ)
    return best_x.view(restarts, *x.shape)[pick, torch.arange(n, device=dev)].detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *, use_best: bool = True,
        generator: torch.Generator | None = None, batch_size: int | None = None,
        precision: str = "auto", progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The iterative attack ``attack`` (:class:`empirical.threat.Attack`, validated when it was
    built) in its ``norm`` ball of radius ``eps`` around ``x``, in [0, 1].

    Projected gradient descent (Madry et al. 2018): untargeted (``attack.targeted`` False)
    maximises CE(model(x'), y); targeted, ``y`` holds the targets and CE(model(x'), y) is
    minimised. ``attack.steps`` iterations of ``attack.step`` (pixel units), from ``x`` or
    (``attack.random_start``) a uniform point of the ball; ``attack.restarts`` > 1 adds random starts
    run as one batch (restart 0 starts as ``random_start`` says, the others randomly) and keeps each
    example's best. ``use_best`` returns the best iterate instead of the last. An attack of method
    ``fgsm`` is one step from a random start (:func:`fgsm_rs`). Works on ``batch_size`` examples at a
    time (all at once by default). Returns x' (same shape, device, dtype as x). ``precision``:
    :mod:`empirical.precision`. ``progress(n)`` is called after every step with the image-steps
    it took (a progress bar's update). The steps are the ``robustness`` library's (L2Step / LinfStep).
    """
    _check_attack(attack)
    if attack.method == "fgsm":
        return fgsm_rs(model, x, y, attack, generator=generator, precision=precision)
    check_precision(precision)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer or None")
    _check_inputs(x, y)
    y = y.to(x.device, torch.long)
    if attack.eps == 0:
        return x.detach().clone()
    bs = x.shape[0] if batch_size is None else batch_size
    outs = []
    for i in range(0, x.shape[0], max(bs, 1)):
        outs.append(_pgd_batch(model, x[i : i + bs].detach(), y[i : i + bs], norm=attack.norm, eps=attack.eps,
                               steps=attack.steps, step_size=attack.step, targeted=attack.targeted,
                               random_start_=attack.random_start, restarts=attack.restarts, use_best=use_best,
                               generator=generator, precision=precision, progress=progress))
    return torch.cat(outs) if outs else x.detach().clone()


def nontransferable_pgd(model: nn.Module, ensemble: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
                        target: torch.Tensor, attack: Attack, *, ensemble_weight: float = 1.0, use_best: bool = True,
                        generator: torch.Generator | None = None, batch_size: int | None = None,
                        precision: str = "auto", progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Nakkiran's non-transferable targeted attack (Distill 2019, response 5, "Adversarial Examples
    are Just Bugs, Too"): PGD steps on the "disentangled loss"

        L(f, x', t) + ensemble_weight * mean_i L(f_i, x', y)

    minimised over the ``attack`` ball around ``x`` (a targeted :class:`empirical.threat.Attack`),
    ``f`` = ``model``, ``f_i`` = ``ensemble``, L the cross-entropy. The first term makes x' a targeted
    example for f; the second keeps every independently trained f_i at the true label y, so the
    step keeps only what f alone reacts to (the response's "off-manifold" component). With an empty
    ensemble (or weight 0) this is exactly :func:`pgd` toward ``target`` (tested). Success is f
    predicting t; ``use_best`` keeps, per example, the best iterate: successful first, then the lowest
    disentangled loss. Same steps, projection, batching, precision and ``progress`` as :func:`pgd`.
    """
    _check_attack(attack)
    if attack.method != "pgd" or not attack.targeted:
        raise ValueError(f"attack={attack.describe()!r} must be a targeted PGD (targeted=True, method 'pgd')")
    check_precision(precision)
    C.non_negative_float("ensemble_weight", ensemble_weight)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer or None")
    _check_inputs(x, y)
    _check_inputs(x, target)
    ensemble = list(ensemble)
    dev = x.device
    labels = torch.stack([target.to(dev, torch.long), y.to(dev, torch.long)], dim=1)   # (t, y) per example
    if attack.eps == 0:
        return x.detach().clone()

    def objective(xa: torch.Tensor, ty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(dev, precision):
            logits = model(xa)
        obj, succ = _objective(logits, ty[:, 0], targeted=True)          # -L(f, x', t)
        if ensemble and ensemble_weight > 0:
            keep = torch.zeros_like(obj)
            for f_i in ensemble:
                with autocast(dev, precision):
                    keep = keep + F.cross_entropy(f_i(xa).float(), ty[:, 1], reduction="none")
            obj = obj - ensemble_weight * keep / len(ensemble)           # - w * mean_i L(f_i, x', y)
        return obj, succ

    bs = x.shape[0] if batch_size is None else batch_size
    outs = []
    for i in range(0, x.shape[0], max(bs, 1)):
        outs.append(_pgd_batch(model, x[i : i + bs].detach(), labels[i : i + bs], norm=attack.norm, eps=attack.eps,
                               steps=attack.steps, step_size=attack.step, targeted=True,
                               random_start_=attack.random_start, restarts=attack.restarts, use_best=use_best,
                               generator=generator, precision=precision, progress=progress, objective=objective))
    return torch.cat(outs) if outs else x.detach().clone()


def _check_attack(attack: Any) -> None:
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be an empirical.threat.Attack (norm, eps, steps, ...); got {type(attack).__name__}")


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *,
            generator: torch.Generator | None = None, precision: str = "auto") -> torch.Tensor:
    """FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free"): one
    gradient step of ``attack.step`` (default 1.25 eps) from a uniform point of the ball, projected
    back to the ball and the box; ``attack`` is an :meth:`Attack.fgsm`. Used for fast adversarial
    training."""
    _check_attack(attack)
    if attack.method != "fgsm":
        raise ValueError(f"fgsm_rs needs an Attack.fgsm(...) attack; got method={attack.method!r}")
    _check_inputs(x, y)
    check_precision(precision)
    norm, eps = attack.norm, attack.eps
    xa = random_start(x.detach(), norm, eps, generator).requires_grad_(True)
    with autocast(x.device, precision):
        logits = model(xa)
    obj, _ = _objective(logits, y, targeted=attack.targeted)
    (grad,) = torch.autograd.grad(obj.sum(), xa)
    with torch.no_grad():
        xa = xa.detach() + attack.step * _step(grad.float().to(xa.dtype), norm)
        return (x + project(xa - x, norm, eps)).clamp(0, 1).detach()


def match_representation(feature_fn: Callable[[torch.Tensor], torch.Tensor], target_x: torch.Tensor,
                         start_x: torch.Tensor, *, steps: int, step_size: float, normalize_loss: bool = False,
                         use_best: bool = False, batch_size: int | None = None, precision: str = "auto",
                         step_schedule: str = "constant") -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ||g(x') - g(target_x)||_2 over x' in [0, 1]^d from ``start_x`` (paper sec. 3.1).

    Normalised-gradient l2 steps x <- clamp(x - a_k grad / ||grad||_2, 0, 1), per example, no
    eps-ball (the paper's GETROBUSTDATASET, docs/paper-notes.md sec. 2.2), with a_k = ``step_size`` x
    :func:`step_factor` (``step_schedule``: constant, linear or cosine decay). ``normalize_loss``
    divides by ||g(target_x)||_2 (the official inversion notebook). ``use_best`` returns each
    example's lowest-loss iterate instead of the last. ``precision`` (:mod:`empirical.precision`)
    applies to the target representation and every step; the target is kept in fp32. For the
    authors' straight-through last ReLU pass ``functools.partial(model.features,
    straight_through=True)``. Returns (x', loss of x' per example, fp32).
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size={step_size!r} must be a positive finite number")
    if target_x.shape != start_x.shape:
        raise ValueError(f"target_x {tuple(target_x.shape)} and start_x {tuple(start_x.shape)} must have the same shape")
    check_precision(precision)
    step_factor(step_schedule, 0, max(steps, 1))          # validates the schedule name
    _check_inputs(target_x, name="target_x")
    _check_inputs(start_x, name="start_x")
    bs = target_x.shape[0] if batch_size is None else batch_size
    xs, losses = [], []
    dev = start_x.device
    for i in range(0, target_x.shape[0], max(bs, 1)):
        t = target_x[i : i + bs].detach()
        with torch.no_grad(), autocast(dev, precision):
            gt = feature_fn(t).float()
        scale = gt.norm(dim=1).clamp_min(1e-12) if normalize_loss else torch.ones(gt.shape[0], device=gt.device)
        xa = start_x[i : i + bs].detach().clone()
        best_x, best_l = xa.clone(), torch.full((xa.shape[0],), math.inf, device=dev)
        for it in range(steps + 1):
            xa.requires_grad_(True)
            with autocast(dev, precision):
                g = feature_fn(xa).float()
            loss = (g - gt).norm(dim=1) / scale
            with torch.no_grad():
                upd = (loss < best_l) if use_best else torch.ones_like(loss, dtype=torch.bool)
                if use_best or it == steps:
                    best_x[upd] = xa.detach()[upd]
                    best_l = torch.where(upd, loss.detach(), best_l)
            if it == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), xa)
            a = step_size * step_factor(step_schedule, it, steps)
            with torch.no_grad():
                xa = (xa.detach() - a * _step(grad.float().to(xa.dtype), "l2")).clamp(0, 1)
        xs.append(best_x.detach())
        losses.append(best_l.detach().float())
    return torch.cat(xs), torch.cat(losses)


__all__ = ["STEP_SCHEDULES", "fgsm_rs", "match_representation", "nontransferable_pgd", "pgd", "project", "random_start", "step_factor"]
