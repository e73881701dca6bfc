"""The options of ``train``, ``eval`` and ``attack`` as frozen dataclasses, and ``train``'s per-dataset presets.

They are the configs of the runs in :mod:`empirical.runs` (as :class:`empirical.experiments.
ExperimentConfig` is the config of ``reproduce``); the command line (:mod:`robust_features.cli_core`)
makes its flags from their fields.

Each field is one option: its command-line flag (``--n-train``), its ``--set`` / TOML key
(``n_train``; ``n-train`` reads the same) and its type, all from the one config grammar of
:mod:`foundation.config`: defaults < ``--config FILE.toml`` < ``--set KEY=VALUE`` < explicit
flags. Each class checks its fields on construction (one ``ValueError`` line naming the option),
so a resolved option set is a valid one. The locations (``--out-dir``, ``--out``,
``--checkpoint``, ``--cache-dir``) stay plain flags.

``train`` leaves the dataset-dependent options absent (None) until the data is known; then the
presets of :data:`TRAIN_PRESETS` fill what is still absent (:func:`with_presets`). An explicit
value, ``0`` included, is never replaced: it is kept and checked (``--epochs 0`` is an error).

No torch at import (``robust-features --version`` imports this module through the parser).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from empirical import suite as attacks
from foundation import checks as C
from foundation import config as grammar
from foundation.config import option

PRESET = "the dataset preset"    # how the help shows a default that TRAIN_PRESETS fills

# The per-dataset defaults of `train`: what an option left absent (None) takes. The architecture's
# default is the model zoo's (empirical.models.default_arch: cnn_small for digits/synthetic,
# fastnet otherwise); eval_norm / eval_eps default to the --adv threat (else l2 0.25).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"epochs": 15, "batch_size": 64, "lr": 0.05},      # digits, synthetic
    "large": {"epochs": 20, "batch_size": 512, "lr": 0.2},      # cifar10, imagefolder:PATH
    "32x32": {"crop_padding": 4, "flip": True},                 # images of 32x32 pixels or more
    "below-32x32": {"crop_padding": 0, "flip": False},          # smaller images (digits: 8x8)
}
SMALL_DATASETS = ("digits", "synthetic")


def train_presets(data: str, image_size: int | None = None) -> tuple[str, ...]:
    """The presets of :data:`TRAIN_PRESETS` for ``data`` (and, once the data is loaded, its image size)."""
    names = ["small" if data in SMALL_DATASETS else "large"]
    if image_size is not None:
        names.append("32x32" if image_size >= 32 else "below-32x32")
    return tuple(names)


@dataclass(frozen=True)
class TrainOptions:
    """The options of ``robust-features train`` (field order = ``--help`` order = record order)."""

    data: str = option("digits", "dataset: digits, synthetic, cifar10, imagefolder:PATH")
    data_root: str | None = option(None, "data folder (cifar10: the folder holding cifar-10-batches-py)")
    download: bool = option(False, "download CIFAR-10 if missing (official URL, MD5-checked)")
    data_seed: int = option(0, "seed of the digits split / synthetic draw")
    n_train: int | None = option(None, "train on a seeded class-stratified sample of N training images "
                                       "(--subset-seed)", default_help="all")
    subset_seed: int = option(0, "seed of the --n-train / --n-eval samples")
    arch: str | None = option(None, "architecture, optionally with options, e.g. fastnet:widths=32-64-128,pool=avg",
                              default_help="per dataset: cnn_small for digits/synthetic, fastnet otherwise")
    adv: str | None = option(None, "adversarial training threat model, e.g. l2:0.5 or linf:8/255",
                             default_help="none: standard training")
    adv_method: str = option("pgd", "pgd (PGD-AT) or fgsm (FGSM-RS with catastrophic-overfitting guard)")
    adv_steps: int = option(7, "PGD steps for adversarial training")
    adv_step_size: float | None = option(None, "attack step size",
                                         default_help="2.5*eps/steps for PGD, 1.25*eps for FGSM")
    epochs: int | None = option(None, "epochs", default_help=f"{PRESET}: 15 for digits/synthetic, 20 otherwise")
    batch_size: int | None = option(None, "batch size", default_help=f"{PRESET}: 64 for digits/synthetic, 512 otherwise")
    lr: float | None = option(None, "peak learning rate", default_help=f"{PRESET}: 0.05 for digits/synthetic, 0.2 otherwise")
    momentum: float = option(0.9, "SGD momentum (Nesterov)")
    weight_decay: float = option(5e-4, "weight decay")
    schedule: str = option("onecycle", "onecycle, step or constant")
    optimizer: str = option("sgd", "sgd or adam")
    label_smoothing: float = option(0.0, "label smoothing")
    crop_padding: int | None = option(None, "random-crop padding", default_help=f"{PRESET}: 4 for 32x32 data, 0 otherwise")
    flip: bool | None = option(None, "random horizontal flips", default_help=f"{PRESET}: on for 32x32 data")
    seed: int = option(0, "training seed (initialisation, shuffling, attack starts)")
    device: str = option("auto", "cpu, cuda, cuda:1, ... (auto = cuda when available)")
    precision: str = option("auto", "forward passes: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or bf16 (any device)")
    channels_last: bool | None = option(None, "channels_last memory format", default_help="on CUDA only")
    compile: bool = option(False, "torch.compile the model")
    eval_eps: str | None = option(None, "comma-separated eps for robust test accuracy, in the --adv norm",
                                  default_help="adv eps, or l2 0.25")
    eval_norm: str | None = option(None, "norm of --eval-eps", default_help="the --adv norm, else l2")
    eval_steps: int = option(20, "PGD steps of the evaluation attack (step 2.5*eps/steps)")
    eval_restarts: int = option(1, "random restarts of the evaluation attack")
    n_eval: int | None = option(1000, "test images attacked for robust accuracy: a seeded class-stratified sample "
                                      "(--subset-seed; none = all); clean accuracy uses all")
    resume: bool = option(True, "resume from OUT_DIR/latest.pt when present")
    progress: bool = option(True, "progress bars and the per-epoch table")

    def __post_init__(self) -> None:
        check_train_options(self)


def check_train_options(o: TrainOptions) -> None:
    """The `train` options that TrainConfig, AttackSpec and the data loaders do not check
    themselves (or check under another name); run before anything is loaded or written."""
    from empirical.data import check_dataset_spec

    check_dataset_spec(o.data)
    for k in ("data_root", "arch", "adv", "eval_eps"):
        C.optional_str(k, getattr(o, k))
    if o.eval_eps is not None:
        parse_eps_list(o.eval_eps)              # numbers >= 0, each budget once
    if o.eval_norm is not None:
        C.norm("eval_norm", o.eval_norm)
    C.non_empty_str("device", o.device)
    for k in ("data_seed", "subset_seed", "seed"):
        C.seed(k, getattr(o, k))
    for k in ("n_train", "n_eval", "epochs", "batch_size"):   # absent = all / the default; 0 is not "absent"
        if getattr(o, k) is not None:
            C.positive_int(k, getattr(o, k))
    if o.lr is not None:
        C.positive_float("lr", o.lr)
    for k in ("eval_steps", "eval_restarts", "adv_steps"):
        C.positive_int(k, getattr(o, k))
    if o.crop_padding is not None:
        C.non_negative_int("crop_padding", o.crop_padding)
    for k in ("download", "compile", "resume", "progress"):
        C.boolean(k, getattr(o, k))
    for k in ("flip", "channels_last"):
        C.optional_boolean(k, getattr(o, k), none=f" (None = {PRESET})" if k == "flip" else " (None = on CUDA only)")


def parse_eps_list(text: str) -> list[float]:
    """``"0.25,0.5"`` or ``"8/255"`` -> budgets (``train``'s ``eval_eps``); two that are one
    budget in the records (``0.25,0.2500001``: the same ``ThreatModel.key``) are refused."""
    from empirical.threat import ThreatModel, parse_fraction

    items = [t.strip() for t in str(text).split(",") if t.strip()]
    vals = [parse_fraction(t, "eval_eps") for t in items]
    if not vals:
        raise ValueError(f"eval_eps={text!r} holds no numbers; use e.g. 0.25,0.5")
    seen: dict[str, str] = {}
    for t, v in zip(items, vals):
        if v < 0:
            raise ValueError(f"eval_eps value {v} must be >= 0")
        key = ThreatModel("l2", v).key().partition("_")[2]          # eps0.25: the records' key of the budget
        if key in seen:
            raise ValueError(f"eval_eps={text!r}: {seen[key]} and {t} are one budget in the records ({key}), so "
                             "one result would replace the other; give each budget once")
        seen[key] = t
    return vals


def with_presets(o: TrainOptions, names: tuple[str, ...]) -> TrainOptions:
    """``o`` with every option it leaves absent (None) taken from the presets ``names`` (later
    ones win); an explicit value, 0 included, is kept."""
    fill: dict[str, Any] = {}
    for name in names:
        fill.update({k: v for k, v in TRAIN_PRESETS[name].items() if getattr(o, k) is None})
    return replace(o, **fill) if fill else o


# ---------------------------------------------------------------------------------------------
# eval / attack
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointOptions:
    """The options ``eval`` and ``attack`` share (the data and the PGD attack)."""

    data: str | None = option(None, "dataset", arg_type=C.nonempty_arg, default_help="the one named in the checkpoint")
    data_root: str | None = option(None, "data folder", arg_type=C.path_arg, default_help="the one recorded at training")
    data_seed: int | None = option(None, "digits split / synthetic seed", default_help="recorded")
    split: str = option("test", "the split attacked", choices=("test", "train"))
    n: int | None = option(None, "use a seeded class-stratified sample of N images of the split", default_help="all")
    subset_seed: int = option(0, "seed of the --n sample")
    steps: int = option(20, "PGD steps")
    step_size: float | None = option(None, "PGD step size", default_help="2.5*eps/steps")
    restarts: int = option(1, "random restarts, batched; per-example worst case kept")
    random_start: bool = option(False, "start the first restart at a random point too")
    batch_size: int = option(512, "batch size")
    channels_last: bool | None = option(None, "run the model in channels_last memory format",
                                        default_help="on CUDA only, as training")
    seed: int = option(0, "attack seed")
    device: str = option("auto", "cpu, cuda, cuda:1, ... (auto = cuda when available)", arg_type=C.nonempty_arg)
    verify: bool = option(True, "check the checkpoint's sha256 against the one its sidecar records (--no-verify: "
                                "load a checkpoint whose sidecar records none; the record says verified=false)")

    def __post_init__(self) -> None:
        if self.n is not None:                       # absent = the whole split
            C.positive_int("n", self.n)
        for k in ("subset_seed", "seed"):
            C.seed(k, getattr(self, k))
        if self.data_seed is not None:
            C.seed("data_seed", self.data_seed)
        for k in ("steps", "restarts", "batch_size"):
            C.positive_int(k, getattr(self, k))
        C.optional_positive_float("step_size", self.step_size, none=" (None = 2.5*eps/steps)")
        for k in ("data", "data_root"):
            C.optional_str(k, getattr(self, k))
        C.one_of("split", self.split, ("test", "train"), what="a split")
        C.boolean("random_start", self.random_start)
        C.boolean("verify", self.verify)
        C.optional_boolean("channels_last", self.channels_last, none=" (None = on CUDA only)")
        C.non_empty_str("device", self.device)


def parse_threats(name: str, texts: Any) -> list[Any]:
    """The :class:`empirical.threat.ThreatModel` of each ``NORM:EPS`` text, refusing two that are
    one threat model in the records (the same :meth:`ThreatModel.key`, e.g. ``l2:0.25`` and
    ``l2:0.2500001``): their results would share one key and one would silently replace the other."""
    from empirical.threat import ThreatModel

    seen: dict[str, str] = {}
    threats = []
    for text in texts:
        t = ThreatModel.parse(text)
        if t.key() in seen:
            raise ValueError(f"{name}: {seen[t.key()]} and {text} are one threat model in the records "
                             f"({t.describe()}, key {t.key()}), so one result would replace the other; "
                             "give each threat model once")
        seen[t.key()] = str(text)
        threats.append(t)
    return threats


def _names(name: str, v: Any, *, example: str, empty: bool = True) -> None:
    if not isinstance(v, tuple) or not all(isinstance(s, str) and s.strip() for s in v) or (not v and not empty):
        raise ValueError(f"{name}={v!r} must be a list of {'one or more ' if not empty else ''}names, e.g. {example}")


@grammar.tabled
@dataclass(frozen=True)
class EvalOptions(CheckpointOptions):
    """The options of ``robust-features eval``. The worst-case attacks' budget options
    (``apgd_steps``, ``apgd_targets``, ``square_queries``, and those of any attack registered in
    :mod:`empirical.suite`) are the entries of the ``budgets`` table: flags and keys like fields."""

    threat: tuple[str, ...] = option(("l2:0.25",), "threat model NORM:EPS, repeatable, e.g. --threat linf:8/255",
                                     repeat=True, metavar="NORM:EPS")
    attack: tuple[str, ...] = option((), "add an attack to the worst-case evaluation, repeatable: pgd (the "
                                     "--steps/--restarts PGD, always first) or a registered attack (apgd-ce, "
                                     "apgd-t, square, ...); each runs on the examples every attack before it left "
                                     "standing", repeat=True, metavar="NAME")
    suite: tuple[str, ...] = option((), "a named attack list: standard = apgd-ce, apgd-t, square (with PGD first)",
                                    repeat=True, metavar="NAME")
    n_test: int | None = option(None, "draw the --n sample from a seeded class-stratified sample of N_TEST images "
                                      "of the split (how reproduce nests eval.n_robust in n_test)",
                                default_help="the whole split")
    precision: str = option("fp32", "the attacks' steps (PGD, APGD, Square's queries); every verdict is fp32",
                            choices=("fp32", "bf16", "auto"))
    progress: bool | None = option(None, "a progress bar per threat and attack (images/s, time left)",
                                   default_help="when stderr is a terminal")
    budgets: grammar.Table = grammar.table(attacks.options, "the worst-case attacks' budget options")

    def __post_init__(self) -> None:
        super().__post_init__()
        _names("threat", self.threat, example="l2:0.5,linf:8/255", empty=False)
        parse_threats("threat", self.threat)
        _names("attack", self.attack, example="pgd,apgd-ce")
        _names("suite", self.suite, example="standard")
        if self.n_test is not None:
            C.positive_int("n_test", self.n_test)
        C.one_of("precision", self.precision, ("fp32", "bf16", "auto"), what="a precision")
        C.optional_boolean("progress", self.progress, none=" (None = when stderr is a terminal)")
        self.budgets.check()


@dataclass(frozen=True)
class AttackOptions(CheckpointOptions):
    """The options of ``robust-features attack``."""

    threat: str = option("l2:0.5", "threat model NORM:EPS")
    targeted: str = option("none", "untargeted, target (y+1) mod C, or a random other class",
                           choices=("none", "next", "random"))

    def __post_init__(self) -> None:
        super().__post_init__()
        C.non_empty_str("threat", self.threat)
        parse_threats("threat", (self.threat,))
        C.one_of("targeted", self.targeted, ("none", "next", "random"), what="a target rule")


__all__ = [
    "TRAIN_PRESETS",
    "AttackOptions",
    "CheckpointOptions",
    "EvalOptions",
    "TrainOptions",
    "check_train_options",
    "parse_eps_list",
    "parse_threats",
    "train_presets",
    "with_presets",
]
