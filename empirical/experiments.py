"""The paper's section-3 experiments as staged, cached, recorded functions.

* :func:`run_fig2`   - Figure 2(b): standard / adversarial training on D, standard training on
  D_R and D_NR; clean accuracy and l2 robust accuracy (eps = 0.25 on CIFAR-10) on the original
  test set, with the paper's PGD-7 (step eps/5) AND a stronger PGD-20 x 5 random restarts
  (step 2.5*eps/20).
* :func:`run_table1` - Table 1: standard training on D, D_rand, D_det; accuracy on the original
  test set, and for D_det also against the shifted labels (y + 1) mod C.
* :func:`run_fig3`   - Figure 3: D_det from the source architecture; per target architecture its
  accuracy when trained on D_det against the transfer success of the source's adversarial
  examples on that architecture trained on D (:mod:`empirical.transfer`).

This module holds the configs (:class:`ExperimentConfig` and its parts; the presets of
:mod:`empirical.reproduce` are instances of it) and the experiments. Each experiment takes an
:class:`empirical.workspace.Workspace`, which runs every stage (train a model, build a dataset,
evaluate) at most once under the one validity rule of :mod:`empirical.stages`, and returns the
JSON record it wrote (``fig2.json``, ``table1.json``, ``fig3.json``, ``constructions.json``)
through :func:`foundation.records.write_record`; figures are drawn from those records by
:mod:`paper_figures` (the CLI asks for them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from empirical import constructions as registry
from empirical.audit import ProfileConfig
from empirical.leakage import LeakageConfig
from empirical.squares import SquaresConfig
from empirical.settings import EvalConfig, TransferConfig
from foundation import checks as C
from foundation import config as grammar
from foundation.paper import PAPER_NUMBERS
from foundation.records import atomic_write_json, file_sha256, utc_now

# the paper's numbers: one table, foundation.paper (re-exported here for the records' "paper" entries)
FIG2_ROWS: tuple[tuple[str, str], ...] = (
    ("std_D", "Std training on D"),
    ("adv_D", "Adv training on D"),
    ("std_DR", "Std training on D_R"),
    ("std_DNR", "Std training on D_NR"),
)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """A training recipe: the preset-facing part of the core's ``TrainConfig`` (everything but the
    seed, which the workspace gives each model), turned into one at run time.

    Every field is a ``TrainConfig`` field of the same name and meaning, except four that are
    spelled flat so ``--set std.crop_padding=4`` works: ``crop_padding`` / ``flip`` become its
    ``augment``, ``adv_norm`` / ``adv_eps`` its ``adv`` threat model (``adv_eps`` None = standard
    training; PGD with ``adv_steps`` steps of ``adv_step_size``, default the step rule of
    :mod:`empirical.threat`). The fields are validated by ``TrainConfig`` itself (one set of
    checks; :data:`RECIPE_TO_TRAIN_CONFIG` is the mapping, tested to cover every field).
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "onecycle"
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    adv_norm: str = "l2"
    adv_eps: float | None = None
    adv_steps: int = 7
    adv_step_size: float | None = None
    precision: str = "auto"            # auto (bf16 autocast on CUDA) | fp32 | bf16 (any device)
    channels_last: bool | None = None  # None = on CUDA only

    def __post_init__(self) -> None:
        # the four flat fields are checked under their own names; TrainConfig checks the rest
        C.non_negative_int("crop_padding", self.crop_padding)
        C.boolean("flip", self.flip)
        C.norm("adv_norm", self.adv_norm)
        C.optional_positive_float("adv_eps", self.adv_eps, none=" (None = standard training)")
        C.positive_int("adv_steps", self.adv_steps)    # before the step rule divides by it
        self.to_train_config(0)

    def to_train_config(self, seed: int) -> Any:
        from empirical.data import Augment
        from empirical.threat import Attack, ThreatModel
        from empirical.train import TrainConfig

        augment = Augment(crop_padding=self.crop_padding, flip=self.flip) if (self.crop_padding or self.flip) else None
        adv = ThreatModel(norm=self.adv_norm, eps=float(self.adv_eps)) if self.adv_eps is not None else None
        step = self.adv_step_size
        if adv is not None and step is None:     # written out, so the TrainConfig names the step it trains with
            step = Attack(adv.norm, adv.eps, steps=self.adv_steps).step
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, schedule=self.schedule, label_smoothing=self.label_smoothing,
            augment=augment, adv=adv, adv_steps=self.adv_steps, adv_step_size=step,
            optimizer=self.optimizer, seed=seed, precision=self.precision, channels_last=self.channels_last,
        )


