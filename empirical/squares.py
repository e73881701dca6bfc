"""Nakkiran's "adversarial squares" (Distill 2019, "Adversarial Examples are Just Bugs, Too"): a
distribution with no non-robust feature on which a memorising network is still non-robust.

The data are :func:`simulate.squares.sample_squares`' (all-white / all-black CIFAR-sized images
with Uniform[-a, a] pixel noise and label noise p; docs/squares.md). The linear classifier
sign(1^T x) is certified robust to every linf perturbation below 1 - a = 0.9 at every point
(:func:`simulate.squares.certified_radius`), yet the article's ResNet-18, trained to 99.9% train
accuracy on 10k samples (so it fits the 10% flipped labels), is flipped by an linf perturbation of
0.01 on almost every test point. :func:`run_squares` trains a network with the toolkit's trainer and
measures exactly that: train and test accuracy, and the fraction of test points whose prediction
an untargeted linf PGD of size ``eps`` flips, next to the same numbers for the linear classifier.

Units. ``eps`` (and ``attack_step_size``) are in the distribution's own units (pixels near +-1),
as in the article. The toolkit's models and attacks take [0, 1] pixels (docs/conventions.md
sec. 1), so images are mapped affinely, x01 = (x + 1 + a) / (2 (1 + a)), which sends the support
[-(1 + a), 1 + a] onto [0, 1]; an linf budget eps becomes eps / (2 (1 + a)) (0.01 -> 0.004545 at
a = 0.1). The record carries both. The model normalises inside with the pixels' population mean
0.5 and standard deviation sqrt(1 + a^2/3) / (2 (1 + a)).

:class:`SquaresConfig` (the settings) imports no torch; :func:`run_squares` imports it when it
runs. ``smoke(cfg)`` is the few-second variant the tests run; ``published()`` is the article's
setting (ResNet-18, Adam 1e-5, batch 128, 20 epochs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from empirical.precision import check_precision
from empirical.threat import Attack, default_step_size
from foundation import checks as C
from foundation.records import to_jsonable
from simulate.backend import make_rng
from simulate.estimate import estimate_proportion
from simulate.squares import (
    IRWIN_HALL_MAX_D,
    certified_radius,
    check_pixel_noise,
    linear_certificate,
    linear_flip_probability,
    linear_predict,
    linear_robust_accuracy,
    sample_squares,
)

# torch-free copies of empirical.train.OPTIMIZERS / SCHEDULES (tests/empirical/test_squares.py
# checks that they agree), so the settings are checked without loading torch
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
SCHEDULES: tuple[str, ...] = ("onecycle", "step", "constant")


# ---------------------------------------------------------------------------------------------
# units: the distribution's pixels <-> the toolkit's [0, 1] pixels
# ---------------------------------------------------------------------------------------------
def unit_scale(pixel_noise: float) -> float:
    """The width 2 (1 + a) of the support [-(1 + a), 1 + a] of a pixel: distances in the
    distribution's units divided by it are distances in [0, 1] units."""
    return 2.0 * (1.0 + check_pixel_noise(pixel_noise))


def to_unit_pixels(x: Any, pixel_noise: float) -> np.ndarray:
    """Map images from the distribution's units to [0, 1]: (x + 1 + a) / (2 (1 + a)), float32.

    Affine with one positive scale for every pixel, so an linf (or l2) ball of radius r becomes
    one of radius r / (2 (1 + a)) and the classes keep their geometry. The clip to [0, 1] only
    removes float rounding at the ends of the support (|x| <= 1 + a holds exactly)."""
    a = check_pixel_noise(pixel_noise)
    x01 = (np.asarray(x, dtype=np.float32) + np.float32(1.0 + a)) / np.float32(unit_scale(a))
    return np.clip(x01, 0.0, 1.0)


def unit_eps(eps: float, pixel_noise: float) -> float:
    """An linf budget in the distribution's units, in [0, 1] units: eps / (2 (1 + a))."""
    return C.non_negative_float("eps", eps) / unit_scale(pixel_noise)


