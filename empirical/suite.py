"""The evaluation-attack registry: every attack of the worst-case evaluation is one row here.

A row (:class:`EvalAttack`) says everything the rest of the toolkit needs to know about an
attack, so that adding one is its kernel module plus one :func:`register` call:

* ``name`` (``apgd-ce``) and ``label`` (``APGD-CE``), ``white_box`` (gradient-based or not: the
  sanity check for gradient masking compares the two kinds) and ``min_classes``;
* ``options``: the config options its budget reads, each a :class:`foundation.config.Option`
  with a default, a check and a help line. They become keys of :class:`empirical.settings.
  EvalConfig` (``--set eval.square_queries=1000``) and flags of ``robust-features eval``
  (``--square-queries 1000``) with no edit anywhere; two rows may share an option (APGD-CE and
  APGD-T both read ``apgd_steps``, as AutoAttack's one ``n_iter``);
* ``budget_fields`` (budget field -> option name) and ``fixed`` (the budget fields no option
  sets): together the budget its ``run`` takes; ``clamp`` turns it into the budget that actually
  runs on a C-class model (APGD-T attacks at most C - 1 targets), which is what records show;
* ``run(model, x, y, *, norm, eps, budget, seed, precision, batch_size)`` -> (x_adv, success):
  the attack on the examples it is given (the ones still standing), deterministic for a seed
  (with ``reports_progress``, also ``progress=``: a callable taking the image-steps or queries
  just done, which the evaluation turns into a progress bar with images/s and the time left);
  ``validate(budget)`` checks a budget before any attack of an evaluation runs;
* ``describe(budget)`` (``APGD-T-100 x 9 targets``) and ``cost(budget, num_classes)`` -> (gradient
  passes, forward passes) per attacked image, for ``reproduce --plan``.

Suites (:data:`SUITES`) are named orders of rows. The rows of AutoAttack's standard version are
registered below; their kernels live in :mod:`empirical.autoattack`, imported when an attack
runs, so this module (and every config that names an attack) imports no torch. The worst-case
evaluation that runs them in order is :func:`empirical.worst_case.worst_case`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foundation import checks as C
from foundation.config import Option


@dataclass(frozen=True)
class EvalAttack:
    """One evaluation attack (see the module docstring for each field)."""

    name: str
    label: str
    run: Callable[..., Any]
    options: tuple[Option, ...] = ()
    budget_fields: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    describe: Callable[[Mapping[str, Any]], str] | None = None
    cost: Callable[[Mapping[str, Any], int], tuple[float, float]] | None = None
    clamp: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    validate: Callable[[Mapping[str, Any]], None] | None = None
    reports_progress: bool = False        # run takes progress=callable(n): n image-steps / queries done
    white_box: bool = True
    min_classes: int = 2
    source: str = ""

    def __post_init__(self) -> None:
        C.non_empty_str("name", self.name)
        names = {o.name for o in self.options}
        missing = [o for o in self.budget_fields.values() if o not in names]
        if missing:
            raise ValueError(f"attack {self.name!r}: budget_fields name options it does not declare: {missing}")
        both = set(self.budget_fields) & set(self.fixed)
        if both:
            raise ValueError(f"attack {self.name!r}: budget fields {sorted(both)} are both set by an option and fixed")

    def requested(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The budget fields the options set (what a user asked for), e.g. ``{"steps": 100}``."""
        return {f: options[o] for f, o in self.budget_fields.items()}

    def budget(self, options: Mapping[str, Any], num_classes: int | None = None) -> dict[str, Any]:
        """The whole budget ``run`` takes (option-set fields, then the fixed ones); with
        ``num_classes`` the budget that actually runs on such a model."""
        b = {**self.requested(options), **dict(self.fixed)}
        return self.clamp(b, num_classes) if (self.clamp is not None and num_classes is not None) else b

    def text(self, budget: Mapping[str, Any]) -> str:
        return self.describe(budget) if self.describe is not None else f"{self.label} {dict(budget)}"


_ATTACKS: dict[str, EvalAttack] = {}
SUITES: dict[str, tuple[str, ...]] = {}


