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

from empirical.construct import RepresentationConfig, TargetedConfig
from empirical.threat import Attack, check_norm
from empirical.transfer import TransferConfig
from foundation import checks as C
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
        check_norm(self.adv_norm, "adv_norm")
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
class EvalConfig:
    """Robust-accuracy evaluation: the paper's PGD-7 (step eps/5, start at x) and a stronger
    PGD-``strong_steps`` with ``strong_restarts`` random restarts (step 2.5*eps/steps)."""

    norm: str = "l2"
    eps: float = 0.25
    paper_steps: int = 7
    strong_steps: int = 20
    strong_restarts: int = 5
    n_robust: int | None = 1000        # test examples attacked (None = all; a stratified sample otherwise)
    batch_size: int = 512
    precision: str = "fp32"            # the attacks' forward passes: fp32 | bf16 | auto (bf16 on CUDA)
    # the AutoAttack-style ensemble (empirical.autoattack) run after the PGD attacks on the same
    # examples; () = none. Its worst case is reported beside PGD for every Figure 2 row.
    suite: tuple[str, ...] = ()
    apgd_steps: int = 100              # APGD-CE and APGD-T iterations (AutoAttack standard: 100)
    apgd_targets: int = 9              # APGD-T target classes (standard: 9 on CIFAR-10)
    square_queries: int = 5000         # Square queries (standard: 5000)

    def __post_init__(self) -> None:
        from empirical.autoattack import ATTACKS, SUITES
        from empirical.precision import check_precision

        check_norm(self.norm)
        C.positive_float("eps", self.eps)
        for name in ("paper_steps", "strong_steps", "strong_restarts", "batch_size"):
            C.positive_int(name, getattr(self, name))
        C.optional_positive_int("n_robust", self.n_robust, none=" (None = the whole test set)")
        check_precision(self.precision, name="eval.precision")
        if isinstance(self.suite, str) or not isinstance(self.suite, (tuple, list)):
            raise ValueError(f"eval.suite={self.suite!r} must be a list of attacks or a suite name, e.g. "
                             f"{', '.join(ATTACKS)} or {', '.join(SUITES)}")
        suite = tuple(self.suite)
        if len(suite) == 1 and suite[0] in SUITES:
            suite = SUITES[suite[0]]
        bad = [a for a in suite if a not in ATTACKS]
        if bad:
            raise ValueError(f"eval.suite={tuple(self.suite)!r} holds {', '.join(map(repr, bad))}; valid attacks: "
                             f"{', '.join(ATTACKS)}, or a suite name: {', '.join(SUITES)}")
        if len(set(suite)) != len(suite):
            raise ValueError(f"eval.suite={tuple(self.suite)!r} names an attack twice")
        object.__setattr__(self, "suite", suite)
        for name in ("apgd_steps", "apgd_targets", "square_queries"):
            C.positive_int(f"eval.{name}", getattr(self, name))

    def pgd_part(self) -> dict[str, Any]:
        """The fields the PGD evaluations depend on (the suite has its own cache key)."""
        skip = ("suite", "apgd_steps", "apgd_targets", "square_queries")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def suite_budgets(self) -> dict[str, dict[str, int]]:
        b = {"apgd-ce": {"steps": self.apgd_steps}, "apgd-t": {"steps": self.apgd_steps,
                                                                 "n_target_classes": self.apgd_targets},
             "square": {"queries": self.square_queries}}
        return {a: b[a] for a in self.suite}

    def describe_suite(self) -> str:
        parts = {"apgd-ce": f"APGD-CE-{self.apgd_steps}", "apgd-t": f"APGD-T-{self.apgd_steps} x {self.apgd_targets} targets",
                 "square": f"Square-{self.square_queries}"}
        return (f"{self.norm} eps={self.eps:g}, worst case over " + " -> ".join(parts[a] for a in self.suite)
                + " (each on the examples still robust), and the strong PGD")

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


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything the Figure 2 / Table 1 / Figure 3 chain depends on (a preset is one of these)."""

    name: str
    data: str
    arch: str
    std: Recipe
    adv: Recipe
    on_dr: Recipe
    on_dnr: Recipe
    on_drand: Recipe
    on_ddet: Recipe
    rep: RepresentationConfig
    targeted: TargetedConfig
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

    def __post_init__(self) -> None:
        validate_config(self)


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
    try:
        parse_arch(cfg.arch)
    except ValueError as exc:
        raise ValueError(f"arch={cfg.arch!r}: {exc}") from None
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
           "on_ddet": Recipe, "rep": RepresentationConfig, "targeted": TargetedConfig,
           "eval": EvalConfig, "transfer": TransferConfig, "targets": Targets}


def valid_keys(cfg: ExperimentConfig) -> list[str]:
    """Every key ``--set`` / ``--config`` take, in field order, nested ones dotted (``targeted.eps``)."""
    from foundation import config as grammar

    return grammar.keys(cfg)


def _field_type(cls: type, name: str) -> tuple[Any, bool]:
    """The declared type of ``cls.name`` without ``None``, and whether ``None`` is allowed
    (:func:`foundation.config.field_type`)."""
    from foundation import config as grammar

    return grammar.field_type(cls, name)


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


def run_fig2(ws: Any) -> dict[str, Any]:
    """Figure 2(b): clean and l2 robust accuracy of std/adv training on D and std training on D_R, D_NR."""
    started, t0 = utc_now(), time.perf_counter()
    cfg = ws.cfg
    ws.source_model("standard")
    ws.source_model("robust")
    ws.model("std_DR", arch=cfg.arch, recipe=cfg.on_dr, train_on="D_R")
    ws.model("std_DNR", arch=cfg.arch, recipe=cfg.on_dnr, train_on="D_NR")
    names = {"std_D": "standard", "adv_D": "robust", "std_DR": "std_DR", "std_DNR": "std_DNR"}
    metrics: dict[str, Any] = {}
    for row, model in names.items():
        ev = {**ws.evaluate(model), **ws.evaluate_suite(model)}
        metrics[row] = {k: v if k == "n_robust" or k.startswith("seconds_") else _pct(v) for k, v in ev.items()}
    metrics["gap_fraction"] = fig2_gap_fractions({row: ws.robust_masks(m) for row, m in names.items()})
    sanity = {row: ws.sanity(m) for row, m in names.items() if ws.sanity(m)}
    if sanity:
        metrics["sanity_flags"] = {row: s["flags"] for row, s in sanity.items()}
    return ws.record("fig2.json", experiment="empirical.fig2", metrics=metrics, started_at=started, start_time=t0,
                     extra={"attacks": {"paper": cfg.eval.describe("paper"), "strong": cfg.eval.describe("strong"),
                                        **({"suite": cfg.eval.describe_suite()} if cfg.eval.suite else {})},
                            "sanity_explanations": {row: s["explanations"] for row, s in sanity.items()},
                            "units": "percent", "paper": PAPER_NUMBERS["fig2"], "rows": dict(FIG2_ROWS),
                            "models": {row: ws.model_sha256(m) for row, m in names.items()}})


def run_table1(ws: Any) -> dict[str, Any]:
    """Table 1: accuracy on the original test set after standard training on D, D_rand, D_det."""
    started, t0 = utc_now(), time.perf_counter()
    cfg = ws.cfg
    ws.source_model("standard")
    ws.model("std_Drand", arch=cfg.arch, recipe=cfg.on_drand, train_on="D_rand")
    ws.model("std_Ddet", arch=cfg.arch, recipe=cfg.on_ddet, train_on="D_det")
    rows = {"D": "standard", "D_rand": "std_Drand", "D_det": "std_Ddet"}
    metrics: dict[str, Any] = {}
    for row, model in rows.items():
        # the standard model's row reuses its Figure-2 evaluation; D_rand / D_det get the paper's PGD only
        ev = ws.evaluate(model, robust=True, strong=(row == "D"), shifted=(row == "D_det"))
        metrics[row] = {k: _pct(v) if k != "n_robust" else v for k, v in ev.items()}
    metrics["chance"] = 100.0 / ws.data().num_classes
    constructions = {k: ws.dataset(k).manifest.get("metrics", {}) for k in ("D_rand", "D_det")}
    return ws.record("table1.json", experiment="empirical.table1", metrics=metrics, started_at=started,
                     start_time=t0, extra={"units": "percent", "paper": PAPER_NUMBERS["table1"],
                                           "construction_sanity": constructions,
                                           "attacks": {"paper": cfg.eval.describe("paper"),
                                                       "strong": cfg.eval.describe("strong")}})


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
            name = "std_Ddet"
            ws.model(name, arch=arch, recipe=cfg.on_ddet, train_on="D_det")
        else:
            name = f"fig3_ddet_{slug}"
            ws.model(name, arch=arch, recipe=cfg.on_ddet, train_on="D_det", seed=cfg.seed + 2000 + i)
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
    """Build all four datasets; record their sanity metrics, build speed and a few sample images.

    The samples (the first example of each class of D, and the same indices in every
    constructed set) go to ``samples.json`` beside the record, referenced by its sha256.
    """
    import numpy as np

    started, t0 = utc_now(), time.perf_counter()
    d = ws.data()
    sets = {k: ws.dataset(k) for k in ("D_R", "D_NR", "D_rand", "D_det")}
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
