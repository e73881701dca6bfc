"""The kernels of AutoAttack-grade evaluation: APGD-CE, APGD-T and the Square Attack.

Algorithms and sources (written from the papers and from reading the official AutoAttack code,
github.com/fra31/auto-attack ``autoattack/autopgd_base.py`` and ``autoattack/square.py``; no code
is copied):

* **APGD** (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
  diverse parameter-free attacks", Alg. 1). Step size eta starts at 2 eps; momentum alpha = 0.75
  (the first step has none): z = P(x_k + eta d(g_k)), x_{k+1} = P(x_k + alpha (z - x_k) + (1 -
  alpha)(x_k - x_{k-1})), with d(g) = sign(g) under linf and g / ||g||_2 under l2, and P the
  projection onto the eps-ball intersected with [0, 1] (:func:`empirical.attacks.project`, then a
  clamp). Checkpoints w_j = floor(p_j N) with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j -
  p_{j-1} - 0.03, 0.06) (the integer form of the official code, :func:`apgd_checkpoints`). At a
  checkpoint eta is halved, and the iterate (and its gradient) reset to the best point so far,
  where (1) the loss rose on fewer than a fraction ``rho`` = 0.75 of the steps since the last
  checkpoint, or (2) eta was not halved at the last checkpoint and the best loss has not improved
  since it (never at the first checkpoint, as in the official code). ``loss="ce"`` ascends the
  cross-entropy (APGD-CE); ``loss="dlr-targeted"`` ascends the targeted DLR loss
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) against each of the ``n_target_classes`` classes
  ranked 2nd, 3rd, ... by the clean logits, one run per target on the examples still robust
  (APGD-T, as AutoAttack runs it; at most C - 1 targets, and C >= 4 classes are needed).
* **Square Attack** (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
  query-efficient black-box adversarial attack via random search"): score-based random search
  on the margin z_y - max_{j != y} z_j using model outputs only (no gradients). linf: vertical
  +-eps stripes to start, then at each query a random square of side s(p) whose channels are set
  to x +- eps; l2: a grid of the paper's "eta" blocks to start, then a square's mass is moved
  into a new square with the paper's concentric-rectangle pattern, the perturbation kept at norm
  eps. p starts at ``p_init`` = 0.8 and halves after iterations 10, 50, 200, 500, 1000, 2000,
  4000, 6000, 8000 of a 10 000-query schedule, rescaled to ``queries`` (the official
  ``resc_schedule=True``; :func:`square_p`). A candidate replaces the current point when it
  lowers the margin; an example stops once it is misclassified.
* **Ensemble** (AutoAttack's standard evaluation, :mod:`empirical.worst_case`): the attacks run
  in order, each only on the examples no earlier attack broke. Each attack is a row of the
  registry :mod:`empirical.suite`, whose run functions call :func:`run_apgd` / :func:`run_square`.

Conventions (those of :mod:`empirical.attacks`): images NCHW in [0, 1], budgets in [0, 1] pixel
units, models return logits; forward passes in ``precision`` (:mod:`empirical.precision`, fp32 by
default here), losses in (at least) fp32, iterates in the input's dtype; model parameters never
receive gradients and the model's train/eval mode is left as it is. Everything runs on the
device of ``x``. Randomness comes from a ``torch.Generator`` seeded from ``seed`` per chunk of
``batch_size`` examples, so a call is deterministic for a given batch. Clean-misclassified
examples are not attacked and come back unchanged.

Deviations from the official code, all deliberate: the random start is uniform in the ball
(:func:`empirical.attacks.random_start`; the official code starts on the sphere / a scaled
cube); condition (1) counts rises f(x_{k+1}) > f(x_k) against the point each step started from,
the best point after a reset included, and is strict (< rho, as in the paper; the official code
uses <= and compares consecutive iterates); restarts run as one batch (first success, else the
highest loss, is kept) instead of one after another; an example the attack does not break comes
back as its highest-loss point, for APGD-T the lowest-margin one over the targets (the official
code returns the clean input); a misclassified point found at any iterate counts (the official
code does the same) and is returned as the highest-loss such iterate; Square draws the
square's position per example over all h - s + 1 positions (the official code draws one position
per batch and never the last one), transposes the l2 pattern per example, tiles its l2 start with
whole blocks only, and stops an example at a strictly negative margin.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from empirical.attacks import project, random_start
from empirical.precision import autocast, check_precision
from empirical.threat import check_budget
from foundation import checks as C

APGD_LOSSES: tuple[str, ...] = ("ce", "dlr-targeted")
#: iterations (of a 10 000-query schedule) after which Square halves p.
SQUARE_HALVINGS: tuple[int, ...] = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
MOMENTUM = 0.75


# ---------------------------------------------------------------------------------------------
# validation and small helpers
# ---------------------------------------------------------------------------------------------
def _check_run(seed: Any, precision: Any, batch_size: Any) -> None:
    """The settings every attack run takes (the threat model is checked where it was built)."""
    C.seed("seed", seed)
    check_precision(precision)
    if batch_size is not None:
        C.positive_int("batch_size", batch_size)


def check_batch(x: Any, y: Any) -> None:
    """An NCHW float batch in [0, 1] (finite) and its integer labels, or one ``ValueError`` line."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        desc = f"{x.dtype}, shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating NCHW image batch; got {desc}")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x has non-finite values; images must lie in [0, 1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"x has values in [{lo:.4g}, {hi:.4g}]; images must lie in [0, 1]")
    if (not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1
            or y.shape[0] != x.shape[0]):
        desc = f"{y.dtype}, shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},); got {desc}")


