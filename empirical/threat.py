"""The one attack vocabulary: threat models, attack descriptions, the step rule, their checks.

Every part of the toolkit that attacks a model - adversarial training (:class:`TrainConfig`'s
``adv*`` fields), evaluation (:class:`empirical.evaluate.AttackSpec` = :class:`Attack`, the
experiments' :class:`EvalConfig`), the D_rand / D_det construction (:class:`TargetedConfig`),
transfer (:class:`TransferConfig`), the worst-case suite (:mod:`empirical.autoattack`) and the
CLI's ``--threat l2:0.5`` - describes its attack with the names defined here:

* :data:`NORMS` (the ground's, :data:`foundation.checks.NORMS`, which theory/ and simulate/ check
  with the same :func:`foundation.checks.norm`) and :func:`check_budget`: the one check of a norm
  and a budget (pixel units, images in [0, 1]);
* :class:`ThreatModel`: an lp ball (``l2:0.5``, ``linf:8/255``; fractions parsed by
  :func:`parse_fraction`, never ``eval``-ed);
* :func:`default_step_size`: the step rule, 2.5 eps / steps for PGD (Madry et al. 2018) and
  1.25 eps for FGSM with a random start (Wong et al. 2020);
* :class:`Attack`: a threat model plus method, steps, step size (``None`` = the rule), restarts,
  random start and targeting, validated on construction, with one :meth:`Attack.describe` in the
  format of docs/conventions.md sec. 1 ("l2 eps=0.25, PGD-20 (step 0.03125), 1 restart").

The configs keep their flat fields (``targeted.eps``, ``eval.strong_steps``: the config grammar
users write) and hand out the :class:`Attack` they mean, so the validation, the step rule and
the description exist once: an :class:`Attack` is checked when it is built and the kernels take
it whole (``pgd(model, x, y, attack)``, ``robust_mask(model, x, y, attack)``), never re-checking
or taking it apart. This module imports no torch; the kernels live in :mod:`empirical.attacks`.

The one target rule of the targeted attacks (D_det, the transfer attack, ``robust-features
attack --targeted next``, Table 1's shifted labels) is :func:`next_label`: t = (y + 1) mod C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from foundation import checks as C

NORMS: tuple[str, ...] = C.NORMS
#: decays of a step size over the iterations (the representation inversion's ``step_schedule``;
#: :func:`empirical.attacks.step_factor` gives the multipliers)
STEP_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")
METHODS: tuple[str, ...] = ("pgd", "fgsm")


def parse_fraction(text: str | float | int, name: str = "eps") -> float:
    """Parse ``0.5``, ``"0.5"`` or ``"8/255"`` into a float without ``eval``. Python's digit
    separators are refused (``"1_0"`` is a typo of ``1.0`` or ``10``, never silently 10)."""
    if isinstance(text, bool):
        raise ValueError(f"{name}={text!r} is not a number")
    if isinstance(text, str) and "_" in text:
        raise ValueError(f"{name}={text!r} is not a number or fraction such as 0.5 or 8/255 "
                         "('_' digit separators are not accepted)")
    value = float(text) if isinstance(text, (int, float)) else C.fraction(text)
    if not math.isfinite(value):
        raise ValueError(f"{name}={text!r} is not a number or fraction such as 0.5 or 8/255")
    return value


def check_budget(norm: Any, eps: Any, *, name: str = "eps") -> None:
    """Raise ``ValueError`` for an unknown norm or a negative / non-finite budget (pixel units)."""
    C.norm("norm", norm)
    C.non_negative_float(name, eps)


def default_step_size(eps: float, steps: int = 1, method: str = "pgd") -> float:
    """The step rule: 2.5 eps / steps for PGD (Madry et al. 2018: the iterates can travel 2.5 x
    the radius), 1.25 eps for one FGSM step from a random start (Wong et al. 2020). A zero budget
    gets step 1 (no step moves a point out of a radius-0 ball anyway)."""
    if method == "fgsm":
        return 1.25 * float(eps)
    return 2.5 * float(eps) / int(steps) if eps > 0 else 1.0


@dataclass(frozen=True)
class ThreatModel:
    """An lp ball of radius ``eps`` in [0, 1] pixel units; ``norm`` is ``l2`` or ``linf``."""

    norm: str
    eps: float

    def __post_init__(self) -> None:
        check_budget(self.norm, self.eps)
        object.__setattr__(self, "eps", float(self.eps))

    @classmethod
    def parse(cls, text: str) -> ThreatModel:
        """``"l2:0.5"`` or ``"linf:8/255"`` -> ThreatModel (the eps by :func:`parse_fraction`:
        no ``_`` digit separators)."""
        norm, sep, eps = str(text).partition(":")
        if not sep:
            raise ValueError(f"threat model {text!r} must look like NORM:EPS, e.g. l2:0.5 or linf:8/255; "
                             f"valid norms: {', '.join(NORMS)}")
        return cls(norm.strip().lower(), parse_fraction(eps, "eps"))

    def describe(self) -> str:
        return f"{self.norm} eps={self.eps:g}"

    def key(self) -> str:
        return f"{self.norm}_eps{self.eps:g}"


@dataclass(frozen=True)
class Attack:
    """An iterative lp attack: ``method`` (``pgd`` or ``fgsm``: one step from a random start) in the
    ball ``norm``/``eps``, ``steps`` steps of ``step_size`` (``None`` = :func:`default_step_size`),
    ``restarts`` batched starts, from ``x`` or (``random_start``) a uniform point of the ball,
    untargeted or toward given targets (``targeted``)."""

    norm: str
    eps: float
    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = False
    targeted: bool = False
    method: str = "pgd"

    def __post_init__(self) -> None:
        check_budget(self.norm, self.eps)
        C.one_of("method", self.method, METHODS, what="an attack method")
        C.positive_int("steps", self.steps)
        C.positive_int("restarts", self.restarts)
        C.optional_positive_float("step_size", self.step_size, none=" (None = the step rule: 2.5*eps/steps, "
                                                                   "1.25*eps for FGSM)")
        C.boolean("random_start", self.random_start)
        C.boolean("targeted", self.targeted)
        if self.method == "fgsm" and (self.steps != 1 or not self.random_start):
            raise ValueError(f"method='fgsm' is one step from a random start; got steps={self.steps}, "
                             f"random_start={self.random_start}")
        object.__setattr__(self, "eps", float(self.eps))

    @classmethod
    def fgsm(cls, norm: str, eps: float, step_size: float | None = None) -> Attack:
        return cls(norm, eps, steps=1, step_size=step_size, random_start=True, method="fgsm")

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps)

    @property
    def step(self) -> float:
        """The step size in pixel units (the given one, else the rule's)."""
        if self.step_size is not None:
            return float(self.step_size)
        return default_step_size(self.eps, self.steps, self.method)

    def describe(self) -> str:
        """``l2 eps=0.25, PGD-20 (step 0.03125), random start, 5 restarts`` (docs/conventions.md sec. 1)."""
        head = "FGSM" if self.method == "fgsm" else f"PGD-{self.steps}"
        parts = [f"{self.norm} eps={self.eps:g}", f"{head} (step {self.step:.4g})"]
        if self.targeted:
            parts.append("targeted")
        if self.random_start:
            parts.append("random start")
        parts.append(f"{self.restarts} restart{'s' if self.restarts != 1 else ''}")
        return ", ".join(parts)

    def key(self) -> str:
        """A short file-safe name (``l2_eps0.5_pgd20_r1``)."""
        return f"{self.threat.key()}_{self.method}{self.steps}_r{self.restarts}"



def next_label(y: Any, num_classes: int) -> Any:
    """The deterministic target rule t = (y + 1) mod C (D_det, the transfer attack, the shifted
    labels of Table 1); works on ints, NumPy arrays and tensors alike."""
    C.int_at_least("num_classes", num_classes, 2)
    return (y + 1) % num_classes


__all__ = ["Attack", "METHODS", "NORMS", "STEP_SCHEDULES", "ThreatModel", "check_budget", "default_step_size", "next_label",
           "parse_fraction"]
