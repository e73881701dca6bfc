"""Sharded, hash-checked, resumable storage for constructed datasets (D_R, D_NR, D_rand, D_det).

Layout of one dataset folder::

    <root>/manifest.json        every setting, seed, source-model hash, counts, storage precision,
                                and (once complete) the sha256 of every shard + sanity metrics
    <root>/shard-00000.bin      the examples [0, shard_size) of the dataset
    <root>/shard-00000.json     sidecar: index, range, sha256, size, seed, wall time (written
                                atomically *after* the shard, so its presence marks the shard done)
    ...

A shard file is a small header (magic ``RFSHARD1``, a JSON list of array names) followed by the
arrays in NumPy ``.npy`` format (``allow_pickle=False``): ``x`` (images in the storage precision),
``y`` (int64 labels) and per-example sanity arrays (``aux/<name>``). The encoding is a pure
function of the arrays, so a shard built twice with the same per-shard seed is byte-identical.

Resumability: per-shard seeds come from ``(seed, shard index)`` through :func:`shard_seed`, never
from a running RNG, so building shard ``i`` does not depend on which shards were built before.
A restarted construction lists the shards whose sidecar exists and whose bytes still hash to the
recorded sha256 (:meth:`ShardedDatasetWriter.completed`) and builds only the others.

Tamper detection: :func:`load_constructed` checks every shard's size (a short file is reported as
truncated) and sha256 (a modified file is reported as tampered) against the manifest before
decoding anything; the manifest's own body against its ``body_sha256`` (an edited manifest is
reported as edited, naming what no longer matches); and, once decoded, what the manifest says
against what the shards hold: the content hash, the label histogram and the sanity metrics are
recomputed, labels must lie in [0, C) and images be finite in [0, 1].

Storage precision is a recorded choice: ``float32`` (exact), ``float16`` (relative error 2^-11,
i.e. at most ~2.4e-4 per pixel in [0, 1]) or ``uint8`` (steps of 1/255 per pixel: rounding moves
each pixel by up to 0.002, which for a 3072-pixel CIFAR image is an l2 change of up to ~0.11 and
can wipe out a large part of an eps=0.5 perturbation's effect; the paper's own release is float).

:func:`load_released` reads the authors' released format (MadryLab/constructed-datasets:
``<folder>/CIFAR_ims`` and ``<folder>/CIFAR_lab``, each a ``torch.save``-d list of tensor chunks).
"""

from __future__ import annotations

import io
import json
import logging
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from empirical.settings import check_storage
from foundation.records import atomic_write_bytes, atomic_write_json, bytes_sha256, file_sha256, json_sha256, to_jsonable

log = logging.getLogger(__name__)

DATASET_FORMAT = "robust-features/constructed-dataset/v1"
MANIFEST_NAME = "manifest.json"
_MAGIC = b"RFSHARD1"
_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


