"""Image datasets as float NCHW tensors in [0, 1], and a loader that lives on the training device.

Datasets (``load_dataset(spec)``):

* ``digits``      scikit-learn's bundled UCI handwritten digits (offline): 1x8x8, pixel / 16,
                  a fixed stratified 1437/360 train/test split (seeded; indices hashed in meta).
* ``synthetic``   generated 3x16x16 images with a planted robust feature (large l2 norm, lowest
                  spatial frequencies, agrees with the label 80% of the time) and a planted
                  non-robust feature (small l2 norm, highest spatial frequencies, always agrees
                  with the label). See :func:`make_synthetic` for the construction.
* ``cifar10``     the lossless ``cifar-10-batches-py`` pickle layout under ``root`` (optional
                  download from the official URL, MD5-checked, for users who are online), read
                  by a restricted unpickler that admits only dicts, lists, bytes, str, numbers and
                  numpy arrays (:class:`RestrictedUnpickler`), so a crafted file runs no code.
* ``imagefolder:PATH``  ``PATH/{train,test}/<class>/*.{png,jpg,jpeg,bmp}`` decoded once with
                  Pillow and cached as uint8 arrays (``.npz``) keyed by the folder and its files'
                  sizes and times, in ``cache_dir`` / ``$ROBUST_FEATURES_CACHE``, the data folder,
                  or (read-only data) ``~/.cache/robust-features``.

Every loader checks what it returns (docs/conventions.md sec. 9): :class:`ImageData` refuses
images that are not finite floats in [0, 1] and labels that are not int64 in [0, C), and each
loader refuses a class missing from either split, naming the file or folder it read.

All images are float32 in [0, 1], NCHW, on the CPU; models put the (mean, std) normalisation
inside themselves (docs/conventions.md sec. 1), and attack budgets are in [0, 1] pixel units.

:class:`Loader` iterates ``(xb, yb)`` already on the device: for CUDA the whole dataset is moved
to the GPU once and batches are cut, shuffled and augmented there (random crop with padding,
horizontal flip), deterministically given ``(seed, epoch)``; on CPU the same code runs on CPU
tensors, so the API and the random streams are identical.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import io
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundation import checks as C
from foundation.records import atomic_write_bytes
from foundation.runtime import CACHE_ENV, user_cache_dir

DATASETS: tuple[str, ...] = ("digits", "synthetic", "cifar10", "imagefolder:PATH")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_LAYOUT = (
    "ROOT/cifar-10-batches-py/{data_batch_1 .. data_batch_5, test_batch, batches.meta} "
    "(the standard pickle layout of cifar-10-python.tar.gz; pass download=True / --download to fetch it)"
)
IMAGEFOLDER_LAYOUT = "PATH/train/<class>/*.png|jpg and PATH/test/<class>/*.png|jpg (same classes in both)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------------
# the dataset container
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset with a train/test split; float32 NCHW in [0, 1] on the CPU."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4:
                raise ValueError(f"x_{split} must be NCHW (4-d); got shape {tuple(x.shape)}")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y_{split} must have shape ({x.shape[0]},); got {tuple(y.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train images {tuple(self.x_train.shape[1:])} and test images "
                             f"{tuple(self.x_test.shape[1:])} differ in shape")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"mean/std need {self.in_channels} entries; got {self.mean}, {self.std}")
        # nothing on disk is trusted (docs/conventions.md sec. 9): every loader's result passes here;
        # one min/max pass per tensor (NaN propagates through min/max), so it stays cheap
        num = len(self.classes)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check_images(x, f"dataset {self.name}: x_{split}")
            if y.dtype != torch.int64:
                raise ValueError(f"dataset {self.name}: y_{split} has dtype {str(y.dtype).removeprefix('torch.')}; "
                                 f"labels must be int64 class indices in [0, {num})")
            if y.numel():
                lo, hi = (int(v) for v in torch.aminmax(y))
                if lo < 0 or hi >= num:
                    raise ValueError(f"dataset {self.name}: y_{split} holds labels in [{lo}, {hi}]; labels must lie "
                                     f"in [0, {num}) for its {num} classes")

    def class_counts(self, split: str) -> list[int]:
        """How many examples of each class the ``split`` ("train" or "test") holds."""
        y = getattr(self, f"y_{C.one_of('split', split, ('train', 'test'))}")
        return torch.bincount(y, minlength=self.num_classes).tolist()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[2])

    def describe(self) -> str:
        return (f"{self.name}: {self.x_train.shape[0]} train / {self.x_test.shape[0]} test images, "
                f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes")


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a floating NCHW tensor with values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor with values in [0, 1]; got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be NCHW (4-d); got shape {tuple(x.shape)}")
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x))     # one pass; a NaN anywhere makes both NaN
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"{name} holds {int(torch.isnan(x).sum())} NaN values; images must be finite and lie "
                             "in [0, 1] (pixel units, normalisation is inside the model)")
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}]; images must lie in [0, 1] "
                             "(pixel units, normalisation is inside the model)")


def _require_every_class(d: ImageData, sources: Mapping[str, str], advice: str = "") -> ImageData:
    """``d`` unchanged if every class has at least one training and one test example; otherwise a
    ``ValueError`` naming the first empty class and where that split was read from (``sources``
    maps "train" / "test" to a file or folder), so evaluation never runs on fewer classes silently."""
    for split in ("train", "test"):
        counts = d.class_counts(split)
        empty = [i for i, n in enumerate(counts) if n == 0]
        if empty:
            more = f" (and {len(empty) - 1} more classes)" if len(empty) > 1 else ""
            raise ValueError(f"dataset {d.name}: the {split} split ({sources[split]}) has no example of class "
                             f"{d.classes[empty[0]]!r} (label {empty[0]}){more}; every one of its {d.num_classes} "
                             f"classes needs at least one training and one test example{advice}")
    return d


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xd = x.double()
    mean = xd.mean(dim=(0, 2, 3))
    std = xd.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


# ---------------------------------------------------------------------------------------------
# subsets: seeded, class-stratified, independent of the order the files came in
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subset:
    """A seeded, class-stratified sample of a labelled set (:func:`stratified_subset`).

    ``indices`` index the full set (int64, in the sample's own order, which interleaves the
    classes at random); ``class_counts[c]`` is how many of class c were drawn; ``indices_sha256``
    hashes the chosen indices (little-endian int64) and ``content_sha256`` the chosen examples'
    bytes and labels in sample order, which stays the same however the files were ordered.
    """

    indices: torch.Tensor
    n: int
    of: int
    seed: int
    class_counts: tuple[int, ...]
    indices_sha256: str
    content_sha256: str

    def describe(self) -> dict[str, Any]:
        """What a record carries about the subset (numbers, the seed and the two hashes)."""
        return {"n": self.n, "of": self.of, "seed": self.seed, "stratified": True,
                "class_counts": list(self.class_counts), "indices_sha256": self.indices_sha256,
                "content_sha256": self.content_sha256}


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sample sizes proportional to ``counts`` summing to ``n``, never more than a class holds.

    Slots are handed out one at a time to the class furthest below its quota counts[c] * k / N
    (ties to the lower class index), so the sizes for n contain those for every m < n (samples of
    one seed are nested class by class) and each stays within one of its exact quota.
    """
    total = int(counts.sum())
    take = np.zeros(len(counts), dtype=np.int64)
    frac = counts.astype(np.float64) / total
    for k in range(1, n + 1):
        take[int(np.argmax(frac * k - take))] += 1
    return take