def pixel_std01(pixel_noise: float) -> float:
    """The population standard deviation of a pixel in [0, 1] units, sqrt(1 + a^2/3) / (2 (1 + a)):
    the pixel is +-1 + Uniform[-a, a] (variance 1 + a^2/3 about its mean 0), scaled. The mean is 0.5."""
    a = check_pixel_noise(pixel_noise)
    return math.sqrt(1.0 + a * a / 3.0) / unit_scale(a)


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SquaresConfig:
    """One adversarial-squares run (docs/squares.md). Distribution and budget as in the article:
    10k training and 1k test images of 3 x 32 x 32, pixel noise a = 0.1, label noise 0.1, batch
    128, Adam, linf eps = 0.01 in the distribution's units (``eps01`` in [0, 1] units).

    The CPU default network differs from the article's, to train in about two minutes on one
    core of a 2-core CPU (measured, docs/squares.md sec. 4) and still fit the noisy labels, which
    is the point of the toy (memorising the 10% flipped labels is what makes it non-robust):

    * ``arch="resnet18:width=8"``: the article's ResNet-18 layout at 1/8 of its channels (1/64 of
      its compute). A 2-hidden-layer MLP (any width up to 2048) and ``cnn_small`` (no residual
      stages) stayed at the label-noise plateau (train loss ~ H(0.1) = 0.325, train accuracy 90%)
      for 10-60 epochs; ``fastnet:widths=16-32-64`` memorised slower than this ResNet.
    * ``lr=3e-4`` with the ``onecycle`` schedule (warm-up over 20%, linear decay to 0), 16
      epochs: at a constant 1e-3 this network fitted in train mode only (eval accuracy 0.54 on
      2000 images, the BatchNorm running statistics behind), and fastnet at 3e-3 or 1e-2 stayed
      on the plateau. The training loss sits at the plateau for ~6 epochs, then the flipped
      labels are memorised, fastest while the rate decays: on seed 0, 97.6% train accuracy after
      12 epochs and 100% after 16 (seed 1: 100% too); a constant 3e-4 gave 93.8% after 10. The
      article's lr 1e-5 suits its 64x-wider network (20 epochs on a GPU), not width 8.
    * ``channels_last=True``: ~25% faster convolutions on this CPU (and the toolkit's CUDA default).
    * ``weight_decay=0``: torch's Adam default, which we read the article to use.

    ``published()`` gives the article's setting (``resnet18``, Adam 1e-5 constant, 20 epochs);
    ``smoke(cfg)`` the few-second variant. The attack: untargeted linf PGD-``attack_steps`` from
    the clean point (``random_start`` False, like the article's PGD), step ``attack_step_size``
    (distribution units; None = 2.5 eps / steps, 0.25 eps at 10 steps as the article's
    2/255-at-8/255), against the network's own clean prediction. ``eps_sweep`` adds more budgets;
    ``epoch_probe`` > 0 attacks that many test points after every epoch (the article: after one
    epoch the network is still robust).
    """

    n_train: int = 10_000
    n_test: int = 1_000
    image_size: int = 32
    channels: int = 3
    pixel_noise: float = 0.1
    label_noise: float = 0.1
    arch: str = "resnet18:width=8"
    optimizer: str = "adam"
    lr: float = 3e-4
    schedule: str = "onecycle"
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 16
    eps: float = 0.01
    attack_steps: int = 10
    attack_step_size: float | None = None
    random_start: bool = False
    restarts: int = 1
    eps_sweep: tuple[float, ...] = ()
    epoch_probe: int = 0
    seed: int = 0
    precision: str = "auto"
    channels_last: bool | None = True

    def __post_init__(self) -> None:
        C.int_at_least("n_train", self.n_train, 2)
        C.int_at_least("n_test", self.n_test, 2)
        for name in ("image_size", "channels", "batch_size", "epochs", "attack_steps", "restarts"):
            C.positive_int(name, getattr(self, name))
        check_pixel_noise(self.pixel_noise)
        C.probability("label_noise", self.label_noise)
        C.non_empty_str("arch", self.arch)
        C.one_of("optimizer", self.optimizer, OPTIMIZERS, what="an optimizer")
        C.positive_float("lr", self.lr)
        C.one_of("schedule", self.schedule, SCHEDULES, what="a schedule")
        C.non_negative_float("weight_decay", self.weight_decay)
        C.non_negative_float("eps", self.eps)
        C.optional_positive_float("attack_step_size", self.attack_step_size, none=" (None = 2.5*eps/steps)")
        C.boolean("random_start", self.random_start)
        if not isinstance(self.eps_sweep, (tuple, list)):
            raise ValueError(f"eps_sweep={self.eps_sweep!r} must be a tuple of budgets >= 0 (distribution units)")
        bad = [e for e in self.eps_sweep if not (C.is_number(e) and math.isfinite(e) and e >= 0)]
        if bad:
            raise ValueError(f"eps_sweep={tuple(self.eps_sweep)!r} holds {bad[0]!r}; every budget must be a finite "
                             "number >= 0 (distribution units)")
        if not C.is_int(self.epoch_probe) or not (self.epoch_probe == 0 or self.epoch_probe >= 2):
            raise ValueError(f"epoch_probe={self.epoch_probe!r} must be 0 (off) or an integer >= 2 (test points)")
        C.seed("seed", self.seed)
        check_precision(self.precision)
        C.optional_boolean("channels_last", self.channels_last, none=" (None = on CUDA only)")
        object.__setattr__(self, "eps_sweep", tuple(float(e) for e in self.eps_sweep))

    @property
    def d(self) -> int:
        """Pixels per image."""
        return self.channels * self.image_size * self.image_size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def eps01(self) -> float:
        """``eps`` in [0, 1] pixel units."""
        return unit_eps(self.eps, self.pixel_noise)

    def attack(self, eps: float | None = None) -> Attack:
        """The linf PGD at ``eps`` (distribution units; None = ``self.eps``), in [0, 1] units."""
        e = self.eps if eps is None else C.non_negative_float("eps", eps)
        step = self.attack_step_size if self.attack_step_size is not None else default_step_size(e, self.attack_steps)
        return Attack("linf", unit_eps(e, self.pixel_noise), steps=self.attack_steps,
                      step_size=step / unit_scale(self.pixel_noise) if e > 0 else None,
                      restarts=self.restarts, random_start=self.random_start)

    def train_config(self) -> Any:
        """The :class:`empirical.train.TrainConfig` of this run (imports torch)."""
        from empirical.train import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                           schedule=self.schedule, weight_decay=self.weight_decay, seed=self.seed,
                           precision=self.precision, channels_last=self.channels_last)


