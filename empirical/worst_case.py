"""The one worst-case evaluation: the attacks of the suite in order, each only on what still stands.

:func:`worst_case` is what ``robust-features eval --suite/--attack`` and the worst-case column of
``reproduce``'s Figure 2 both call, with one semantics, AutoAttack's (:data:`SEMANTICS`): the
attacks run in order, the PGD first, each only on the examples every attack before it left
standing (starting from the clean-correct ones); an example is robust only if it is classified
correctly and no attack broke it; every break is verified by a forward pass of the point found.
It returns a :class:`WorstCase`, whose :meth:`WorstCase.summary` is the record both write: the
robust accuracy after each attack (cumulative, a fraction of all the examples), how many each
attack ran on and broke, its seconds, the seed of each attack, the budget that actually ran
(APGD-T's targets clamped to C - 1), the sha256 of each mask, the sanity flags.

The PGD stage is an :class:`empirical.threat.Attack` run by :func:`empirical.evaluate.robust_mask`
with one generator seeded ``seed`` over the batches in order (its random starts are drawn for
every example, so its outcome does not depend on the clean predictions; it counts only where the
example is clean-correct); the suite's attacks are rows of :mod:`empirical.suite`, run by
:func:`ensemble`, each chunk of examples seeded from ``seed``. The same model, examples, options
and seed give the same masks, so an ``eval`` with the options a Figure 2 record writes down
reproduces that record's number exactly.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from empirical import suite
from empirical.autoattack import check_batch, clean_logits, input_gradient
from empirical.evaluate import predict, robust_mask
from empirical.precision import VERDICT, check_precision
from empirical.threat import Attack, ThreatModel
from foundation import checks as C
from foundation.records import pack_bits

SEMANTICS = ("autoattack: the attacks run in order, the PGD first, each only on the examples every attack before "
             "it left standing (starting from the clean-correct ones); an example is robust only if it is classified "
             "correctly and no attack broke it; every break is verified by a forward pass of the point found")


# ---------------------------------------------------------------------------------------------
# the suite: registered attacks in order, each on what still stands
# ---------------------------------------------------------------------------------------------
def default_budgets(names: Sequence[str], options: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per attack, its whole budget from ``options`` (option name -> value; the registry's
    defaults for the ones not given)."""
    values = {o.name: o.default for o in suite.options()}
    values.update(dict(options or {}))
    return {a: suite.get(a).budget(values) for a in names}


