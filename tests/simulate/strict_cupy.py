"""A strict stand-in for CuPy that runs on the CPU, so device-hostile code in simulate/ fails in CI.

:func:`install` puts a module named ``cupy`` (and ``cupyx.scipy.linalg``) into ``sys.modules``;
``simulate.backend.get_xp("cupy")`` then returns it. Its arrays (:class:`DeviceArray`, whose
``__module__`` is ``cupy``, so :func:`simulate.backend.backend_of` sees a CuPy array) hold NumPy
memory but behave like device memory where CuPy refuses what NumPy allows:

* **no implicit host conversion**: ``np.asarray(a)`` / ``np.array(a)`` / ``__array__`` raise, as
  CuPy does; ``.get()`` is the explicit copy (what :func:`simulate.backend.to_numpy` calls);
* **no NumPy functions on device arrays**: every ``np.<function>(a)`` and ``np.<ufunc>(a)`` raises
  (NEP-18 / NEP-13 dispatch is refused), so code must call ``xp.<function>``;
* **no mixing**: an operator or ``cupy`` function that receives a NumPy array (other than
  ``cupy.asarray``, the explicit upload) raises, as CuPy does;
* **only CuPy's namespace**: the module exposes only functions that CuPy has (:data:`FUNCTIONS`,
  :data:`LINALG`; e.g. ``cupy.linalg`` has no ``solve_triangular``, which lives in
  ``cupyx.scipy.linalg``), so a NumPy-only call raises ``AttributeError``;
* ``float()``, ``int()``, ``bool()`` of one-element arrays work, as in CuPy (a synchronising copy).

What it does not cover: CuPy's kernels and their numerics (cuSOLVER / cuBLAS results differ from
LAPACK's in the last bits; reductions sum in another order), its random streams (the stand-in
draws NumPy's stream, CuPy's differs), asynchronous execution and the cost of synchronisations,
GPU memory limits, dtype rules where CuPy differs from NumPy (e.g. some integer promotions), and
functions CuPy has but the lists below do not (the lists hold what simulate/ needs).
"""

from __future__ import annotations

import operator
import sys
import types
from typing import Any

import numpy as np

#: top-level functions and constants of CuPy the stand-in exposes (all exist in cupy >= 13)
FUNCTIONS = (
    "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "empty", "eye", "arange", "linspace",
    "where", "sqrt", "exp", "log", "log1p", "abs", "sign", "max", "min", "amax", "amin", "maximum", "minimum",
    "sum", "mean", "std", "var", "prod", "cumsum", "diag", "diagonal", "tril", "triu", "trace", "clip",
    "argsort", "sort", "argmax", "argmin", "atleast_1d", "atleast_2d", "logaddexp", "isfinite", "isnan",
    "all", "any", "concatenate", "stack", "outer", "dot", "matmul", "einsum", "square", "sin", "cos",
    "tanh", "floor", "ceil", "round", "allclose", "isclose", "broadcast_to", "reshape", "transpose",
    "ascontiguousarray", "count_nonzero", "expm1", "power", "fabs",
)
CONSTANTS = ("inf", "nan", "pi", "e", "newaxis", "float64", "float32", "int64", "int32", "bool_", "finfo",
             "iinfo", "dtype")
LINALG = ("cholesky", "eigh", "eigvalsh", "inv", "solve", "norm", "pinv", "qr", "svd", "det", "slogdet")


def _refuse_host(what: str) -> TypeError:
    return TypeError(f"{what}: implicit conversion of a device (cupy) array to a NumPy array is not allowed; "
                     "use .get() or simulate.backend.to_numpy (strict CuPy stand-in)")


