"""The paper's four dataset constructions (Ilyas et al. 2019, sec. 3 and appendix C).

* ``D_R``  (GETROBUSTDATASET): for every training pair (x, y) draw another training image x' ~ D
  as the start and minimise ||g_R(z) - g_R(x)||_2 over z in [0, 1]^d with normalised-gradient
  l2 steps, g_R the penultimate representation of an adversarially trained model; keep y.
* ``D_NR``: the same with a standard model's representation.
* ``D_rand`` / ``D_det`` (GETNONROBUSTDATASET): targeted l2 PGD (eps = 0.5 on CIFAR-10) against a
  standard model toward t ~ Uniform(classes) (``D_rand``) or t = (y + 1) mod C (``D_det``);
  relabel with t.

Defaults follow the paper (docs/paper-notes.md sec. 2.2, 3.1, 6.3): start from a random training image,
unnormalised representation loss, last iterate (``use_best=False``); PGD starts at x (no random
start) and returns the best iterate (the ``robustness`` library defaults). The official
inversion notebook's variant (grey+noise start ``randn/20 + 0.5``, loss divided by ||g(x)||)
is ``RepresentationConfig(start="noise", normalize_loss=True)``. For ``D_rand`` the paper draws
t uniformly from all classes (t = y allowed); ``exclude_true_label=True`` draws t != y.

Their settings (:class:`RepresentationConfig`, :class:`TargetedConfig`) live in the torch-free
:mod:`empirical.settings`, their rows in the registry :mod:`empirical.constructions`. A builder
takes a :class:`BuildRequest` and returns a :class:`ConstructionResult`; every builder ends in
:func:`build_sharded`, i.e. :func:`construct_sharded`, which writes shards + a manifest via
:mod:`empirical.shards`: per-shard seeds derive from (seed, shard index), so an interrupted
build resumes at the first missing shard and yields byte-for-byte the dataset an uninterrupted
run gives. Sanity metrics (attack success on the source model, achieved l2 / linf distances,
final representation loss, label histogram) are measured on the *stored* images, i.e. after the
storage precision's rounding, and written into the manifest. The generator of each shard is a
callable, so the driver is tested with plain tensors and any model.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from empirical.evaluate import predict
from empirical.settings import STARTS, STORAGES, RepresentationConfig, TargetedConfig, check_storage
from empirical.shards import (
    ShardedDatasetWriter,
    decode_shard,
    summarize_aux_arrays,
    num_shards,
    quantize,
    shard_generator,
    shard_seed,
)
from empirical.threat import next_label
from foundation import checks as C
from foundation.locks import rank0_lock

REPRESENTATION_KINDS: tuple[str, ...] = ("D_R", "D_NR")
TARGET_RULES: dict[str, str] = {"D_rand": "uniform", "D_det": "next"}   # the targeted constructions' label rules


@dataclass(frozen=True)
class ShardOutput:
    """What a shard function returns: new images (float, [0, 1]), new labels, per-example aux."""

    x: torch.Tensor
    y: torch.Tensor
    aux: Mapping[str, torch.Tensor] = field(default_factory=dict)


# (index, x_shard, y_shard, example_indices, generator) -> ShardOutput
ShardFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], ShardOutput]
# (x_stored, x_orig, y_orig, y_new) -> per-example sanity arrays measured on the stored images
AssessFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class ConstructionResult:
    """Outcome of one (possibly resumed) construction."""

    root: Path
    manifest: dict[str, Any]
    built_shards: tuple[int, ...]
    reused_shards: tuple[int, ...]
    wall_seconds: float
    images_per_second: float | None   # over the shards built in this call (None if all reused)


@dataclass(frozen=True)
class BuildRequest:
    """What a construction's builder gets (:mod:`empirical.constructions`): where to write, with
    which settings, from which models and data, and how to report."""

    folder: Path
    kind: str
    settings: Any                            # the construction's settings (seed, shard_size, storage, ...)
    sources: Mapping[str, torch.nn.Module]   # source model name -> model (eval mode, on ``device``)
    x: torch.Tensor                          # the base training images (N, C, H, W) in [0, 1]
    y: torch.Tensor                          # their labels (N,)
    num_classes: int
    device: Any = "cpu"
    source: Mapping[str, Any] = field(default_factory=dict)   # the source models' identity (recorded)
    base: Mapping[str, Any] = field(default_factory=dict)     # the base dataset's identity (recorded)
    on_shard: Callable[[int, dict], None] | None = None       # called after each shard (tests: a crash)
    progress: bool = False
    dist_info: Any = None                    # empirical.distributed.DistInfo under torchrun

    @property
    def model(self) -> torch.nn.Module:
        """The first (for the paper's constructions, the only) source model."""
        return next(iter(self.sources.values()))


def build_sharded(req: BuildRequest, *, method: str, make_shard: ShardFn, assess: AssessFn | None = None,
                  ) -> ConstructionResult:
    """Build (or resume) ``req``'s dataset with :func:`construct_sharded`: the settings, seed, shard
    size and storage come from ``req.settings``, and the manifest records them with ``method``, the
    base dataset and the source models. Every construction's builder ends here."""
    s = req.settings
    settings = {"construction": req.kind, "method": method, **asdict(s), "base": dict(req.base)}
    return construct_sharded(
        req.folder, name=req.kind, kind=req.kind, x=req.x, y=req.y, num_classes=req.num_classes,
        make_shard=make_shard, assess=assess, seed=s.seed, shard_size=s.shard_size, storage=s.storage,
        settings=settings, source=req.source, on_shard=req.on_shard, progress=req.progress,
        dist_info=req.dist_info)


# --------------------------------------------------------------------------------------------
# the generic resumable driver
# --------------------------------------------------------------------------------------------
def construct_sharded(
    root: str | Path,
    *,
    name: str,
    kind: str,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    make_shard: ShardFn,
    assess: AssessFn | None = None,
    seed: int = 0,
    shard_size: int = 1000,
    storage: str = "float32",
    settings: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    on_shard: Callable[[int, dict], None] | None = None,
    dist_info: Any = None,
    progress: bool = False,
) -> ConstructionResult:
    """Build (or resume) a sharded dataset from ``make_shard`` applied to slices of (x, y).

    Shard ``i`` covers examples ``[i*shard_size, (i+1)*shard_size)``; its generator is seeded
    with :func:`empirical.shards.shard_seed` ``(seed, i)``. Shards already on disk and intact
    are reused. ``on_shard(i, sidecar)`` runs after each shard is written (tests raise from it
    to simulate a crash). Under ``torchrun`` pass ``dist_info`` (:mod:`empirical.distributed`):
    rank 0 opens the folder (checks it, writes the incomplete manifest) before any shard is
    written, rank r builds shards i with i % world == r, and rank 0 completes the manifest after
    a barrier.
    """
    t0 = time.perf_counter()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if storage not in STORAGES:
        check_storage(storage)
    distributed = dist_info is not None and getattr(dist_info, "is_distributed", False)
    is_main = dist_info.is_main if distributed else True
    owned: list[int] | None = None       # the shards this rank builds (None = all, single process)
    if distributed:
        from empirical import distributed as D

        C.positive_int("shard_size", shard_size)
        # the same ValueError on every rank, before anything is written, when world > number of shards
        owned = D.owned_shards(num_shards(x.shape[0], shard_size), dist_info)

    # one writer per dataset folder (rank 0 holds FOLDER/.lock; a second construction is refused)
    with rank0_lock(Path(root), dist_info if distributed else None, purpose=f"construct {name}"):
        open_writer = functools.partial(
            ShardedDatasetWriter, root=Path(root), name=name, kind=kind, num_examples=int(x.shape[0]),
            shard_size=shard_size, storage=storage, seed=seed, image_shape=tuple(x.shape[1:]),
            num_classes=num_classes, settings=dict(settings or {}), source=dict(source or {}),
            write_manifest=is_main)
        if owned is not None:
            writer, done, todo = _open_distributed(open_writer, owned, dist_info, root)
        else:
            writer = open_writer()
            done = set(writer.completed())
            todo = [i for i in range(writer.num_shards) if i not in done]
        built: list[int] = []
        build_seconds = 0.0
        built_examples = 0
        for i in _progress(todo, name, dist_info if distributed else None) if progress and is_main else todo:
            entry, seconds, count = _build_shard(writer, i, x, y, make_shard, assess, seed, storage)
            build_seconds += seconds
            built_examples += count
            built.append(i)
            if on_shard is not None:
                on_shard(i, entry)
        if not distributed:
            manifest, ips = _finalize(writer, built_examples=built_examples, build_seconds=build_seconds,
                                      built=len(built), reused=len(done))
        else:
            manifest, ips = _finalize_distributed(writer, dist_info, built_examples=built_examples,
                                                  build_seconds=build_seconds, built=len(built), reused=len(done))
        return ConstructionResult(
            root=Path(root), manifest=manifest, built_shards=tuple(built), reused_shards=tuple(sorted(done)),
            wall_seconds=time.perf_counter() - t0, images_per_second=ips,
        )


def _open_distributed(open_writer: Callable[[], ShardedDatasetWriter], owned: list[int], info: Any,
                      root: str | Path) -> tuple[ShardedDatasetWriter, set[int], list[int]]:
    """Open the folder under torchrun: (the writer, this rank's shards already intact, those to build).

    Rank 0 checks the folder and writes the (incomplete) manifest before any rank writes a
    shard, so a folder holding shards always holds the manifest that identifies them, even
    when a rank dies right after its first shard. The failure check is the barrier.
    """
    from empirical import distributed as D

    error: ValueError | None = None
    writer: ShardedDatasetWriter | None = None
    if info.is_main:
        try:
            writer = open_writer()
        except ValueError as exc:
            error = exc
    D.raise_if_any_rank_failed(error, info, f"rank 0 refused to open {root} for this construction (its "
                               "error names the reason, e.g. a folder built with other settings)", ValueError)
    if not info.is_main:
        writer = open_writer()
    assert writer is not None
    # each rank checks (sha256) only the shards it owns, not the whole dataset
    done = {i for i in owned if writer._entry(i) is not None}
    return writer, done, [i for i in owned if i not in done]


def _progress(todo: list[int], name: str, info: Any) -> Any:
    """A progress bar over the shards to build (rank 0 only; nothing when none is left)."""
    if not todo:
        return todo
    from tqdm.auto import tqdm

    desc = f"construct {name}" + (f" (rank 0 of {info.world_size})" if info is not None else "")
    return tqdm(todo, desc=desc, unit="shard", leave=False)


def _build_shard(writer: ShardedDatasetWriter, i: int, x: torch.Tensor, y: torch.Tensor, make_shard: ShardFn,
                 assess: AssessFn | None, seed: int, storage: str) -> tuple[dict, float, int]:
    """Make, round to ``storage``, assess and write shard ``i``: (its sidecar entry, seconds, examples)."""
    s0 = time.perf_counter()
    start, stop = writer.shard_range(i)
    xs, ys = x[start:stop], y[start:stop]
    idx = torch.arange(start, stop)
    out = make_shard(i, xs, ys, idx, shard_generator(seed, i))
    x_new = out.x.detach().float().cpu()
    y_new = out.y.detach().cpu().to(torch.int64)
    x_stored = quantize(x_new.clamp(0, 1), storage)
    aux = {k: v.detach().cpu() for k, v in out.aux.items()}
    if assess is not None:
        aux.update({k: v.detach().cpu() for k, v in assess(x_stored, xs.cpu(), ys.cpu(), y_new).items()})
    seconds = time.perf_counter() - s0
    entry = writer.write_shard(i, x_stored, y_new, aux, wall_seconds=seconds)
    return entry, seconds, stop - start


def _finalize(writer: ShardedDatasetWriter, *, built_examples: int, build_seconds: float, built: int,
              reused: int) -> tuple[dict[str, Any], float | None]:
    """Single process: the sanity metrics and this call's build statistics complete the manifest."""
    ips = built_examples / build_seconds if build_seconds > 0 else None
    extra = {"build": {"images_per_second_last_call": ips, "shards_built_last_call": built,
                       "shards_reused_last_call": reused}}
    return writer.finalize(metrics=summarize_aux(writer), extra=extra), ips


def _finalize_distributed(writer: ShardedDatasetWriter, info: Any, *, built_examples: int, build_seconds: float,
                          built: int, reused: int) -> tuple[dict[str, Any], float | None]:
    """After every rank has written its shards: rank 0 writes the manifest, every rank reads it back.

    The build statistics are summed over ranks (throughput = all images built / the slowest
    rank's build time). A failure while rank 0 finalizes is reported on every rank instead of
    leaving the others waiting at a barrier.
    """
    from empirical import distributed as D
    from empirical.shards import read_manifest

    # an all-reduce only completes once every rank has contributed, i.e. written all its shards
    sums = D.reduce_sums({"examples": built_examples, "built": built, "reused": reused}, info)
    slowest = D.reduce_max({"seconds": build_seconds}, info)["seconds"]
    ips = sums["examples"] / slowest if slowest > 0 else None
    failure: BaseException | None = None
    if info.is_main:
        try:
            extra = {"build": {"images_per_second_last_call": ips, "shards_built_last_call": int(sums["built"]),
                               "shards_reused_last_call": int(sums["reused"]), "world_size": info.world_size}}
            writer.finalize(metrics=summarize_aux(writer), extra=extra)
        except BaseException as exc:  # tell the other ranks, then re-raise below
            failure = exc
    D.raise_if_any_rank_failed(failure, info, f"rank 0 failed to write the manifest of {writer.root}; "
                               "see its error message")
    return read_manifest(writer.root), ips


def summarize_aux(writer: ShardedDatasetWriter) -> dict[str, float]:
    """Dataset-level sanity metrics from the per-example aux arrays of every shard
    (:func:`empirical.shards.summarize_aux_arrays`: rates of booleans, mean / median / max of numbers)."""
    cols: dict[str, list[np.ndarray]] = {}
    for i in range(writer.num_shards):
        path = writer.root / f"shard-{i:05d}.bin"
        arrs = decode_shard(path.read_bytes(), where=str(path))
        for k, v in arrs.items():
            if k.startswith("aux/"):
                cols.setdefault(k[4:], []).append(v)
    return summarize_aux_arrays({k: np.concatenate(parts) for k, parts in cols.items()})


# --------------------------------------------------------------------------------------------
# targets and starts
# --------------------------------------------------------------------------------------------
def targets_for(kind: str, y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None,
                *, exclude_true_label: bool = False) -> torch.Tensor:
    """Target labels by the kind's rule (:data:`TARGET_RULES`): ``D_det`` t = (y+1) mod C
    (:func:`empirical.threat.next_label`); ``D_rand`` t ~ U{0..C-1} (or U over t != y)."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be >= 2")
    if kind not in TARGET_RULES:
        raise ValueError(f"kind={kind!r} has no target rule; valid: {', '.join(TARGET_RULES)}")
    y = y.to(torch.int64)
    if TARGET_RULES[kind] == "next":
        return next_label(y, num_classes)
    if exclude_true_label:
        shift = torch.randint(1, num_classes, y.shape, generator=generator)
        return (y.cpu() + shift) % num_classes
    return torch.randint(0, num_classes, y.shape, generator=generator)


def start_points(rule: str, x_pool: torch.Tensor, index: torch.Tensor, shape: tuple[int, ...],
                 generator: torch.Generator, *, exclude_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting images for representation matching and the pool index used (-1 for noise).

    ``random_image``: x' drawn uniformly (with replacement) from ``x_pool``, the paper's
    x' ~ D; with ``exclude_self`` an example never starts from itself (redrawn). ``noise``: the
    official notebook's ``randn/20 + 0.5`` (clamped to [0, 1]).
    """
    n = index.shape[0]
    if rule == "noise":
        z = torch.randn((n, *shape[1:]), generator=generator) / 20 + 0.5
        return z.clamp(0, 1), torch.full((n,), -1, dtype=torch.int64)
    if rule != "random_image":
        raise ValueError(f"start={rule!r} is not a start rule; valid: {', '.join(STARTS)}")
    m = x_pool.shape[0]
    if exclude_self and m < 2:
        raise ValueError("exclude_self=True needs a pool of at least 2 images")
    j = torch.randint(0, m, (n,), generator=generator)
    if exclude_self:
        for _ in range(64):
            clash = j == index.cpu()
            if not bool(clash.any()):
                break
            j[clash] = torch.randint(0, m, (int(clash.sum()),), generator=generator)
        clash = j == index.cpu()
        j[clash] = (j[clash] + 1) % m
    return x_pool[j].clone(), j


def _distances(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = (a - b).flatten(1).double()
    return d.norm(dim=1).float(), d.abs().amax(dim=1).float()


@torch.no_grad()
def _features(model: torch.nn.Module, x: torch.Tensor, device: Any, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(model.features(x[i : i + batch_size].to(device)).float().cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# the paper's four constructions
# --------------------------------------------------------------------------------------------
def build_representation(req: BuildRequest) -> ConstructionResult:
    """D_R (the source model robust) or D_NR (standard) by representation matching.

    Each x_R = argmin_{z in [0,1]^d} ||g(z) - g(x)||_2 from a start x' (docs/paper-notes.md sec. 2.2),
    with g = the source model's ``features``; label y kept. Sanity aux (stored images):
    ``rep_loss`` (raw l2 distance of representations), ``rep_loss_rel`` (divided by ||g(x)||),
    ``l2_to_target``, ``linf_to_target``, ``l2_to_start``, ``start_index``.
    """
    if req.kind not in REPRESENTATION_KINDS:
        raise ValueError(f"kind={req.kind!r} is not a representation construction; valid: "
                         f"{', '.join(REPRESENTATION_KINDS)}")
    from empirical.attacks import match_representation

    cfg, model, device = req.settings, req.model, req.device
    model.eval()
    x_pool = req.x.detach().cpu()

    def make_shard(i: int, xs: torch.Tensor, ys: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> ShardOutput:
        start, j = start_points(cfg.start, x_pool, idx, tuple(xs.shape), gen, exclude_self=cfg.exclude_self)
        feature_fn = functools.partial(model.features, straight_through=True) if cfg.straight_through else model.features
        x_new, _ = match_representation(
            feature_fn, xs.to(device), start.to(device), steps=cfg.steps, step_size=cfg.step_size, normalize_loss=cfg.normalize_loss,
            use_best=cfg.use_best, batch_size=cfg.batch_size, precision=cfg.precision,
            step_schedule=cfg.step_schedule,
        )
        l2s, _ = _distances(x_new.detach().cpu().float(), start)
        return ShardOutput(x=x_new, y=ys, aux={"start_index": j, "l2_to_start": l2s})

    def assess(x_st: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> dict[str, torch.Tensor]:
        g0 = _features(model, x0, device, cfg.batch_size)
        g1 = _features(model, x_st, device, cfg.batch_size)
        raw = (g1 - g0).double().norm(dim=1)
        rel = raw / g0.double().norm(dim=1).clamp_min(1e-12)
        l2, linf = _distances(x_st, x0)
        return {"rep_loss": raw.float(), "rep_loss_rel": rel.float(), "l2_to_target": l2, "linf_to_target": linf}

    return build_sharded(req, method="representation_matching", make_shard=make_shard, assess=assess)


def _attack_generator(cfg: Any, dev: torch.device, shard: int) -> torch.Generator | None:
    """The generator of a targeted construction's random starts in shard ``shard``, seeded from
    (seed + 1, shard); None when its attack draws nothing (from x, one restart)."""
    if not (cfg.random_start or cfg.restarts > 1):
        return None
    gen = torch.Generator(device=dev)
    gen.manual_seed(shard_seed(cfg.seed + 1, shard))
    return gen


def build_targeted(req: BuildRequest) -> ConstructionResult:
    """D_rand or D_det: x_NR = argmin_{||x'-x|| <= eps} CE(C(x'), t) by targeted PGD on the source
    model, t by the kind's rule (:func:`targets_for`); label t.

    Sanity aux (stored images): ``target_success`` (source model predicts t), ``l2``, ``linf``
    (distance to x), ``orig_label`` (y, kept for the shifted-label analysis), ``target_is_true``.
    """
    if req.kind not in TARGET_RULES:
        raise ValueError(f"kind={req.kind!r} is not a targeted-attack construction; valid: {', '.join(TARGET_RULES)}")
    from empirical.attacks import pgd

    cfg, model, kind, num_classes = req.settings, req.model, req.kind, req.num_classes
    model.eval()
    dev = torch.device(req.device)

    def make_shard(i: int, xs: torch.Tensor, ys: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> ShardOutput:
        t = targets_for(kind, ys.cpu(), num_classes, gen, exclude_true_label=cfg.exclude_true_label)
        attack_gen = _attack_generator(cfg, dev, i)
        x_adv = pgd(model, xs.to(dev), t.to(dev), cfg.attack, use_best=cfg.use_best, generator=attack_gen,
                    batch_size=cfg.batch_size, precision=cfg.precision)
        return ShardOutput(x=x_adv, y=t, aux={"orig_label": ys.cpu().to(torch.int64), "target_is_true": t == ys.cpu()})

    def assess(x_st: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = predict(model, x_st, device=dev, batch_size=cfg.batch_size, precision="fp32")
        l2, linf = _distances(x_st, x0)
        return {"target_success": pred == y1, "source_pred_is_orig": pred == y0, "l2": l2, "linf": linf}

    return build_sharded(req, method="targeted_pgd", make_shard=make_shard, assess=assess)


def build_nontransferable(req: BuildRequest) -> ConstructionResult:
    """D_nt: Nakkiran's non-transferable targeted examples relabelled like D_det, {(x^{y->t}, t)} with
    t = (y + 1) mod C, made by :func:`empirical.attacks.nontransferable_pgd` on the first source model
    (f, the standard model) with every further source model as the ensemble held at y.

    Sanity aux (stored images): ``target_success`` (f predicts t), ``ensemble_keeps_y`` (the fraction
    of the ensemble still predicting y), ``ensemble_predicts_t`` (the fraction predicting t: the
    in-ensemble transfer), ``l2``, ``linf``, ``orig_label``.
    """
    from empirical.attacks import nontransferable_pgd

    cfg, num_classes = req.settings, req.num_classes
    names = list(req.sources)
    model, ensemble = req.sources[names[0]], [req.sources[n] for n in names[1:]]
    for m in (model, *ensemble):
        m.eval()
    dev = torch.device(req.device)

    def make_shard(i: int, xs: torch.Tensor, ys: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> ShardOutput:
        t = next_label(ys.cpu().to(torch.int64), num_classes)
        attack_gen = _attack_generator(cfg, dev, i)
        x_adv = nontransferable_pgd(model, ensemble, xs.to(dev), ys.to(dev), t.to(dev), cfg.attack,
                                    ensemble_weight=cfg.ensemble_weight, use_best=cfg.use_best, generator=attack_gen,
                                    batch_size=cfg.batch_size, precision=cfg.precision)
        return ShardOutput(x=x_adv, y=t, aux={"orig_label": ys.cpu().to(torch.int64)})

    def assess(x_st: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = predict(model, x_st, device=dev, batch_size=cfg.batch_size, precision="fp32")
        keeps = torch.zeros(x_st.shape[0])
        to_t = torch.zeros(x_st.shape[0])
        for f_i in ensemble:
            p_i = predict(f_i, x_st, device=dev, batch_size=cfg.batch_size, precision="fp32")
            keeps += (p_i == y0).float()
            to_t += (p_i == y1).float()
        k = max(len(ensemble), 1)
        l2, linf = _distances(x_st, x0)
        return {"target_success": pred == y1, "source_pred_is_orig": pred == y0,
                "ensemble_keeps_y": keeps / k, "ensemble_predicts_t": to_t / k, "l2": l2, "linf": linf}

    return build_sharded(req, method="nontransferable_targeted_pgd", make_shard=make_shard, assess=assess)


def build_error_only(req: BuildRequest) -> ConstructionResult:
    """D_err: every training image relabelled with the briefly trained teacher's prediction (the
    first source model); aux ``teacher_wrong`` (its prediction is not y: the examples the student
    trains on) and ``orig_label``. The images are D's own."""
    cfg, teacher = req.settings, req.model
    teacher.eval()
    dev = torch.device(req.device)

    def make_shard(i: int, xs: torch.Tensor, ys: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> ShardOutput:
        pred = predict(teacher, xs, device=dev, batch_size=cfg.batch_size, precision="fp32").cpu().to(torch.int64)
        ys = ys.cpu().to(torch.int64)
        return ShardOutput(x=xs, y=pred, aux={"teacher_wrong": pred != ys, "orig_label": ys})

    return build_sharded(req, method="teacher_relabelled", make_shard=make_shard)


def _request(root: str | Path, kind: str, model: torch.nn.Module, cfg: Any, **kw: Any) -> BuildRequest:
    return BuildRequest(folder=Path(root), kind=kind, settings=cfg, sources={"source": model}, **kw)


def build_representation_dataset(root: str | Path, *, kind: str, model: torch.nn.Module,
                                 cfg: RepresentationConfig = RepresentationConfig(), **kw: Any) -> ConstructionResult:
    """:func:`build_representation` for one source ``model`` without a request object: ``x``, ``y``,
    ``num_classes`` and the other :class:`BuildRequest` fields as keywords."""
    return build_representation(_request(root, kind, model, cfg, **kw))


def build_targeted_dataset(root: str | Path, *, kind: str, model: torch.nn.Module,
                           cfg: TargetedConfig = TargetedConfig(), **kw: Any) -> ConstructionResult:
    """:func:`build_targeted` for one source ``model`` without a request object: ``x``, ``y``,
    ``num_classes`` and the other :class:`BuildRequest` fields as keywords."""
    return build_targeted(_request(root, kind, model, cfg, **kw))