def published(**changes: Any) -> SquaresConfig:
    """The article's setting: ResNet-18 (width 64), Adam lr 1e-5 (constant), batch 128, 20 epochs,
    10k training images (a GPU job: ~50x the CPU default's compute per epoch)."""
    return replace(SquaresConfig(arch="resnet18", lr=1e-5, schedule="constant", epochs=20, channels_last=None),
                   **changes)


def smoke(cfg: SquaresConfig | None = None) -> SquaresConfig:
    """A few-second variant of ``cfg`` (default :class:`SquaresConfig`) for tests and CI: 8x8
    images, 2048 training and 200 test images, 4 epochs at lr 1e-3 (~1 s on one CPU core). It
    learns the sign (test accuracy against the clean sign ~1 in eval mode; with 512 images or 3
    epochs the BatchNorm running statistics were not settled and eval accuracy fell to ~0.55) but
    does not memorise. Everything else (noise, budget, architecture, attack) is kept."""
    cfg = SquaresConfig() if cfg is None else cfg
    return replace(cfg, n_train=2048, n_test=200, image_size=8, epochs=4, lr=1e-3,
                   epoch_probe=min(cfg.epoch_probe, 50))


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _proportion(mask: np.ndarray) -> dict[str, float]:
    """Fraction and binomial standard error (Laplace-smoothed, :func:`simulate.estimate_proportion`)."""
    est = estimate_proportion(np.asarray(mask, dtype=bool))
    return {"fraction": est.mean, "stderr": est.stderr, "n": est.n}


