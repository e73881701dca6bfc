"""Goh's robust-feature leakage probe (Distill response 2, "Robust Feature Leakage", 2019).

https://distill.pub/2019/advex-bugs-discussion/response-2 ; distillpub/post--ilyas-response-2
``src/index.ejs`` (the text) and ``src/diagrams/robust.svelte`` (the ten features' gamma_i); see
docs/leakage.md and ../shared/docs/related-work.md row R2.

Two steps:

1. Ten *provably robust* class-wise linear features f_i(x) = w_i^T x + b_i: the logits of a
   multiclass linear model on flattened pixels trained with the certified-robust loss
   (:func:`train_robust_linear`), accepted when at least ``certified_min`` (80%) of the test
   points keep their prediction in the whole l2 ball of radius ``eps`` (0.25), checked with the
   exact linear certificate (:func:`linear_certificate`; Goh's "Specification 2").
2. A multinomial logistic regression on those ten features only (:func:`fit_probe`), trained on
   a relabelled adversarial set (D_rand, D_det) and tested on the original test set D. Accuracy
   above chance on D means robust features of the *new* label leaked into the set (Goh: D_rand
   23.5%); at or below chance, that they did not (D_det 6.81%, below the 10% chance level).

:func:`leakage_probe` runs both steps and returns a JSON-able dict; :func:`load_released_set`
reads the authors' released sets (MadryLab/constructed-datasets ``drand_CIFAR``, ``ddet_CIFAR``,
...), which Goh probably used.

:class:`LeakageConfig` is torch-free (importable without torch); the kernels import torch when
called. Everything runs full-batch in float64 where it matters (the certificate, the probe), so a
result is a deterministic function of the data and the config.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation import checks as C

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch is imported by the kernels
    import torch

PUBLISHED: dict[str, float] = {"D_rand": 0.235, "D_det": 0.0681}   # Goh's probe test accuracies (CIFAR-10)
RELEASED_PREFIX = "CIFAR"            # <folder>/CIFAR_ims, <folder>/CIFAR_lab
_SMOOTH = 1e-12                      # sqrt(||w_y - w_j||^2 + _SMOOTH): a gradient at w_y = w_j (zero init)


@dataclass(frozen=True)
class LeakageConfig:
    """The probe's settings (docs/leakage.md has the reading behind each default).

    Robust linear model (``train_robust_linear``): full-batch (or ``batch_size``) Adam for
    ``steps`` steps, learning rate ``lr`` cosine-decayed to 0, on the mean of the certified-robust
    cross-entropy at ``train_eps`` (None = ``eps``; 0 = plain cross-entropy) plus
    ``weight_decay / 2 * ||W||_F^2``. Certificate: radius ``eps``, at least ``certified_min`` of
    the test points kept. Probe (``fit_probe``): L-BFGS (strong Wolfe) for at most ``probe_steps``
    iterations on the mean cross-entropy plus ``probe_l2 / 2 * ||V||_F^2``, features standardised
    with the probe's training set's mean and sd when ``standardize``.
    """

    eps: float = 0.25                  # Goh: l2 radius 0.25
    certified_min: float = 0.8         # Goh's Specification 2: >= 80% of test points keep their prediction
    train_eps: float | None = 1.0      # the robust loss's radius (None = eps); 4 x eps reaches 80% (docs/leakage.md)
    steps: int = 300
    lr: float = 0.01
    weight_decay: float = 0.0
    batch_size: int | None = None      # None = full batch (the default; deterministic without shuffling)
    probe_steps: int = 500
    probe_l2: float = 1e-4
    standardize: bool = True
    null_permutations: int = 0         # label-permutation refits per set (0 = none; docs/leakage.md)
    seed: int = 0                      # minibatch order (batch_size set) and the permutations; nothing else is random

    def __post_init__(self) -> None:
        C.positive_float("eps", self.eps)
        C.in_range("certified_min", self.certified_min, 0.0, 1.0)
        if self.train_eps is not None and (not C.is_number(self.train_eps) or not math.isfinite(self.train_eps)
                                           or self.train_eps < 0):
            raise ValueError(f"train_eps={self.train_eps!r} must be None (= eps) or a finite number >= 0")
        C.positive_int("steps", self.steps)
        C.positive_float("lr", self.lr)
        C.non_negative_float("weight_decay", self.weight_decay)
        C.optional_positive_int("batch_size", self.batch_size, none=" (None = full batch)")
        C.positive_int("probe_steps", self.probe_steps)
        C.non_negative_float("probe_l2", self.probe_l2)
        C.boolean("standardize", self.standardize)
        C.non_negative_int("null_permutations", self.null_permutations)
        C.seed("seed", self.seed)

    @property
    def robust_eps(self) -> float:
        """The radius the robust loss trains at (``train_eps``, or ``eps`` when that is None)."""
        return float(self.eps if self.train_eps is None else self.train_eps)


# --------------------------------------------------------------------------------------------
# the robust linear model and its certificate
# --------------------------------------------------------------------------------------------
def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _check_xy(x: torch.Tensor, y: torch.Tensor, num_classes: int, what: str) -> None:
    C.int_at_least("num_classes", num_classes, 2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{what}: labels lie in [{int(y.min())}, {int(y.max())}]; they must lie in [0, {num_classes})")


def pairwise_norms(W: torch.Tensor, *, smooth: float = 0.0) -> torch.Tensor:
    """(C, C) matrix of ||w_k - w_j||_2 (zero diagonal); ``smooth`` > 0 gives sqrt(sq + smooth) off
    the diagonal, differentiable where two rows coincide (the training loss uses it)."""
    import torch

    diff = W[:, None, :] - W[None, :, :]
    sq = (diff * diff).sum(-1)
    eye = torch.eye(W.shape[0], dtype=torch.bool, device=W.device)
    return torch.where(eye, torch.zeros_like(sq), torch.sqrt(sq + smooth))


def robust_logits(z: torch.Tensor, y: torch.Tensor, W: torch.Tensor, eps: float, *, smooth: float = 0.0
                  ) -> torch.Tensor:
    """The worst-case logits in the l2 ball of radius ``eps``: z_j + eps ||w_y - w_j|| for j != y, z_y.

    For a linear model this is exact pairwise: min over ||delta|| <= eps of (z_y - z_j)(x + delta)
    is z_y - z_j - eps ||w_y - w_j||, so cross-entropy on these logits upper-bounds the worst-case
    cross-entropy, and their argmax is y for all of the ball iff the certificate holds (a convex
    loss in (W, b): each entry is convex, log-sum-exp is convex and increasing)."""
    return z + eps * pairwise_norms(W, smooth=smooth)[y]


def train_robust_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: LeakageConfig = LeakageConfig()
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """A multiclass linear model z = W x + b on flattened pixels, trained with the certified-robust
    cross-entropy at ``cfg.robust_eps`` (:func:`robust_logits`; 0 = plain cross-entropy).

    Returns ``(W (C, d) float32, b (C,) float32)`` for the *uncentred* inputs. Internally the
    inputs are centred on the training mean mu (better conditioned; the same model, b = b0 - W mu,
    and W, hence every certificate, unchanged). Adam from W = 0, b = 0, learning rate cosine-decayed
    to 0 over ``cfg.steps`` steps; full batch by default (no randomness), else seeded reshuffled
    minibatches of ``cfg.batch_size``. Deterministic for a config on a given machine.
    """
    import torch
    import torch.nn.functional as F

    _check_xy(x, y, num_classes, "train_robust_linear")
    X = _flat(x).float()
    y = y.to(torch.int64)
    mu = X.mean(0)
    Xc = X - mu
    n, d = Xc.shape
    W = torch.zeros(num_classes, d, requires_grad=True)
    b0 = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([W, b0], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    eps = cfg.robust_eps
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    order = torch.arange(n)
    pos = n
    for _ in range(cfg.steps):
        if bs == n:
            xb, yb = Xc, y
        else:
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos:pos + bs]
            pos += bs
            xb, yb = Xc[idx], y[idx]
        z = xb @ W.T + b0
        if eps > 0:
            z = robust_logits(z, yb, W, eps, smooth=_SMOOTH)
        loss = F.cross_entropy(z, yb)
        if cfg.weight_decay:
            loss = loss + 0.5 * cfg.weight_decay * (W * W).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_robust_linear: the loss became {float(loss)}; lower lr={cfg.lr}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        W_out = W.detach().clone()
        b_out = (b0 - W_out @ mu).detach().clone()
    return W_out, b_out


def linear_features(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, *, chunk: int = 8192) -> torch.Tensor:
    """The ten (C) features f_i(x) = w_i^T x + b_i of flattened ``x``, as float64 (chunked, so a
    50000-image set is not copied whole in float64)."""
    import torch

    Wd, bd = W.double(), b.double()
    X = _flat(x)
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"inputs have {X.shape[1]} values each but the linear model takes {W.shape[1]}")
    return torch.cat([X[i:i + chunk].double() @ Wd.T + bd for i in range(0, X.shape[0], chunk)]) \
        if X.shape[0] else torch.zeros(0, W.shape[0], dtype=torch.float64)


def linear_certificate(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact l2 certificate of a multiclass linear model: ``(kept (N,) bool, radius (N,) float64)``.

    With c = argmax_k z_k(x), the prediction stays c for every ||delta||_2 <= eps iff for all
    j != c: z_c - z_j - eps ||w_c - w_j|| > 0 (the minimum of the linear margin over the ball), so

        radius(x) = min_{j != c} (z_c - z_j) / ||w_c - w_j||_2,   kept = radius > eps.

    Exact both ways: a perturbation of norm radius + t along w_j - w_c (the minimising j) flips
    the prediction for every t > 0. A tie at the boundary (radius == eps, or z_c == z_j) counts as
    not kept. Two identical rows (w_c == w_j) give radius inf when b_c > b_j, 0 otherwise. The
    pixel box [0, 1] is ignored: the ball may leave the image domain, so the certificate is
    conservative (a point kept here is kept for every valid image in the ball too).
    """
    import torch

    C.non_negative_float("eps", eps)
    z = linear_features(W, b, x)
    n, k = z.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    c = z.argmax(1)
    norms = pairwise_norms(W.double())[c]                    # (N, C): ||w_c - w_j||
    margin = z.gather(1, c[:, None]) - z                     # (N, C): z_c - z_j
    with torch.no_grad():
        ratio = torch.where(norms > 0, margin / norms.clamp_min(1e-300),
                            torch.where(margin > 0, torch.full_like(margin, math.inf), torch.zeros_like(margin)))
        ratio[torch.arange(n), c] = math.inf                 # j = c does not count
        radius = ratio.min(1).values.clamp_min(0.0)
    return radius > eps, radius


