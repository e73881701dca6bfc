"""empirical.distributed: sharding arithmetic, config-hash agreement, metric reduction (gloo, 2 procs)."""

from __future__ import annotations

import os
import socket
import traceback

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from empirical import distributed as D


@given(n=st.integers(1, 500), world=st.integers(1, 16))
def test_shard_ranges_partition_the_items_in_order(n, world):
    if world > n:
        with pytest.raises(ValueError, match=rf"world size {world} is larger than the number of items"):
            D.shard_range(n, 0, world)
        return
    ranges = [D.shard_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        assert a1 == b0
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_owned_shards_round_robin_and_too_many_ranks():
    info = D.DistInfo(rank=1, world_size=3)
    assert D.owned_shards(8, info) == [1, 4, 7]
    with pytest.raises(ValueError, match=r"world size 3 is larger than the number of shards \(2\)"):
        D.owned_shards(2, info)


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError, match=r"rank=2 must lie in \[0, world_size=2\)"):
        D.shard_range(10, 2, 2)


def test_config_hash_is_order_independent_and_sensitive():
    assert D.config_hash({"a": 1, "b": 0.5}) == D.config_hash({"b": 0.5, "a": 1})
    assert D.config_hash({"a": 1}) != D.config_hash({"a": 2})


def test_missing_rendezvous_environment_is_named(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert D.init_distributed("cpu") == D.SINGLE_PROCESS
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match=r"missing environment variable\(s\) MASTER_ADDR, MASTER_PORT"):
        D.init_distributed("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, configs: list, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        info = D.init_distributed("cpu")
        out = {"info": (info.rank, info.world_size, info.backend)}
        try:
            out["hash"] = D.check_same_config(configs[rank], info)
        except ValueError as exc:
            out["error"] = str(exc)
        out["sums"] = D.reduce_sums({"correct": rank + 1.0, "n": 10.0}, info)
        results[rank] = out
    except BaseException:  # report, don't hang the parent
        results[rank] = {"crash": traceback.format_exc()}
    finally:
        D.shutdown()


def _run_two(configs):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_worker, args=(2, _free_port(), configs, results), nprocs=2,
                           join=True, start_method="spawn")
        return dict(results)


def test_two_gloo_ranks_agree_on_config_and_reduce_metrics():
    res = _run_two([{"eps": 0.5}, {"eps": 0.5}])
    assert not any("crash" in r for r in res.values()), res
    assert res[0]["info"] == (0, 2, "gloo") and res[1]["info"] == (1, 2, "gloo")
    assert res[0]["hash"] == res[1]["hash"] == D.config_hash({"eps": 0.5})
    assert res[0]["sums"] == res[1]["sums"] == {"correct": 3.0, "n": 20.0}


def test_mismatched_arguments_between_ranks_fail_on_every_rank():
    res = _run_two([{"eps": 0.5}, {"eps": 0.25}])
    assert not any("crash" in r for r in res.values()), res
    assert "1 rank(s) were started with different arguments than rank 0" in res[0]["error"]
    assert "rank 1 was started with different arguments than rank 0" in res[1]["error"]