class DeviceArray:
    """A NumPy array behind a device-array interface (see the module docstring)."""

    __slots__ = ("_a",)
    __array_ufunc__ = None          # numpy ufuncs on a device array -> TypeError; a + b falls to our ops

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    # explicit copies
    def get(self) -> np.ndarray:
        return self._a.copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise _refuse_host("__array__ / np.asarray")

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(f"numpy.{func.__name__} called on a device (cupy) array; call xp.{func.__name__} "
                        "(strict CuPy stand-in)")

    def tolist(self) -> Any:
        raise _refuse_host("tolist()")

    # scalars (CuPy synchronises and converts one-element arrays)
    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __index__(self) -> int:
        return operator.index(self._a)

    def item(self) -> Any:
        return self._a.item()

    # attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    T = property(lambda self: DeviceArray(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __repr__(self) -> str:
        return f"DeviceArray({self._a!r})"

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key, "indexing")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key, "indexing")] = _unwrap(value, "assignment")

    def __iter__(self):
        raise TypeError("iterating over a device (cupy) array element by element copies to the host; "
                        "use array operations (strict CuPy stand-in)")

    # methods CuPy's ndarray has
    def astype(self, dtype: Any, copy: bool = True) -> DeviceArray:
        return DeviceArray(self._a.astype(dtype, copy=copy))

    def copy(self) -> DeviceArray:
        return DeviceArray(self._a.copy())

    def reshape(self, *shape: Any) -> DeviceArray:
        return DeviceArray(self._a.reshape(*shape))

    def ravel(self) -> DeviceArray:
        return DeviceArray(self._a.ravel())

    def __getattr__(self, name: str) -> Any:
        if name in ("sum", "mean", "max", "min", "std", "var", "prod", "argmax", "argmin", "all", "any",
                    "cumsum", "dot", "clip", "transpose", "squeeze", "round", "diagonal", "trace", "flatten"):
            meth = getattr(self._a, name)
            return lambda *a, **k: _wrap(meth(*_unwrap(a, name), **_unwrap(k, name)))
        raise AttributeError(f"'cupy.ndarray' has no attribute {name!r} in the strict CuPy stand-in")


def _binary(op: Any, name: str) -> tuple[Any, Any]:
    def fwd(self: DeviceArray, other: Any) -> Any:
        return _wrap(op(self._a, _unwrap(other, f"operator {name}")))

    def rev(self: DeviceArray, other: Any) -> Any:
        return _wrap(op(_unwrap(other, f"operator {name}"), self._a))

    return fwd, rev


for _name, _op in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("pow", operator.pow),
                   ("matmul", operator.matmul), ("mod", operator.mod), ("and", operator.and_),
                   ("or", operator.or_), ("xor", operator.xor)):
    _f, _r = _binary(_op, _name)
    setattr(DeviceArray, f"__{_name}__", _f)
    setattr(DeviceArray, f"__r{_name}__", _r)
for _name, _op in (("lt", operator.lt), ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge),
                   ("eq", operator.eq), ("ne", operator.ne)):
    setattr(DeviceArray, f"__{_name}__", _binary(_op, _name)[0])
DeviceArray.__neg__ = lambda self: DeviceArray(-self._a)
DeviceArray.__pos__ = lambda self: DeviceArray(+self._a)
DeviceArray.__abs__ = lambda self: DeviceArray(abs(self._a))
DeviceArray.__invert__ = lambda self: DeviceArray(~self._a)
DeviceArray.__hash__ = None
DeviceArray.__module__ = "cupy"          # what backend_of looks at
DeviceArray.__qualname__ = DeviceArray.__name__ = "ndarray"