def robust_usefulness(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> list[float]:
    """Goh's Specification 1 (our reading): gamma_i = E[y_i f~_i(x)] - eps ||w_i||_2 / sd(f_i), the
    worst-case correlation of the standardised feature f~_i = (f_i - mean) / sd with the one-vs-rest
    label y_i = +1 (class i) / -1 (else) in the l2 ball (Ilyas et al. Eq. 2 with the paper's
    mean-zero, unit-variance convention). Goh's ten values lie in [0.126, 0.231]; Spec. 1 asks
    gamma_i >= 0 for at least one class."""
    import torch

    f = linear_features(W, b, x)
    mean, sd = f.mean(0), f.std(0, unbiased=False).clamp_min(1e-12)
    ft = (f - mean) / sd
    yi = (y[:, None] == torch.arange(W.shape[0])[None, :]).double() * 2 - 1
    corr = (yi * ft).mean(0)
    gamma = corr - eps * W.double().norm(dim=1) / sd
    return [float(v) for v in gamma]


# --------------------------------------------------------------------------------------------
# the probe: multinomial logistic regression on the features
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearProbe:
    """A multinomial logistic regression on features: logits = ((f - mean) / sd) V^T + c."""

    mean: torch.Tensor      # (k,) float64; zeros when not standardised
    sd: torch.Tensor        # (k,) float64; ones when not standardised
    V: torch.Tensor         # (C, k) float64
    c: torch.Tensor         # (C,) float64
    loss: float             # the final training objective
    iterations: int

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        return ((f.double() - self.mean) / self.sd) @ self.V.T + self.c

    def predict(self, f: torch.Tensor) -> torch.Tensor:
        return self.logits(f).argmax(1)

    def accuracy(self, f: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(f) == y).double().mean()) if y.numel() else float("nan")


