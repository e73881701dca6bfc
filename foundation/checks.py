"""Validation of config fields and command-line values: one helper per kind of check.

Every helper raises ``ValueError`` with one line that names the parameter, its value and what is
valid, e.g. ``eval.n_robust=-5 must be None or a positive integer``, and returns the value (ints
stay ints, numbers become floats). Integers must be real ``int`` values (``True`` is not 1 and
``3.0`` is not 3); floats must be finite unless stated. The console script reports these errors
as one line on stderr with exit status 2.

    from foundation import checks
    checks.positive_int("epochs", 0)          # ValueError: epochs=0 must be a positive integer
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Iterable
from typing import Any

SEED_MAX = 2**32 - 1  # the widest range every consumer takes (scikit-learn's random_state included)
NORMS: tuple[str, ...] = ("l2", "linf")   # the threat models: the adversary's lp ball (theory, simulate, empirical)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (Python's or NumPy's; a bool is not one)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def positive_int(name: str, v: Any) -> int:
    if not is_int(v) or v < 1:
        raise ValueError(f"{name}={v!r} must be a positive integer")
    return v


def non_negative_int(name: str, v: Any) -> int:
    if not is_int(v) or v < 0:
        raise ValueError(f"{name}={v!r} must be a non-negative integer")
    return v


def optional_positive_int(name: str, v: Any, *, none: str = "") -> int | None:
    """None or a positive integer; ``none`` says what None means, e.g. ``" (None = all)"``."""
    if v is not None and (not is_int(v) or v < 1):
        raise ValueError(f"{name}={v!r} must be None or a positive integer{none}")
    return v


def int_at_least(name: str, v: Any, lo: int) -> int:
    if not (is_int(v) or (isinstance(v, numbers.Integral) and not isinstance(v, bool))) or v < lo:
        raise ValueError(f"{name}={v!r} must be an integer >= {lo}")
    return v


def seed(name: str, v: Any) -> int:
    if not is_int(v) or not 0 <= v <= SEED_MAX:
        raise ValueError(f"{name}={v!r} must be an integer seed in [0, {SEED_MAX}]")
    return v


def positive_float(name: str, v: Any, *, allow_inf: bool = False) -> float:
    """A number > 0, finite unless ``allow_inf`` (a Lagrange multiplier may be inf: no adversary)."""
    if not is_number(v) or math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name}={v!r} must be a positive " + ("number (inf allowed)" if allow_inf else "finite number"))
    return float(v)


def optional_positive_float(name: str, v: Any, *, none: str = "") -> float | None:
    if v is None:
        return None
    if not is_number(v) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={v!r} must be None or a positive finite number{none}")
    return float(v)


def non_negative_float(name: str, v: Any) -> float:
    if not is_number(v) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={v!r} must be a finite number >= 0")
    return float(v)


def finite(name: str, v: Any, *, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    if not is_number(v) or not math.isfinite(v):
        raise ValueError(f"{name}={v!r} must be {'None or ' if optional else ''}a finite number")
    return float(v)


def in_range(name: str, v: Any, lo: float, hi: float, *, hi_open: bool = False, lo_open: bool = False,
             optional: bool = False) -> float | None:
    """A finite number in [lo, hi] (``lo_open`` / ``hi_open`` exclude an end); None if ``optional``."""
    if v is None and optional:
        return None
    ok = is_number(v) and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}={v!r} must be {'None or ' if optional else ''}a number in {interval}")
    return float(v)


def probability(name: str, v: Any) -> float:
    return in_range(name, v, 0.0, 1.0)  # type: ignore[return-value]


def boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name}={v!r} must be true or false")
    return v


def optional_boolean(name: str, v: Any, *, none: str = "") -> bool | None:
    if v is not None and not isinstance(v, bool):
        raise ValueError(f"{name}={v!r} must be true, false or None{none}")
    return v


def norm(name: str, v: Any) -> str:
    """A threat-model norm (:data:`NORMS`): the one check every floor uses."""
    return one_of(name, v, NORMS, what="a threat model")


def one_of(name: str, v: Any, valid: Iterable[Any], *, what: str = "a valid value") -> Any:
    valid = tuple(valid)
    if v not in valid:
        raise ValueError(f"{name}={v!r} is not {what}; valid: {', '.join(map(str, valid))}")
    return v


def non_empty_str(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{name}={v!r} must be a non-empty string")
    return v


def optional_str(name: str, v: Any) -> str | None:
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise ValueError(f"{name}={v!r} must be None or a non-empty string")
    return v


def text(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{name}={v!r} must be a string")
    return v


# ---------------------------------------------------------------------------------------------
# argparse types: parsed at the command line, reported as one line by the console script
# ---------------------------------------------------------------------------------------------
def path_arg(value: str) -> str:
    """``type=`` of path options: an empty path would silently mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"must be a non-empty path, got {value!r}")
    return value


def fraction(text: str) -> float:
    """``"0.5"``, ``"1e-3"`` or ``"8/255"`` as a float, parsed exactly (never ``eval``-ed); nan when
    the text is not a finite number or fraction (callers word the error). Python's digit separators
    are not numbers here: ``"1_0"`` is nan, never 10."""
    from fractions import Fraction

    s = str(text).strip()
    if "_" in s:
        return math.nan
    try:
        return float(Fraction(s))
    except (ValueError, ZeroDivisionError, OverflowError):
        return math.nan


def number_arg(value: str) -> float:
    """``type=`` of float options: a finite number, fractions such as ``8/255`` included."""
    v = fraction(value)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number such as 0.5 or 8/255, got {value!r}")
    return v


def int_arg(value: str) -> int:
    """``type=`` of integer options: digits with an optional sign (``1_0`` is refused, not read as 10)."""
    s = str(value).strip()
    if "_" in s:
        raise argparse.ArgumentTypeError(f"must be an integer without '_' separators, got {value!r}")
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None


def nonempty_arg(value: str) -> str:
    """``type=`` of name options (``--data``, ``--device``, ``--preset``): an empty value is not a default."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"must not be empty, got {value!r}")
    return value


__all__ = ["SEED_MAX", "boolean", "finite", "fraction", "in_range", "int_at_least", "is_int", "is_number", "non_empty_str",
           "non_negative_float",
           "non_negative_int", "nonempty_arg", "number_arg", "one_of", "optional_boolean", "optional_positive_float",
           "optional_positive_int", "optional_str", "path_arg", "positive_float", "positive_int", "probability",
           "seed", "text"]
