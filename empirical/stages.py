"""The stage store: one rule for whether a cached artifact is still valid, and the stage timings.

A *stage* is one unit of cached work under a workspace folder: a trained model
(``models/<name>/stage.json``), a constructed dataset (``datasets/<kind>/stage.json``) or an
evaluation (``evals/<name>.json``, which is its own artifact). Its stage record is a JSON file
holding

* ``key`` - the sha256 (:func:`foundation.records.json_sha256`) of every input that
  determines the result (config, seeds, the sha256 of upstream artifacts);
* ``artifacts`` - ``{path relative to the record's folder: sha256}`` of what the stage produced;
* ``complete`` - False while a stage is under way (a model whose training has started: its
  ``latest.pt`` may be resumed), True once its artifacts are written;
* ``git_commit`` / ``git_dirty`` / ``written_at`` / ``wall_seconds`` - provenance and timing;
* whatever the stage adds (training history, metrics, masks);
* ``body_sha256`` - the sha256 of the canonical JSON of everything above, so an edit of the record
  itself (a metric, a mask, a snapshot) is seen, not trusted.

**The validity rule** (:meth:`StageStore.check`, the only place it is written): a stage is
``valid`` when its record exists and parses, its body still hashes to its ``body_sha256``, its
key equals the key computed from the current inputs, it is complete, and every artifact it lists
exists with the recorded sha256. A record whose body was edited is ``stale`` with
``edited=True`` ("edited after it was written"), never taken for a missing one. A record
with the same key that is not complete is ``pending`` (resume it: training continues from its
``latest.pt``, a construction from its finished shards); any other record is ``stale`` with the
reason (rebuild it, or - for datasets, which are never replaced behind the user's back - refuse
naming the differing fields). The commit is recorded, not compared: a new commit that changes no
input does not invalidate finished work.

Records written before this module (``stage.json`` with ``checkpoint`` + ``sha256``, eval files
without ``complete``, records without ``body_sha256``) are read by the same rule. What a record
*says* is checked against what it describes by its user (the workspace: a mask's mean against its
accuracy, a manifest's label histogram against its shards), see :mod:`empirical.workspace`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.records import atomic_write_json, file_sha256, git_state, json_sha256, to_jsonable, utc_now

STAGE_SCHEMA = "robust-features/stage/v1"
STATES: tuple[str, ...] = ("missing", "valid", "pending", "stale")


@dataclass(frozen=True)
class StageStatus:
    """What :meth:`StageStore.check` found: ``state`` (one of :data:`STATES`), the record (None
    when missing or unreadable) and, when stale, why."""

    state: str
    record: dict[str, Any] | None = None
    reason: str = ""
    edited: bool = False          # the record's body no longer hashes to its body_sha256

    @property
    def valid(self) -> bool:
        return self.state == "valid"

    @property
    def artifacts(self) -> dict[str, str]:
        """``{relative path: sha256}`` the record lists ({} without a record)."""
        return _artifacts(self.record or {})


def body_sha256(record: Mapping[str, Any]) -> str:
    """The sha256 of a record's canonical JSON without its own ``body_sha256`` field."""
    return json_sha256({k: v for k, v in record.items() if k != "body_sha256"})


def _artifacts(record: Mapping[str, Any]) -> dict[str, str]:
    arts = record.get("artifacts")
    if isinstance(arts, Mapping):
        return {str(k): str(v) for k, v in arts.items()}
    if "checkpoint" in record and "sha256" in record:        # model stages written before the store
        return {str(record["checkpoint"]): str(record["sha256"])}
    return {}


@dataclass
class StageStore:
    """Stage records under ``root`` and the wall time of every stage run or skipped."""

    root: Path
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ---- where
    def model_record(self, name: str) -> Path:
        return self.root / "models" / name / "stage.json"

    def dataset_record(self, kind: str) -> Path:
        return self.root / "datasets" / kind / "stage.json"

    def eval_record(self, name: str) -> Path:
        return self.root / "evals" / f"{name}.json"

    # ---- the rule
    def check(self, path: str | Path, key: str) -> StageStatus:
        """The validity rule (module docstring) for the stage recorded at ``path``."""
        path = Path(path)
        if not path.is_file():
            return StageStatus("missing")
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return StageStatus("stale", None, f"unreadable stage record ({exc.__class__.__name__})")
        if not isinstance(record, dict):
            return StageStatus("stale", None, "the stage record is not a JSON object")
        if "body_sha256" in record and record["body_sha256"] != body_sha256(record):
            return StageStatus("stale", record, f"{path.name} was edited after it was written (its body no longer "
                               "hashes to its body_sha256)", edited=True)
        if record.get("key") != key:
            return StageStatus("stale", record, "its inputs changed (key differs)")
        if record.get("complete", True) is False:
            return StageStatus("pending", record)
        for rel, sha in _artifacts(record).items():
            art = path.parent / rel
            if not art.is_file():
                return StageStatus("stale", record, f"{rel} is missing")
            if file_sha256(art) != sha:
                return StageStatus("stale", record, f"{rel} does not match its recorded sha256")
        return StageStatus("valid", record)

    def save(self, path: str | Path, key: str, payload: Mapping[str, Any] | None = None, *,
             artifacts: Sequence[str] = (), complete: bool = True,
             wall_seconds: float | None = None) -> dict[str, Any]:
        """Write the stage record at ``path`` (atomically): ``payload`` plus the key, the sha256 of
        each artifact (paths relative to the record's folder), completeness, commit and timing."""
        path = Path(path)
        commit, dirty = git_state()
        arts = {str(rel): file_sha256(path.parent / rel) for rel in artifacts}
        record = {"schema": STAGE_SCHEMA, "key": key, **dict(payload or {}), "artifacts": arts,
                  "complete": bool(complete), "git_commit": commit, "git_dirty": dirty, "written_at": utc_now(),
                  "wall_seconds": wall_seconds}
        record = json.loads(json.dumps(to_jsonable(record)))      # the body as it will read back
        record["body_sha256"] = body_sha256(record)
        atomic_write_json(path, record)
        return record

    # ---- timings
    def note(self, stage: str, seconds: float, skipped: bool, **extra: Any) -> None:
        """Record one stage's wall seconds and whether it was skipped (``stage#2`` on a repeat)."""
        key, k = stage, 2
        while key in self.timings:
            key, k = f"{stage}#{k}", k + 1
        self.timings[key] = {"wall_seconds": float(seconds), "skipped": bool(skipped), **extra}

    def timer(self) -> _Timer:
        return _Timer(self)


class _Timer:
    """``t = store.timer(); ...; t.done("train:x", skipped=False)``: the seconds since creation."""

    def __init__(self, store: StageStore) -> None:
        self.store, self.t0 = store, time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def done(self, stage: str, skipped: bool, **extra: Any) -> None:
        self.store.note(stage, self.seconds, skipped, **extra)


__all__ = ["STAGE_SCHEMA", "STATES", "StageStatus", "StageStore", "body_sha256"]