# --------------------------------------------------------------------------------------------
# seeds, hashing, encoding
# --------------------------------------------------------------------------------------------
def shard_seed(seed: int, index: int) -> int:
    """The seed of shard ``index``: a 63-bit integer derived from ``(seed, index)`` only.

    Uses NumPy's ``SeedSequence`` (hash-based entropy mixing), so neighbouring shards and
    neighbouring base seeds get unrelated streams, and the value never depends on how many
    shards were built before (the property resumability rests on).
    """
    if int(seed) < 0:
        raise ValueError(f"seed={seed} must be a non-negative integer")
    if int(index) < 0:
        raise ValueError(f"shard index={index} must be a non-negative integer")
    words = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def num_shards(num_examples: int, shard_size: int) -> int:
    """How many shards of ``shard_size`` examples hold ``num_examples`` (the last may be short)."""
    return -(-int(num_examples) // int(shard_size))


def shard_generator(seed: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`shard_seed`."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(shard_seed(seed, index))
    return gen


def encode_images(x: torch.Tensor, storage: str) -> np.ndarray:
    """Images in [0, 1] (any float dtype) -> the stored array (uint8 rounds to k/255)."""
    check_storage(storage)
    if not torch.is_floating_point(x):
        raise ValueError(f"images must be a float tensor in [0, 1]; got dtype {x.dtype}")
    a = x.detach().to("cpu", torch.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.numel() else (0.0, 1.0)
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"images must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]")
    a = a.clamp(0, 1).numpy()
    if storage == "uint8":
        return np.rint(a * 255.0).astype(np.uint8)
    return np.ascontiguousarray(a.astype(_NP_DTYPES[storage]))


def decode_images(a: np.ndarray) -> torch.Tensor:
    """Stored array -> float32 tensor in [0, 1]."""
    if a.dtype == np.uint8:
        return torch.from_numpy(a.astype(np.float32) / 255.0)
    return torch.from_numpy(a.astype(np.float32))


def quantize(x: torch.Tensor, storage: str) -> torch.Tensor:
    """What the images become after a storage round trip (for sanity metrics on stored data)."""
    return decode_images(encode_images(x, storage)).to(x.device)


def encode_shard(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic byte encoding of named arrays: magic, header, then ``.npy`` blobs."""
    names = list(arrays)
    header = json.dumps(names).encode()
    buf = io.BytesIO()
    buf.write(_MAGIC)
    buf.write(struct.pack("<I", len(header)))
    buf.write(header)
    for name in names:
        arr = np.asarray(arrays[name])
        if arr.dtype == object:
            raise ValueError(f"array {name!r} has dtype object; only numeric arrays can be stored")
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def decode_shard(data: bytes, *, where: str = "shard") -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_shard`; a malformed file raises ``ValueError`` naming ``where``."""
    if data[: len(_MAGIC)] != _MAGIC:
        raise ValueError(f"{where} is not a robust-features shard (bad magic {data[:8]!r}, expected {_MAGIC!r})")
    try:
        (n,) = struct.unpack("<I", data[len(_MAGIC) : len(_MAGIC) + 4])
        start = len(_MAGIC) + 4
        names = json.loads(data[start : start + n].decode())
        buf = io.BytesIO(data[start + n :])
        out = {name: np.load(buf, allow_pickle=False) for name in names}
    except (ValueError, EOFError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} is corrupt or truncated and cannot be decoded: {exc}") from None
    if buf.read(1):
        raise ValueError(f"{where} has trailing bytes after its last array")
    return out


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``["settings.eps 1.0 -> 0.9", ...]``: the leaves where two JSON mappings differ."""
    out: list[str] = []
    for k in dict.fromkeys([*new, *old]):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


# --------------------------------------------------------------------------------------------
# writer (resumable)
# --------------------------------------------------------------------------------------------
def _shard_name(index: int) -> str:
    return f"shard-{index:05d}"


@dataclass
class ShardedDatasetWriter:
    """Writes one constructed dataset as shards + manifest, resuming an interrupted build.

    ``settings`` is everything that determines the dataset's content (construction settings,
    source checkpoint hash, base dataset, ...). Opening a folder that holds a manifest with
    different settings, seed, size or storage raises ``ValueError`` listing the differences,
    so a restart can never mix two constructions.
    """

    root: Path
    name: str
    kind: str
    num_examples: int
    shard_size: int
    storage: str
    seed: int
    image_shape: tuple[int, ...]
    num_classes: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    write_manifest: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        check_storage(self.storage)
        if int(self.num_examples) < 1:
            raise ValueError(f"num_examples={self.num_examples} must be >= 1")
        if int(self.shard_size) < 1:
            raise ValueError(f"shard_size={self.shard_size} must be >= 1")
        if int(self.num_classes) < 2:
            raise ValueError(f"num_classes={self.num_classes} must be >= 2")
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.root.mkdir(parents=True, exist_ok=True)
        identity = self._identity()
        path = self.root / MANIFEST_NAME
        if path.exists():
            old = json.loads(path.read_text())
            old_identity = {k: old.get(k) for k in identity}
            if old_identity != to_jsonable(identity):
                diffs = differences(old_identity, to_jsonable(identity))
                raise ValueError(
                    f"{self.root} already holds a dataset built with different "
                    f"{', '.join(dict.fromkeys(d.split(' ', 1)[0].split('.', 1)[0] for d in diffs))} "
                    f"({'; '.join(diffs)}); use another folder, or delete it to rebuild"
                )
        elif self.write_manifest:
            atomic_write_json(path, {**identity, "complete": False})

    # what a restart must agree with
    def _identity(self) -> dict[str, Any]:
        return {
            "format": DATASET_FORMAT,
            "name": self.name,
            "kind": self.kind,
            "num_examples": int(self.num_examples),
            "shard_size": int(self.shard_size),
            "num_shards": self.num_shards,
            "storage": self.storage,
            "seed": int(self.seed),
            "image_shape": list(self.image_shape),
            "num_classes": int(self.num_classes),
            "settings": to_jsonable(dict(self.settings)),
            "source": to_jsonable(dict(self.source)),
        }

    @property
    def num_shards(self) -> int:
        return num_shards(self.num_examples, self.shard_size)

    def shard_range(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.num_shards:
            raise ValueError(f"shard index={index} must lie in [0, {self.num_shards})")
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.num_examples)

    def _entry(self, index: int) -> dict[str, Any] | None:
        side = self.root / f"{_shard_name(index)}.json"
        if not side.exists():
            return None
        try:
            entry = json.loads(side.read_text())
        except json.JSONDecodeError:
            return None
        data_path = self.root / entry.get("file", "")
        if not data_path.is_file() or data_path.stat().st_size != entry.get("bytes"):
            log.warning("shard %d of %s is missing or truncated; it will be rebuilt", index, self.root)
            return None
        if file_sha256(data_path) != entry.get("sha256"):
            log.warning("shard %d of %s does not match its sha256; it will be rebuilt", index, self.root)
            return None
        return entry

    def completed(self) -> list[int]:
        """Indices of shards already written and still intact (size and sha256 checked)."""
        return [i for i in range(self.num_shards) if self._entry(i) is not None]

    def is_complete(self) -> bool:
        path = self.root / MANIFEST_NAME
        if not path.exists():
            return False
        return bool(json.loads(path.read_text()).get("complete")) and len(self.completed()) == self.num_shards

    def write_shard(self, index: int, x: torch.Tensor, y: torch.Tensor,
                    aux: Mapping[str, Any] | None = None, *, wall_seconds: float | None = None) -> dict[str, Any]:
        """Encode and atomically write shard ``index`` and then its sidecar; return the sidecar."""
        start, stop = self.shard_range(index)
        n = stop - start
        if tuple(x.shape) != (n, *self.image_shape):
            raise ValueError(f"shard {index} images have shape {tuple(x.shape)}; expected {(n, *self.image_shape)}")
        yy = y.detach().to("cpu", torch.int64).numpy()
        if yy.shape != (n,):
            raise ValueError(f"shard {index} labels have shape {yy.shape}; expected ({n},)")
        if n and (yy.min() < 0 or yy.max() >= self.num_classes):
            raise ValueError(f"shard {index} labels must lie in [0, {self.num_classes}); got [{yy.min()}, {yy.max()}]")
        arrays: dict[str, np.ndarray] = {"x": encode_images(x, self.storage), "y": yy}
        for key, value in (aux or {}).items():
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if arr.shape[:1] != (n,):
                raise ValueError(f"aux array {key!r} of shard {index} has shape {arr.shape}; expected leading dim {n}")
            arrays[f"aux/{key}"] = arr
        data = encode_shard(arrays)
        fname = f"{_shard_name(index)}.bin"
        atomic_write_bytes(self.root / fname, data)
        entry = {
            "index": index,
            "file": fname,
            "start": start,
            "stop": stop,
            "count": n,
            "bytes": len(data),
            "sha256": bytes_sha256(data),
            "seed": shard_seed(self.seed, index),
            "arrays": list(arrays),
            "wall_seconds": wall_seconds,
        }
        atomic_write_json(self.root / f"{_shard_name(index)}.json", entry)
        return entry

    def finalize(self, *, metrics: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict:
        """Write the complete manifest (all shard hashes + sanity metrics). All shards must exist."""
        entries = []
        for i in range(self.num_shards):
            e = self._entry(i)
            if e is None:
                raise ValueError(f"cannot finalize {self.root}: shard {i} of {self.num_shards} is missing")
            entries.append({k: e[k] for k in ("index", "file", "start", "stop", "count", "bytes", "sha256", "seed")})
        labels = np.zeros(self.num_classes, dtype=np.int64)
        for e in entries:
            arrs = decode_shard((self.root / e["file"]).read_bytes(), where=str(self.root / e["file"]))
            labels += np.bincount(arrs["y"], minlength=self.num_classes)
        manifest = {
            **self._identity(),
            "complete": True,
            "shards": entries,
            "content_sha256": content_sha256(entries),
            "label_histogram": labels.tolist(),
            "metrics": to_jsonable(dict(metrics or {})),
            **to_jsonable(dict(extra or {})),
        }
        manifest = json.loads(json.dumps(to_jsonable(manifest)))       # the body as it will read back
        manifest["body_sha256"] = manifest_body_sha256(manifest)
        if self.write_manifest:
            atomic_write_json(self.root / MANIFEST_NAME, manifest)
        return manifest


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConstructedDataset:
    """A loaded constructed dataset: float32 images in [0, 1], int64 labels, per-example aux."""

    x: torch.Tensor
    y: torch.Tensor
    aux: dict[str, torch.Tensor]
    manifest: dict[str, Any]
    root: Path

    @property
    def content_sha256(self) -> str:
        return str(self.manifest["content_sha256"])

    def __len__(self) -> int:
        return int(self.y.shape[0])


class DatasetEdited(ValueError):
    """A dataset folder says something its content contradicts: its manifest was edited after it
    was written (body hash, content hash, label histogram, metrics), or its shards hold labels out
    of range or pixels that are not finite in [0, 1]. Not repaired silently: the workspace refuses
    it (``--overwrite`` rebuilds it)."""


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a constructed dataset: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path} has format {fmt!r}; expected {DATASET_FORMAT!r}")
    return manifest


def manifest_body_sha256(manifest: Mapping[str, Any]) -> str:
    """The sha256 of a manifest's canonical JSON without its own ``body_sha256`` field."""
    return json_sha256({k: v for k, v in manifest.items() if k != "body_sha256"})


def manifest_edited(manifest: Mapping[str, Any]) -> bool:
    """True when a complete manifest's body no longer hashes to its ``body_sha256`` (manifests
    written before the field existed have none: they are checked by content alone)."""
    return "body_sha256" in manifest and manifest["body_sha256"] != manifest_body_sha256(manifest)


def content_sha256(entries: Sequence[Mapping[str, Any]]) -> str:
    """A dataset's content hash: the sha256 of its shards' sha256s in order."""
    return bytes_sha256("".join(str(e["sha256"]) for e in entries).encode())


def summarize_aux_arrays(cols: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Dataset-level sanity metrics from per-example aux arrays: booleans give a rate
    (``<name>_rate``); numbers mean / median / max (indices, labels and ``orig*`` are skipped)."""
    out: dict[str, float] = {}
    for k in sorted(cols):
        a = np.asarray(cols[k])
        if a.dtype == np.bool_:
            out[f"{k}_rate"] = float(a.mean())
        elif k.endswith("index") or k.endswith("label") or k.startswith("orig"):
            continue
        else:
            a = a.astype(np.float64)
            out[f"{k}_mean"] = float(a.mean())
            out[f"{k}_median"] = float(np.median(a))
            out[f"{k}_max"] = float(a.max())
    return out


def verify_constructed(root: str | Path) -> dict[str, Any]:
    """Check a dataset folder without decoding it: complete manifest whose body is unedited, every
    shard's size and sha256, the content hash recomputed from the shards' hashes.

    Returns the manifest; raises ``ValueError`` (truncated / tampered / edited / incomplete) or
    ``FileNotFoundError`` (missing shard) with the path.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if not manifest.get("complete"):
        raise ValueError(f"{root} holds an incomplete construction; re-run the same command to resume it")
    if manifest_edited(manifest):
        raise DatasetEdited(f"{root / MANIFEST_NAME} was edited after it was written (its body no longer hashes to its "
                         "body_sha256)")
    total = 0
    for e in manifest["shards"]:
        path = root / e["file"]
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in the manifest is missing")
        size = path.stat().st_size
        if size != e["bytes"]:
            raise ValueError(f"shard {path} is truncated or resized: {size} bytes, manifest says {e['bytes']}")
        digest = file_sha256(path)
        if digest != e["sha256"]:
            raise ValueError(f"shard {path} was tampered with: sha256 {digest[:16]}... != manifest {e['sha256'][:16]}...")
        total += int(e["count"])
    if total != manifest["num_examples"]:
        raise ValueError(f"{root}: shards hold {total} examples, manifest says {manifest['num_examples']}")
    recomputed = content_sha256(manifest["shards"])
    if manifest.get("content_sha256") != recomputed:
        raise DatasetEdited(f"{root / MANIFEST_NAME}: content_sha256 {str(manifest.get('content_sha256'))[:16]}... does "
                         f"not match its shards ({recomputed[:16]}...): it was edited after it was written")
    return manifest


def _check_content(root: Path, manifest: Mapping[str, Any], x: torch.Tensor, y: torch.Tensor,
                   aux: Mapping[str, np.ndarray]) -> None:
    """What the manifest says against what the shards hold (one ``ValueError`` naming the field)."""
    where = root / MANIFEST_NAME
    c = int(manifest["num_classes"])
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
        raise DatasetEdited(f"{root} holds labels in [{int(y.min())}, {int(y.max())}]; a dataset of {c} classes needs "
                         f"labels in [0, {c})")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise DatasetEdited(f"{root} holds non-finite pixels (NaN or inf); images must be finite in [0, 1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DatasetEdited(f"{root} holds pixels in [{lo:.4g}, {hi:.4g}]; images must lie in [0, 1]")
    hist = torch.bincount(y, minlength=c).tolist()
    if "label_histogram" in manifest and list(manifest["label_histogram"]) != hist:
        raise DatasetEdited(f"{where}: label_histogram {manifest['label_histogram']} does not match its shards ({hist}): "
                         "it was edited after it was written")
    if "metrics" in manifest:
        recomputed = summarize_aux_arrays(aux)
        told = manifest["metrics"] or {}

        def same(k: str) -> bool:
            a, b = told.get(k), recomputed.get(k)
            if b is not None and not math.isfinite(b):
                return a is None                       # JSON has no NaN / inf: written as null
            return (isinstance(a, (int, float)) and not isinstance(a, bool) and b is not None
                    and math.isclose(float(a), b, rel_tol=1e-12, abs_tol=1e-15))

        bad = [k for k in sorted(set(told) | set(recomputed)) if not same(k)]
        if bad:
            k = bad[0]
            raise DatasetEdited(f"{where}: metrics.{k} {told.get(k)!r} does not match its shards ({recomputed.get(k)!r}): "
                             "it was edited after it was written")


def load_constructed(root: str | Path, *, verify: bool = True) -> ConstructedDataset:
    """Load a constructed dataset. With ``verify`` (the default): every shard's size and sha256, the
    manifest's body and content hash first (:func:`verify_constructed`), then what the manifest
    says against what the shards hold (labels in range, finite pixels in [0, 1], the label
    histogram and the sanity metrics recomputed)."""
    root = Path(root)
    manifest = verify_constructed(root) if verify else read_manifest(root)
    xs, ys, aux = [], [], {}
    for e in manifest["shards"]:
        path = root / e["file"]
        arrs = decode_shard(path.read_bytes(), where=str(path))
        if arrs["x"].shape[0] != e["count"] or arrs["y"].shape[0] != e["count"]:
            raise ValueError(f"shard {path} holds {arrs['x'].shape[0]} examples; manifest says {e['count']}")
        xs.append(decode_images(arrs["x"]))
        ys.append(torch.from_numpy(arrs["y"].astype(np.int64)))
        for k, v in arrs.items():
            if k.startswith("aux/"):
                aux.setdefault(k[4:], []).append(np.array(v))
    x, y = torch.cat(xs), torch.cat(ys)
    cols = {k: np.concatenate(v) for k, v in aux.items()}
    if verify:
        _check_content(root, manifest, x, y, cols)
    return ConstructedDataset(x=x, y=y, aux={k: torch.from_numpy(v) for k, v in cols.items()}, manifest=manifest,
                              root=root)


# --------------------------------------------------------------------------------------------
# the authors' released format
# --------------------------------------------------------------------------------------------
RELEASED_FOLDERS: dict[str, str] = {
    "d_robust_CIFAR": "D_R",
    "d_non_robust_CIFAR": "D_NR",
    "drand_CIFAR": "D_rand",
    "ddet_CIFAR": "D_det",
}


def _load_chunks(path: Path, what: str) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; the released layout is <folder>/CIFAR_ims and <folder>/CIFAR_lab "
            "(each a torch.save-d list of tensor chunks), e.g. d_robust_CIFAR/CIFAR_ims"
        )
    from empirical.checkpoint import load_torch_file

    obj = load_torch_file(path, what=f"released {what} file",
                          advice="fetch the folder again from MadryLab/constructed-datasets")
    if isinstance(obj, torch.Tensor):
        chunks: Sequence[torch.Tensor] = [obj]
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(c, torch.Tensor) for c in obj):
        chunks = obj
    else:
        raise ValueError(f"{path} must hold a tensor or a non-empty list of tensor chunks ({what}); got {type(obj).__name__}")
    return torch.cat(list(chunks))


def load_released(folder: str | Path, *, prefix: str = "CIFAR") -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset in the authors' release format (MadryLab/constructed-datasets).

    ``<folder>/<prefix>_ims`` is a ``torch.save``-d list of float image chunks (N_i, C, H, W) in
    [0, 1]; ``<folder>/<prefix>_lab`` the matching list of label chunks. Returns
    ``(x float32, y int64)`` after checking shapes, value range and that the counts agree.
    Loaded with ``weights_only=True`` (no pickled code is executed).
    """
    folder = Path(folder)
    x = _load_chunks(folder / f"{prefix}_ims", "images")
    y = _load_chunks(folder / f"{prefix}_lab", "labels")
    if x.ndim != 4:
        raise ValueError(f"{folder}/{prefix}_ims must hold NCHW images; got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.float()
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise ValueError(f"{folder}/{prefix}_ims values lie in [{float(x.min()):.3g}, {float(x.max()):.3g}]; expected [0, 1]")
    y = y.reshape(-1).to(torch.int64)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{folder}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{folder}/{prefix}_lab holds negative labels (min {int(y.min())})")
    return x, y
