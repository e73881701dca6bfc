"""torch.distributed plumbing for ``torchrun``: rank discovery, example sharding, config checks.

The toolkit scales out with the engine the field already runs on: launch any ``robust-features``
command under ``torchrun`` and it picks up ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT`` from the environment, initialises a process group (NCCL on GPUs,
gloo on CPU) and splits work by example index:

* training (``empirical.train.fit``): every rank holds the whole (GPU-resident) dataset and draws
  the *same* global batch from the same seeded loader; rank r trains on its contiguous slice of
  that batch and DistributedDataParallel averages the gradients. The update therefore equals the
  single-process update on the whole global batch (up to float summation order), whatever the
  world size, and augmentation randomness does not depend on the number of ranks.
* dataset construction (``empirical.construct``): shard ``i`` is built by rank ``i % world``;
  per-shard seeds depend only on (seed, shard index), so the shards are bitwise identical to a
  single-process run on CPU. Rank 0 writes the manifest once every rank has written its shards;
  a rank that dies leaves only whole shards behind, so re-running the command (with any number of
  ranks) resumes. ``robust-features construct`` runs this under torchrun (rank 0 first trains
  any missing source model alone, so the model, and hence the dataset, is the single-process one).
* evaluation (``empirical.evaluate.evaluate``, ``robust-features eval``): the examples are cut into
  a fixed grid of batches whose random starts are seeded by (seed, batch index); rank r attacks a
  contiguous run of whole batches and the correct counts are summed, so the accuracies equal the
  single-process ones exactly.

Before any work, :func:`check_same_config` broadcasts rank 0's config hash and every rank compares
it with its own, so ranks started with different arguments fail fast with a clear error instead of
deadlocking or silently mixing settings.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


_RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. A plain single-process run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def raise_if_any_failed(self, error: BaseException | None, message: str,
                            exc_type: type[Exception] = RuntimeError) -> None:
        """:func:`raise_if_any_rank_failed` on this job (lets lower floors, e.g.
        :func:`foundation.locks.rank0_lock`, run the collective without importing this module)."""
        raise_if_any_rank_failed(error, self, message, exc_type)


SINGLE_PROCESS = DistInfo()


class RendezvousError(RuntimeError, ValueError):
    """torchrun's environment is incomplete or inconsistent.

    A ``RuntimeError`` (what :func:`init_distributed` has always raised) and a ``ValueError``, so
    the console script reports it as bad input: one line, exit status 2, no traceback.
    """


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def launched_by_torchrun() -> bool:
    """True when any of torchrun's rendezvous variables is set (WORLD_SIZE or RANK)."""
    return "WORLD_SIZE" in os.environ or "RANK" in os.environ


def init_distributed(device: str | torch.device | None = None, *, backend: str | None = None,
                     timeout_s: float = 600.0) -> DistInfo:
    """Initialise the process group from torchrun's environment, or return single-process info.

    ``backend`` defaults to NCCL when ``device`` is CUDA and gloo otherwise. On CUDA the local
    device is set to ``cuda:LOCAL_RANK``. Calling it again returns the existing group's info.
    Missing rendezvous variables raise ``RuntimeError`` naming them.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    missing = [v for v in _RENDEZVOUS_VARS if v not in os.environ]
    if missing:
        raise RendezvousError(
            "distributed launch is incomplete: missing environment variable(s) "
            f"{', '.join(missing)}; start the command with `torchrun --nproc_per_node=N ...` "
            "(or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT yourself)"
        )
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if world < 1 or not 0 <= rank < world:
        raise RendezvousError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    if world == 1:
        return DistInfo(0, 1, local_rank, None)
    device_type = torch.device(device).type if device is not None else "cpu"
    if backend is None:
        backend = "nccl" if device_type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend={backend!r} is not supported; use 'nccl' (GPU) or 'gloo' (CPU)")
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=_dt.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank, backend)


def local_device(device: str | torch.device, info: DistInfo) -> torch.device:
    """The device this rank should use: ``cuda:LOCAL_RANK`` for CUDA jobs, else ``device``."""
    device = torch.device(device)
    if device.type == "cuda" and info.is_distributed:
        return torch.device("cuda", info.local_rank)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous [start, stop) slice of ``n`` items for ``rank``; sizes differ by at most one.

    Raises ``ValueError`` when there are fewer items than ranks (some rank would get nothing).
    """
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
    if n < world_size:
        raise ValueError(
            f"world size {world_size} is larger than the number of items to split (n={n}); "
            f"use at most {n} processes"
        )
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def owned_shards(num_shards: int, info: DistInfo) -> list[int]:
    """Shard indices built by this rank: ``i % world_size == rank``."""
    if info.is_distributed and num_shards < info.world_size:
        raise ValueError(
            f"world size {info.world_size} is larger than the number of shards ({num_shards}); "
            f"use at most {num_shards} processes or a smaller shard size (`construct`: --set "
            "targeted.shard_size=N or rep.shard_size=N)"
        )
    return [i for i in range(num_shards) if i % info.world_size == info.rank]


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON of ``config`` (:func:`foundation.records.json_sha256`)."""
    from foundation.records import json_sha256

    return json_sha256(config)


def check_same_config(config: Any, info: DistInfo) -> str:
    """Fail on every rank if this rank's config differs from rank 0's; return the hash.

    Rank 0 broadcasts its hash (gloo and NCCL both carry the 32 raw bytes as a uint8 tensor).
    """
    digest = config_hash(config)
    if not info.is_distributed:
        return digest
    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=device)
    ref = mine.clone()
    dist.broadcast(ref, src=0)
    ref_hex = bytes(ref.cpu().tolist()).hex()
    flags = torch.tensor([0 if ref_hex == digest else 1], dtype=torch.int64, device=device)
    dist.all_reduce(flags)
    if ref_hex != digest:
        raise ValueError(
            f"rank {info.rank} was started with different arguments than rank 0 "
            f"(config hash {digest[:12]} != rank 0's {ref_hex[:12]}); every rank must get the same command"
        )
    if int(flags.item()) != 0:
        raise ValueError(
            f"{int(flags.item())} rank(s) were started with different arguments than rank 0; "
            "every rank must get the same command"
        )
    return digest


def _all_reduce(values: Mapping[str, float], info: DistInfo, op: Any) -> dict[str, float]:
    keys = sorted(values)
    if not info.is_distributed:
        return {k: float(values[k]) for k in keys}
    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return dict(zip(keys, t.cpu().tolist()))


def reduce_sums(values: Mapping[str, float], info: DistInfo) -> dict[str, float]:
    """Sum scalar metrics over ranks (float64 on CPU for gloo, on the rank's GPU for NCCL)."""
    return _all_reduce(values, info, dist.ReduceOp.SUM)


def reduce_max(values: Mapping[str, float], info: DistInfo) -> dict[str, float]:
    """Maximum of scalar metrics over ranks (e.g. the slowest rank's wall time)."""
    return _all_reduce(values, info, dist.ReduceOp.MAX)


def raise_if_any_rank_failed(error: BaseException | None, info: DistInfo, message: str,
                             exc_type: type[Exception] = RuntimeError) -> None:
    """Collective: the rank that hit ``error`` re-raises it, every other rank raises
    ``exc_type(message)``, so no rank is left waiting at the next collective. Also a barrier."""
    failed = reduce_max({"failed": 1.0 if error is not None else 0.0}, info)["failed"]
    if error is not None:
        raise error
    if failed:
        raise exc_type(message)