def fit_probe(f_train: torch.Tensor, y_train: torch.Tensor, num_classes: int, cfg: LeakageConfig = LeakageConfig()
              ) -> LinearProbe:
    """Multinomial logistic regression (with bias) on the features ``f_train`` (N, k): full-batch
    L-BFGS (strong-Wolfe line search, float64, from zero) on the mean cross-entropy plus
    ``cfg.probe_l2 / 2 * ||V||^2`` (the bias is not penalised), the features standardised with
    ``f_train``'s own mean and sd when ``cfg.standardize`` (a constant feature keeps sd 1).
    Deterministic."""
    import torch
    import torch.nn.functional as F

    _check_xy(f_train, y_train, num_classes, "fit_probe")
    f = f_train.double()
    y = y_train.to(torch.int64)
    k = f.shape[1]
    if cfg.standardize:
        mean = f.mean(0)
        sd = f.std(0, unbiased=False)
        sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    else:
        mean, sd = torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.float64)
    fs = (f - mean) / sd
    V = torch.zeros(num_classes, k, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([V, c], lr=1.0, max_iter=cfg.probe_steps, history_size=20,
                            tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(fs @ V.T + c, y) + 0.5 * cfg.probe_l2 * (V * V).sum()
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        final = float(F.cross_entropy(fs @ V.T + c, y) + 0.5 * cfg.probe_l2 * (V * V).sum())
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return LinearProbe(mean=mean, sd=sd, V=V.detach().clone(), c=c.detach().clone(), loss=final, iterations=iters)


# --------------------------------------------------------------------------------------------
# the whole probe
# --------------------------------------------------------------------------------------------
def _stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n > 0 else float("nan")


def _permutation_null(f_s: torch.Tensor, y_s: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                      num_classes: int, cfg: LeakageConfig, pos: int, acc: float, se: float) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + 7919 * (pos + 1)) % (2**63))
    accs = [fit_probe(f_s, y_s[torch.randperm(y_s.shape[0], generator=gen)], num_classes, cfg).accuracy(f_test, y_test)
            for _ in range(cfg.null_permutations)]
    mean = sum(accs) / len(accs)
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else float("nan")
    scale = math.sqrt(sd * sd + se * se) if not math.isnan(sd) else float("nan")
    return {"null_accuracies": accs, "null_mean": mean, "null_sd": sd,
            "z_vs_null": (acc - mean) / scale if scale > 0 else float("nan")}