def _unwrap(obj: Any, where: str) -> Any:
    """Device arrays -> their NumPy memory; NumPy arrays -> error (no mixing); containers recursively."""
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(f"{where}: a NumPy array was mixed with device (cupy) arrays; move it explicitly with "
                        "xp.asarray / simulate.backend.asarray (strict CuPy stand-in)")
    if isinstance(obj, tuple):
        return tuple(_unwrap(o, where) for o in obj)
    if isinstance(obj, list):
        return [_unwrap(o, where) for o in obj]
    if isinstance(obj, dict):
        return {k: _unwrap(v, where) for k, v in obj.items()}
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic):          # CuPy returns 0-d arrays, not NumPy scalars
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return type(obj)(*map(_wrap, obj)) if hasattr(obj, "_fields") else tuple(map(_wrap, obj))
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _device_fn(fn: Any, name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _wrap(fn(*_unwrap(args, f"cupy.{name}"), **_unwrap(kwargs, f"cupy.{name}")))

    call.__name__ = name
    return call


def _asarray(obj: Any, dtype: Any = None) -> DeviceArray:
    """The explicit host -> device copy (NumPy arrays allowed here, as in ``cupy.asarray``)."""
    if isinstance(obj, DeviceArray):
        return DeviceArray(obj._a.astype(dtype, copy=False) if dtype is not None else obj._a)
    return DeviceArray(np.array(obj, dtype=dtype))


class _Generator:
    """``cupy.random.Generator`` over NumPy's stream: the draws simulate/ uses."""

    def __init__(self, seed: int) -> None:
        self._g = np.random.default_rng(seed)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> DeviceArray:
        return DeviceArray(np.asarray(self._g.standard_normal(size, dtype=dtype)))

    def random(self, size: Any = None, dtype: Any = np.float64) -> DeviceArray:
        return DeviceArray(np.asarray(self._g.random(size, dtype=dtype)))

    def integers(self, low: int, high: int | None = None, size: Any = None) -> DeviceArray:
        return DeviceArray(np.asarray(self._g.integers(low, high, size=size)))


_Generator.__module__ = "cupy.random"      # what simulate.backend.rng_xp looks at


def build() -> dict[str, types.ModuleType]:
    """The stand-in modules: ``cupy`` (with ``linalg``, ``random``, ``cuda``) and ``cupyx.scipy.linalg``."""
    import scipy.linalg

    cp = types.ModuleType("cupy", "strict CuPy stand-in (CPU), see tests/simulate/strict_cupy.py")
    for name in FUNCTIONS:
        setattr(cp, name, _device_fn(getattr(np, name), name))
    for name in CONSTANTS:
        setattr(cp, name, getattr(np, name))
    cp.asarray = _asarray
    cp.array = _asarray
    cp.ndarray = DeviceArray
    cp.asnumpy = lambda a: a.get() if isinstance(a, DeviceArray) else np.asarray(a)
    linalg = types.ModuleType("cupy.linalg")
    for name in LINALG:
        setattr(linalg, name, _device_fn(getattr(np.linalg, name), f"linalg.{name}"))
    cp.linalg = linalg
    rnd = types.ModuleType("cupy.random")
    rnd.default_rng = lambda seed=None: _Generator(seed)
    cp.random = rnd
    cuda = types.ModuleType("cupy.cuda")
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda i: {"name": b"strict CuPy stand-in (CPU)"})
    cuda.runtime = runtime
    cuda.Device = lambda i=0: types.SimpleNamespace(id=i, synchronize=lambda: None)
    cp.cuda = cuda
    cupyx = types.ModuleType("cupyx")
    cscipy = types.ModuleType("cupyx.scipy")
    clinalg = types.ModuleType("cupyx.scipy.linalg")
    clinalg.solve_triangular = _device_fn(scipy.linalg.solve_triangular, "cupyx.scipy.linalg.solve_triangular")
    cupyx.scipy = cscipy
    cscipy.linalg = clinalg
    return {"cupy": cp, "cupy.linalg": linalg, "cupy.random": rnd, "cupy.cuda": cuda, "cupyx": cupyx,
            "cupyx.scipy": cscipy, "cupyx.scipy.linalg": clinalg}


def install(monkeypatch: Any) -> types.ModuleType:
    """Put the stand-in into ``sys.modules`` for one test (``monkeypatch`` undoes it); returns ``cupy``."""
    mods = build()
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods["cupy"]
