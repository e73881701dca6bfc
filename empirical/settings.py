"""The settings of the empirical chain as frozen, torch-free dataclasses, checked on construction.

* :class:`RepresentationConfig` (``rep.*``): D_R / D_NR by representation matching;
* :class:`TargetedConfig` (``targeted.*``): D_rand / D_det by targeted PGD;
* :class:`TransferConfig` (``transfer.*``): the attack made on Figure 3's source model;
* :class:`EvalConfig` (``eval.*``): the paper's PGD, the strong PGD and the worst-case suite,
  whose budget options come from the evaluation-attack registry (:mod:`empirical.suite`);
* the vocabularies they check against: :data:`STARTS`, :data:`STEP_SCHEDULES`, :data:`STORAGES`.

Nothing here imports torch, so a config can be read, resolved and validated anywhere (the command
line's parser, a plan, a test) and the registries (:mod:`empirical.constructions`,
:mod:`empirical.suite`) can name a construction's settings without loading a model. The kernels
that use them live in :mod:`empirical.construct`, :mod:`empirical.transfer`,
:mod:`empirical.worst_case`.

A construction's settings dataclass (these two, or one a new construction brings) has at least
``seed``, ``shard_size`` and ``storage``: the sharded writer (:mod:`empirical.shards`) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from empirical import suite as attacks
from empirical.precision import check_precision
from empirical.threat import STEP_SCHEDULES, Attack
from foundation import checks as C
from foundation import config as grammar

STARTS: tuple[str, ...] = ("random_image", "noise")
STORAGES: tuple[str, ...] = ("float32", "float16", "uint8")


def check_storage(storage: str) -> str:
    """A storage precision of constructed datasets (:data:`STORAGES`; see :mod:`empirical.shards`)."""
    return C.one_of("storage", storage, STORAGES, what="a storage precision")


def _check_targeted_attack(s: Any) -> None:
    """The targeted-attack fields a construction's settings share (``TargetedConfig``,
    ``NonTransferConfig``): eps and step, then the attack's own checks (norm, steps, restarts,
    random_start)."""
    C.positive_float("eps", s.eps)               # stricter than a threat model's eps >= 0
    C.positive_float("step_size", s.step_size)   # a construction names its step
    s.attack  # noqa: B018


def _targeted_attack(s: Any) -> Attack:
    """The targeted PGD of a construction's settings (:class:`empirical.threat.Attack`)."""
    return Attack(s.norm, s.eps, steps=s.steps, step_size=s.step_size, restarts=s.restarts,
                  random_start=s.random_start, targeted=True)


def _check_sharding(s: Any) -> None:
    """The fields every construction's settings have: batch, shard size, storage, seed."""
    C.positive_int("batch_size", s.batch_size)
    C.positive_int("shard_size", s.shard_size)
    check_storage(s.storage)
    C.seed("seed", s.seed)


@dataclass(frozen=True)
class RepresentationConfig:
    """D_R / D_NR: representation matching (docs/paper-notes.md sec. 2.2; paper: 1000 steps, step 0.1)."""

    steps: int = 1000
    step_size: float = 0.1
    start: str = "random_image"        # paper: x' ~ D ; notebook: "noise" (randn/20 + 0.5)
    normalize_loss: bool = False       # notebook divides by ||g(x)||_2
    use_best: bool = False             # notebook: use_best=False (last iterate)
    exclude_self: bool = True          # never start from the target image itself
    straight_through: bool = False     # the authors' fake_relu: identity gradient through the last nonlinearity
    step_schedule: str = "constant"    # constant | linear | cosine decay of the step size
    precision: str = "auto"            # auto (bf16 on CUDA) | fp32 (the authors') | bf16
    batch_size: int = 512
    shard_size: int = 1000
    storage: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        C.positive_int("steps", self.steps)
        C.positive_float("step_size", self.step_size)
        C.one_of("start", self.start, STARTS, what="a start rule")
        C.one_of("step_schedule", self.step_schedule, STEP_SCHEDULES, what="a schedule")
        for name in ("normalize_loss", "use_best", "exclude_self", "straight_through"):
            C.boolean(name, getattr(self, name))
        check_precision(self.precision)
        _check_sharding(self)


@dataclass(frozen=True)
class TargetedConfig:
    """D_rand / D_det: targeted PGD (docs/paper-notes.md sec. 3.1, 6.3; CIFAR-10: l2 eps 0.5, 100 steps, step 0.1)."""

    norm: str = "l2"
    eps: float = 0.5
    steps: int = 100
    step_size: float = 0.1
    random_start: bool = False         # robustness-library default: start at x
    use_best: bool = True              # robustness-library default: best-loss iterate
    restarts: int = 1
    exclude_true_label: bool = False   # D_rand only: draw t != y (the paper allows t = y)
    precision: str = "auto"            # auto (bf16 on CUDA) | fp32 | bf16
    batch_size: int = 512
    shard_size: int = 1000
    storage: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        check_precision(self.precision)
        _check_targeted_attack(self)
        for name in ("use_best", "exclude_true_label"):
            C.boolean(name, getattr(self, name))
        _check_sharding(self)

    @property
    def attack(self) -> Attack:
        """The targeted PGD toward the new labels (:class:`empirical.threat.Attack`)."""
        return _targeted_attack(self)