def leakage_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                  sets: dict[str, tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                  cfg: LeakageConfig = LeakageConfig()) -> dict[str, Any]:
    """Goh's probe: train the robust linear model on ``(x_train, y_train)``, certify it on the test
    set, then per named set ``(x, t)`` fit :func:`fit_probe` on the set's ten features and test it
    on ``(x_test, y_test)``.

    Returns (JSON-able) ``{"config", "num_classes", "chance", "robust_model": {...}, "probes":
    {name: {...}}, "seconds"}``. ``robust_model``: n_train, n_test, train_eps, eps, clean_accuracy,
    certified_fraction (prediction kept in the ball), certified_accuracy (kept and correct),
    certified_min, meets_certified_min, median_radius, gamma (:func:`robust_usefulness` on the
    test set), train_accuracy, seconds. Per probe: n_train, train_accuracy (on the set's own
    labels), test_accuracy and test_stderr (binomial, sqrt(p (1 - p) / n)) on D,
    test_accuracy_shifted (the prediction is (y + 1) mod C: a D_det-style set's probe that learnt
    the robust features of y under the label y + 1 scores high here), n_test, chance,
    z_vs_chance ((acc - chance) / stderr), iterations, seconds; with ``cfg.null_permutations`` k > 0
    also null_accuracies (the test accuracies of k probes refit on the set with its labels
    permuted, seeded by ``cfg.seed`` and the set's position), null_mean, null_sd and z_vs_null
    ((acc - null_mean) / sqrt(null_sd^2 + stderr^2)). The certificate ignores the pixel box
    (conservative).
    """
    import torch

    t0 = time.perf_counter()
    _check_xy(x_train, y_train, num_classes, "leakage_probe: the training set")
    _check_xy(x_test, y_test, num_classes, "leakage_probe: the test set")
    if not isinstance(sets, dict) or not sets:
        raise ValueError("leakage_probe: sets must map at least one name to (x, y)")
    y_train, y_test = y_train.to(torch.int64), y_test.to(torch.int64)
    W, b = train_robust_linear(x_train, y_train, num_classes, cfg)
    train_s = time.perf_counter() - t0
    f_test = linear_features(W, b, x_test)
    pred = f_test.argmax(1)
    kept, radius = linear_certificate(W, b, x_test, cfg.eps)
    correct = pred == y_test
    n_test = int(y_test.shape[0])
    certified = float(kept.double().mean())
    chance = 1.0 / num_classes
    robust = {
        "n_train": int(y_train.shape[0]), "n_test": n_test, "train_eps": cfg.robust_eps, "eps": float(cfg.eps),
        "train_accuracy": float((linear_features(W, b, x_train).argmax(1) == y_train).double().mean()),
        "clean_accuracy": float(correct.double().mean()),
        "certified_fraction": certified,
        "certified_accuracy": float((kept & correct).double().mean()),
        "certified_min": float(cfg.certified_min),
        "meets_certified_min": bool(certified >= cfg.certified_min),
        "median_radius": float(radius.median()),
        "gamma": robust_usefulness(W, b, x_test, y_test, cfg.eps),
        "seconds": train_s,
    }
    shifted = (y_test + 1) % num_classes
    probes: dict[str, Any] = {}
    for pos, (name, pair) in enumerate(sets.items()):
        s0 = time.perf_counter()
        C.non_empty_str("sets name", name)
        x_s, y_s = pair
        _check_xy(x_s, y_s, num_classes, f"leakage_probe: set {name}")
        y_s = y_s.to(torch.int64)
        f_s = linear_features(W, b, x_s)
        probe = fit_probe(f_s, y_s, num_classes, cfg)
        acc = probe.accuracy(f_test, y_test)
        se = _stderr(acc, n_test)
        probes[name] = {
            "n_train": int(y_s.shape[0]), "train_accuracy": probe.accuracy(f_s, y_s),
            "test_accuracy": acc, "test_stderr": se, "n_test": n_test,
            "test_accuracy_shifted": probe.accuracy(f_test, shifted),
            "chance": chance, "z_vs_chance": (acc - chance) / se if se > 0 else float("nan"),
            "loss": probe.loss, "iterations": probe.iterations,
        }
        if cfg.null_permutations:
            probes[name].update(_permutation_null(f_s, y_s, f_test, y_test, num_classes, cfg, pos, acc, se))
        probes[name]["seconds"] = time.perf_counter() - s0
    return {"config": asdict(cfg), "num_classes": int(num_classes), "chance": chance, "robust_model": robust,
            "probes": probes, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# the authors' released sets
# --------------------------------------------------------------------------------------------
def _read_chunks(path: Path, what: str) -> torch.Tensor:
    import torch

    from empirical.checkpoint import load_torch_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a released set is a folder holding {RELEASED_PREFIX}_ims and "
                                f"{RELEASED_PREFIX}_lab (torch.save-d tensors or lists of tensor chunks), "
                                "e.g. drand_CIFAR/CIFAR_ims")
    obj = load_torch_file(path, what=f"released {what} file",
                          advice="fetch the folder again from MadryLab/constructed-datasets")
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(c, torch.Tensor) for c in obj):
        if len({tuple(c.shape[1:]) for c in obj}) != 1 or any(c.ndim == 0 for c in obj):
            raise ValueError(f"{path}: its {what} chunks differ in shape: "
                             f"{sorted({tuple(c.shape) for c in obj})[:4]}")
        if len({c.dtype for c in obj}) != 1:
            raise ValueError(f"{path}: its {what} chunks mix dtypes {sorted({str(c.dtype) for c in obj})}")
        return torch.cat(list(obj))
    raise ValueError(f"{path} must hold a tensor or a non-empty list of tensors ({what}); got {type(obj).__name__}")


