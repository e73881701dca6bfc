"""Golden records: does the code reproduce the records that claim to come from it?

A curated record (``paper_figures/results/<preset>/``) or a golden one (``tests/golden/<preset>/``,
the smoke presets, rebuilt by a test in CI) is reproduced when running its preset again gives
the same numbers: :func:`compare` puts two folders of records side by side, number for number,
leaving out only what measures the machine rather than the science (wall seconds, images/s,
timings, provenance, the run's own folder paths). What is compared, per record:

* ``constructions.json``, ``fig2.json``, ``table1.json``, ``fig3.json``, ``more_constructions.json``:
  every metric (accuracies, robust accuracies after each attack, gap fractions with their standard
  errors, sanity flags, transfer rates, construction sanity metrics, label histograms);
* ``fig2.json``'s ``models`` (the sha256 of every checkpoint) and ``constructions.json``'s datasets'
  ``content_sha256``: the models and datasets themselves, bit for bit;
* ``reproduce.json``'s claims (met and value) and the synthetic ground truth.

:func:`run_check` (``robust-features reproduce --preset P --check DIR``) reruns the preset into a
scratch folder, compares, and writes ``DIR/check.json``: which commit made each record, the commit
that checked it, whether it reproduced and every difference.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORDS: tuple[str, ...] = ("constructions.json", "fig2.json", "table1.json", "fig3.json",
                            "more_constructions.json", "reproduce.json")
#: keys that measure the machine, not the science (left out of the comparison, at any depth)
MACHINE = re.compile(r"(^|_)(seconds|wall_seconds|images_per_second|stages|total_wall_seconds)$|^seconds_")


def _science(obj: Any) -> Any:
    """``obj`` without the keys :data:`MACHINE` matches (recursively)."""
    if isinstance(obj, Mapping):
        return {k: _science(v) for k, v in obj.items() if not MACHINE.search(str(k))}
    if isinstance(obj, list):
        return [_science(v) for v in obj]
    return obj


def comparable(name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of record ``name`` a reproduction must give again."""
    out: dict[str, Any] = {"metrics": _science(record.get("metrics", {}))}
    if name == "fig2.json":
        out["models"] = record.get("models")
    if name == "constructions.json":
        out["datasets"] = {k: v.get("content_sha256") for k, v in (record.get("datasets") or {}).items()}
    if name == "reproduce.json":
        m = record.get("metrics", {})
        out["metrics"] = {k: m.get(k) for k in ("claims_met", "claims_value", "ground_truth")}
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every leaf where ``actual`` differs from ``expected``: ``["fig2.json metrics.std_D.clean 99.7 -> 98.1"]``."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        out: list[str] = []
        for k in dict.fromkeys([*expected, *actual]):
            if k not in actual:
                out.append(f"{path}{k} {expected[k]!r} -> (missing)")
            elif k not in expected:
                out.append(f"{path}{k} (missing) -> {actual[k]!r}")
            else:
                out += differences(expected[k], actual[k], f"{path}{k}.")
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (a, b) in enumerate(zip(expected, actual)) for d in differences(a, b, f"{path}{i}.")]
    return [] if _same(expected, actual) else [f"{path.rstrip('.')} {expected!r} -> {actual!r}"]


def compare(expected_dir: str | Path, actual_dir: str | Path) -> dict[str, Any]:
    """Compare the records of ``expected_dir`` with those of ``actual_dir``: ``{"differences": [...],
    "compared": [record names], "made_by": {record: commit}}``. A record present in one folder only
    is a difference."""
    from foundation.records import read_record

    expected_dir, actual_dir = Path(expected_dir), Path(actual_dir)
    diffs: list[str] = []
    compared: list[str] = []
    made_by: dict[str, Any] = {}
    for name in RECORDS:
        e, a = expected_dir / name, actual_dir / name
        if not e.is_file() and not a.is_file():
            continue
        if e.is_file() != a.is_file():
            diffs.append(f"{name} {'present' if e.is_file() else '(missing)'} -> {'present' if a.is_file() else '(missing)'}")
            continue
        exp, act = read_record(e), read_record(a)
        made_by[name] = {k: (exp.get("provenance") or {}).get(k) for k in ("git_commit", "git_dirty")}
        compared.append(name)
        diffs += differences(comparable(name, exp), comparable(name, act), f"{name} ")
    if not compared:
        raise ValueError(f"{expected_dir} holds none of the records {', '.join(RECORDS)}; nothing to compare")
    return {"differences": diffs, "compared": compared, "made_by": made_by}


def run_check(cfg: Any, committed: str | Path, *, scratch: str | Path, device: str = "cpu",
              progress: bool = False) -> dict[str, Any]:
    """Rerun preset ``cfg`` into ``scratch`` and compare it with the records in ``committed``;
    write ``committed/check.json`` (the verdict, every difference, which commit made each record
    and which checked it) and return it."""
    from empirical.reproduce import run_reproduce
    from foundation.records import utc_now, write_record

    committed, scratch = Path(committed), Path(scratch)
    if not committed.is_dir():
        raise ValueError(f"--check {committed} is not a folder of records")
    started, t0 = utc_now(), time.perf_counter()
    run_reproduce(cfg, out_dir=scratch, device=device, progress=progress, render=None)
    result = compare(committed, scratch / cfg.name)
    return write_record(committed / "check.json", experiment="empirical.check",
                        config={"preset": cfg.name, "records": str(committed), "rerun_in": str(scratch / cfg.name)},
                        metrics={"reproduced": not result["differences"], "n_differences": len(result["differences"])},
                        seeds={"seed": cfg.seed}, device=str(device), started_at=started, start_time=t0,
                        extra={"compared": result["compared"], "made_by": result["made_by"],
                               "differences": result["differences"]})


__all__ = ["MACHINE", "RECORDS", "compare", "comparable", "differences", "run_check"]