# Recipe field -> the TrainConfig field it sets (same name unless listed)
RECIPE_TO_TRAIN_CONFIG: dict[str, str] = {"crop_padding": "augment", "flip": "augment", "adv_norm": "adv",
                                          "adv_eps": "adv"}


@dataclass(frozen=True)
class Targets:
    """The claims a preset is held to (percent / fractions); ``None`` leaves a claim out.

    * ``d_rand_min``, ``d_det_min``: Table 1 accuracy on the original test set (chance 10%);
    * ``dr_gap_points_min``: D_R model's strong robust accuracy minus the standard model's;
    * ``dr_gap_fraction_min``: the fraction of the robust-vs-standard gap the D_R model closes,
      (D_R - std) / (adv - std) in strong robust accuracy (the paper's: 56%);
    * ``dnr_above_std_max``: how far (points) the D_NR model may be above the standard model;
    * ``trend_min_archs``: Figure 3 needs at least this many architectures and Spearman rho > 0;
    * ``<row>_clean_min`` / ``<row>_robust_min`` / ``dnr_robust_max``: absolute Figure 2 accuracies.
    """

    d_rand_min: float | None = 50.0
    d_det_min: float | None = 30.0
    dr_gap_points_min: float | None = 15.0
    dr_gap_fraction_min: float | None = None
    dnr_above_std_max: float | None = 10.0
    trend_min_archs: int = 3
    # absolute Figure 2 targets (percent; robust = strong attack), used by the GPU preset
    std_clean_min: float | None = None
    adv_clean_min: float | None = None
    adv_robust_min: float | None = None
    dr_clean_min: float | None = None
    dr_robust_min: float | None = None
    dnr_clean_min: float | None = None
    dnr_robust_max: float | None = None

    def __post_init__(self) -> None:
        for name in ("d_rand_min", "d_det_min", "std_clean_min", "adv_clean_min", "adv_robust_min", "dr_clean_min",
                     "dr_robust_min", "dnr_clean_min", "dnr_robust_max"):     # accuracies, percent
            C.in_range(name, getattr(self, name), 0.0, 100.0, optional=True)
        for name in ("dr_gap_points_min", "dnr_above_std_max"):              # differences, points
            C.in_range(name, getattr(self, name), -100.0, 100.0, optional=True)
        C.finite("dr_gap_fraction_min", self.dr_gap_fraction_min, optional=True)
        C.int_at_least("trend_min_archs", self.trend_min_archs, 2)   # a rank correlation needs two points