def register(row: EvalAttack) -> EvalAttack:
    """Add ``row`` (a name already taken, or an option declared differently by another row, is refused)."""
    if row.name in _ATTACKS or row.name == "pgd":
        raise ValueError(f"evaluation attack {row.name!r} is already registered")
    mine = {o.name: o for o in row.options}
    for other in _ATTACKS.values():
        for o in other.options:
            if o.name in mine and mine[o.name] != o:
                raise ValueError(f"attack {row.name!r} declares option {o.name!r} differently from attack "
                                 f"{other.name!r}; a shared option must be declared identically")
    _ATTACKS[row.name] = row
    return row


def unregister(name: str) -> None:
    _ATTACKS.pop(name, None)
    for suite, names in list(SUITES.items()):
        if name in names:
            del SUITES[suite]


@contextlib.contextmanager
def registered(*rows: EvalAttack, suites: Mapping[str, Sequence[str]] | None = None) -> Iterator[None]:
    """Rows (and suites) registered for the duration of a ``with`` block (tests, experiments)."""
    for r in rows:
        register(r)
    added = [s for s in dict(suites or {}) if s not in SUITES]
    SUITES.update({k: tuple(v) for k, v in dict(suites or {}).items()})
    try:
        yield
    finally:
        for r in rows:
            unregister(r.name)
        for s in added:
            SUITES.pop(s, None)


def names() -> tuple[str, ...]:
    """The registered attacks, in registration order."""
    return tuple(_ATTACKS)


def get(name: str) -> EvalAttack:
    if name not in _ATTACKS:
        raise ValueError(f"attack {name!r} is not an attack; valid: {', '.join(_ATTACKS)}")
    return _ATTACKS[name]


def options() -> tuple[Option, ...]:
    """Every option of every registered attack, each once, in registration order (the provider
    of :class:`empirical.settings.EvalConfig`'s and the ``eval`` command's option table)."""
    out: dict[str, Option] = {}
    for row in _ATTACKS.values():
        for o in row.options:
            out.setdefault(o.name, o)
    return tuple(out.values())


def resolve(attacks: Sequence[str] | str, *, what: str = "attacks") -> tuple[str, ...]:
    """A suite name or a list of attack names -> the attack names, checked (known, none twice)."""
    if isinstance(attacks, str):
        if attacks not in SUITES:
            raise ValueError(f"{what}={attacks!r} is not a suite; valid: {', '.join(SUITES)}")
        return SUITES[attacks]
    seq = tuple(attacks)
    if len(seq) == 1 and seq[0] in SUITES:
        return SUITES[seq[0]]
    if not seq:
        raise ValueError(f"{what}=() is empty; name at least one of " + ", ".join(_ATTACKS))
    for a in seq:
        get(a)
    if len(set(seq)) != len(seq):
        raise ValueError(f"{what}={seq!r} names an attack twice")
    return seq


def white_box() -> tuple[str, ...]:
    return tuple(n for n, r in _ATTACKS.items() if r.white_box)


# ---------------------------------------------------------------------------------------------
# AutoAttack's standard version (Croce & Hein 2020): APGD-CE, APGD-T, Square
# ---------------------------------------------------------------------------------------------
def _apgd_run(loss: str) -> Callable[..., Any]:
    def run(model: Any, x: Any, y: Any, *, norm: str, eps: float, budget: Mapping[str, Any], seed: int,
            precision: str, batch_size: int | None, progress: Any = None) -> Any:
        from empirical.autoattack import run_apgd

        return run_apgd(model, x, y, norm=norm, eps=eps, loss=loss, seed=seed, precision=precision,
                        batch_size=batch_size, progress=progress, **budget)

    return run


def _square_run(model: Any, x: Any, y: Any, *, norm: str, eps: float, budget: Mapping[str, Any], seed: int,
                precision: str, batch_size: int | None, progress: Any = None) -> Any:
    from empirical.autoattack import run_square

    return run_square(model, x, y, norm=norm, eps=eps, seed=seed, precision=precision, batch_size=batch_size,
                      progress=progress, **budget)