def stratified_subset(x: torch.Tensor, y: torch.Tensor, n: int | None, *, seed: int = 0,
                      name: str = "n") -> Subset:
    """A seeded class-stratified sample of ``n`` of the examples ``(x, y)`` (all of them if ``n``
    is None or at least their number).

    Class c gets n * |c| / N examples (largest-remainder rounding, so the sizes sum to ``n``).
    Within a class the examples with the smallest keys are drawn, where an example's key is the
    BLAKE2b hash of (``seed``, its label, its bytes): the sample is a uniformly random one for a
    given seed, the same set of images whatever order the files came in, and nested (the sample
    of n examples contains the sample of m < n drawn with the same seed, class by class). The
    sample is returned in key order, which interleaves the classes at random; identical images
    of one class tie and keep their input order. Asking for all examples (``n`` None or >= N)
    returns them all in their input order.
    """
    total = int(y.shape[0])
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"{name}={n!r} must be a positive integer (or None for all {total} examples)")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    if x.shape[0] != total:
        raise ValueError(f"x has {x.shape[0]} examples but y has {total}")
    k = total if n is None else min(n, total)
    yn = y.detach().cpu().numpy().astype(np.int64)
    xb = x.detach().cpu().contiguous()
    if k == total:
        idx = np.arange(total, dtype=np.int64)
        counts = np.bincount(yn, minlength=int(yn.max()) + 1 if total else 0)
        content = hashlib.sha256(xb.numpy().tobytes())
        content.update(yn.astype("<i8").tobytes())
        return Subset(indices=torch.from_numpy(idx), n=total, of=total, seed=int(seed),
                      class_counts=tuple(int(v) for v in counts),
                      indices_sha256=hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest(),
                      content_sha256=content.hexdigest())
    # a per-example key that depends on the content, not on the position
    salt = int(seed).to_bytes(8, "little")
    flat = xb.numpy().reshape(total, -1).view(np.uint8).reshape(total, -1) if total else np.zeros((0, 0), np.uint8)
    keys = np.empty(total, dtype=np.uint64)
    for i in range(total):
        h = hashlib.blake2b(flat[i].tobytes(), digest_size=8, key=salt, person=int(yn[i]).to_bytes(8, "little"))
        keys[i] = int.from_bytes(h.digest(), "little")
    num_classes = int(yn.max()) + 1 if total else 0
    counts = np.bincount(yn, minlength=num_classes) if total else np.zeros(0, np.int64)
    take = _allocate(counts, k) if total else counts
    chosen: list[np.ndarray] = []
    for c in range(num_classes):
        if take[c] == 0:
            continue
        members = np.flatnonzero(yn == c)
        order = np.argsort(keys[members], kind="stable")
        chosen.append(members[order[: take[c]]])
    idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    idx = idx[np.argsort(keys[idx], kind="stable")].astype(np.int64)
    content = hashlib.sha256()
    for i in idx:
        content.update(flat[i].tobytes())
    content.update(yn[idx].astype("<i8").tobytes())
    return Subset(indices=torch.from_numpy(idx), n=int(idx.shape[0]), of=total, seed=int(seed),
                  class_counts=tuple(int(v) for v in take), indices_sha256=hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest(),
                  content_sha256=content.hexdigest())


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def load_digits(*, seed: int = 0, n_test: int = 360) -> ImageData:
    """scikit-learn's 8x8 digits (1797 images): 1x8x8 in [0, 1] (grey level / 16).

    Split: stratified, ``n_test`` = 360 test images (1437 train), drawn with ``seed``; the split's
    indices are hashed into ``meta["split_sha256"]`` so runs can check they share it.
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=n_test, stratify=bunch.target, random_state=seed)
    tr, te = np.sort(tr), np.sort(te)
    split_hash = hashlib.sha256(tr.tobytes() + b"|" + te.tobytes()).hexdigest()
    x_train, x_test = x[tr].contiguous(), x[te].contiguous()
    mean, std = _channel_stats(x_train)
    d = ImageData(
        name="digits", x_train=x_train, y_train=y[tr].contiguous(), x_test=x_test, y_test=y[te].contiguous(),
        classes=tuple(str(i) for i in range(10)), mean=mean, std=std,
        meta={"source": "sklearn.datasets.load_digits (UCI ML hand-written digits, 8x8, 17 grey levels)",
              "split": "stratified", "split_seed": seed, "n_train": len(tr), "n_test": len(te),
              "split_sha256": split_hash, "scale": "pixel / 16"},
    )
    return _require_every_class(d, {"train": f"{len(tr)} images, seed {seed}", "test": f"n_test={n_test}, seed {seed}"},
                                "; ask for a larger n_test")


# ---------------------------------------------------------------------------------------------
# synthetic: planted robust and non-robust features
# ---------------------------------------------------------------------------------------------
def _dct_basis(size: int) -> np.ndarray:
    """Orthonormal 1-D DCT-II basis, rows = frequencies 0..size-1."""
    n = np.arange(size)
    k = n[:, None]
    basis = np.cos(np.pi * (n[None, :] + 0.5) * k / size) * math.sqrt(2.0 / size)
    basis[0] /= math.sqrt(2.0)
    return basis


def _band_patterns(rng: np.random.Generator, num_classes: int, channels: int, size: int,
                   freqs: list[tuple[int, int]], norm: float) -> np.ndarray:
    """``num_classes`` mutually orthogonal patterns of l2 norm ``norm`` spanned by the given
    2-D DCT frequencies (in every channel)."""
    b = _dct_basis(size)
    atoms = []
    for c in range(channels):
        for kx, ky in freqs:
            a = np.zeros((channels, size, size))
            a[c] = np.outer(b[ky], b[kx])
            atoms.append(a.ravel())
    atoms_m = np.stack(atoms)                             # (m, D), orthonormal rows
    if atoms_m.shape[0] < num_classes:
        raise ValueError(f"the frequency band has {atoms_m.shape[0]} atoms, fewer than num_classes={num_classes}")
    coef = rng.standard_normal((num_classes, atoms_m.shape[0]))
    q, _ = np.linalg.qr(coef.T)                           # (m, C) orthonormal columns
    pats = (q.T @ atoms_m) * norm                         # orthogonal, each of norm `norm`
    return pats.reshape(num_classes, channels, size, size)


def make_synthetic(*, n_train: int = 3000, n_test: int = 1000, num_classes: int = 10, channels: int = 3,
                   image_size: int = 16, robust_norm: float = 4.0, nonrobust_norm: float = 0.4,
                   robust_agreement: float = 0.8, noise_std: float = 0.05, seed: int = 0) -> ImageData:
    """Images with a planted robust and a planted non-robust feature (ground truth in ``meta``).

    Construction, per example with label y (uniform over the C classes):

        x = clamp(0.5 + r[y_r] + n[y] + noise, 0, 1)

    * ``r[c]`` (``meta["robust_pattern"]``, shape (C, c, h, w)): the *robust* feature. Spanned by
      the lowest 2-D DCT frequencies (1 <= kx + ky <= 3, every channel), the C patterns mutually
      orthogonal with l2 norm ``robust_norm`` (default 4.0). It shows class ``y_r``, which equals
      y with probability ``robust_agreement`` (default 0.8) and is a uniformly drawn *other*
      class otherwise: large-norm, so no small perturbation changes it, but only 80% predictive.
    * ``n[c]`` (``meta["nonrobust_pattern"]``): the *non-robust* feature. Spanned by the highest
      DCT frequencies (kx + ky >= 2(size-1) - 3), mutually orthogonal with l2 norm
      ``nonrobust_norm`` (default 0.4), and always shows y: perfectly predictive, but an l2
      perturbation of norm ``nonrobust_norm / sqrt(2)`` ~ 0.28 moves an image halfway to another
      class's pattern, and one of norm ``sqrt(2) * nonrobust_norm`` swaps it.
    * ``noise``: i.i.d. N(0, ``noise_std``^2) pixels (default 0.05), i.e. N(0, 0.05^2) along any
      unit direction, so both features are detected with high signal-to-noise ratio.

    The two bands and the constant image are mutually orthogonal, so
    :func:`planted_feature_scores` reads each feature off an image by projection. Ground truth:
    a standard model reaches ~100% by relying on the non-robust feature; an adversarially
    trained model (l2 eps between ~0.3 and ~2.8, e.g. 0.5 or 1.0) cannot use it and falls back to
    the robust feature (~``robust_agreement`` clean accuracy, robust at that eps).
    """
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    if not 2 <= num_classes:
        raise ValueError(f"num_classes={num_classes} must be at least 2")
    C.probability("robust_agreement", robust_agreement)
    if image_size < 6:
        raise ValueError(f"image_size={image_size} must be at least 6 for two disjoint frequency bands")
    rng = np.random.default_rng(seed)
    low = [(kx, ky) for kx in range(4) for ky in range(4) if 1 <= kx + ky <= 3]
    top = 2 * (image_size - 1)
    high = [(kx, ky) for kx in range(image_size) for ky in range(image_size) if kx + ky >= top - 3]
    r = _band_patterns(rng, num_classes, channels, image_size, low, robust_norm)
    nr = _band_patterns(rng, num_classes, channels, image_size, high, nonrobust_norm)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = rng.integers(0, num_classes, n)
        flip = rng.random(n) >= robust_agreement
        other = (y + rng.integers(1, num_classes, n)) % num_classes
        y_r = np.where(flip, other, y)
        x = 0.5 + r[y_r] + nr[y] + noise_std * rng.standard_normal((n, channels, image_size, image_size))
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(y_r.astype(np.int64))

    x_train, y_train, yr_train = sample(n_train)
    x_test, y_test, yr_test = sample(n_test)
    mean, std = _channel_stats(x_train)
    clipped = float(((x_train == 0) | (x_train == 1)).float().mean())
    meta: dict[str, Any] = {
        "robust_pattern": torch.from_numpy(r.astype(np.float32)),
        "nonrobust_pattern": torch.from_numpy(nr.astype(np.float32)),
        "robust_norm": float(robust_norm), "nonrobust_norm": float(nonrobust_norm),
        "robust_agreement": float(robust_agreement), "noise_std": float(noise_std),
        "robust_label_train": yr_train, "robust_label_test": yr_test,
        "robust_band": "2-D DCT 1 <= kx+ky <= 3", "nonrobust_band": f"2-D DCT kx+ky >= {top - 3}",
        "background": 0.5, "clipped_fraction": clipped, "seed": seed,
        "construction": "x = clamp(0.5 + robust_pattern[y_r] + nonrobust_pattern[y] + N(0, noise_std^2), 0, 1)",
    }
    d = ImageData(name="synthetic", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                  classes=tuple(f"class{i}" for i in range(num_classes)), mean=mean, std=std, meta=meta)
    return _require_every_class(d, {"train": f"n_train={n_train}, seed {seed}", "test": f"n_test={n_test}, seed {seed}"},
                                "; draw more examples")


def planted_feature_scores(x: torch.Tensor, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Projection of each image onto each class's planted pattern, in units of the pattern norm.

    Returns ``{"robust": (N, C), "nonrobust": (N, C)}`` with score[i, c] = <x_i - 0.5, p_c> / ||p_c||^2,
    so a clean synthetic image scores ~1 for the class its feature shows and ~0 for the others
    (the patterns are orthogonal and orthogonal to the constant background); ``argmax(1)`` reads
    off the class each feature points to.
    """
    out: dict[str, torch.Tensor] = {}
    xf = (x.detach().to("cpu", torch.float64) - float(meta.get("background", 0.5))).flatten(1)
    for key in ("robust", "nonrobust"):
        p = torch.as_tensor(meta[f"{key}_pattern"]).to(torch.float64).flatten(1)
        out[key] = (xf @ p.T / (p * p).sum(1)).to(torch.float32)
    return out


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (pickle layout), with download
# ---------------------------------------------------------------------------------------------
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_cifar10(root: str | os.PathLike, *, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
                     timeout: float = 60.0) -> Path:
    """Download ``cifar-10-python.tar.gz`` from ``url``, verify its MD5 and unpack it under ``root``.

    The archive is streamed to a temporary file, checked against ``md5`` (the official value
    ``c58f30108f718f92721af3b95e74349a`` by default), then extracted with tarfile's ``data``
    filter (no absolute paths or links outside ``root``). A mismatching download is deleted and
    raises ``ValueError``. Returns ``root/cifar-10-batches-py``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cifar10.", suffix=".tar.gz.tmp", dir=root)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(archive)) from exc
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
                shutil.copyfileobj(resp, out, length=1 << 20)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ValueError(f"cannot download {url} ({' '.join(str(reason).split())}); offline, fetch "
                             f"cifar-10-python.tar.gz elsewhere and unpack it under {root}") from None
        except OSError as exc:                              # writing the archive: a full or read-only disk
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(archive)) from exc
        got = _md5(Path(tmp))
        if got != md5:
            raise ValueError(f"download from {url} has md5 {got}, expected {md5}; the file was discarded")
        with tarfile.open(tmp, "r:gz") as tar:
            tar.extractall(root, filter="data")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        raise ValueError(f"archive from {url} did not contain cifar-10-batches-py/; expected layout {CIFAR10_LAYOUT}")
    return folder


# The globals a CIFAR-10 pickle may name: numpy arrays, dtypes and scalars as numpy 1.x
# (numpy.core) and 2.x (numpy._core) pickle them, and the latin-1 bytes of a protocol-2 pickle
# written by Python 3. Anything else (os.system, builtins.exec, subprocess.Popen, ...) is refused
# before it is looked up, so a crafted file cannot run code.
_PICKLE_GLOBALS: dict[tuple[str, str], str] = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): "_reconstruct" for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): "scalar" for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): "_frombuffer" for core in ("core", "_core")},
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global outside the allowed set (:class:`RestrictedUnpickler`)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"global {module}.{name} is not allowed")
        self.global_name = f"{module}.{name}"


def _latin1_encode(obj: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle uses it for bytes, and nothing else."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(obj).__name__}, {encoding!r}) is not allowed; "
                                     "only latin-1 strings (protocol-2 bytes)")
    return obj.encode("latin-1", errors)


def _numpy_pickle_objects() -> dict[str, Any]:
    import importlib

    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    multiarray = importlib.import_module(f"{core}.multiarray")
    numeric = importlib.import_module(f"{core}.numeric")
    return {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar, "_frombuffer": numeric._frombuffer,
            "ndarray": np.ndarray, "dtype": np.dtype, "encode": _latin1_encode}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only what a CIFAR-10 batch holds: dicts, lists, tuples, bytes,
    str, numbers and numpy arrays. Any other global raises :class:`UnsafePickleError` before it
    is imported, so a crafted file cannot execute code; persistent ids are refused too."""

    def find_class(self, module: str, name: str) -> Any:
        key = _PICKLE_GLOBALS.get((module, name))
        if key is None:
            raise UnsafePickleError(module, name)
        return _numpy_pickle_objects()[key]