def _resolve_budgets(names: tuple[str, ...], budgets: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    budgets = dict(budgets or {})
    for a in budgets:
        if a not in names:
            raise ValueError(f"budgets names {a!r}, which is not among the attacks run: {', '.join(names)}")
    out = default_budgets(names)
    for a in names:
        for key, v in dict(budgets.get(a, {})).items():
            if key not in out[a]:
                raise ValueError(f"budgets[{a!r}] has no setting {key!r}; valid: {', '.join(out[a])}")
            out[a][key] = v
        row = suite.get(a)
        if row.validate is not None:
            row.validate(out[a])
    return out


def progress_bar(desc: str, total: float, enabled: bool) -> tuple[Any, Any]:
    """(update(n), close()) of a progress bar over ``total`` image-steps with images/s and the time
    left (tqdm on stderr; two no-ops when not ``enabled``)."""
    if not enabled or total <= 0:
        return (lambda n: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=int(total), desc=desc, unit="img-step", unit_scale=True, leave=False, dynamic_ncols=True)
    return bar.update, bar.close


def ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
             attacks: Sequence[str] | str = "standard", budgets: Mapping[str, Mapping[str, Any]] | None = None,
             seed: int = 0, precision: str = "fp32", batch_size: int | None = 500,
             standing: torch.Tensor | None = None, progress: bool = False) -> dict[str, Any]:
    """Run ``attacks`` (registered names, or a suite name of :data:`empirical.suite.SUITES`) in
    order under ``threat``, each only on the examples still standing: at first ``standing`` (a bool
    mask; default the clean-correct examples, and never a clean-misclassified one), then whatever
    no earlier attack broke.

    ``budgets`` overrides the registry's default budget per attack (e.g. ``{"apgd-t": {"steps":
    50}}``); every budget is checked before any attack runs. Every success is re-checked with a
    forward pass of the returned point. Returns a dict:

    * ``clean_accuracy`` (float) and ``clean_correct`` (bool tensor, per example);
    * ``robust_accuracy``: attack -> robust accuracy over all examples after it (cumulative);
    * ``robust_accuracy_where_run``: attack -> the fraction of the examples it ran on that it did
      not break (None where it ran on none), with ``n_run``: attack -> how many;
    * ``ran_on`` / ``success``: attack -> bool tensors: where it ran / where it found an adversarial
      example; ``robust``: standing and no attack succeeded; ``worst_case_robust_accuracy``;
    * ``x_adv``: the breaking point where an attack succeeded, else x;
    * ``budgets`` (as they ran, e.g. APGD-T's targets at most C - 1), ``seconds`` per attack,
      ``attacks``, ``norm``, ``eps``, ``seed``, ``precision``.
    """
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be an empirical.threat.ThreatModel; got {type(threat).__name__}")
    names = suite.resolve(attacks)
    plan = _resolve_budgets(names, budgets)
    C.seed("seed", seed)
    check_precision(precision)
    if batch_size is not None:
        C.positive_int("batch_size", batch_size)
    check_batch(x, y)
    x = x.detach()
    y = y.to(x.device, torch.long)
    n = x.shape[0]
    z0 = clean_logits(model, x, y, VERDICT, batch_size)
    for a in names:
        row = suite.get(a)
        if z0.shape[1] < row.min_classes:
            raise ValueError(f"attack {a!r} needs at least {row.min_classes} classes; the model has {z0.shape[1]}")
    plan = {a: suite.get(a).clamp(b, z0.shape[1]) if suite.get(a).clamp else b for a, b in plan.items()}
    correct = z0.argmax(1) == y
    robust = correct.clone() if standing is None else correct & standing.to(x.device, torch.bool)
    x_adv = x.clone()
    res: dict[str, Any] = {"attacks": names, "norm": threat.norm, "eps": threat.eps, "seed": seed,
                           "precision": precision, "budgets": plan, "clean_correct": correct,
                           "clean_accuracy": float(correct.float().mean()) if n else 0.0,
                           "robust_accuracy": {}, "robust_accuracy_where_run": {}, "n_run": {}, "ran_on": {},
                           "success": {}, "seconds": {}}
    for a in names:
        ran = robust.clone()
        idx = ran.nonzero().squeeze(1)
        succ = torch.zeros(n, dtype=torch.bool, device=x.device)
        _sync(x.device)
        t0 = time.perf_counter()
        if idx.numel():
            xs, ys = x[idx], y[idx]
            row = suite.get(a)
            kw: dict[str, Any] = {}
            if row.reports_progress:
                per = row.cost(plan[a], z0.shape[1]) if row.cost is not None else (0.0, 0.0)
                update, close = progress_bar(f"{threat.describe()} {a} on {idx.numel()}", idx.numel() * sum(per),
                                             progress)
                kw["progress"] = update
            xa, _ = row.run(model, xs, ys, norm=threat.norm, eps=threat.eps, budget=plan[a], seed=seed,
                            precision=precision, batch_size=batch_size, **kw)
            if row.reports_progress:
                close()
            # the verdict is fp32 whatever the attack's steps ran in
            verified = clean_logits(model, xa, ys, VERDICT, batch_size).argmax(1) != ys
            succ[idx[verified]] = True
            x_adv[idx[verified]] = xa[verified]
        _sync(x.device)
        res["seconds"][a] = time.perf_counter() - t0
        robust &= ~succ
        res["ran_on"][a], res["success"][a] = ran, succ
        res["n_run"][a] = int(idx.numel())
        res["robust_accuracy"][a] = float(robust.float().mean()) if n else 0.0
        res["robust_accuracy_where_run"][a] = (1.0 - float(succ[idx].float().mean())) if idx.numel() else None
    res["robust"] = robust
    res["worst_case_robust_accuracy"] = float(robust.float().mean()) if n else 0.0
    res["x_adv"] = x_adv
    return res


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# the worst case: PGD, then the suite on what PGD left standing
# ---------------------------------------------------------------------------------------------
def mask_sha256(mask: np.ndarray) -> str:
    """The sha256 of a per-example bool mask (packed bits, :func:`foundation.records.pack_bits`)."""
    return hashlib.sha256(bytes.fromhex(pack_bits(np.asarray(mask, dtype=bool)))).hexdigest()