@grammar.tabled
@dataclass(frozen=True)
class ExperimentConfig:
    """Everything the chain of constructions, trainings and evaluations depends on (a preset is one).

    The settings of the constructions live in the ``sections`` table, one entry per section the
    construction registry (:mod:`empirical.constructions`) declares: ``rep``
    (:class:`RepresentationConfig`, D_R / D_NR) and ``targeted`` (:class:`TargetedConfig`, D_rand /
    D_det) for the paper's four, and whatever a registered construction adds. They read and write
    like fields: ``cfg.rep``, ``ExperimentConfig(..., rep=...)``, ``--set rep.steps=1000``, and in
    the JSON form they sit beside the fields. ``constructions`` names registered constructions
    beyond the paper's four that the chain builds, trains a model on, evaluates and reports."""

    name: str
    data: str
    arch: str
    std: Recipe
    adv: Recipe
    on_dr: Recipe
    on_dnr: Recipe
    on_drand: Recipe
    on_ddet: Recipe
    eval: EvalConfig
    transfer: TransferConfig
    fig3_archs: tuple[str, ...]
    data_root: str | None = None
    n_train: int | None = None         # a seeded class-stratified sample of the training set (None = all)
    n_test: int | None = None          # the same for the test set
    subset_seed: int = 0               # seed of every subset (n_train, n_test, eval.n_robust, transfer.n_examples)
    seed: int = 0
    targets: Targets = field(default_factory=lambda: Targets())
    notes: str = ""
    expected_runtime: str = ""
    constructions: tuple[str, ...] = ()   # registered constructions beyond the paper's four (empirical.constructions)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)   # Goh's probe (robust-features debate)
    squares: SquaresConfig = field(default_factory=SquaresConfig)   # Nakkiran's adversarial squares (debate)
    profile: ProfileConfig = field(default_factory=ProfileConfig)   # robustness profiles (robust-features profile)
    sections: grammar.Table = grammar.table(registry.sections, "the constructions' settings (empirical.constructions)")

    def __post_init__(self) -> None:
        validate_config(self)

    def settings(self, kind: str) -> Any:
        """The settings of construction ``kind`` (its row's section of this config)."""
        return self.sections[registry.get(kind).section]

    def recipe(self, name: str) -> Recipe:
        """The recipe field ``name`` (``std``, ``adv``, ``on_dr``, ...), checked to be one."""
        value = getattr(self, name, None)
        if not isinstance(value, Recipe):
            recipes = [f.name for f in fields(self) if isinstance(getattr(self, f.name), Recipe)]
            raise ValueError(f"recipe {name!r} is not a recipe of the config; valid: {', '.join(recipes)}")
        return value


_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def validate_config(cfg: ExperimentConfig) -> None:
    """Check every field of ``cfg`` that the nested configs do not check themselves (they validate
    on construction): types, ranges, names; one ``ValueError`` line naming the first bad field."""
    import re

    from empirical.data import check_dataset_spec
    from empirical.models import parse_arch

    if not isinstance(cfg.name, str) or not re.fullmatch(_NAME_RE, cfg.name):
        raise ValueError(f"name={cfg.name!r} must be a folder name (letters, digits, '.', '_', '-'; it names "
                         "OUT_DIR/<name>)")
    try:
        check_dataset_spec(cfg.data)
    except ValueError as exc:
        raise ValueError(f"data={cfg.data!r}: {exc}") from None
    for key, cls in _NESTED.items():
        if not isinstance(getattr(cfg, key), cls):
            raise ValueError(f"{key}={getattr(cfg, key)!r} must be a {cls.__name__} (set its fields as {key}.KEY)")
    cfg.sections.check()
    registry.check_kinds("constructions", cfg.constructions)
    for kind in (*registry.PAPER_KINDS, *cfg.constructions):
        row = registry.get(kind)
        for name in (row.recipe, *(registry.SOURCE_MODELS[s] for s in row.sources if s in registry.SOURCE_MODELS)):
            cfg.recipe(name)
        unknown = [s for s in row.sources if s not in registry.SOURCE_MODELS]
        if unknown:
            raise ValueError(f"construction {kind!r} names source models {unknown}; valid: "
                             f"{', '.join(registry.SOURCE_MODELS)}")

    try:
        parse_arch(cfg.arch)
    except ValueError as exc:
        raise ValueError(f"arch={cfg.arch!r}: {exc}") from None
    for kind in registry.kinds():       # every registered construction's further models (D_nt's ensemble)
        row = registry.get(kind)
        for m in (row.extra_models(cfg.settings(kind), cfg.arch, cfg.seed) if row.extra_models else ()):
            try:
                parse_arch(m.arch)
            except ValueError as exc:
                raise ValueError(f"{row.section}.arch={m.arch!r}: {exc}") from None
    archs = cfg.fig3_archs
    if not isinstance(archs, tuple) or not all(isinstance(a, str) for a in archs):
        raise ValueError(f"fig3_archs={archs!r} must be a list of architecture specs, e.g. mlp,cnn_small")
    if not archs:
        raise ValueError("fig3_archs=() must name at least one architecture")
    for a in archs:
        try:
            parse_arch(a)
        except ValueError as exc:
            raise ValueError(f"fig3_archs entry {a!r}: {exc}") from None
    slugs = [arch_slug(a) for a in archs]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"fig3_archs={archs!r} names an architecture twice")
    C.optional_str("data_root", cfg.data_root)
    for name in ("n_train", "n_test"):
        C.optional_positive_int(name, getattr(cfg, name), none=" (None = all)")
    C.seed("subset_seed", cfg.subset_seed)
    C.seed("seed", cfg.seed)
    C.text("notes", cfg.notes)
    C.text("expected_runtime", cfg.expected_runtime)