def restricted_pickle_load(path: str | os.PathLike, *, what: str = "CIFAR-10 pickle batch") -> Any:
    """Unpickle ``path`` (Python 2 pickles as bytes) with :class:`RestrictedUnpickler`.

    Raises ``ValueError`` naming the file and the refused global for a pickle that names anything
    but dicts, lists, bytes, str, numbers and numpy arrays, and ``ValueError`` for a damaged file;
    an ``OSError`` opening it (missing, unreadable) propagates unchanged.
    """
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, encoding="bytes").load()
        except UnsafePickleError as exc:
            raise ValueError(f"{path}: refused to unpickle the global {exc.global_name}: a {what} holds only "
                             "dicts, lists, bytes, str, numbers and numpy arrays, so this file was crafted or is "
                             f"not what it claims; delete it and fetch the official archive (--download); "
                             f"expected layout {CIFAR10_LAYOUT}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, OverflowError) as exc:
            text = " ".join(str(exc).split())
            raise ValueError(f"{path} is not a {what} ({exc.__class__.__name__}: {text}); "
                             f"expected layout {CIFAR10_LAYOUT}") from None


def _describe_array(a: Any) -> str:
    """What a value read from disk holds, for an error line: type or dtype, shape and value range."""
    if not isinstance(a, np.ndarray):
        return f"a {type(a).__name__}" + (f" of length {len(a)}" if isinstance(a, (list, tuple, bytes)) else "")
    out = f"{'an' if a.dtype.name[0] in 'aeio' else 'a'} {a.dtype} array of shape {a.shape}"
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        if np.issubdtype(a.dtype, np.inexact):
            bad = int(np.count_nonzero(~np.isfinite(a)))
            fin = a[np.isfinite(a)]
            if bad:
                out += f" with {bad} NaN or infinite values"
            if fin.size:
                out += f"{' and finite values' if bad else ' with values'} in [{fin.min():.4g}, {fin.max():.4g}]"
        else:
            out += f" with values in [{a.min()}, {a.max()}]"
    return out


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64 in [0, 10))`` of one batch file.

    Nothing is cast: ``data`` must already be a uint8 array of shape (N, 3072) and the labels N
    integers in [0, 10), as in the official archive; anything else (float pixels in [0, 1] that a
    cast would turn into zeros, NaN, values above 255 that a cast would wrap, float labels that
    it would truncate) is a ``ValueError`` naming the file and what it holds.
    """
    d = restricted_pickle_load(path, what="CIFAR-10 pickle batch")
    fix = "delete it and fetch the official archive (--download)"
    try:
        data = d[b"data"]
        labels = d.get(b"labels", d.get(b"fine_labels"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a CIFAR-10 pickle batch ({exc.__class__.__name__}: {exc}); "
                         f"expected layout {CIFAR10_LAYOUT}") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: data is {_describe_array(data)}; a CIFAR-10 batch holds uint8 pixel rows of "
                         f"shape (N, 3072) with values 0..255; {fix}")
    if labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 pickle batch (no b'labels'); {fix}")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):          # ragged or otherwise not an array of numbers
        y = labels
    if not isinstance(y, np.ndarray) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: labels are {_describe_array(y)}; a CIFAR-10 batch holds N integer labels in "
                         f"[0, 10); {fix}")
    if y.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: data has shape {data.shape} with labels of shape {y.shape}; expected "
                         f"(N, 3072) uint8 rows and N labels; layout {CIFAR10_LAYOUT}")
    if y.size and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"{path}: labels range over [{y.min()}, {y.max()}]; CIFAR-10 labels are integers in "
                         f"[0, 10); {fix}")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def load_cifar10(root: str | os.PathLike | None, *, download: bool = False, url: str = CIFAR10_URL,
                 md5: str = CIFAR10_MD5) -> ImageData:
    """CIFAR-10 from the lossless ``cifar-10-batches-py`` layout (50000 train / 10000 test, 3x32x32).

    ``root`` is the folder *containing* ``cifar-10-batches-py`` (torchvision convention); passing
    the batches folder itself also works. With ``download=True`` a missing copy is fetched from
    ``url`` and checked against ``md5`` first. Normalisation: the standard CIFAR-10 statistics.

    Every batch is checked as read (:func:`_read_cifar_batch`: uint8 pixel rows, N labels in
    [0, 10)), ``batches.meta`` must name 10 classes, and every class must appear in both splits;
    anything else is a ``ValueError`` naming the file.
    """
    if root is None:
        raise ValueError(f"cifar10 needs a data root (--data-root / root=); expected layout {CIFAR10_LAYOUT}")
    root = Path(root).expanduser()
    folder = root if (root / "data_batch_1").exists() else root / "cifar-10-batches-py"
    if not folder.is_dir() and download:
        folder = download_cifar10(root, url=url, md5=md5)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 not found under {root}: missing {', '.join(missing)} in {folder}; "
                                f"expected layout {CIFAR10_LAYOUT}")
    parts = [_read_cifar_batch(folder / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5]
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        m = restricted_pickle_load(folder / "batches.meta", what="CIFAR-10 pickle (batches.meta)")
        try:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in m[b"label_names"])
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise ValueError(f"{folder / 'batches.meta'} is malformed (no list of label_names); "
                             f"expected layout {CIFAR10_LAYOUT}") from None
        if len(classes) != len(CIFAR10_CLASSES):
            raise ValueError(f"{folder / 'batches.meta'} lists {len(classes)} label_names; CIFAR-10 has "
                             f"{len(CIFAR10_CLASSES)} classes; expected layout {CIFAR10_LAYOUT}")
    d = ImageData(
        name="cifar10",
        x_train=torch.from_numpy(x_train).float().div_(255), y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test).float().div_(255), y_test=torch.from_numpy(y_test),
        classes=classes, mean=CIFAR10_MEAN, std=CIFAR10_STD,
        meta={"root": str(folder), "format": "cifar-10-batches-py (lossless)"},
    )
    return _require_every_class(d, {"train": f"{folder}/data_batch_1..5", "test": str(folder / "test_batch")},
                                "; delete the folder and fetch the official archive (--download)")


# ---------------------------------------------------------------------------------------------
# imagefolder
# ---------------------------------------------------------------------------------------------
def _scan_split(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class folders of one split (sorted names = labels) and its image files with their labels.

    A class folder without a single image (empty, or holding only a README, subfolders or files of
    other types) is a ``ValueError`` naming it: its class would silently never be trained on or
    never be tested."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for ci, c in enumerate(classes):
        entries = sorted((folder / c).iterdir())
        images = [f for f in entries if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            others = [f.name for f in entries if not f.name.startswith(".")]
            held = (f" (it holds only {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if others
                    else " (it holds only hidden files)" if entries else " (it is empty)")
            raise ValueError(f"imagefolder class folder {folder / c} has no images{held}; every class folder needs "
                             f"at least one image (valid suffixes: {', '.join(IMAGE_SUFFIXES)}); expected layout "
                             f"{IMAGEFOLDER_LAYOUT}")
        files.extend((f, ci) for f in images)
    return classes, files


def _decode(files: list[tuple[Path, int]], mode: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    imgs, labels, shape = [], [], None
    for f, ci in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
        except OSError as exc:
            raise ValueError(f"cannot decode image {f}: {exc}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise ValueError(f"image {f} has size {arr.shape[:2]} but earlier images have {shape[:2]}; "
                             "all images of an imagefolder dataset must share one size")
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"image {f} is {arr.shape[0]}x{arr.shape[1]}; only square images are supported")
        imgs.append(arr)
        labels.append(ci)
    return np.stack(imgs).transpose(0, 3, 1, 2).copy(), np.asarray(labels, dtype=np.int64)


def imagefolder_cache_dirs(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where the decoded cache of imagefolder ``path`` is looked for, in order, and written (to
    the first that is writable): ``cache_dir`` if given, else ``$ROBUST_FEATURES_CACHE`` if set
    (``--cache-dir`` sets it for one command), else ``PATH/.robust_features_cache`` and, for a
    data folder that is not writable (read-only filesystem, no permission), the per-user
    :func:`foundation.runtime.user_cache_dir` (``$XDG_CACHE_HOME/robust-features`` or
    ``~/.cache/robust-features``)."""
    explicit = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or None
    if explicit is not None:
        return [Path(explicit).expanduser()]
    return [Path(path).expanduser() / ".robust_features_cache", user_cache_dir()]