@dataclass
class WorstCase:
    """The outcome of :func:`worst_case` under one threat model (masks are NumPy bool, per example)."""

    threat: ThreatModel
    order: tuple[str, ...]                       # the attacks in the order they ran ("pgd" first when it ran)
    clean: np.ndarray                            # classified correctly without attack
    after: dict[str, np.ndarray]                 # robust after each attack (cumulative)
    n_attacked: dict[str, int]                   # how many examples each attack ran on
    seconds: dict[str, float]
    seeds: dict[str, int]                        # the seed each attack ran with
    budgets: dict[str, dict[str, Any]]           # the budget that actually ran (PGD: its Attack's fields)
    descriptions: dict[str, str]
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)
    precision: str = "fp32"                      # the attacks' steps (verdicts are fp32)

    @property
    def robust(self) -> np.ndarray:
        return self.after[self.order[-1]] if self.order else self.clean

    @property
    def n(self) -> int:
        return int(self.clean.shape[0])

    def accuracies(self) -> dict[str, float]:
        """Robust accuracy after each attack (cumulative) and ``worst_case``: fractions of all examples."""
        out = {a: float(self.after[a].mean()) if self.n else 0.0 for a in self.order}
        out["worst_case"] = float(self.robust.mean()) if self.n else 0.0
        return out

    def n_broken(self) -> dict[str, int]:
        prev = self.clean
        out = {}
        for a in self.order:
            out[a] = int((prev & ~self.after[a]).sum())
            prev = self.after[a]
        return out

    def masks_sha256(self) -> dict[str, str]:
        return {**{a: mask_sha256(self.after[a]) for a in self.order}, "worst_case": mask_sha256(self.robust)}

    def describe(self) -> str:
        return f"{self.threat.describe()}, worst case: " + " -> ".join(self.descriptions[a] for a in self.order)

    def summary(self) -> dict[str, Any]:
        """The record of this evaluation (every number a number)."""
        return {"semantics": SEMANTICS, "threat": self.threat.describe(), "description": self.describe(),
                "attack_precision": self.precision, "verdict_precision": VERDICT,
                "order": list(self.order), "n": self.n, "clean_accuracy": float(self.clean.mean()) if self.n else 0.0,
                "robust_accuracy": self.accuracies(), "n_attacked": dict(self.n_attacked),
                "n_broken": self.n_broken(), "seconds": dict(self.seconds),
                "images_per_second": {a: (self.n_attacked[a] / self.seconds[a] if self.seconds.get(a) else None)
                                      for a in self.order},
                "seeds": dict(self.seeds),
                "budgets": self.budgets, "mask_sha256": self.masks_sha256(),
                "sanity_flags": dict(self.sanity.get("flags", {})),
                "sanity_explanations": dict(self.sanity.get("explanations", {}))}


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, pgd: Attack | None,
               attacks: Sequence[str] = (), options: Mapping[str, Any] | None = None, seed: int = 0,
               precision: str = "fp32", batch_size: int = 512, device: Any = "cpu",
               pgd_mask: Any = None, sanity_examples: int = 512, progress: bool = False) -> WorstCase:
    """The worst case of ``model`` on ``(x, y)`` under ``threat``: ``pgd`` (an untargeted
    :class:`empirical.threat.Attack` in ``threat``, or None), then the suite ``attacks`` (registered
    names, :mod:`empirical.suite`) with the budgets their ``options`` give (option name -> value;
    the registry's defaults otherwise), each on what the attacks before it left standing.

    ``seed`` seeds every attack (the PGD's one generator, the suite's chunks). ``pgd_mask``: the
    outcome of exactly this PGD (same examples, seed, batch size, precision) when the caller has it
    already (the workspace's cached evaluation), so it is not run twice. Sanity flags
    (:func:`sanity_flags`) are computed when the suite runs, the input-gradient check on the first
    ``sanity_examples`` examples."""
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be an empirical.threat.ThreatModel; got {type(threat).__name__}")
    names = tuple(attacks)
    if names:
        names = suite.resolve(names)
    if pgd is not None and (pgd.norm, pgd.eps) != (threat.norm, threat.eps):
        raise ValueError(f"the PGD attack ({pgd.describe()}) is not in the threat model {threat.describe()}")
    dev = torch.device(device)
    clean = (predict(model, x, batch_size=batch_size, device=dev, precision=VERDICT) == y.cpu()).numpy()
    order: list[str] = []
    after: dict[str, np.ndarray] = {}
    n_attacked: dict[str, int] = {}
    seconds: dict[str, float] = {}
    seeds: dict[str, int] = {}
    budgets: dict[str, dict[str, Any]] = {}
    descriptions: dict[str, str] = {}
    standing = clean.copy()
    if pgd is not None:
        t0 = time.perf_counter()
        if pgd_mask is None:
            gen = torch.Generator(device=dev)
            gen.manual_seed(seed)
            update, close = progress_bar(f"{threat.describe()} pgd on {int(clean.shape[0])}",
                                         clean.shape[0] * pgd.steps * pgd.restarts, progress)
            pgd_mask = robust_mask(model, x, y, pgd, batch_size=batch_size, device=dev, generator=gen,
                                   precision=precision, progress=update).numpy()
            close()
        pgd_mask = np.asarray(pgd_mask, dtype=bool)
        if pgd_mask.shape != clean.shape:
            raise ValueError(f"pgd_mask has shape {pgd_mask.shape}; expected {clean.shape}")
        n_attacked["pgd"] = int(standing.sum())
        standing = standing & pgd_mask
        order.append("pgd")
        after["pgd"] = standing.copy()
        seconds["pgd"] = time.perf_counter() - t0
        seeds["pgd"] = seed
        budgets["pgd"] = {"steps": pgd.steps, "step_size": pgd.step, "restarts": pgd.restarts,
                          "random_start": pgd.random_start}
        descriptions["pgd"] = pgd.describe()
    sanity: dict[str, dict[str, Any]] = {}
    if names:
        values = {o.name: o.default for o in suite.options()}
        values.update(dict(options or {}))
        xd, yd = x.to(dev), y.to(dev)
        res = ensemble(model, xd, yd, threat, attacks=names, budgets={a: suite.get(a).budget(values) for a in names},
                       seed=seed, precision=precision, batch_size=batch_size,
                       standing=torch.from_numpy(standing).to(dev), progress=progress)
        for a in names:
            order.append(a)
            n_attacked[a] = int(res["n_run"][a])
            seconds[a] = float(res["seconds"][a])
            seeds[a] = seed
            budgets[a] = dict(res["budgets"][a])
            descriptions[a] = suite.get(a).text(res["budgets"][a])
        prev = standing
        for a in names:
            after[a] = prev & ~res["success"][a].cpu().numpy()
            prev = after[a]
        pgd_acc = float(after["pgd"].mean()) if "pgd" in after and clean.size else None
        sanity = sanity_flags(pgd_robust_accuracy=pgd_acc, result=res, model=model, x=xd[:sanity_examples],
                              y=yd[:sanity_examples], precision=precision)
    return WorstCase(threat=threat, order=tuple(order), clean=clean, after=after, n_attacked=n_attacked,
                     seconds=seconds, seeds=seeds, budgets=budgets, descriptions=descriptions, sanity=sanity,
                     precision=precision)


