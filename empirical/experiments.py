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

All three take one frozen :class:`ExperimentConfig` (the presets of :mod:`empirical.reproduce`
are instances of it) and a :class:`Workspace`, which runs every stage (train a model, build a
dataset, evaluate) at most once: a stage's folder holds ``stage.json`` with the hash of every
input that determines it (config, seeds, upstream artifacts' sha256) and the sha256 of what it
produced; a stage whose key and artifact hashes still match is skipped, anything else is
rebuilt. Training resumes from the core's ``latest.pt``; constructions resume shard by shard.
Each experiment writes one JSON record (``fig2.json``, ``table1.json``, ``fig3.json``) through
:func:`robust_features.records.write_record`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from empirical.construct import KINDS, RepresentationConfig, TargetedConfig
from empirical.threat import Attack, check_norm
from empirical.transfer import TransferConfig
from robust_features import checks as C
from robust_features.paper import PAPER_NUMBERS
from robust_features.records import atomic_write_json, file_sha256, json_sha256, to_jsonable, utc_now, write_record

# the paper's numbers: one table, robust_features.paper (re-exported here for the records' "paper" entries)
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
    """A training recipe, turned into the core's ``TrainConfig`` at run time.

    ``adv_eps`` set = adversarial training (PGD with ``adv_steps`` steps of ``adv_step_size``,
    default 2.5*eps/steps) under ``adv_norm``; ``None`` = standard training.
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
        from empirical.precision import check_precision

        C.positive_int("epochs", self.epochs)
        C.positive_int("batch_size", self.batch_size)
        C.positive_float("lr", self.lr)
        C.one_of("schedule", self.schedule, ("onecycle", "step", "constant"), what="a schedule")
        C.one_of("optimizer", self.optimizer, ("sgd", "adam"), what="an optimizer")
        C.in_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        C.non_negative_float("weight_decay", self.weight_decay)
        C.in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        C.non_negative_int("crop_padding", self.crop_padding)
        C.boolean("flip", self.flip)
        check_norm(self.adv_norm, "adv_norm")
        C.optional_positive_float("adv_eps", self.adv_eps, none=" (None = standard training)")
        C.positive_int("adv_steps", self.adv_steps)
        C.optional_positive_float("adv_step_size", self.adv_step_size, none=" (None = 2.5*eps/steps)")
        check_precision(self.precision)
        C.optional_boolean("channels_last", self.channels_last, none=" (None = on CUDA only)")

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
    keys = []
    for f in fields(cfg):
        if f.name in _NESTED:
            keys.extend(f"{f.name}.{g.name}" for g in fields(_NESTED[f.name]))
        else:
            keys.append(f.name)
    return keys


def _field_type(cls: type, name: str) -> tuple[Any, bool]:
    """The declared type of ``cls.name`` without ``None``, and whether ``None`` is allowed."""
    import types
    import typing

    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [t for t in args if t is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _coerce(value: Any, cls: type, name: str, key: str) -> Any:
    """A ``--set`` string or TOML value for field ``name`` of ``cls``, parsed by the field's declared
    type (the value is checked by the config's own validation afterwards)."""
    import typing

    base, optional = _field_type(cls, name)
    is_tuple = typing.get_origin(base) is tuple
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null"):
            return None
        if base is str:
            return value
        if base is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(f"{key}={value!r} must be true or false")
        if is_tuple:
            return tuple(s.strip() for s in text.split(",") if s.strip())
        if base in (int, float):
            if base is int:
                try:
                    return int(text)
                except ValueError:
                    pass                     # 1.7 is parsed, then refused as "must be an integer"
            try:
                if "/" in text:
                    num, den = text.split("/")
                    if float(den) == 0:
                        raise ValueError(f"{key}={value!r} divides by zero")
                    return float(num) / float(den)
                return float(text)
            except ValueError as exc:
                if "divides by zero" in str(exc):
                    raise
                raise ValueError(f"{key}={value!r} is not a number") from None
        return value
    if is_tuple and isinstance(value, list):
        return tuple(value)
    if base is float and C.is_int(value):
        return float(value)
    return value


def _prefixed(key: str, cls: type, exc: ValueError) -> ValueError:
    """``epochs=0 must be ...`` raised by a nested config -> ``std.epochs=0 must be ...``."""
    msg = str(exc)
    head = msg.split("=", 1)[0].split(" ", 1)[0]
    if head in {f.name for f in fields(cls)}:
        return ValueError(f"{key}.{msg}")
    return exc


def _nested(key: str, cls: type, build: Any) -> Any:
    try:
        return build()
    except TypeError as exc:             # e.g. a TOML table with a key the config does not have
        raise ValueError(f"{key}: {exc}") from None
    except ValueError as exc:
        raise _prefixed(key, cls, exc) from None


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Apply dotted-key overrides (``{"targeted.eps": 0.5, "std.epochs": 3}``); unknown keys raise.

    Values may be strings (from ``--set key=value``; fractions like ``8/255`` are parsed, never
    ``eval``-ed) or TOML values; nested TOML tables are flattened first. Strings are parsed by the
    field's declared type; every resulting field is validated (:func:`validate_config`), so a bad
    value fails here, before any stage runs, with its dotted key named.
    """
    flat: dict[str, Any] = {}

    def _flatten(prefix: str, m: Mapping[str, Any]) -> None:
        for k, v in m.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                _flatten(f"{key}.", v)
            else:
                flat[key] = v

    _flatten("", overrides)
    valid = valid_keys(cfg)
    unknown = [k for k in flat if k not in valid]
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for k, v in flat.items():
        if "." in k:
            outer, inner = k.split(".", 1)
            nested.setdefault(outer, {})[inner] = _coerce(v, _NESTED[outer], inner, k)
        else:
            top[k] = _coerce(v, ExperimentConfig, k, k)
    for outer, changes in nested.items():
        top[outer] = _nested(outer, _NESTED[outer], lambda: replace(getattr(cfg, outer), **changes))
    return replace(cfg, **top)


def config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Rebuild an :class:`ExperimentConfig` from its JSON form (``to_jsonable(cfg)``)."""
    kw: dict[str, Any] = {}
    for f in fields(ExperimentConfig):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name in _NESTED:
            cls = _NESTED[f.name]
            if not isinstance(v, Mapping):
                raise ValueError(f"{f.name}={v!r} must be a table of {cls.__name__} fields")
            kw[f.name] = _nested(f.name, cls, lambda: cls(**{k: (tuple(x) if isinstance(x, list) else x)
                                                            for k, x in v.items()}))
        elif isinstance(v, list):
            kw[f.name] = tuple(v)
        else:
            kw[f.name] = v
    return ExperimentConfig(**kw)


def _memory_format(model: Any, recipe: Recipe, device: str) -> Any:
    """The model in the memory format its recipe trains in (channels_last where the recipe asks for
    it), whether it was just trained or loaded, so every later stage runs the same kernels."""
    import torch

    if recipe.channels_last or (recipe.channels_last is None and torch.device(device).type == "cuda"):
        return model.to(memory_format=torch.channels_last)
    return model.to(memory_format=torch.contiguous_format)


stable_hash = json_sha256   # a stage's key (robust_features.records.json_sha256)


# ---------------------------------------------------------------------------------------------
# the staged workspace
# ---------------------------------------------------------------------------------------------
@dataclass
class Workspace:
    """Runs and caches the stages of one experiment chain under ``root``.

    Layout: ``root/models/<name>/`` (core checkpoint + stage.json), ``root/datasets/<kind>/``
    (shards + manifest + stage.json), ``root/evals/<name>.json``, records at ``root/*.json``.
    ``timings`` collects per-stage wall seconds and whether the stage was skipped.

    ``dist_info`` (:mod:`empirical.distributed`, under ``torchrun``) splits the dataset
    constructions across ranks; models are always trained in one process (rank 0 trains a
    missing model while the other ranks wait, see ``robust-features construct``).

    A constructed dataset is never replaced behind the user's back: a folder built with other
    settings (or from another source model, or another base dataset) is refused with the
    differing fields named, unless ``overwrite`` is set (``--overwrite``), which deletes and
    rebuilds it. :meth:`writing` holds the workspace's lock, runs that check for the datasets a
    command will use before anything is written, and then saves ``resolved_config.json``.
    """

    cfg: ExperimentConfig
    root: Path
    device: str = "cpu"
    progress: bool = False
    dist_info: Any = None
    overwrite: bool = False
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    _data: Any = None
    _models: dict[str, Any] = field(default_factory=dict)
    _model_hash: dict[str, str] = field(default_factory=dict)
    _datasets: dict[str, Any] = field(default_factory=dict)
    _eval_subset: Any = None
    _masks: dict[str, dict[str, Any]] = field(default_factory=dict)
    _sanity: dict[str, dict[str, Any]] = field(default_factory=dict)
    subsets: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- helpers
    def _time(self, stage: str, seconds: float, skipped: bool, **extra: Any) -> None:
        key, k = stage, 2
        while key in self.timings:
            key, k = f"{stage}#{k}", k + 1
        self.timings[key] = {"wall_seconds": seconds, "skipped": skipped, **extra}

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.cfg.name}] {msg}", flush=True)

    # ---- data
    def data(self) -> Any:
        """The base dataset D, with ``n_train`` / ``n_test`` applied as seeded class-stratified samples
        (``subset_seed``; :func:`empirical.data.stratified_subset`), and a fingerprint."""
        if self._data is None:
            from empirical.data import ImageData, load_dataset, stratified_subset

            t0 = time.perf_counter()
            d = load_dataset(self.cfg.data, root=self.cfg.data_root, seed=self.cfg.seed)
            assert isinstance(d, ImageData)
            tr = stratified_subset(d.x_train, d.y_train, self.cfg.n_train, seed=self.cfg.subset_seed, name="n_train")
            te = stratified_subset(d.x_test, d.y_test, self.cfg.n_test, seed=self.cfg.subset_seed, name="n_test")
            self.subsets = {"train": tr.describe(), "test": te.describe()}
            if self.cfg.n_train is not None or self.cfg.n_test is not None:
                meta = dict(d.meta)
                if "robust_label_train" in meta:       # synthetic ground truth follows the subset
                    meta["robust_label_train"] = meta["robust_label_train"][tr.indices]
                    meta["robust_label_test"] = meta["robust_label_test"][te.indices]
                d = dataclasses.replace(
                    d, x_train=d.x_train[tr.indices].contiguous(), y_train=d.y_train[tr.indices].contiguous(),
                    x_test=d.x_test[te.indices].contiguous(), y_test=d.y_test[te.indices].contiguous(), meta=meta)
            h = hashlib.sha256()
            for t in (d.x_train, d.y_train, d.x_test, d.y_test):
                h.update(t.contiguous().numpy().tobytes())
            self.data_sha256 = h.hexdigest()
            self._data = d
            self._time("data", time.perf_counter() - t0, False, n_train=int(d.y_train.shape[0]),
                       n_test=int(d.y_test.shape[0]), sha256=self.data_sha256)
        return self._data

    def eval_subset(self) -> Any:
        """The test examples attacked for robust accuracy: a stratified sample of ``eval.n_robust``
        (drawn with ``subset_seed``, so it is nested in the ``n_test`` sample)."""
        if self._eval_subset is None:
            from empirical.data import stratified_subset

            d = self.data()
            self._eval_subset = stratified_subset(d.x_test, d.y_test, self.cfg.eval.n_robust,
                                                  seed=self.cfg.subset_seed, name="eval.n_robust")
            self.subsets["eval"] = self._eval_subset.describe()
        return self._eval_subset

    # ---- models
    def model(self, name: str, *, arch: str, recipe: Recipe, train_on: str = "D", seed: int | None = None) -> Any:
        """Train (or load) model ``name`` of ``arch`` with ``recipe`` on D or a constructed set."""
        if name in self._models:
            return self._models[name]
        from empirical.checkpoint import load_model
        from empirical.models import build_model
        from empirical.train import fit

        d = self.data()
        seed = self.cfg.seed if seed is None else seed
        if train_on == "D":
            x, y, upstream = d.x_train, d.y_train, self.data_sha256
        else:
            ds = self.dataset(train_on)
            x, y, upstream = ds.x, ds.y, ds.content_sha256
        key = self._model_key(arch=arch, recipe=recipe, seed=seed, train_on=train_on, upstream=upstream)
        folder = self.root / "models" / name
        stage = folder / "stage.json"
        t0 = time.perf_counter()
        if stage.is_file():
            info = json.loads(stage.read_text())
            ckpt = folder / info.get("checkpoint", "model.pt")
            if info.get("key") == key and ckpt.is_file() and file_sha256(ckpt) == info.get("sha256"):
                model = _memory_format(load_model(ckpt, device=self.device), recipe, self.device)
                model.eval()
                self._models[name], self._model_hash[name] = model, info["sha256"]
                self._time(f"train:{name}", time.perf_counter() - t0, True)
                self.log(f"model {name}: valid checkpoint, skipped")
                return model
            self.log(f"model {name}: stale stage (config or artifact changed), retraining")
            shutil.rmtree(folder)
        from empirical.distributed import SINGLE_PROCESS

        if self.dist_info is not None and not self.dist_info.is_main:
            raise RuntimeError(f"model {name} is missing on rank {self.dist_info.rank}; rank 0 must train it "
                               "before the other ranks use it")
        self.log(f"model {name}: training {arch} on {train_on} ({recipe.epochs} epochs)")
        import torch

        torch.manual_seed(seed)
        model = build_model(arch, num_classes=d.num_classes, in_channels=d.in_channels,
                            image_size=d.image_size, mean=d.mean, std=d.std)
        result = fit(model, x, y, recipe.to_train_config(seed), device=self.device, out_dir=folder,
                     resume=True, progress=self.progress, dist_info=SINGLE_PROCESS)
        model = _memory_format(result.model, recipe, self.device)
        model.eval()
        ckpt = folder / "model.pt"
        if not ckpt.is_file():   # fit writes model.pt when it knows the architecture; make sure it exists
            from empirical.checkpoint import save_checkpoint

            save_checkpoint(model, ckpt, arch=arch, dataset=d.name, num_classes=d.num_classes,
                            in_channels=d.in_channels, image_size=d.image_size, mean=d.mean, std=d.std,
                            extra={"recipe": to_jsonable(recipe), "train_on": train_on, "seed": seed})
        sha = file_sha256(ckpt)
        atomic_write_json(stage, {"key": key, "checkpoint": "model.pt", "sha256": sha, "arch": arch,
                                  "train_on": train_on, "recipe": recipe, "seed": seed,
                                  "history": result.history, "wall_seconds": result.wall_seconds})
        self._models[name], self._model_hash[name] = model, sha
        self._time(f"train:{name}", time.perf_counter() - t0, False, epochs=recipe.epochs,
                   images_per_second=recipe.epochs * int(x.shape[0]) / max(time.perf_counter() - t0, 1e-9))
        return model

    def _model_key(self, *, arch: str, recipe: Recipe, seed: int, train_on: str, upstream: str) -> str:
        return stable_hash({"arch": arch, "recipe": recipe, "seed": seed, "train_on": train_on,
                            "upstream": upstream, "num_classes": self.data().num_classes})

    def model_sha256(self, name: str) -> str:
        return self._model_hash[name]

    # ---- reuse checks and the workspace lock
    def _construction(self, kind: str) -> tuple[str, Any, dict[str, Any]]:
        """(source model name, its recipe, the base dataset's identity) of dataset ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not a construction; valid: {', '.join(KINDS)}")
        d = self.data()
        source_name = "robust" if kind == "D_R" else "standard"
        recipe = self.cfg.adv if kind == "D_R" else self.cfg.std
        base = {"dataset": d.name, "sha256": self.data_sha256, "n": int(d.y_train.shape[0])}
        return source_name, recipe, base

    def dataset_differences(self, kind: str, manifest: Mapping[str, Any], *,
                            source_sha256: str | None = None) -> list[str]:
        """How the dataset in ``manifest`` differs from what this config builds for ``kind``:
        ``["targeted.eps 1.0 -> 0.9", ...]`` ([] = the same). The source model's checkpoint is
        compared when ``source_sha256`` is given (it is known once the model is trained)."""
        source_name, _, base = self._construction(kind)
        prefix, rc = ("rep", self.cfg.rep) if kind in ("D_R", "D_NR") else ("targeted", self.cfg.targeted)
        settings = manifest.get("settings", {}) or {}
        out = [f"{prefix}.{k} {settings.get(k)!r} -> {v!r}" for k, v in to_jsonable(asdict(rc)).items()
               if settings.get(k) != v]
        old_base = settings.get("base", {}) or {}
        labels = {"dataset": "base dataset", "sha256": "base dataset sha256", "n": "base dataset size"}
        short = lambda v: f"{v[:12]}..." if isinstance(v, str) and len(v) > 16 else repr(v)  # noqa: E731
        out += [f"{labels.get(k, 'base ' + k)} {short(old_base.get(k))} -> {short(v)}"
                for k, v in to_jsonable(base).items() if old_base.get(k) != v]
        src = manifest.get("source", {}) or {}
        if src.get("model", source_name) != source_name:
            out.append(f"source model {src.get('model')!r} -> {source_name!r}")
        if src.get("arch") != self.cfg.arch:
            out.append(f"arch (the source model's) {src.get('arch')!r} -> {self.cfg.arch!r}")
        if source_sha256 is not None and src.get("checkpoint_sha256") != source_sha256:
            out.append(f"source model checkpoint sha256 {str(src.get('checkpoint_sha256'))[:12]}... -> "
                       f"{source_sha256[:12]}... (models/{source_name} was retrained)")
        return out

    def _refuse_dataset(self, kind: str, folder: Path, diffs: Sequence[str]) -> ValueError:
        return ValueError(f"{folder} holds a {kind} built with other settings ({'; '.join(diffs)}); it is kept: use "
                          "another --out-dir, or --overwrite to delete and rebuild it")

    def check_reuse(self, kinds: Sequence[str]) -> None:
        """Before a command writes anything: refuse (``ValueError`` naming the differing fields) if a
        dataset folder of ``kinds`` holds a construction this config would not build, or if its
        source model would be retrained under another recipe (which would replace it later).
        Nothing to refuse with ``overwrite``, or when no such folder exists yet."""
        if self.overwrite:
            return
        from empirical.shards import read_manifest

        for kind in dict.fromkeys(kinds):
            folder = self.root / "datasets" / kind
            if not (folder / "manifest.json").is_file():
                continue
            try:
                manifest = read_manifest(folder)
            except ValueError as exc:
                raise ValueError(f"{exc}; it is kept: use another --out-dir, or --overwrite to delete and "
                                 "rebuild it") from None
            source_name, recipe, _ = self._construction(kind)
            diffs = self.dataset_differences(kind, manifest)
            stage = self.root / "models" / source_name / "stage.json"
            if not diffs and stage.is_file():
                info = json.loads(stage.read_text())
                key = self._model_key(arch=self.cfg.arch, recipe=recipe, seed=self.cfg.seed, train_on="D",
                                      upstream=self.data_sha256)
                if info.get("key") != key:
                    field_ = "adv" if source_name == "robust" else "std"
                    old = info.get("recipe") or {}
                    diffs = [f"{field_}.{k} {old.get(k)!r} -> {v!r}" for k, v in to_jsonable(recipe).items()
                             if k in old and old.get(k) != v]
                    if info.get("seed") != self.cfg.seed:
                        diffs.append(f"seed {info.get('seed')!r} -> {self.cfg.seed!r}")
                    if info.get("arch") != self.cfg.arch:
                        diffs.append(f"arch {info.get('arch')!r} -> {self.cfg.arch!r}")
                    diffs = [f"its source model models/{source_name} would be retrained: "
                             + (", ".join(diffs) or "its training inputs changed")]
                elif info.get("sha256") != manifest.get("source", {}).get("checkpoint_sha256"):
                    diffs = [f"it was built from another checkpoint of models/{source_name}"]
            if diffs:
                raise self._refuse_dataset(kind, folder, diffs)

    @contextlib.contextmanager
    def writing(self, kinds: Sequence[str] = ()) -> Iterator[Workspace]:
        """Hold the workspace's lock (rank 0 under torchrun; a second writer is refused naming the
        process that holds it), refuse reusing ``kinds``' datasets built otherwise
        (:meth:`check_reuse`), and only then write ``resolved_config.json``."""
        from robust_features.locks import rank0_lock

        with rank0_lock(self.root, self.dist_info, purpose=f"workspace {self.cfg.name}"):
            self.check_reuse(kinds)
            if self.dist_info is None or self.dist_info.is_main:
                atomic_write_json(self.root / "resolved_config.json", self.cfg)
            yield self

    # ---- constructed datasets
    def dataset(self, kind: str) -> Any:
        """Build (or load, hash-checked) D_R / D_NR (from the robust / standard model) or D_rand / D_det."""
        if kind in self._datasets:
            return self._datasets[kind]
        from empirical.construct import build_representation_dataset, build_targeted_dataset
        from empirical.shards import load_constructed, read_manifest, verify_constructed

        cfg, d = self.cfg, self.data()
        source_name, _, base = self._construction(kind)
        source_model = self.source_model(source_name)
        source = {"model": source_name, "arch": cfg.arch, "checkpoint_sha256": self.model_sha256(source_name)}
        folder = self.root / "datasets" / kind
        t0 = time.perf_counter()
        stale = False
        if (folder / "manifest.json").is_file():
            m = read_manifest(folder)
            diffs = self.dataset_differences(kind, m, source_sha256=source["checkpoint_sha256"])
            same = not diffs
            if same and m.get("complete"):
                try:
                    verify_constructed(folder)
                    ds = load_constructed(folder, verify=False)
                    self._datasets[kind] = ds
                    self._time(f"construct:{kind}", time.perf_counter() - t0, True)
                    self.log(f"dataset {kind}: valid shards, skipped")
                    return ds
                except (ValueError, FileNotFoundError) as exc:
                    self.log(f"dataset {kind}: {exc}; resuming/rebuilding damaged shards")
            elif not same:
                if not self.overwrite:     # every rank reads the same manifest, so every rank refuses
                    raise self._refuse_dataset(kind, folder, diffs)
                self.log(f"dataset {kind}: built with other settings ({'; '.join(diffs)}); --overwrite: rebuilding")
                stale = True
        distributed = self.dist_info is not None and self.dist_info.is_distributed
        if distributed:  # every rank has looked at the folder before anyone changes it
            from empirical.distributed import barrier

            barrier(self.dist_info)
        if stale and (not distributed or self.dist_info.is_main):
            shutil.rmtree(folder)
        if distributed:
            barrier(self.dist_info)
        self.log(f"dataset {kind}: constructing {int(d.y_train.shape[0])} images")
        common = dict(kind=kind, model=source_model, x=d.x_train, y=d.y_train, num_classes=d.num_classes,
                      device=self.device, source=source, base=base, progress=self.progress,
                      dist_info=self.dist_info)
        if kind in ("D_R", "D_NR"):
            res = build_representation_dataset(folder, cfg=cfg.rep, **common)
        elif kind in ("D_rand", "D_det"):
            res = build_targeted_dataset(folder, cfg=cfg.targeted, **common)
        else:
            raise ValueError(f"kind={kind!r} is not a construction; valid: D_R, D_NR, D_rand, D_det")
        ds = load_constructed(folder)
        self._datasets[kind] = ds
        self._time(f"construct:{kind}", time.perf_counter() - t0, False,
                   images_per_second=res.images_per_second, shards_built=len(res.built_shards),
                   shards_reused=len(res.reused_shards))
        return ds

    def source_model(self, which: str) -> Any:
        cfg = self.cfg
        if which == "standard":
            return self.model("standard", arch=cfg.arch, recipe=cfg.std)
        if which == "robust":
            return self.model("robust", arch=cfg.arch, recipe=cfg.adv)
        raise ValueError(f"source model {which!r} unknown; valid: standard, robust")

    # ---- evaluation
    def evaluate(self, name: str, *, robust: bool = True, strong: bool = True, shifted: bool = False) -> dict[str, float]:
        """Clean accuracy on the whole original test set; robust accuracy (paper PGD-7 and the
        strong PGD with restarts) on the stratified ``eval.n_robust`` sample
        (:meth:`eval_subset`). Cached per model hash, with the per-example robust outcomes
        (:meth:`robust_masks`)."""
        import torch

        from empirical.evaluate import accuracy, robust_mask
        from robust_features.records import pack_bits, unpack_bits

        d, ev = self.data(), self.cfg.eval
        model = self._models[name]
        sub = self.eval_subset() if robust else None
        key = stable_hash({"model": self._model_hash[name], "eval": ev.pgd_part(), "robust": robust, "strong": strong,
                           "shifted": shifted, "test": self.data_sha256,
                           "subset": sub.indices_sha256 if sub is not None else None})
        variant = ("" if robust else "-clean") + ("" if strong else "-paperonly") + ("-shifted" if shifted else "")
        path = self.root / "evals" / f"{name}{variant}.json"
        t0 = time.perf_counter()
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                n = int(old["metrics"].get("n_robust", 0))
                self._masks.setdefault(name, {}).update(
                    {k: unpack_bits(v, n) for k, v in old.get("masks", {}).items()})
                self._time(f"eval:{name}", time.perf_counter() - t0, True)
                return old["metrics"]
        out: dict[str, float] = {"clean": accuracy(model, d.x_test, d.y_test, batch_size=ev.batch_size,
                                                   device=self.device, precision=ev.precision)}
        if shifted:
            out["shifted"] = accuracy(model, d.x_test, (d.y_test + 1) % d.num_classes,
                                      batch_size=ev.batch_size, device=self.device, precision=ev.precision)
        masks: dict[str, Any] = {}
        if robust:
            assert sub is not None
            xr, yr = d.x_test[sub.indices], d.y_test[sub.indices]
            attacks = {"robust_paper": (ev.attack("paper"), None)}
            if strong:
                gen = torch.Generator(device=torch.device(self.device))
                gen.manual_seed(self.cfg.seed + 12345)
                attacks["robust_strong"] = (ev.attack("strong"), gen)
            for k, (a, gen) in attacks.items():
                masks[k] = robust_mask(model, xr, yr, threat=a.threat, steps=a.steps, step_size=a.step,
                                       restarts=a.restarts, random_start=a.random_start, batch_size=ev.batch_size,
                                       device=self.device, generator=gen, precision=ev.precision)
            for k, m in masks.items():
                out[k] = float(m.float().mean())
            out["n_robust"] = int(sub.n)
        out = {k: float(v) for k, v in out.items()}
        atomic_write_json(path, {"key": key, "metrics": out, "masks": {k: pack_bits(m.numpy()) for k, m in masks.items()},
                                 "subset": sub.describe() if sub is not None else None})
        self._masks.setdefault(name, {}).update({k: m.numpy() for k, m in masks.items()})
        self._time(f"eval:{name}", time.perf_counter() - t0, False)
        return out

    def evaluate_suite(self, name: str) -> dict[str, Any]:
        """The ``eval.suite`` ensemble (:func:`empirical.autoattack.ensemble`) on the
        :meth:`eval_subset`, after :meth:`evaluate`: its worst case (``robust_suite``), the worst
        case over it and the strong PGD (``robust_worst``, the column beside PGD in Figure 2), the
        robust accuracy after each attack, and the sanity flags. Cached in
        ``evals/<name>-suite.json`` by model, suite and subset, so adding a suite to a finished
        run attacks nothing else again. Returns {} when the preset has no suite."""
        ev = self.cfg.eval
        if not ev.suite:
            return {}
        import numpy as np
        import torch

        from empirical.autoattack import ensemble, sanity_flags
        from robust_features.records import pack_bits, unpack_bits

        d, model, sub = self.data(), self._models[name], self.eval_subset()
        strong = self.robust_masks(name).get("robust_strong")
        if strong is None:
            raise ValueError(f"evaluate({name!r}) with the strong PGD must run before evaluate_suite")
        key = stable_hash({"model": self._model_hash[name], "eval": ev, "subset": sub.indices_sha256,
                           "seed": self.cfg.seed, "test": self.data_sha256})
        path = self.root / "evals" / f"{name}-suite.json"
        t0 = time.perf_counter()
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                self._masks.setdefault(name, {}).update(
                    {k: unpack_bits(v, sub.n) for k, v in old.get("masks", {}).items()})
                self._sanity[name] = old.get("sanity", {})
                self._time(f"eval-suite:{name}", time.perf_counter() - t0, True)
                return old["metrics"]
        xr, yr = d.x_test[sub.indices].to(self.device), d.y_test[sub.indices].to(self.device)
        res = ensemble(model, xr, yr, norm=ev.norm, eps=ev.eps, attacks=ev.suite, budgets=ev.suite_budgets(),
                       seed=self.cfg.seed + 54321, precision=ev.precision, batch_size=ev.batch_size)
        suite_mask = res["robust"].cpu().numpy()
        worst = suite_mask & np.asarray(strong, dtype=bool)
        pgd_acc = float(np.mean(strong))
        flags = sanity_flags(pgd_robust_accuracy=pgd_acc, result=res, model=model, x=xr[:512], y=yr[:512],
                             precision=ev.precision)
        out: dict[str, float] = {"robust_suite": float(suite_mask.mean()), "robust_worst": float(worst.mean()),
                                 **{f"after_{a}": float(v) for a, v in res["robust_accuracy"].items()},
                                 **{f"seconds_{a}": float(v) for a, v in res["seconds"].items()}}
        masks = {"robust_suite": suite_mask, "robust_worst": worst}
        self._masks.setdefault(name, {}).update(masks)
        self._sanity[name] = {"flags": flags["flags"], "explanations": flags["explanations"]}
        atomic_write_json(path, {"key": key, "metrics": out, "masks": {k: pack_bits(m) for k, m in masks.items()},
                                 "sanity": self._sanity[name], "budgets": res["budgets"], "subset": sub.describe()})
        self._time(f"eval-suite:{name}", time.perf_counter() - t0, False)
        del torch
        return out

    def sanity(self, name: str) -> dict[str, Any]:
        """The suite's sanity flags and explanations for model ``name`` ({} before :meth:`evaluate_suite`)."""
        return dict(self._sanity.get(name, {}))

    def robust_masks(self, name: str) -> dict[str, Any]:
        """Per-example robust outcomes (NumPy bool, over :meth:`eval_subset`) of model ``name``'s
        last :meth:`evaluate`: ``robust_paper`` and, when run, ``robust_strong``."""
        return dict(self._masks.get(name, {}))

    def record(self, filename: str, *, experiment: str, metrics: Any, extra: Mapping[str, Any] | None = None,
               started_at: str, start_time: float) -> dict[str, Any]:
        return write_record(self.root / filename, experiment=experiment, config=self.cfg, metrics=metrics,
                            seeds={"seed": self.cfg.seed, "construction_seed_rep": self.cfg.rep.seed,
                                   "construction_seed_targeted": self.cfg.targeted.seed,
                                   "transfer_seed": self.cfg.transfer.seed, "subset_seed": self.cfg.subset_seed},
                            device=str(self.device), started_at=started_at, start_time=start_time,
                            extra={**dict(extra or {}), "subsets": self.subsets})


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