_NESTED = {"std": Recipe, "adv": Recipe, "on_dr": Recipe, "on_dnr": Recipe, "on_drand": Recipe,
           "on_ddet": Recipe, "eval": EvalConfig, "transfer": TransferConfig, "targets": Targets,
           "leakage": LeakageConfig, "squares": SquaresConfig, "profile": ProfileConfig}


def valid_keys(cfg: ExperimentConfig) -> list[str]:
    """Every key ``--set`` / ``--config`` take, in field order, nested ones dotted (``targeted.eps``)."""
    from foundation import config as grammar

    return grammar.keys(cfg)


def _field_type(cls: type, name: str) -> tuple[Any, bool]:
    """The declared type of setting ``name`` of ``cls`` (a field or a table entry) without ``None``,
    and whether ``None`` is allowed (:func:`foundation.config.setting_type`)."""
    return grammar.setting_type(cls, name)


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Apply dotted-key overrides (``{"targeted.eps": 0.5, "std.epochs": 3}``); unknown keys raise.

    The one config grammar (:mod:`foundation.config`): values may be strings (from ``--set
    key=value``; fractions like ``8/255`` are parsed, never ``eval``-ed) or TOML values; nested TOML
    tables are flattened first. Strings are parsed by the field's declared type; every resulting
    field is validated (:func:`validate_config`), so a bad value fails here, before any stage runs,
    with its dotted key named.
    """
    from foundation import config as grammar

    return grammar.with_overrides(cfg, overrides)


def config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Rebuild an :class:`ExperimentConfig` from its JSON form (``to_jsonable(cfg)``)."""
    from foundation import config as grammar

    return grammar.from_dict(ExperimentConfig, d)


# ---------------------------------------------------------------------------------------------
# the experiments
# ---------------------------------------------------------------------------------------------
def _pct(v: float) -> float:
    return 100.0 * float(v)