def _final_accuracy(v: Any) -> float:
    if isinstance(v, Mapping):
        return float(v["worst_case_robust_accuracy"])
    return float(v)


def sanity_flags(*, robust_accuracy_by_eps: Mapping[float, Any] | None = None, pgd_robust_accuracy: float | None = None,
                 result: Mapping[str, Any] | None = None, model: nn.Module | None = None, x: torch.Tensor | None = None,
                 y: torch.Tensor | None = None, precision: str = "fp32", pgd_gap: float = 0.05,
                 square_tolerance: float = 0.002, zero_grad_tolerance: float = 0.0) -> dict[str, dict[str, Any]]:
    """AutoAttack-style warning signs of an unreliable evaluation.

    Returns ``{"flags": {name: bool}, "explanations": {name: str}}`` for:

    * ``non_monotone_in_eps``: ``robust_accuracy_by_eps`` (eps -> robust accuracy, or an
      :func:`ensemble` result) rises somewhere as eps grows;
    * ``pgd_gap``: ``pgd_robust_accuracy`` exceeds the worst case of ``result`` by more than
      ``pgd_gap`` (5 points): PGD alone overstates robustness;
    * ``square_stronger``: in ``result``, Square broke more than ``square_tolerance`` of *all*
      examples of the evaluation after the white-box attacks before it failed on them (AutoAttack's
      ``check_square_sr``; one threshold whatever ran before): a sign of gradient masking;
    * ``zero_gradients``: the cross-entropy input gradient of ``model`` at ``x`` is exactly zero
      on more than ``zero_grad_tolerance`` of the examples (AutoAttack's ``check_zero_gradients``).

    A check whose inputs are not given is False with an explanation saying so.
    """
    check_precision(precision)
    for name, v in (("pgd_gap", pgd_gap), ("square_tolerance", square_tolerance),
                    ("zero_grad_tolerance", zero_grad_tolerance)):
        C.in_range(name, v, 0.0, 1.0, hi_open=True)
    flags: dict[str, bool] = {}
    why: dict[str, str] = {}

    if robust_accuracy_by_eps:
        pts = sorted((float(e), _final_accuracy(v)) for e, v in robust_accuracy_by_eps.items())
        rises = [(e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(pts, pts[1:]) if a1 > a0 + 1e-12]
        flags["non_monotone_in_eps"] = bool(rises)
        why["non_monotone_in_eps"] = (
            "robust accuracy rises with eps: " + "; ".join(f"{a0:.2%} at eps={e0:g} -> {a1:.2%} at eps={e1:g}"
                                                             for e0, a0, e1, a1 in rises)
            + " (a larger ball contains the smaller one, so the attack is failing)" if rises
            else f"robust accuracy does not rise with eps over {len(pts)} budgets")
    else:
        flags["non_monotone_in_eps"] = False
        why["non_monotone_in_eps"] = "not checked: no robust_accuracy_by_eps given"

    if pgd_robust_accuracy is not None and result is not None:
        worst = float(result["worst_case_robust_accuracy"])
        gap = float(pgd_robust_accuracy) - worst
        flags["pgd_gap"] = gap > pgd_gap
        why["pgd_gap"] = (f"PGD robust accuracy {float(pgd_robust_accuracy):.2%} vs worst case {worst:.2%}: "
                          f"gap {gap * 100:.1f} points " + ("> " if gap > pgd_gap else "<= ") + f"{pgd_gap * 100:g}")
    else:
        flags["pgd_gap"] = False
        why["pgd_gap"] = "not checked: needs pgd_robust_accuracy and an ensemble result"

    names = tuple(result["attacks"]) if result is not None else ()
    if "square" in names and any(a in suite.white_box() for a in names[: names.index("square")]):
        pos = names.index("square")
        before = result["robust_accuracy"][names[pos - 1]]
        drop = float(before) - float(result["robust_accuracy"]["square"])
        flags["square_stronger"] = drop > square_tolerance
        why["square_stronger"] = (f"Square broke {drop:.2%} of the examples that {', '.join(names[:pos])} left robust"
                                  + (" - the black-box attack beats the white-box ones: gradient masking likely"
                                     if drop > square_tolerance else f" (tolerance {square_tolerance:.2%})"))
    else:
        flags["square_stronger"] = False
        why["square_stronger"] = "not checked: needs an ensemble result with square after a white-box attack"

    if model is not None and x is not None and y is not None:
        check_batch(x, y)
        g = input_gradient(model, x.detach(), y.to(x.device, torch.long), precision)
        zero = g.flatten(1).abs().sum(1) == 0
        frac = float(zero.float().mean()) if zero.numel() else 0.0
        flags["zero_gradients"] = frac > zero_grad_tolerance
        why["zero_gradients"] = (f"{int(zero.sum())} of {zero.numel()} examples ({frac:.1%}) have an exactly zero "
                                 "input gradient" + (": gradient-based attacks cannot make progress there"
                                                     if frac > zero_grad_tolerance else ""))
    else:
        flags["zero_gradients"] = False
        why["zero_gradients"] = "not checked: needs model, x and y"
    return {"flags": flags, "explanations": why}


__all__ = ["SEMANTICS", "WorstCase", "default_budgets", "ensemble", "mask_sha256", "sanity_flags", "worst_case"]