def _logits(model: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    with autocast(x.device, precision):
        z = model(x)
    if z.ndim != 2 or z.shape[0] != x.shape[0]:
        raise ValueError(f"model must return logits of shape ({x.shape[0]}, classes); got {tuple(z.shape)}")
    return z.to(torch.promote_types(z.dtype, torch.float32))


def clean_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
                  batch_size: int | None) -> torch.Tensor:
    """The logits of ``x`` in batches (no gradients), ``y``'s labels checked against the model's classes."""
    bs = batch_size or max(x.shape[0], 1)
    with torch.no_grad():
        z = torch.cat([_logits(model, x[i : i + bs], precision) for i in range(0, x.shape[0], bs)])
    c = z.shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(f"y has labels in [{int(y.min())}, {int(y.max())}]; the model has {c} classes (0..{c - 1})")
    return z


def _generator(device: torch.device, seed: int, chunk: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + chunk) % (2**63 - 1))
    return g


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bshape(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *([1] * (ndim - 1)))


def _proj(x0: torch.Tensor, v: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """The point of (eps-ball around x0) intersected with [0, 1] that APGD steps to: ball, then box."""
    return (x0 + project(v - x0, norm, eps)).clamp(0, 1)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / (_bshape(g.flatten(1).norm(dim=1), g.ndim) + 1e-12)


# ---------------------------------------------------------------------------------------------
# APGD
# ---------------------------------------------------------------------------------------------
def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (1-based counts of steps) after which APGD checks its step size.

    w_1 = floor(0.22 N), then the gap shrinks by floor(0.03 N) per checkpoint down to floor(0.06 N)
    (each at least 1): the integer form of p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
    For N = 100: 22, 41, 57, 70, 80, 87, 93, 99 (p = 0.22, 0.41, 0.57, 0.70, ...).
    """
    C.positive_int("steps", steps)
    gap, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, w = [], 0
    while w + gap <= steps:
        w += gap
        out.append(w)
        gap = max(gap - shrink, least)
    return out


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss per example: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), pi the
    classes by decreasing logit (Croce & Hein 2020, eq. 7). Needs at least 4 classes."""
    zs = logits.sort(dim=1, descending=True).values
    num = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -num / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


def _loss_grad(model: nn.Module, xa: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str,
               precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, input gradient, misclassified) per example at ``xa``."""
    with torch.enable_grad():
        xa = xa.detach().requires_grad_(True)
        z = _logits(model, xa, precision)
        obj = F.cross_entropy(z, y, reduction="none") if loss == "ce" else dlr_targeted_loss(z, y, target)
        (g,) = torch.autograd.grad(obj.sum(), xa, allow_unused=True) if obj.requires_grad else (None,)
    g = torch.zeros_like(xa) if g is None else g.detach().to(xa.dtype)     # a model that ignores its input
    return obj.detach(), g, z.detach().argmax(1) != y


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The cross-entropy input gradient of ``model`` at ``x`` (zeros where the model ignores its input)."""
    return _loss_grad(model, x, y, None, "ce", precision)[1]


def _apgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, *, norm: str,
              eps: float, steps: int, restarts: int, loss: str, rho: float, gen: torch.Generator,
              precision: str, progress: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run with ``restarts`` random starts batched; (x_adv, success, loss) per example."""
    n, nd = x.shape[0], x.ndim
    x0 = x.repeat(restarts, *([1] * (nd - 1)))
    yy = y.repeat(restarts)
    tt = None if target is None else target.repeat(restarts)
    x_cur = torch.cat([random_start(x, norm, eps, gen) for _ in range(restarts)])
    x_prev = x_cur
    eta = torch.full((x_cur.shape[0],) + (1,) * (nd - 1), 2.0 * eps, dtype=x.dtype, device=x.device)
    l_cur, g_cur, s_cur = _loss_grad(model, x_cur, yy, tt, loss, precision)
    x_best, l_best, g_best = x_cur, l_cur, g_cur                  # highest loss: where resets go
    x_out, l_out, s_out = x_cur, l_cur, s_cur                     # success first, then loss: the answer
    checks = set(apgd_checkpoints(steps))
    last_check = 0
    rises = torch.zeros_like(l_cur)
    halved_last = torch.ones_like(s_cur)                          # no condition (2) at the first checkpoint
    l_best_last = l_best
    for i in range(steps):
        with torch.no_grad():
            a = 1.0 if i == 0 else MOMENTUM
            z = _proj(x0, x_cur + eta * _direction(g_cur, norm), norm, eps)
            x_new = _proj(x0, x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), norm, eps)
            x_prev, x_cur = x_cur, x_new
        l_new, g_cur, s_new = _loss_grad(model, x_cur, yy, tt, loss, precision)
        if progress is not None:
            progress(int(x_cur.shape[0]))
        with torch.no_grad():
            rises += (l_new > l_cur).to(rises.dtype)
            l_cur = l_new
            imp = l_new > l_best
            imp_b = _bshape(imp, nd)
            x_best, g_best = torch.where(imp_b, x_cur, x_best), torch.where(imp_b, g_cur, g_best)
            l_best = torch.where(imp, l_new, l_best)
            upd = (s_new & ~s_out) | ((s_new == s_out) & (l_new > l_out))
            x_out = torch.where(_bshape(upd, nd), x_cur, x_out)
            l_out, s_out = torch.where(upd, l_new, l_out), s_new | s_out
            if i + 1 in checks:
                window = i + 1 - last_check
                last_check = i + 1
                halve = (rises < rho * window) | (~halved_last & (l_best <= l_best_last))
                hb = _bshape(halve, nd)
                eta = torch.where(hb, eta / 2, eta)
                x_cur, g_cur = torch.where(hb, x_best, x_cur), torch.where(hb, g_best, g_cur)
                l_cur = torch.where(halve, l_best, l_cur)
                halved_last, l_best_last = halve, l_best
                rises = torch.zeros_like(rises)
    if restarts == 1:
        return x_out, s_out, l_out
    xo, so, lo = x_out.view(restarts, *x.shape), s_out.view(restarts, n), l_out.view(restarts, n)
    pick = torch.zeros(n, dtype=torch.long, device=x.device)
    cs, cl = so[0], lo[0]
    for r in range(1, restarts):
        upd = (so[r] & ~cs) | (~so[r] & ~cs & (lo[r] > cl))      # first success, else the highest loss
        pick = torch.where(upd, torch.full_like(pick, r), pick)
        cs, cl = cs | so[r], torch.where(upd, lo[r], cl)
    ar = torch.arange(n, device=x.device)
    return xo[pick, ar], cs, cl


def validate_apgd(steps: Any, restarts: Any, loss: Any, n_target_classes: Any, rho: Any,
                  targets_at_once: Any = 1) -> None:
    """APGD's own budget (the threat model and the run settings are checked elsewhere, once)."""
    C.positive_int("steps", steps)
    C.positive_int("targets_at_once", targets_at_once)
    C.positive_int("restarts", restarts)
    C.one_of("loss", loss, APGD_LOSSES, what="an APGD loss")
    C.positive_int("n_target_classes", n_target_classes)
    C.in_range("rho", rho, 0.0, 1.0, lo_open=True)


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int, restarts: int,
          loss: str, n_target_classes: int, seed: int, rho: float, precision: str,
          batch_size: int | None, progress: Any = None, targets_at_once: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD on the clean-correct examples: (x_adv, success mask over all examples)."""
    x = x.detach()
    y = y.to(x.device, torch.long)
    n = x.shape[0]
    out, success = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    if n == 0:
        return out, success
    z0 = clean_logits(model, x, y, precision, batch_size)
    if loss == "dlr-targeted" and z0.shape[1] < 4:
        raise ValueError(f"loss='dlr-targeted' needs at least 4 classes; the model has {z0.shape[1]}")
    todo = (z0.argmax(1) == y).nonzero().squeeze(1)
    if eps == 0 or todo.numel() == 0:
        return out, success
    ranked = z0.argsort(dim=1, descending=True)
    n_targets = min(n_target_classes, z0.shape[1] - 1)
    bs = batch_size or todo.numel()
    kw = dict(norm=norm, eps=float(eps), steps=steps, restarts=restarts, loss=loss, rho=float(rho),
              precision=precision, progress=progress)
    for chunk, i in enumerate(range(0, todo.numel(), bs)):
        idx = todo[i : i + bs]
        gen = _generator(x.device, seed, chunk)
        xc, yc = x[idx], y[idx]
        if loss == "ce":
            xa, sa, _ = _apgd_run(model, xc, yc, None, gen=gen, **kw)
        else:
            # one run per target, the classes ranked 2nd, 3rd, ... on clean x, on the examples still
            # robust; where every target fails keep the lowest-margin point (losses against different
            # targets are not comparable, margins are)
            # (targets_at_once > 1: that many targets run as one batch, the remaining examples repeated
            # once per target; an example takes the first target of the group that breaks it)
            xa, sa = xc.clone(), torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
            ma = torch.full((idx.numel(),), math.inf, device=x.device)
            for k0 in range(1, n_targets + 1, targets_at_once):
                rem = (~sa).nonzero().squeeze(1)
                if rem.numel() == 0:
                    break
                group = list(range(k0, min(k0 + targets_at_once, n_targets + 1)))
                g, m = len(group), rem.numel()
                tt = torch.cat([ranked[idx[rem], k] for k in group])
                xr, sr, _ = _apgd_run(model, xc[rem].repeat(g, 1, 1, 1), yc[rem].repeat(g), tt, gen=gen, **kw)
                mr = _margin(model, xr, yc[rem].repeat(g), precision).to(ma.dtype)
                for j in range(g):                          # in target order
                    xj, sj, mj = xr[j * m : (j + 1) * m], sr[j * m : (j + 1) * m], mr[j * m : (j + 1) * m]
                    fresh = sj & ~sa[rem]
                    keep = fresh | (~sa[rem] & (mj < ma[rem]))
                    xa[rem[keep]] = xj[keep]
                    ma[rem[keep]] = mj[keep]
                    sa[rem[fresh]] = True
        out[idx] = xa
        success[idx] = sa
    return out, success


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int = 100,
         restarts: int = 1, loss: str = "ce", n_target_classes: int = 9, seed: int = 0, rho: float = 0.75,
         precision: str = "fp32", batch_size: int | None = None) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020) in the ``norm`` ball of radius ``eps`` around ``x``, in [0, 1].

    ``loss="ce"``: APGD-CE, untargeted, ascends the cross-entropy of ``y``. ``loss="dlr-targeted"``:
    APGD-T, one run per target class (the ``n_target_classes`` classes ranked after the top one
    by the clean logits, at most C - 1), each on the examples no earlier target broke. ``steps``
    iterations per run from a uniform random point of the ball; ``restarts`` random starts run as
    one batch. ``rho``: the rise fraction below which the step size halves. ``batch_size``
    examples at a time (all by default), each chunk with its own generator seeded from ``seed``.
    Returns x' (same shape, device and dtype as x): for each clean-correct example a
    misclassified point if any run found one, else its highest-loss point; clean-misclassified
    examples unchanged (APGD-T: the lowest-margin point over the targets). See the module docstring
    for the algorithm and its sources.
    """
    check_budget(norm, eps)
    x_adv, _ = run_apgd(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, loss=loss,
                        n_target_classes=n_target_classes, seed=seed, rho=rho, precision=precision,
                        batch_size=batch_size)
    return x_adv


def run_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int = 100,
             restarts: int = 1, loss: str = "ce", n_target_classes: int = 9, seed: int = 0, rho: float = 0.75,
             precision: str = "fp32", batch_size: int | None = None, targets_at_once: int = 1,
             progress: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apgd` for the worst-case evaluation (:mod:`empirical.suite`): (x_adv, success mask);
    the threat model (``norm``, ``eps``) comes checked from the :class:`empirical.threat.ThreatModel`
    it was built as, the budget and the batch are checked here."""
    validate_apgd(steps, restarts, loss, n_target_classes, rho, targets_at_once)
    _check_run(seed, precision, batch_size)
    check_batch(x, y)
    return _apgd(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, loss=loss,
                 n_target_classes=n_target_classes, seed=seed, rho=rho, precision=precision, batch_size=batch_size,
                 progress=progress, targets_at_once=targets_at_once)


# ---------------------------------------------------------------------------------------------
# Square Attack
# ---------------------------------------------------------------------------------------------
def square_p(it: int, queries: int, p_init: float, rescale: bool = True) -> float:
    """Square's fraction of pixels at iteration ``it`` (0-based): ``p_init`` halved after each of
    :data:`SQUARE_HALVINGS`, counted on a 10 000-iteration scale when ``rescale`` (official
    ``resc_schedule``), so the schedule spans ``queries``."""
    t = int(it / queries * 10000) if rescale else it
    return p_init / 2 ** sum(t > m for m in SQUARE_HALVINGS)


def _rect_pattern(a: int, b: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """a x b sum of concentric rectangles around (a // 2, b // 2) with weights 1 / (k + 1)^2,
    unit l2 norm: the weight at Chebyshev distance d is sum_{k=d}^{K-1} 1/(k+1)^2, K = max(a, b)//2+1."""
    if a == 0:
        return torch.zeros(0, b, device=device, dtype=dtype)
    k_max = max(a // 2 + 1, b // 2 + 1)
    tail = torch.tensor([sum(1.0 / (k + 1) ** 2 for k in range(m, k_max)) for m in range(k_max)], dtype=torch.float64)
    i = torch.arange(a)[:, None]
    j = torch.arange(b)[None, :]
    d = torch.maximum((i - a // 2).abs(), (j - b // 2).abs())
    w = tail[d]
    return (w / w.norm()).to(device=device, dtype=dtype)


def square_pattern(s: int, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The l2 Square Attack's s x s update pattern: +rectangles on the top s // 2 rows, -rectangles
    on the rest, unit l2 norm (the paper's eta, before its random transposition)."""
    device = torch.device(device)
    top, bottom = _rect_pattern(s // 2, s, device, dtype), _rect_pattern(s - s // 2, s, device, dtype)
    e = torch.cat([top, -bottom])
    return e / e.norm()


def _rand_sign(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


@functools.lru_cache(maxsize=128)
def _pattern(s: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`square_pattern`, built once per (size, device, dtype): the search asks for it on every
    query and the size changes only at the schedule's halvings (read only; never written to)."""
    return square_pattern(s, device, dtype)


def _patterns(k: int, s: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """k copies of the s x s pattern, each transposed with probability 1/2: (k, 1, s, s)."""
    e = _pattern(s, like.device, like.dtype)
    flip = torch.randint(0, 2, (k, 1, 1, 1), generator=gen, device=like.device).bool()
    return torch.where(flip, e.t().expand(k, 1, s, s), e.expand(k, 1, s, s))


def _corners(k: int, h: int, w: int, s: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randint(0, h - s + 1, (k,), generator=gen, device=device),
            torch.randint(0, w - s + 1, (k,), generator=gen, device=device))


def _window(r: torch.Tensor, c: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(k, 1, h, w) bool mask of the s x s squares with top-left corners (r, c)."""
    rows, cols = torch.arange(h, device=r.device), torch.arange(w, device=r.device)
    mr = (rows >= r[:, None]) & (rows < r[:, None] + s)
    mc = (cols >= c[:, None]) & (cols < c[:, None] + s)
    return (mr[:, :, None] & mc[:, None, :])[:, None]


def _patch_index(r: torch.Tensor, c: torch.Tensor, s: int):
    ar = torch.arange(s, device=r.device)
    return (torch.arange(r.shape[0], device=r.device)[:, None, None], (r[:, None] + ar)[:, :, None],
            (c[:, None] + ar)[:, None, :])


def _l2_start(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The l2 start direction: whole s0 x s0 blocks (s0 = h // 5) of +-pattern per channel."""
    n, c, h, w = x.shape
    s0 = max(h // 5, 1)
    sp = max((h - 5 * s0) // 2, 0)
    delta = torch.zeros_like(x)
    vh = sp
    while vh + s0 <= h:
        vw = sp
        while vw + s0 <= w:
            delta[:, :, vh : vh + s0, vw : vw + s0] += _patterns(n, s0, gen, x) * _rand_sign((n, c, 1, 1), gen, x)
            vw += s0
        vh += s0
    return delta


def _l2_unit(v: torch.Tensor) -> torch.Tensor:
    return v / (_bshape(v.flatten(1).norm(dim=1), v.ndim) + 1e-12)


def _margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> torch.Tensor:
    with torch.no_grad():
        z = _logits(model, x, precision)
        zy = z.gather(1, y[:, None]).squeeze(1)
        other = z.scatter(1, y[:, None], -math.inf).amax(1)
    return zy - other


def _square_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, queries: int,
                p_init: float, rescale: bool, gen: torch.Generator, precision: str,
                progress: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w = x.shape
    if norm == "linf":
        x_best = (x + eps * _rand_sign((n, c, 1, w), gen, x)).clamp(0, 1)
    else:
        x_best = (x + eps * _l2_unit(_l2_start(x, gen))).clamp(0, 1)
    m_best = _margin(model, x_best, y, precision)
    for it in range(queries):
        act = (m_best >= 0).nonzero().squeeze(1)
        k = act.numel()
        if k == 0:
            break
        xa, xb = x[act], x_best[act]
        p = square_p(it, queries, p_init, rescale)
        if norm == "linf":
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            r, cc = _corners(k, h, w, s, gen, x.device)
            step = _window(r, cc, s, h, w).to(x.dtype) * (2 * eps) * _rand_sign((k, c, 1, 1), gen, x)
            x_new = _proj(xa, xb + step, "linf", eps)
        else:
            s = max(int(round(math.sqrt(p * h * w))), 3)
            s = min(s + 1 if s % 2 == 0 else s, h, w)
            delta = xb - xa
            r1, c1 = _corners(k, h, w, s, gen, x.device)
            r2, c2 = _corners(k, h, w, s, gen, x.device)
            i1 = _patch_index(r1, c1, s)
            old = delta[i1[0], :, i1[1], i1[2]].permute(0, 3, 1, 2)           # (k, c, s, s)
            n_old = old.square().sum((2, 3), keepdim=True).sqrt()
            m1, m2 = _window(r1, c1, s, h, w), _window(r2, c2, s, h, w)
            n_img = _bshape(delta.flatten(1).norm(dim=1), 4)
            n_win = (delta * (m1 | m2)).square().sum((2, 3), keepdim=True).sqrt()
            new = _patterns(k, s, gen, x) * _rand_sign((k, c, 1, 1), gen, x) + old / (1e-12 + n_old)
            new = new / (1e-12 + new.square().sum((2, 3), keepdim=True).sqrt())
            new = new * ((eps**2 - n_img**2).clamp_min(0) / c + n_win**2).sqrt()
            delta = delta * ~m2
            delta[i1[0], :, i1[1], i1[2]] = new.permute(0, 2, 3, 1)
            x_new = (xa + eps * _l2_unit(delta)).clamp(0, 1)
        m_new = _margin(model, x_new, y[act], precision)
        if progress is not None:
            progress(k)
        imp = m_new < m_best[act]
        x_best[act[imp]] = x_new[imp]
        m_best[act[imp]] = m_new[imp]
    return x_best, m_best < 0


def validate_square(queries: Any, p_init: Any, rescale_schedule: Any) -> None:
    """Square's own budget."""
    C.positive_int("queries", queries)
    C.in_range("p_init", p_init, 0.0, 1.0, lo_open=True)
    C.boolean("rescale_schedule", rescale_schedule)


def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, queries: int,
            p_init: float, seed: int, precision: str, batch_size: int | None,
            rescale_schedule: bool, progress: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach()
    y = y.to(x.device, torch.long)
    out, success = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if x.shape[0] == 0:
        return out, success
    z0 = clean_logits(model, x, y, precision, batch_size)
    todo = (z0.argmax(1) == y).nonzero().squeeze(1)
    if eps == 0 or todo.numel() == 0:
        return out, success
    bs = batch_size or todo.numel()
    for chunk, i in enumerate(range(0, todo.numel(), bs)):
        idx = todo[i : i + bs]
        xa, sa = _square_run(model, x[idx], y[idx], norm=norm, eps=float(eps), queries=queries,
                             p_init=float(p_init), rescale=rescale_schedule, gen=_generator(x.device, seed, chunk),
                             precision=precision, progress=progress)
        out[idx] = xa
        success[idx] = sa
    return out, success


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, queries: int = 5000,
           p_init: float = 0.8, seed: int = 0, precision: str = "fp32", batch_size: int | None = None,
           rescale_schedule: bool = True) -> torch.Tensor:
    """The Square Attack (Andriushchenko et al. 2020): score-based black-box random search on the
    margin loss within the ``norm`` ball of radius ``eps``, in [0, 1], using only model outputs.

    ``queries`` iterations after the initial point (one model query each per example still
    robust, as in the official code); ``p_init`` the initial fraction of pixels changed, halved on
    the :func:`square_p` schedule (rescaled to ``queries`` unless ``rescale_schedule`` is false,
    which is what AutoAttack's ``standard`` version runs). Batched over examples, ``batch_size``
    at a time, each chunk seeded from ``seed``. Returns x' (same shape, device, dtype as x):
    misclassified where the search succeeded, else its lowest-margin point; clean-misclassified
    examples unchanged.
    """
    check_budget(norm, eps)
    x_adv, _ = run_square(model, x, y, norm=norm, eps=eps, queries=queries, p_init=p_init, seed=seed,
                          precision=precision, batch_size=batch_size, rescale_schedule=rescale_schedule)
    return x_adv


def run_square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, queries: int = 5000,
               p_init: float = 0.8, seed: int = 0, precision: str = "fp32", batch_size: int | None = None,
               rescale_schedule: bool = True, progress: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`square` for the worst-case evaluation (:mod:`empirical.suite`): (x_adv, success mask);
    the threat model comes checked, the budget and the batch are checked here."""
    validate_square(queries, p_init, rescale_schedule)
    _check_run(seed, precision, batch_size)
    check_batch(x, y)
    return _square(model, x, y, norm=norm, eps=eps, queries=queries, p_init=p_init, seed=seed, precision=precision,
                   batch_size=batch_size, rescale_schedule=rescale_schedule, progress=progress)


def torchattacks_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str, norm: str, eps: float,
                           steps: int = 100, n_target_classes: int = 9, queries: int = 5000,
                           seed: int = 0) -> torch.Tensor:
    """The same attack from torchattacks (APGD, APGDT, Square) at the same budget, for cross-checks
    (tests and ``benchmarks/crosscheck_autoattack.py``): its adversarial inputs. torchattacks is a
    test dependency, imported here only. APGD-T attacks ``n_target_classes`` targets
    (torchattacks' ``n_classes`` = that + 1); Square uses the published p_init 0.8, margin loss and
    rescaled schedule."""
    import torchattacks

    C.one_of("attack", attack, ("apgd-ce", "apgd-t", "square"), what="an attack torchattacks has here")
    check_budget(norm, eps)
    tn = "Linf" if norm == "linf" else "L2"
    if attack == "apgd-ce":
        ta = torchattacks.APGD(model, norm=tn, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
    elif attack == "apgd-t":
        ta = torchattacks.APGDT(model, norm=tn, eps=eps, steps=steps, n_restarts=1, seed=seed,
                                n_classes=n_target_classes + 1)
    else:
        ta = torchattacks.Square(model, norm=tn, eps=eps, n_queries=queries, n_restarts=1, p_init=0.8,
                                 loss="margin", resc_schedule=True, seed=seed)
    return ta(x, y)


__all__ = ["APGD_LOSSES", "SQUARE_HALVINGS", "apgd", "apgd_checkpoints", "check_batch", "clean_logits",
           "dlr_targeted_loss", "input_gradient", "run_apgd", "run_square", "square", "square_p", "square_pattern",
           "torchattacks_reference", "validate_apgd", "validate_square"]