def run_fig2(ws: Workspace) -> dict[str, Any]:
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


def run_table1(ws: Workspace) -> dict[str, Any]:
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


def run_fig3(ws: Workspace) -> dict[str, Any]:
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
    ws._time("transfer", time.perf_counter() - ts0, False)
    points = {arch: {"ddet_accuracy": _pct(ddet_acc[arch]), "transfer_success": _pct(tr[arch]["success_rate"]),
                     "n_used": tr[arch]["n_used"], "target_clean_accuracy": _pct(tr[arch]["clean_accuracy"])}
              for arch in cfg.fig3_archs}
    trend = _linear_fit([p["ddet_accuracy"] for p in points.values()], [p["transfer_success"] for p in points.values()])
    metrics = {"points": points, "trend": trend,
               "source_whitebox_success": _pct(tr["__source__"]["success_rate"])}
    return ws.record("fig3.json", experiment="empirical.fig3", metrics=metrics, started_at=started, start_time=t0,
                     extra={"units": "percent", "source_arch": cfg.arch, "attack": cfg.transfer.describe(),
                            "paper": {k: list(v) for k, v in PAPER_NUMBERS["fig3"].items()}})


def run_constructions(ws: Workspace, *, samples_per_set: int = 10) -> dict[str, Any]:
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