def fig2_gap_fractions(masks: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per constructed set (D_R, D_NR) and attack (strong, paper): the fraction of the
    robust-vs-standard gap its model closes, with the paired standard error
    (:func:`empirical.stats.gap_fraction`). ``masks[row][attack]`` are per-example robust outcomes
    on the same test examples for the Figure 2 rows std_D, adv_D, std_DR, std_DNR."""
    from empirical.stats import gap_fraction

    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, key in (("std_DR", "D_R"), ("std_DNR", "D_NR")):
        for attack in ("strong", "paper", "worst"):
            k = f"robust_{attack}"
            if all(k in masks.get(r, {}) for r in ("std_D", "adv_D", row)):
                out.setdefault(key, {})[attack] = gap_fraction(masks["std_D"][k], masks["adv_D"][k], masks[row][k])
    return out


def run_construct(ws: Any, kind: str, *, started_at: str, start_time: float) -> dict[str, Any] | None:
    """``robust-features construct KIND``: build (or resume) one construction's dataset and write
    ``construct_<kind>.json`` (its sanity metrics, label histogram, build speed, content hash).
    Under ``torchrun`` rank 0 trains the missing source models in one process while the other
    ranks wait, every rank builds its shards, and rank 0 writes the record (None elsewhere)."""
    registry.get(kind)          # an unknown kind is refused before anything runs
    info = ws.dist_info
    if info is not None and info.is_distributed:
        from empirical.distributed import barrier

        if info.is_main:     # trained in one process (exactly the single-process model) while the others wait
            ws.source_models(kind)
        barrier(info)
    ds = ws.dataset(kind)
    if info is not None and not info.is_main:
        return None
    m = ds.manifest
    timing = ws.timings.get(f"construct:{kind}", {})
    return ws.record(f"construct_{kind}.json", experiment=f"empirical.construct.{kind}",
                     metrics={**m.get("metrics", {}), "label_histogram": m["label_histogram"],
                              "num_examples": m["num_examples"], "images_per_second": timing.get("images_per_second")},
                     extra={"dataset": str(ds.root), "content_sha256": ds.content_sha256, "stages": ws.timings},
                     started_at=started_at, start_time=start_time)


#: the constructed datasets each paper experiment reads (the command line locks and checks them first)
EXPERIMENT_DATASETS: dict[str, tuple[str, ...]] = {"fig2": ("D_R", "D_NR"), "table1": ("D_rand", "D_det"),
                                                   "fig3": ("D_det",)}


def _worst_case_row(wc: Mapping[str, Any]) -> dict[str, Any]:
    """A Figure 2 row's worst-case entries (percent) from :meth:`empirical.worst_case.WorstCase.summary`."""
    acc = wc["robust_accuracy"]
    return {"robust_worst": _pct(acc["worst_case"]),
            "worst_case": {"robust_after": {a: _pct(v) for a, v in acc.items() if a != "worst_case"},
                           "n_attacked": dict(wc["n_attacked"]), "n_broken": dict(wc["n_broken"]),
                           "seconds": dict(wc["seconds"])}}


def run_fig2(ws: Any) -> dict[str, Any]:
    """Figure 2(b): clean and l2 robust accuracy of std/adv training on D and std training on D_R, D_NR.

    With an ``eval.suite`` each row also gets its worst case (``robust_worst``: the strong PGD, then
    the suite, each on what the attacks before it left standing; :func:`empirical.worst_case.worst_case`)
    and the record names, per row, the options of ``robust-features eval`` that reproduce it exactly."""
    started, t0 = utc_now(), time.perf_counter()
    cfg = ws.cfg
    ws.source_model("standard")
    ws.source_model("robust")
    names = {"std_D": "standard", "adv_D": "robust"}
    for row, kind in (("std_DR", "D_R"), ("std_DNR", "D_NR")):
        ws.constructed_model(kind)
        names[row] = registry.get(kind).model
    metrics: dict[str, Any] = {}
    worst: dict[str, Any] = {}
    for row, model in names.items():
        ev = ws.evaluate(model)
        metrics[row] = {k: v if k == "n_robust" else _pct(v) for k, v in ev.items()}
        wc = ws.evaluate_suite(model)
        if wc:
            metrics[row].update(_worst_case_row(wc))
            worst[row] = {k: wc[k] for k in ("semantics", "description", "order", "seeds", "budgets", "mask_sha256")}
    metrics["gap_fraction"] = fig2_gap_fractions({row: ws.robust_masks(m) for row, m in names.items()})
    sanity = {row: ws.sanity(m) for row, m in names.items() if ws.sanity(m)}
    if sanity:
        metrics["sanity_flags"] = {row: s["flags"] for row, s in sanity.items()}
    extra: dict[str, Any] = {
        "attacks": {"paper": cfg.eval.describe("paper"), "strong": cfg.eval.describe("strong"),
                    **({"suite": cfg.eval.describe_suite()} if cfg.eval.suite else {})},
        "attack_seeds": {"paper": None, "strong": ws.attack_seed, **({"suite": ws.attack_seed} if cfg.eval.suite else {})},
        "sanity_explanations": {row: s["explanations"] for row, s in sanity.items()},
        "units": "percent", "paper": PAPER_NUMBERS["fig2"], "rows": dict(FIG2_ROWS),
        "models": {row: ws.model_sha256(m) for row, m in names.items()}}
    if worst:
        extra["worst_case"] = worst
        extra["eval_options"] = {row: ws.eval_options(m) for row, m in names.items()}
        extra["eval_commands"] = {row: ws.eval_command(m) for row, m in names.items()}
    return ws.record("fig2.json", experiment="empirical.fig2", metrics=metrics, started_at=started, start_time=t0,
                     extra=extra)


def run_table1(ws: Any) -> dict[str, Any]:
    """Table 1: accuracy on the original test set after standard training on D, D_rand, D_det."""
    started, t0 = utc_now(), time.perf_counter()
    cfg = ws.cfg
    ws.source_model("standard")
    rows = {"D": "standard"}
    for kind in ("D_rand", "D_det"):
        ws.constructed_model(kind)
        rows[kind] = registry.get(kind).model
    metrics: dict[str, Any] = {}
    for row, model in rows.items():
        # the standard model's row reuses its Figure-2 evaluation; D_rand / D_det get the paper's PGD only
        shifted = row != "D" and registry.get(row).shifted
        ev = ws.evaluate(model, robust=True, strong=(row == "D"), shifted=shifted)
        metrics[row] = {k: _pct(v) if k != "n_robust" else v for k, v in ev.items()}
    metrics["chance"] = 100.0 / ws.data().num_classes
    constructions = {k: ws.dataset(k).manifest.get("metrics", {}) for k in ("D_rand", "D_det")}
    return ws.record("table1.json", experiment="empirical.table1", metrics=metrics, started_at=started,
                     start_time=t0, extra={"units": "percent", "paper": PAPER_NUMBERS["table1"],
                                           "construction_sanity": constructions,
                                           "attacks": {"paper": cfg.eval.describe("paper"),
                                                       "strong": cfg.eval.describe("strong")}})


def run_more_constructions(ws: Any) -> dict[str, Any] | None:
    """Every construction of ``cfg.constructions`` (registered ones beyond the paper's four): its
    dataset, a model of its row's recipe trained on it, that model's accuracy on the original test
    set (and against ``next_label(y)`` when its labels follow that rule), its paper-PGD robust
    accuracy, and the manifest metrics the row names. Record ``more_constructions.json``; None when
    the config names none."""
    cfg = ws.cfg
    if not cfg.constructions:
        return None
    started, t0 = utc_now(), time.perf_counter()
    metrics: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for kind in cfg.constructions:
        row = registry.get(kind)
        ds = ws.dataset(kind)
        ws.constructed_model(kind)
        ev = ws.evaluate(row.model, robust=True, strong=False, shifted=row.shifted)
        m = ds.manifest.get("metrics", {})
        metrics[kind] = {**{k: _pct(v) if k != "n_robust" else v for k, v in ev.items()},
                         "construction": {key: m.get(key) for key, _ in row.metrics},
                         "num_examples": ds.manifest["num_examples"], "label_histogram": ds.manifest["label_histogram"]}
        info[kind] = {"summary": row.summary, "source": row.source, "section": row.section,
                      "sources": list(row.sources), "model": row.model, "recipe": row.recipe,
                      "columns": dict(row.metrics), "settings": ds.manifest["settings"],
                      "content_sha256": ds.content_sha256}
    metrics["chance"] = 100.0 / ws.data().num_classes
    return ws.record("more_constructions.json", experiment="empirical.more_constructions", metrics=metrics,
                     started_at=started, start_time=t0,
                     extra={"units": "percent", "constructions": info,
                            "attacks": {"paper": cfg.eval.describe("paper")}})


def _linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    import numpy as np

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 2 or float(np.ptp(x)) == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "pearson_r": float("nan"), "spearman_rho": float("nan")}
    slope, intercept = np.polyfit(x, y, 1)
    r = float(np.corrcoef(x, y)[0, 1]) if float(np.ptp(y)) > 0 else float("nan")
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    rho = float(np.corrcoef(rx, ry)[0, 1]) if float(np.ptp(ry)) > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "pearson_r": r, "spearman_rho": rho}