def load_released_set(path: str | Path, *, num_classes: int = 10, image_shape: tuple[int, int, int] = (3, 32, 32)
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one of the authors' released datasets (MadryLab/constructed-datasets: ``d_robust_CIFAR``,
    ``d_non_robust_CIFAR``, ``drand_CIFAR``, ``ddet_CIFAR``) as ``(x float32 (N, C, H, W) in [0, 1],
    y int64 (N,))``.

    ``path`` is the folder holding ``CIFAR_ims`` (images) and ``CIFAR_lab`` (labels), each a
    ``torch.save``-d tensor or list of tensor chunks (the authors load them with
    ``torch.cat(torch.load(...))``). Read with ``torch.load(..., weights_only=True)``: no pickled
    code runs. Checked: images (N, C, H, W) or (N, H, W, C) (permuted) with ``image_shape``,
    float finite in [0, 1] or uint8 0..255 (divided by 255), labels integer, one per image, in
    [0, num_classes). Anything else is one ``ValueError`` naming the file and the problem.
    """
    import torch

    C.int_at_least("num_classes", num_classes, 2)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; a released set is a folder holding "
                                f"{RELEASED_PREFIX}_ims and {RELEASED_PREFIX}_lab, e.g. drand_CIFAR")
    ims, lab = folder / f"{RELEASED_PREFIX}_ims", folder / f"{RELEASED_PREFIX}_lab"
    x = _read_chunks(ims, "images")
    y = _read_chunks(lab, "labels")
    ch, h, w = (int(v) for v in image_shape)
    if x.ndim == 4 and tuple(x.shape[1:]) == (ch, h, w):
        pass
    elif x.ndim == 4 and tuple(x.shape[1:]) == (h, w, ch):
        x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"{ims}: images have shape {tuple(x.shape)}; expected (N, {ch}, {h}, {w}) "
                         f"or (N, {h}, {w}, {ch})")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif torch.is_floating_point(x):
        x = x.float()
        if x.numel():
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{ims}: images hold NaN or infinite values")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"{ims}: image values lie in [{lo:.4g}, {hi:.4g}]; expected floats in [0, 1] "
                                 "(or uint8 0..255)")
    else:
        raise ValueError(f"{ims}: images have dtype {str(x.dtype).removeprefix('torch.')}; expected float in "
                         "[0, 1] or uint8")
    if torch.is_floating_point(y) or y.dtype == torch.bool or torch.is_complex(y):
        raise ValueError(f"{lab}: labels have dtype {str(y.dtype).removeprefix('torch.')}; expected integer "
                         "class indices")
    if y.ndim != 1:
        raise ValueError(f"{lab}: labels have shape {tuple(y.shape)}; expected (N,)")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{lab}: {y.shape[0]} labels for the {x.shape[0]} images in {ims}")
    y = y.to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{lab}: labels lie in [{int(y.min())}, {int(y.max())}]; expected [0, {num_classes})")
    return x.contiguous(), y


__all__ = ["LeakageConfig", "LinearProbe", "PUBLISHED", "fit_probe", "leakage_probe", "linear_certificate",
           "linear_features", "load_released_set", "pairwise_norms", "robust_logits", "robust_usefulness",
           "train_robust_linear"]