def run_squares(cfg: SquaresConfig, *, device: Any = "cpu", progress: bool = False) -> dict[str, Any]:
    """Train ``cfg.arch`` on the squares and measure its robustness next to the linear classifier's.

    Seeds: one NumPy stream from ``cfg.seed`` draws the training set, then the test set;
    ``torch.manual_seed(cfg.seed)`` initialises the network; the trainer's streams derive from
    ``cfg.seed``. Returns a JSON-able dict of numbers: ``network`` (train accuracy against the
    noisy labels, the share of flipped training labels it fits, test accuracy against the noisy
    label and the clean sign, ``flip`` = fraction of test points whose prediction the PGD at eps
    changes, with its stderr, and the robust accuracy against the noisy label), ``linear`` (the
    same for sign(1^T x), whose flips are exact: a point flips iff its certified radius <= eps),
    ``certificate`` (1 - a, the smallest sampled radius, closed forms), ``units``, ``sweep``,
    ``probe`` (per-epoch flips), ``history`` and ``seconds``.
    """
    if not isinstance(cfg, SquaresConfig):
        raise TypeError(f"cfg must be a SquaresConfig; got {type(cfg).__name__}")
    import torch

    from empirical.attacks import pgd
    from empirical.devices import resolve_device
    from empirical.evaluate import predict
    from empirical.models import build_model
    from empirical.train import fit

    t0 = time.perf_counter()
    dev = resolve_device(device, option="device")
    a, p = cfg.pixel_noise, cfg.label_noise
    rng = make_rng(cfg.seed, "numpy")
    train = sample_squares(cfg.n_train, shape=cfg.shape, pixel_noise=a, label_noise=p, rng=rng, dtype="float32")
    test = sample_squares(cfg.n_test, shape=cfg.shape, pixel_noise=a, label_noise=p, rng=rng, dtype="float32")
    x_tr = torch.from_numpy(to_unit_pixels(train.x, a))
    y_tr = torch.from_numpy(train.y)
    x_te = torch.from_numpy(to_unit_pixels(test.x, a))
    y_te = test.y
    sign_te = (test.sign > 0).astype(np.int64)          # the class the test image shows
    t_sample = time.perf_counter() - t0

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, num_classes=2, in_channels=cfg.channels, image_size=cfg.image_size,
                        mean=(0.5,) * cfg.channels, std=(pixel_std01(a),) * cfg.channels)

    def flips(m: Any, x: Any, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(clean prediction, adversarial prediction, flip mask, largest linf move in [0, 1] units)."""
        clean = predict(m, x, device=dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(cfg.seed)
        xa = pgd(m, x.to(dev), clean.to(dev), cfg.attack(eps), generator=gen, precision=cfg.precision,
                 batch_size=500)
        adv = predict(m, xa, device=dev)
        moved = float((xa.cpu() - x).abs().max()) if x.numel() else 0.0
        return clean.numpy(), adv.numpy(), (adv != clean).numpy(), moved

    probe: list[dict[str, float]] = []

    def on_epoch_end(epoch: int, m: Any) -> None:
        was = m.training
        try:
            _, _, mask, _ = flips(m, x_te[: cfg.epoch_probe], cfg.eps)
            probe.append({"epoch": epoch, **_proportion(mask)})
        finally:
            m.train(was)

    t1 = time.perf_counter()
    result = fit(model, x_tr, y_tr, cfg.train_config(), device=dev, progress=progress,
                 on_epoch_end=on_epoch_end if cfg.epoch_probe > 0 else None)
    model = result.model.eval()
    t_train = time.perf_counter() - t1

    t2 = time.perf_counter()
    pred_tr = predict(model, x_tr, device=dev).numpy()
    y_tr_np = train.y
    noisy_tr = np.asarray(train.noisy)
    pred_te, adv_te, flip_te, moved = flips(model, x_te, cfg.eps)
    t_attack = time.perf_counter() - t2

    radius_te = certified_radius(test.x)
    lin_te = linear_predict(test.x)
    lin_tr = linear_predict(train.x)
    cert = linear_certificate(a)
    attack = cfg.attack()
    exact = cfg.eps < cert or cfg.eps >= 1 + a or cfg.d <= IRWIN_HALL_MAX_D   # else no exact flip law here

    sweep = []
    for e in cfg.eps_sweep:
        _, adv_e, flip_e, moved_e = flips(model, x_te, e)
        sweep.append({"eps": e, "eps01": unit_eps(e, a), "flip": _proportion(flip_e),
                      "robust_accuracy": float(np.mean(adv_e == y_te)), "max_linf01": moved_e,
                      "linear_flip": _proportion(radius_te <= e)})

    return to_jsonable({
        "experiment": "squares",
        "config": cfg,
        "units": {"d": cfg.d, "scale": unit_scale(a), "eps": cfg.eps, "eps01": cfg.eps01,
                  "step": attack.step * unit_scale(a), "step01": attack.step,
                  "pixel_mean01": 0.5, "pixel_std01": pixel_std01(a),
                  "map": "x01 = (x + 1 + a) / (2 (1 + a))"},
        "network": {
            "arch": cfg.arch,
            "train_accuracy": float(np.mean(pred_tr == y_tr_np)),
            "train_accuracy_clean_sign": float(np.mean(pred_tr == (np.asarray(train.sign) > 0))),
            "train_noisy_labels_fit": float(np.mean(pred_tr[noisy_tr] == y_tr_np[noisy_tr])) if noisy_tr.any() else None,
            "test_accuracy": float(np.mean(pred_te == y_te)),
            "test_accuracy_clean_sign": float(np.mean(pred_te == sign_te)),
            "flip": _proportion(flip_te),
            "robust_accuracy": float(np.mean(adv_te == y_te)),
            "max_linf01": moved,
            "attack": attack.describe(),
        },
        "linear": {
            "train_accuracy": float(np.mean(lin_tr == y_tr_np)),
            "test_accuracy": float(np.mean(lin_te == y_te)),
            "test_accuracy_clean_sign": float(np.mean(lin_te == sign_te)),
            "flip": _proportion(radius_te <= cfg.eps),
            "robust_accuracy": float(np.mean((lin_te == y_te) & (radius_te > cfg.eps))),
            "closed_form_accuracy": linear_robust_accuracy(0.0, pixel_noise=a, label_noise=p),
            "closed_form_robust_accuracy": linear_robust_accuracy(cfg.eps, pixel_noise=a, label_noise=p, d=cfg.d)
            if exact else None,
            "closed_form_flip_probability": linear_flip_probability(cfg.eps, pixel_noise=a, d=cfg.d) if exact else None,
        },
        "certificate": {"linear_certificate": cert, "min_radius_test": float(radius_te.min()),
                        "min_radius_train": float(certified_radius(train.x).min()),
                        "eps_below_certificate": int(cfg.eps < cert)},
        "sweep": sweep,
        "probe": probe,
        "history": result.history,
        "seconds": {"sample": t_sample, "train": t_train, "attack": t_attack,
                    "total": time.perf_counter() - t0},
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
    })


__all__ = ["OPTIMIZERS", "SCHEDULES", "SquaresConfig", "pixel_std01", "published", "run_squares", "smoke",
           "to_unit_pixels", "unit_eps", "unit_scale"]