def arch_slug(arch: str) -> str:
    """A folder-safe name for an architecture spec (``fastnet:pool=avg`` -> ``fastnet-pool-avg``)."""
    import re

    from empirical.models import canonical_arch

    return re.sub(r"[^A-Za-z0-9._-]+", "-", canonical_arch(arch))


def run_fig3(ws: Any) -> dict[str, Any]:
    """Figure 3: per architecture, accuracy when trained on D_det vs transfer success from the source."""
    from empirical.models import canonical_arch
    from empirical.transfer import transfer_success

    started, t0 = utc_now(), time.perf_counter()
    cfg, d = ws.cfg, ws.data()
    source = ws.source_model("standard")
    ws.dataset("D_det")
    targets: dict[str, Any] = {}
    ddet_acc: dict[str, float] = {}
    source_arch = canonical_arch(cfg.arch)
    for i, arch in enumerate(cfg.fig3_archs):
        slug = arch_slug(arch)
        # a fresh instance even for the source architecture (different seed), trained on D
        targets[arch] = ws.model(f"fig3_std_{slug}", arch=arch, recipe=cfg.std, seed=cfg.seed + 1000 + i)
        if canonical_arch(arch) == source_arch:
            name = ws.constructed_model_name("D_det")
            ws.constructed_model("D_det")
        else:
            name = f"fig3_ddet_{slug}"
            ws.model(name, arch=arch, recipe=cfg.recipe(registry.get("D_det").recipe), train_on="D_det",
                     seed=cfg.seed + 2000 + i)
        ddet_acc[arch] = ws.evaluate(name, robust=False)["clean"]
    ts0 = time.perf_counter()
    tr = transfer_success(source, targets, d.x_test, d.y_test, cfg.transfer, num_classes=d.num_classes,
                          device=ws.device, subset_seed=cfg.subset_seed)
    ws.subsets["transfer"] = tr.pop("__subset__")
    ws.note_time("transfer", time.perf_counter() - ts0, False)
    points = {arch: {"ddet_accuracy": _pct(ddet_acc[arch]), "transfer_success": _pct(tr[arch]["success_rate"]),
                     "n_used": tr[arch]["n_used"], "target_clean_accuracy": _pct(tr[arch]["clean_accuracy"])}
              for arch in cfg.fig3_archs}
    trend = _linear_fit([p["ddet_accuracy"] for p in points.values()], [p["transfer_success"] for p in points.values()])
    metrics = {"points": points, "trend": trend,
               "source_whitebox_success": _pct(tr["__source__"]["success_rate"])}
    return ws.record("fig3.json", experiment="empirical.fig3", metrics=metrics, started_at=started, start_time=t0,
                     extra={"units": "percent", "source_arch": cfg.arch, "attack": cfg.transfer.describe(),
                            "paper": {k: list(v) for k, v in PAPER_NUMBERS["fig3"].items()}})