@dataclass(frozen=True)
class NonTransferConfig:
    """D_nt: Nakkiran's non-transferable targeted examples (Distill 2019, response 5), relabelled like
    D_det: each training x attacked toward t = (y + 1) mod C on the standard model f while an
    ensemble of ``models`` independently trained models f_i is held at y
    (:func:`empirical.attacks.nontransferable_pgd`); label t.

    ``arch`` is the ensemble's architecture ("" = the preset's ``arch``, f's own, as in the response:
    ten fresh ResNet-18s for a ResNet-18 f); ensemble model i is the preset's ``std`` recipe on D with
    seed ``seed + model_seed + i`` (``seed`` the preset's). The attack's defaults are the response's
    l2 setting (eps 2.5, 10 steps of 0.5, from x, K = 10 models); a preset sets them to its D_det
    attack so the two sets differ only in the ensemble term (docs/debate.md)."""

    models: int = 10
    arch: str = ""
    model_seed: int = 3000
    ensemble_weight: float = 1.0
    norm: str = "l2"
    eps: float = 2.5
    steps: int = 10
    step_size: float = 0.5
    random_start: bool = False         # the response: x_0 = x
    use_best: bool = True
    restarts: int = 1
    precision: str = "auto"
    batch_size: int = 512
    shard_size: int = 1000
    storage: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        C.positive_int("models", self.models)
        if not isinstance(self.arch, str):
            raise ValueError(f"arch={self.arch!r} must be an architecture spec, or '' for the preset's arch")
        C.non_negative_int("model_seed", self.model_seed)
        C.non_negative_float("ensemble_weight", self.ensemble_weight)
        check_precision(self.precision)
        _check_targeted_attack(self)
        C.boolean("use_best", self.use_best)
        _check_sharding(self)

    @property
    def attack(self) -> Attack:
        """The targeted PGD whose loss gains the ensemble term (:class:`empirical.threat.Attack`)."""
        return _targeted_attack(self)


@dataclass(frozen=True)
class ErrorOnlyConfig:
    """D_err: Wallace's error-only distillation control (Distill 2019, response 6, "Learning from
    Incorrectly Labeled Data"): a teacher of ``teacher_arch`` ("" = the preset's ``arch``) trained
    briefly (``teacher_epochs`` of the preset's ``std`` recipe, seed ``seed + model_seed``) relabels the
    training set with its predictions; the model trained on the set sees only the images the teacher
    gets wrong (the row's ``train_mask``), each with the teacher's (wrong) label. The response: a
    ResNet-18 trained 2 epochs (63.1% test accuracy), 18,768 mistakes of 50k, student 49.7%."""

    teacher_arch: str = ""
    teacher_epochs: int = 2
    model_seed: int = 4000
    batch_size: int = 512
    shard_size: int = 1000
    storage: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.teacher_arch, str):
            raise ValueError(f"teacher_arch={self.teacher_arch!r} must be an architecture spec, or '' for the "
                             "preset's arch")
        C.positive_int("teacher_epochs", self.teacher_epochs)
        C.non_negative_int("model_seed", self.model_seed)
        _check_sharding(self)


@dataclass(frozen=True)
class TransferConfig:
    """The attack made on the source model and replayed on the targets (Figure 3)."""

    norm: str = "l2"
    eps: float = 0.5
    steps: int = 100
    step_size: float = 0.1
    targeted: bool = True              # toward (y + 1) mod C, as in D_det
    random_start: bool = False
    restarts: int = 1
    n_examples: int = 1000             # a seeded class-stratified sample of the test set (all if larger)
    batch_size: int = 512
    seed: int = 0
    precision: str = "fp32"            # the attack's forward passes: fp32 | bf16 | auto (bf16 on CUDA)

    def __post_init__(self) -> None:
        check_precision(self.precision, name="transfer.precision")
        for name in ("eps", "step_size"):                # stricter than a threat model's eps >= 0
            C.positive_float(name, getattr(self, name))
        self.attack  # noqa: B018 - the attack's own checks: norm, steps, restarts, targeted, random_start
        for name in ("n_examples", "batch_size"):
            C.positive_int(name, getattr(self, name))
        C.seed("seed", self.seed)

    @property
    def attack(self) -> Attack:
        """The attack made on the source model (:class:`empirical.threat.Attack`; targeted toward
        (y + 1) mod C when ``targeted``)."""
        return Attack(self.norm, self.eps, steps=self.steps, step_size=self.step_size, restarts=self.restarts,
                      random_start=self.random_start, targeted=self.targeted)

    def describe(self) -> str:
        target = ", targets (y+1) mod C" if self.targeted else ""
        return f"{self.attack.describe()}, made on the source model{target}"