def _imagefolder_key(path: Path, splits: Mapping[str, tuple[list[str], list[tuple[Path, int]]]],
                     mode: str) -> tuple[str, str]:
    """(folder id, file-list key): the sha256 of the folder's resolved absolute path, and of the
    mode plus every file's relative path, label, size, mtime and ctime (in ns). A different folder
    or any changed, added, removed or replaced file gives another key (ctime also changes when a
    file is rewritten with its old mtime restored, e.g. by ``cp -p`` or ``rsync -a``)."""
    folder_id = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:16]
    h = hashlib.sha256(f"{mode}\n".encode())
    for split in ("train", "test"):
        for f, ci in splits[split][1]:
            st = f.stat()
            h.update(f"{split}|{f.relative_to(path)}|{ci}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}\n".encode())
    return folder_id, h.hexdigest()


_FALL_BACK_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def _read_cache(cache_file: Path, key: str) -> dict[str, np.ndarray] | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None                                 # another file list under a colliding name
            return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None                                         # damaged or foreign cache: rebuild


def _cache_problem(arrays: Mapping[str, np.ndarray], splits: Mapping[str, tuple[list[str], list[tuple[Path, int]]]],
                   mode: str) -> str | None:
    """Why a cache whose key matched still cannot be what decoding ``splits`` gives (None if it can).

    The file list fixes the number of images and every label, and ``mode`` the channels, so the
    cache must hold exactly those labels (int64) and uint8 images of shape (N, channels, S, S),
    one size for both splits: a damaged, edited or foreign cache never reaches training."""
    channels = {"RGB": 3, "L": 1}.get(mode)
    shapes = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        want = np.asarray([ci for _, ci in splits[split][1]], dtype=np.int64)
        if y.dtype != np.int64 or y.shape != want.shape or not np.array_equal(y, want):
            return f"y_{split} is {_describe_array(y)}, not the {want.shape[0]} labels of the file list"
        if (x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] != want.shape[0] or x.shape[2] != x.shape[3]
                or x.shape[2] < 1 or (channels is not None and x.shape[1] != channels)):
            return (f"x_{split} is {_describe_array(x)}, not uint8 images of shape ({want.shape[0]}, "
                    f"{channels or 'C'}, S, S)")
        shapes.append(x.shape[1:])
    if shapes[0] != shapes[1]:
        return f"train images {shapes[0]} and test images {shapes[1]} differ in shape"
    return None