def run_constructions(ws: Any, *, samples_per_set: int = 10) -> dict[str, Any]:
    """Build the paper's four datasets and the config's further ``constructions``; record their
    sanity metrics, build speed and a few sample images.

    The samples (the first example of each class of D, and the same indices in every
    constructed set) go to ``samples.json`` beside the record, referenced by its sha256.
    """
    import numpy as np

    started, t0 = utc_now(), time.perf_counter()
    d = ws.data()
    sets = {k: ws.dataset(k) for k in (*registry.PAPER_KINDS, *ws.cfg.constructions)}
    y = d.y_train.numpy()
    idx = [int(np.flatnonzero(y == c)[0]) for c in range(d.num_classes) if (y == c).any()][:samples_per_set]
    samples = {"indices": idx, "classes": list(d.classes), "D": {"x": d.x_train[idx].numpy().round(4).tolist(),
                                                               "y": d.y_train[idx].tolist()}}
    for k, ds in sets.items():
        samples[k] = {"x": ds.x[idx].numpy().round(4).tolist(), "y": ds.y[idx].tolist()}
    samples_path = atomic_write_json(ws.root / "samples.json", samples)
    sha = file_sha256(samples_path)
    metrics: dict[str, Any] = {}
    for k, ds in sets.items():
        m = ds.manifest
        timing = ws.timings.get(f"construct:{k}", {})
        metrics[k] = {**m.get("metrics", {}), "label_histogram": m["label_histogram"],
                      "num_examples": m["num_examples"],
                      "images_per_second": timing.get("images_per_second")
                      if timing.get("images_per_second") is not None
                      else m.get("build", {}).get("images_per_second_last_call")}
    return ws.record("constructions.json", experiment="empirical.constructions", metrics=metrics,
                     started_at=started, start_time=t0,
                     extra={"samples": {"file": "samples.json", "sha256": sha},
                            "datasets": {k: {"content_sha256": ds.content_sha256, "storage": ds.manifest["storage"],
                                             "settings": ds.manifest["settings"], "source": ds.manifest["source"]}
                                         for k, ds in sets.items()}})