@grammar.tabled
@dataclass(frozen=True)
class EvalConfig:
    """Robust-accuracy evaluation: the paper's PGD-7 (step eps/5, start at x), a stronger
    PGD-``strong_steps`` with ``strong_restarts`` random restarts (step 2.5*eps/steps), and the
    worst-case suite after them (:func:`empirical.worst_case.worst_case`).

    The suite's budget options (``apgd_steps``, ``apgd_targets``, ``square_queries``, and those of
    any attack registered later) are the entries of the ``budgets`` table: the registry
    (:mod:`empirical.suite`) declares them, and they read and write like fields
    (``eval.square_queries``, ``EvalConfig(square_queries=10)``)."""

    norm: str = "l2"
    eps: float = 0.25
    paper_steps: int = 7
    strong_steps: int = 20
    strong_restarts: int = 5
    n_robust: int | None = 1000        # test examples attacked (None = all; a stratified sample otherwise)
    batch_size: int = 512
    precision: str = "fp32"            # the attacks' forward passes: fp32 | bf16 | auto (bf16 on CUDA)
    # the worst-case suite (empirical.suite) run after the strong PGD on the examples it left standing; () = none.
    suite: tuple[str, ...] = ()
    budgets: grammar.Table = grammar.table(attacks.options, "the suite's budget options (empirical.suite)")

    def __post_init__(self) -> None:
        C.norm("norm", self.norm)
        C.positive_float("eps", self.eps)
        for name in ("paper_steps", "strong_steps", "strong_restarts", "batch_size"):
            C.positive_int(name, getattr(self, name))
        C.optional_positive_int("n_robust", self.n_robust, none=" (None = the whole test set)")
        check_precision(self.precision, name="eval.precision")
        if isinstance(self.suite, str) or not isinstance(self.suite, (tuple, list)):
            raise ValueError(f"eval.suite={self.suite!r} must be a list of attacks or a suite name, e.g. "
                             f"{', '.join(attacks.names())} or {', '.join(attacks.SUITES)}")
        names = tuple(self.suite)
        if len(names) == 1 and names[0] in attacks.SUITES:
            names = attacks.SUITES[names[0]]
        bad = [a for a in names if a not in attacks.names()]
        if bad:
            raise ValueError(f"eval.suite={tuple(self.suite)!r} holds {', '.join(map(repr, bad))}; valid attacks: "
                             f"{', '.join(attacks.names())}, or a suite name: {', '.join(attacks.SUITES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"eval.suite={tuple(self.suite)!r} names an attack twice")
        object.__setattr__(self, "suite", names)
        self.budgets.check("eval.")

    def pgd_part(self) -> dict[str, Any]:
        """The fields the PGD evaluations depend on (the suite has its own cache key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("suite", "budgets")}

    def suite_budgets(self) -> dict[str, dict[str, Any]]:
        """Per suite attack, the budget fields its options set (what was asked for)."""
        return {a: attacks.get(a).requested(self.budgets) for a in self.suite}

    def describe_suite(self) -> str:
        parts = [attacks.get(a).text(attacks.get(a).budget(self.budgets)) for a in self.suite]
        return (f"{self.norm} eps={self.eps:g}, worst case: the strong PGD, then " + " -> ".join(parts)
                + " (each on the examples every attack before it left standing)")

    def attack(self, which: str) -> Attack:
        """``paper``: the paper's PGD-7 with step eps/5 from x; ``strong``: PGD-``strong_steps`` with
        ``strong_restarts`` random restarts and the step rule (:class:`empirical.threat.Attack`)."""
        if which == "paper":
            return Attack(self.norm, self.eps, steps=self.paper_steps, step_size=self.eps / 5)
        if which == "strong":
            return Attack(self.norm, self.eps, steps=self.strong_steps, restarts=self.strong_restarts,
                          random_start=True)
        raise ValueError(f"which={which!r} is not an evaluation attack; valid: paper, strong")

    @property
    def paper_step(self) -> float:
        return self.attack("paper").step

    @property
    def strong_step(self) -> float:
        return self.attack("strong").step

    def describe(self, which: str) -> str:
        return self.attack(which).describe()


__all__ = ["STARTS", "STEP_SCHEDULES", "STORAGES", "ErrorOnlyConfig", "EvalConfig", "NonTransferConfig", "RepresentationConfig", "TargetedConfig",
           "TransferConfig", "check_storage"]