def _validate_apgd(loss: str) -> Callable[[Mapping[str, Any]], None]:
    def validate(b: Mapping[str, Any]) -> None:
        from empirical.autoattack import validate_apgd

        validate_apgd(b["steps"], b["restarts"], loss, b.get("n_target_classes", 9), b["rho"],
                      b.get("targets_at_once", 1))

    return validate


def _validate_square(b: Mapping[str, Any]) -> None:
    from empirical.autoattack import validate_square

    validate_square(b["queries"], b["p_init"], b["rescale_schedule"])


def _clamp_targets(budget: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """APGD-T attacks the classes ranked 2nd, 3rd, ... by the clean logits: at most C - 1 of them."""
    n = min(int(budget["n_target_classes"]), int(num_classes) - 1)
    return {**budget, "n_target_classes": n, "targets_at_once": min(int(budget.get("targets_at_once", 1)), n)}


APGD_STEPS = Option("apgd_steps", 100, "APGD-CE / APGD-T iterations (AutoAttack standard: 100)", C.positive_int)
APGD_TARGETS = Option("apgd_targets", 9, "APGD-T target classes (standard: 9; at most C - 1 run)", C.positive_int)
APGD_TARGETS_AT_ONCE = Option(
    "apgd_targets_at_once", 1, "APGD-T target classes run as one batch (1: one at a time, AutoAttack's order; more: "
    "the same targets in fewer, larger batches, faster where the standing examples are few)", C.positive_int)
SQUARE_QUERIES = Option("square_queries", 5000, "Square queries (standard: 5000)", C.positive_int)
_SOURCE = ("Croce & Hein 2020, 'Reliable evaluation of adversarial robustness with an ensemble of diverse "
           "parameter-free attacks' (AutoAttack, version='standard')")

register(EvalAttack(
    name="apgd-ce", label="APGD-CE", run=_apgd_run("ce"), options=(APGD_STEPS,),
    budget_fields={"steps": "apgd_steps"}, fixed={"restarts": 1, "rho": 0.75},
    describe=lambda b: f"APGD-CE-{b['steps']}",
    cost=lambda b, c: (float(b["steps"] * b["restarts"]), 0.0),
    validate=_validate_apgd("ce"), reports_progress=True, white_box=True, source=_SOURCE))
register(EvalAttack(
    name="apgd-t", label="APGD-T", run=_apgd_run("dlr-targeted"), options=(APGD_STEPS, APGD_TARGETS, APGD_TARGETS_AT_ONCE),
    budget_fields={"steps": "apgd_steps", "n_target_classes": "apgd_targets", "targets_at_once": "apgd_targets_at_once"},
    fixed={"restarts": 1, "rho": 0.75},
    describe=lambda b: (f"APGD-T-{b['steps']} x {b['n_target_classes']} targets"
                        + (f" ({b['targets_at_once']} at once)" if b.get("targets_at_once", 1) > 1 else "")),
    cost=lambda b, c: (float(b["steps"] * b["restarts"] * b["n_target_classes"]), 0.0),
    clamp=_clamp_targets, validate=_validate_apgd("dlr-targeted"), reports_progress=True, white_box=True,
    min_classes=4, source=_SOURCE))
register(EvalAttack(
    name="square", label="Square", run=_square_run, options=(SQUARE_QUERIES,),
    budget_fields={"queries": "square_queries"}, fixed={"p_init": 0.8, "rescale_schedule": True},
    describe=lambda b: f"Square-{b['queries']}",
    cost=lambda b, c: (0.0, float(b["queries"] + 3)),
    validate=_validate_square, reports_progress=True, white_box=False, source="Andriushchenko, Croce, Flammarion & Hein 2020, 'Square Attack' (score-based, "
                            "no gradients)"))
SUITES["standard"] = ("apgd-ce", "apgd-t", "square")


__all__ = ["APGD_STEPS", "APGD_TARGETS", "APGD_TARGETS_AT_ONCE", "EvalAttack", "SQUARE_QUERIES", "SUITES", "get", "names", "options",
           "register", "registered", "resolve", "unregister", "white_box"]
