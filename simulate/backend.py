"""Array backend selection: NumPy on the CPU, CuPy on a GPU, with the same code.

Every function in :mod:`simulate` takes its arrays from one *array module* ``xp`` (``numpy`` or
``cupy``). The module is either named explicitly (``xp="numpy"`` / ``xp="cupy"``, the CLI's
``--backend``) or inferred from the input arrays with :func:`backend_of`.

Rules (docs/conventions.md sec. 4):

* CuPy is an optional extra (``pip install robust-features[gpu]``). It is imported lazily, only
  when asked for; asking for it without CuPy or without a GPU raises a :class:`ValueError` that
  names ``--backend`` / ``xp``.
* No silent host/device copies: mixing NumPy and CuPy arrays raises :class:`TypeError`; moving
  data is explicit (:func:`asarray`, :func:`to_numpy`).
* Seeds give reproducible streams on both backends (:func:`make_rng`). The NumPy and CuPy
  streams differ from each other (different bit generators); each is reproducible on its own.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

import numpy as np

from foundation import checks as C

BACKENDS: tuple[str, ...] = ("numpy", "cupy")

Array = Any  # numpy.ndarray or cupy.ndarray
XP = types.ModuleType


def _load_cupy() -> XP:
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise ValueError(
            "backend 'cupy' (--backend cupy / xp='cupy') was requested but CuPy is not installed; "
            "install the GPU extra (pip install 'robust-features[gpu]') or use --backend numpy"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # driver missing, no device, ...
        raise ValueError(
            f"backend 'cupy' (--backend cupy / xp='cupy') was requested but no CUDA GPU is usable: "
            f"{exc}; use --backend numpy"
        ) from exc
    if count < 1:
        raise ValueError(
            "backend 'cupy' (--backend cupy / xp='cupy') was requested but no CUDA GPU is present; "
            "use --backend numpy"
        )
    return cupy


def get_xp(backend: str | XP = "numpy") -> XP:
    """Return the array module for ``backend`` ('numpy' or 'cupy', or a module already).

    Raises ``ValueError`` for an unknown name, and for 'cupy' without CuPy or without a GPU.
    """
    if isinstance(backend, types.ModuleType):
        if backend.__name__ not in BACKENDS:
            raise ValueError(
                f"backend module xp={backend.__name__!r} is not supported; valid: {', '.join(BACKENDS)}"
            )
        return backend
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ValueError(
            f"unknown backend (--backend / xp) {backend!r}; valid: {', '.join(BACKENDS)}"
        )
    if backend.lower() == "numpy":
        return np
    return _load_cupy()


def backend_of(*arrays: Array, xp: str | XP | None = None) -> XP:
    """Infer the array module from ``arrays`` (ignoring Python scalars and None).

    If ``xp`` is given it wins, but an array living on the other backend is an error (no silent
    host/device copy). Mixing NumPy and CuPy arrays raises ``TypeError``.
    """
    found: set[str] = set()
    for a in arrays:
        if a is None or isinstance(a, (int, float, complex, bool)):
            continue
        mod = type(a).__module__.split(".")[0]
        if mod in BACKENDS:
            found.add(mod)
    if len(found) > 1:
        raise TypeError(
            "arrays from both numpy and cupy were passed; move them explicitly with "
            "simulate.backend.asarray(x, xp) (no silent host/device copies)"
        )
    if xp is not None:
        mod = get_xp(xp)
        if found and found != {mod.__name__}:
            raise TypeError(
                f"xp={mod.__name__!r} was requested but the arrays live on {found.pop()!r}; "
                "move them explicitly with simulate.backend.asarray(x, xp)"
            )
        return mod
    if not found:
        return np
    return get_xp(found.pop())


def device_name(xp: XP) -> str:
    """A human-readable device name for provenance ('cpu' or the GPU's name)."""
    if xp is np:
        return "cpu"
    try:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover - gpu only
        return "cuda"


def asarray(x: Any, xp: str | XP, dtype: Any = None) -> Array:
    """Explicitly place ``x`` on backend ``xp`` (the only sanctioned host/device copy)."""
    mod = get_xp(xp)
    if mod is np:
        return np.asarray(to_numpy(x), dtype=dtype)
    return mod.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    """Explicitly copy an array (NumPy or CuPy) to host NumPy memory."""
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)


def to_float(x: Any) -> float:
    """A Python float from a 0-d array of either backend (an explicit device->host copy)."""
    return float(to_numpy(x))


def make_rng(seed: int, xp: str | XP = "numpy") -> Any:
    """A seeded generator on backend ``xp``: ``numpy.random.default_rng`` or ``cupy.random.default_rng``.

    Both expose ``standard_normal(size, dtype=...)`` and ``random(size)``, the only two draws the
    simulate package uses, so samplers are backend-agnostic.
    """
    C.non_negative_int("seed", seed)
    mod = get_xp(xp)
    return mod.random.default_rng(seed)


def rng_xp(rng: Any) -> XP:
    """The array module a generator from :func:`make_rng` draws on."""
    return get_xp("cupy") if type(rng).__module__.split(".")[0] == "cupy" else np


# ---- validation: scalars go through the ground's one family (foundation.checks) ---------------


def check_finite(name: str, value: Any) -> None:
    """Raise ValueError naming ``name`` if the array ``value`` (either backend) has a NaN or an
    infinity; a scalar is checked by :func:`foundation.checks.finite`."""
    if C.is_number(value):
        C.finite(name, value)
        return
    xp = backend_of(value)
    arr = xp.asarray(value)
    if not bool(xp.all(xp.isfinite(arr))):
        raise ValueError(f"{name} must be finite; it contains NaN or infinite entries")