def _write_cache(dirs: list[Path], name: str, folder_id: str, payload: bytes) -> Path:
    """Write the cache to the first of ``dirs`` that takes it; a data folder that cannot be
    written (EACCES, EPERM, EROFS) falls back to the next one. Older caches of the same folder in
    that place are removed (one cache per folder and place)."""
    for i, folder in enumerate(dirs):
        try:
            target = atomic_write_bytes(folder / name, payload)
        except OSError as exc:
            if exc.errno in _FALL_BACK_ERRNOS and i + 1 < len(dirs):
                continue
            raise
        for old in folder.glob(f"imagefolder-{folder_id}-*.npz"):
            if old.name != name:
                try:
                    old.unlink()
                except OSError:                             # pragma: no cover - best effort
                    pass
        return target
    raise AssertionError("unreachable")  # pragma: no cover


def load_imagefolder(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                     mode: str = "RGB") -> ImageData:
    """``PATH/{train,test}/<class>/*`` images (class names sorted = labels 0..C-1).

    Decoded once with Pillow (``mode`` "RGB" or "L") and cached as uint8 arrays (``.npz``, read
    with ``allow_pickle=False``) in the first place of :func:`imagefolder_cache_dirs` that is
    writable: ``cache_dir`` / ``$ROBUST_FEATURES_CACHE`` if set, else ``PATH/.robust_features_cache``,
    else (a read-only data folder) ``~/.cache/robust-features``. The cache file is named by the
    folder's absolute path and a hash of every file's relative path, label, size, mtime and ctime
    (:func:`_imagefolder_key`), which it also stores and is checked against, so another folder or
    a changed file never reuses a stale cache; a cache whose contents do not match the file list
    (labels, uint8 images of one shape, :func:`_cache_problem`) is decoded again. Mean/std are
    the training set's per-channel statistics.

    Refused (``ValueError`` naming the folder): a class folder with no image in either split, and
    class folders that differ between train and test, so no class is silently left out of
    training or evaluation.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"imagefolder root {path} does not exist; expected layout {IMAGEFOLDER_LAYOUT}")
    for split in ("train", "test"):
        if not (path / split).is_dir():
            raise FileNotFoundError(f"imagefolder root {path} has no '{split}' folder; expected layout "
                                    f"{IMAGEFOLDER_LAYOUT}")
    splits = {}
    for split in ("train", "test"):
        classes, files = _scan_split(path / split)
        if not files:
            raise ValueError(f"{path / split} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class folders; "
                             f"expected layout {IMAGEFOLDER_LAYOUT}")
        splits[split] = (classes, files)
    if splits["train"][0] != splits["test"][0]:
        tr, te = set(splits["train"][0]), set(splits["test"][0])
        only = "; ".join(f"only in {split}: {', '.join(sorted(names))}" for split, names
                         in (("train", tr - te), ("test", te - tr)) if names)
        raise ValueError(f"train classes {splits['train'][0]} differ from test classes {splits['test'][0]} in {path} "
                         f"({only}); every class needs a folder with images in both train and test; expected "
                         f"layout {IMAGEFOLDER_LAYOUT}")
    folder_id, key = _imagefolder_key(path, splits, mode)
    name = f"imagefolder-{folder_id}-{key[:24]}.npz"
    dirs = imagefolder_cache_dirs(path, cache_dir)
    arrays: dict[str, np.ndarray] | None = None
    cache_file = dirs[0] / name
    for folder in dirs:
        arrays = _read_cache(folder / name, key)
        if arrays is not None and _cache_problem(arrays, splits, mode) is not None:
            arrays = None                                   # damaged or edited contents: decode again
        if arrays is not None:
            cache_file = folder / name
            break
    cached = arrays is not None
    if arrays is None:
        xtr, ytr = _decode(splits["train"][1], mode)
        xte, yte = _decode(splits["test"][1], mode)
        if xtr.shape[1:] != xte.shape[1:]:
            raise ValueError(f"train images {xtr.shape[1:]} and test images {xte.shape[1:]} differ in size")
        arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
        buf = io.BytesIO()
        np.savez(buf, key=np.array(key), **arrays)
        cache_file = _write_cache(dirs, name, folder_id, buf.getvalue())
    x_train = torch.from_numpy(arrays["x_train"]).float().div_(255)
    mean, std = _channel_stats(x_train)
    d = ImageData(
        name=f"imagefolder:{path}", x_train=x_train, y_train=torch.from_numpy(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]).float().div_(255), y_test=torch.from_numpy(arrays["y_test"]),
        classes=tuple(splits["train"][0]), mean=mean, std=std,
        meta={"root": str(path), "cache_file": str(cache_file), "from_cache": cached, "file_list_sha": key[:24]},
    )
    return _require_every_class(d, {"train": str(path / "train"), "test": str(path / "test")})


# ---------------------------------------------------------------------------------------------
# dispatcher
# ---------------------------------------------------------------------------------------------
def check_dataset_spec(spec: str) -> None:
    """Raise ``ValueError`` (listing the valid names) unless ``spec`` names a known dataset."""
    if not isinstance(spec, str) or not (spec in ("digits", "synthetic", "cifar10", "imagefolder")
                                         or spec.startswith("imagefolder:")):
        raise ValueError(f"unknown dataset {spec!r}; valid: {', '.join(DATASETS)}")


def load_dataset(spec: str, *, root: str | None = None, download: bool = False,
                 cache_dir: str | None = None, seed: int = 0) -> ImageData:
    """Load a dataset by name: ``digits``, ``synthetic``, ``cifar10`` or ``imagefolder:PATH``.

    ``root`` is the data folder for ``cifar10`` (and the default PATH for a bare ``imagefolder``);
    ``seed`` fixes the digits split and the synthetic draw. Unknown names list the valid ones.
    """
    if not isinstance(spec, str):
        raise TypeError(f"dataset spec must be a string; got {type(spec).__name__}")
    if spec == "digits":
        return load_digits(seed=seed)
    if spec == "synthetic":
        return make_synthetic(seed=seed)
    if spec == "cifar10":
        return load_cifar10(root, download=download)
    if spec == "imagefolder" or spec.startswith("imagefolder:"):
        path = spec.partition(":")[2] or root
        if not path:
            raise ValueError(f"imagefolder needs a path: 'imagefolder:PATH' or --data-root; layout {IMAGEFOLDER_LAYOUT}")
        return load_imagefolder(path, cache_dir=cache_dir)
    raise ValueError(f"unknown dataset {spec!r}; valid: {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------
# loader with on-device augmentation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Batch augmentation done on the loader's device: random crop after padding, horizontal flip.

    ``crop_padding`` p > 0 pads by p pixels (``padding_mode`` "zeros" or "reflect") and crops a
    random HxW window per image; ``flip`` mirrors each image with probability 1/2.
    """

    crop_padding: int = 0
    flip: bool = False
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"crop_padding={self.crop_padding!r} must be a non-negative integer")
        if self.padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"padding_mode={self.padding_mode!r} is not valid; valid: zeros, reflect")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Apply ``aug`` to a batch on ``x``'s device, drawing from ``generator`` (same device)."""
    n, c, h, w = x.shape
    dev = x.device
    if aug.crop_padding > 0:
        p = aug.crop_padding
        mode = "constant" if aug.padding_mode == "zeros" else "reflect"
        xp = torch.nn.functional.pad(x, (p, p, p, p), mode=mode)
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]     # (n,1,h,1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]     # (n,1,1,w)
        bi = torch.arange(n, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if aug.flip:
        m = torch.rand((n,), generator=generator, device=dev) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x


def _mix_seed(*parts: int) -> int:
    h = hashlib.sha256(("|".join(str(int(p)) for p in parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class Loader:
    """Mini-batches ``(xb, yb)`` on ``device``, shuffled and augmented deterministically.

    The whole dataset is moved to ``device`` once (GPU-resident when it fits; that is the fast
    path of airbench-style training), the permutation of epoch e comes from a CPU generator
    seeded by (seed, e), and augmentation draws from a generator on the device seeded the same
    way; so iterating an epoch twice, or after a restart, yields the same batches.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, shuffle: bool, device: Any,
                 augment: Augment | None = None, seed: int = 0, drop_last: bool = False) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_mix_seed(self.seed, self.epoch, 0))
            order = torch.randperm(n, generator=g).to(self.device)
        else:
            order = None
        gen = None
        if self.augment is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(_mix_seed(self.seed, self.epoch, 1))
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            if order is None:
                xb, yb = self.x[sl], self.y[sl]
            else:
                idx = order[sl]
                xb, yb = self.x[idx], self.y[idx]
            if gen is not None:
                xb = augment_batch(xb, self.augment, gen)
            yield xb, yb


__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_URL", "DATASETS",
    "Augment", "ImageData", "Loader", "RestrictedUnpickler", "Subset", "UnsafePickleError",
    "imagefolder_cache_dirs", "restricted_pickle_load", "stratified_subset", "augment_batch", "check_dataset_spec", "check_images", "download_cifar10", "load_cifar10",
    "load_dataset", "load_digits", "load_imagefolder", "make_synthetic", "planted_feature_scores",
]
