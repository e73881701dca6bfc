"""The construction registry: every dataset construction of the chain is one row here.

A row (:class:`Construction`) is all the rest of the toolkit needs to know about a construction,
so that the workspace, the command line (``robust-features construct KIND``), the experiments,
``reproduce`` (its report and claims), the cost plan and the figures read this table instead of
deciding by ``if kind in (...)``:

* ``kind`` (``D_R``): the dataset's name, its folder (``datasets/<kind>/``) and the argument of
  ``robust-features construct``; ``summary`` and ``source`` (its citation) for help and docs;
* ``section`` and ``settings``: the config section its settings live in and their default (a
  frozen, torch-free dataclass with at least ``seed``, ``shard_size`` and ``storage``). The
  section becomes keys of :class:`empirical.experiments.ExperimentConfig` (``--set rep.steps=..``)
  with no edit there: its ``sections`` table lists every registered section. Two rows may share
  a section (D_R and D_NR read ``rep``) when they declare the same default;
* ``sources``: the models it is built from, by the workspace's names (``standard``: ``arch``
  trained on D with ``std``; ``robust``: with ``adv``);
* ``build(request)`` -> :class:`empirical.construct.ConstructionResult`: builds (or resumes) the
  dataset described by an :class:`empirical.construct.BuildRequest` (the folder, the settings, the
  source models, the base training set); :func:`empirical.construct.build_sharded` does the
  sharding, resuming, hashing and manifest for any ``make_shard``;
* ``recipe`` and ``model``: the recipe field (of ``ExperimentConfig``) and the name of the model
  trained on the constructed set; ``shifted``: its labels follow the rule t = ``next_label(y)``, so
  that model is also scored against the shifted test labels (Table 1's D_det column);
* ``metrics``: the manifest metrics its row of the report shows, as (key, column title);
* ``cost(settings, n)`` -> (forward+backward passes, forward passes) to build n images, for the plan;
* ``extra_models(settings, arch, seed)`` -> (:class:`ExtraModel`, ...): further models trained on D
  with the ``std`` recipe (and the overrides each names) that the builder gets after ``sources``
  (the ensemble of D_nt, the teacher of D_err), named in the manifest with their checkpoints'
  sha256 like the source models;
* ``train_mask``: the aux key of a per-example mask; the model trained on the set sees only those
  examples (D_err: the teacher's mistakes).

The paper's four constructions are registered below with builders that import their kernels
(:mod:`empirical.construct`) only when they run, so this table imports no torch. A new one is its
settings dataclass, its builder (and a kernel if it needs one) and one :func:`register` call;
``tests/empirical/test_extending.py`` registers one from a test file and runs it through
``construct`` and ``reproduce`` (``docs/extending.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from empirical.settings import ErrorOnlyConfig, NonTransferConfig, RepresentationConfig, TargetedConfig
from foundation.config import Option

SOURCE_MODELS: dict[str, str] = {"standard": "std", "robust": "adv"}   # workspace model name -> its recipe field


@dataclass(frozen=True)
class ExtraModel:
    """A further model a construction is built from: trained on D with the preset's ``std`` recipe,
    ``recipe`` overriding some of its fields (``{"epochs": 2}``: a briefly trained teacher)."""

    name: str
    arch: str
    seed: int
    recipe: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Construction:
    """One construction (see the module docstring for each field)."""

    kind: str
    section: str
    settings: Any
    build: Callable[[Any], Any]              # build(empirical.construct.BuildRequest) -> ConstructionResult
    sources: tuple[str, ...] = ("standard",)
    recipe: str = "std"
    model: str = ""
    shifted: bool = False
    metrics: tuple[tuple[str, str], ...] = ()
    cost: Callable[[Any, int], tuple[float, float]] | None = None
    summary: str = ""
    source: str = ""
    # further models it is built from: extra_models(settings, arch, seed) -> (ExtraModel, ...), each
    # trained by the workspace on D with the ``std`` recipe (and its overrides) and handed to the builder
    # after ``sources``
    extra_models: Callable[[Any, str, int], tuple[ExtraModel, ...]] | None = None
    # the aux key of a boolean per-example mask: the model trained on the set sees only those examples
    # (the error-only control keeps the teacher's mistakes); None = every example
    train_mask: str | None = None

    def __post_init__(self) -> None:
        import re

        if not isinstance(self.kind, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", self.kind):
            raise ValueError(f"kind={self.kind!r} must be a folder name (letters, digits, '_', '.', '-')")
        if not isinstance(self.section, str) or not self.section.isidentifier():
            raise ValueError(f"section={self.section!r} must be a Python identifier (it is a config key)")
        for f in ("seed", "shard_size", "storage"):
            if not hasattr(self.settings, f):
                raise ValueError(f"construction {self.kind!r}: its settings {type(self.settings).__name__} need a "
                                 f"{f!r} field (the sharded writer reads it)")
        if not self.sources and self.extra_models is None:
            raise ValueError(f"construction {self.kind!r} names no source model")
        if not self.model:
            object.__setattr__(self, "model", f"std_{self.kind.replace('_', '')}")

    @property
    def option(self) -> Option:
        return Option(self.section, self.settings, f"settings of {self.kind}")


_ROWS: dict[str, Construction] = {}
PAPER_KINDS: tuple[str, ...] = ("D_R", "D_NR", "D_rand", "D_det")    # the paper's four (sec. 3.1, 3.2)


def register(row: Construction) -> Construction:
    """Add ``row``; a kind already taken, or a section declared with another default, is refused."""
    if row.kind in _ROWS:
        raise ValueError(f"construction {row.kind!r} is already registered")
    for other in _ROWS.values():
        if other.section == row.section and other.settings != row.settings:
            raise ValueError(f"construction {row.kind!r} declares section {row.section!r} with other defaults than "
                             f"{other.kind!r}; a shared section must have one default")
        if other.model == row.model:
            raise ValueError(f"construction {row.kind!r}: model name {row.model!r} is taken by {other.kind!r}")
    _ROWS[row.kind] = row
    return row


def unregister(kind: str) -> None:
    _ROWS.pop(kind, None)


@contextlib.contextmanager
def registered(*rows: Construction) -> Iterator[None]:
    """Rows registered for the duration of a ``with`` block (tests, experiments)."""
    for r in rows:
        register(r)
    try:
        yield
    finally:
        for r in rows:
            unregister(r.kind)


def kinds() -> tuple[str, ...]:
    """Every registered construction, in registration order (the paper's four first)."""
    return tuple(_ROWS)


def get(kind: str) -> Construction:
    if kind not in _ROWS:
        raise ValueError(f"kind={kind!r} is not a construction; valid: {', '.join(_ROWS)}")
    return _ROWS[kind]


def sections() -> tuple[Option, ...]:
    """One option per settings section, each once (the provider of ``ExperimentConfig.sections``)."""
    out: dict[str, Option] = {}
    for row in _ROWS.values():
        out.setdefault(row.section, row.option)
    return tuple(out.values())


def by_model(name: str) -> Construction | None:
    """The construction whose trained model is called ``name`` (None if none is)."""
    return next((r for r in _ROWS.values() if r.model == name), None)


# ---------------------------------------------------------------------------------------------
# the paper's four (Ilyas et al. 2019, sec. 3.1-3.2, appendix C)
# ---------------------------------------------------------------------------------------------
def _representation(req: Any) -> Any:
    from empirical.construct import build_representation

    return build_representation(req)


def _targeted(req: Any) -> Any:
    from empirical.construct import build_targeted

    return build_targeted(req)


def _rep_cost(s: RepresentationConfig, n: int) -> tuple[float, float]:
    return float(n * s.steps), float(n * 4)


def _targeted_cost(s: TargetedConfig, n: int) -> tuple[float, float]:
    return float(n * s.steps * s.restarts), float(n * (s.restarts + 1))


_REP_METRICS = (("l2_to_target_mean", "l2 to x (mean)"), ("linf_to_target_mean", "linf to x (mean)"),
                ("rep_loss_rel_mean", "rep. loss (rel., mean)"))      # rates (``*_rate``) print in percent
_TARGETED_METRICS = (("target_success_rate", "source success"), ("l2_mean", "l2 to x (mean)"),
                     ("linf_mean", "linf to x (mean)"))
_PAPER = "Ilyas et al. 2019, sec. 3.1-3.2 and appendix C"

register(Construction(
    kind="D_R", section="rep", settings=RepresentationConfig(), build=_representation, sources=("robust",),
    recipe="on_dr", model="std_DR", metrics=_REP_METRICS, cost=_rep_cost, source=_PAPER,
    summary="robust features only: each x matched in the representation of an adversarially trained model, "
            "from another image; label y"))
register(Construction(
    kind="D_NR", section="rep", settings=RepresentationConfig(), build=_representation, sources=("standard",),
    recipe="on_dnr", model="std_DNR", metrics=_REP_METRICS, cost=_rep_cost, source=_PAPER,
    summary="the same from a standard model's representation (its non-robust features kept)"))
register(Construction(
    kind="D_rand", section="targeted", settings=TargetedConfig(), build=_targeted, sources=("standard",),
    recipe="on_drand", model="std_Drand", metrics=_TARGETED_METRICS, cost=_targeted_cost,
    source=_PAPER, summary="targeted PGD toward a uniformly drawn class t on a standard model; label t"))
register(Construction(
    kind="D_det", section="targeted", settings=TargetedConfig(), build=_targeted, sources=("standard",),
    recipe="on_ddet", model="std_Ddet", shifted=True, metrics=_TARGETED_METRICS, cost=_targeted_cost,
    source=_PAPER, summary="targeted PGD toward t = (y + 1) mod C on a standard model; label t"))


# ---------------------------------------------------------------------------------------------
# the debate's constructions (docs/debate.md)
# ---------------------------------------------------------------------------------------------
def _nontransferable(req: Any) -> Any:
    from empirical.construct import build_nontransferable

    return build_nontransferable(req)


def _nt_cost(s: NonTransferConfig, n: int) -> tuple[float, float]:
    return float(n * s.steps * s.restarts * (1 + s.models)), float(n * (s.restarts + 1) * (1 + s.models))


def _nt_models(s: NonTransferConfig, arch: str, seed: int) -> tuple[ExtraModel, ...]:
    """The ensemble: ``models`` fresh models of ``s.arch`` (or the preset's), seeds seed + model_seed + i."""
    return tuple(ExtraModel(f"nt_ensemble_{i}", s.arch or arch, seed + s.model_seed + i) for i in range(s.models))


register(Construction(
    kind="D_nt", section="nontransfer", settings=NonTransferConfig(), build=_nontransferable, sources=("standard",),
    recipe="on_ddet", model="std_Dnt", shifted=True, extra_models=_nt_models, cost=_nt_cost,
    metrics=(("target_success_rate", "source success"), ("ensemble_predicts_t_mean", "ensemble -> t"),
             ("ensemble_keeps_y_mean", "ensemble keeps y"), ("l2_mean", "l2 to x (mean)")),
    source="Nakkiran, Distill 2019, response 5 ('Adversarial Examples are Just Bugs, Too')",
    summary="non-transferable targeted examples toward t = (y + 1) mod C: targeted on the standard model while "
            "an ensemble of independently trained models is held at y; label t"))


def _error_only(req: Any) -> Any:
    from empirical.construct import build_error_only

    return build_error_only(req)


def _err_models(s: ErrorOnlyConfig, arch: str, seed: int) -> tuple[ExtraModel, ...]:
    """The teacher: ``teacher_epochs`` of the ``std`` recipe, seed seed + model_seed."""
    return (ExtraModel("err_teacher", s.teacher_arch or arch, seed + s.model_seed, {"epochs": s.teacher_epochs}),)


register(Construction(
    kind="D_err", section="erroronly", settings=ErrorOnlyConfig(), build=_error_only, sources=(),
    recipe="std", model="std_Derr", extra_models=_err_models, train_mask="teacher_wrong",
    cost=lambda s, n: (0.0, float(n)), metrics=(("teacher_wrong_rate", "teacher's mistakes"),),
    source="Wallace, Distill 2019, response 6 ('Learning from Incorrectly Labeled Data')",
    summary="the training set relabelled by a briefly trained teacher; the model trained on it sees only the "
            "teacher's mistakes"))


def check_kinds(name: str, value: Any) -> tuple[str, ...]:
    """A list of registered construction kinds (an ``ExperimentConfig`` field's check)."""
    if isinstance(value, str) or not isinstance(value, tuple) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name}={value!r} must be a list of constructions, e.g. {', '.join(_ROWS)}")
    bad = [k for k in value if k not in _ROWS]
    if bad:
        raise ValueError(f"{name}={value!r} holds {', '.join(map(repr, bad))}; valid: {', '.join(_ROWS)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name}={value!r} names a construction twice")
    return value


__all__ = ["PAPER_KINDS", "SOURCE_MODELS", "Construction", "ExtraModel", "by_model", "check_kinds", "get", "kinds",
           "register", "registered", "sections", "unregister"]
