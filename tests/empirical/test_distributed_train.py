"""DDP training under torchrun (2 gloo ranks on CPU) ends with the single-process weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ARGS = ["train", "--data", "digits", "--arch", "mlp", "--epochs", "2", "--batch-size", "64",
        "--lr", "0.05", "--eval-steps", "2", "--n-eval", "20", "--no-progress", "--seed", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(nproc: int, extra: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "robust_features", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_two_rank_ddp_training_matches_single_process(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "ddp"
    one = subprocess.run([sys.executable, "-m", "robust_features", *ARGS, "--device", "cpu",
                          "--out-dir", str(single)], capture_output=True, text=True, env=_env(), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(2, [*ARGS, "--device", "cpu", "--out-dir", str(multi)])
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _weights(single / "model.pt"), _weights(multi / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), (k, (a[k] - b[k]).abs().max())
    # the weights did move: a different seed gives clearly different weights
    assert any(not torch.allclose(a[k], torch.zeros_like(a[k])) for k in a)
    # only rank 0 wrote outputs, and the record says how many ranks trained
    import json

    rec = json.loads((multi / "train.json").read_text())
    assert rec["config"]["world_size"] == 2
    assert rec["metrics"]["clean_accuracy"] > 0.8
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())


def test_ranks_started_with_different_arguments_fail_clearly(tmp_path):
    # torchrun passes the same argv to every rank, so emulate a mismatched launch with two
    # processes given different --lr and the rendezvous environment set by hand.
    port = _free_port()
    procs = []
    for rank, lr in ((0, "0.05"), (1, "0.1")):
        env = _env() | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        args = [a if a != "0.05" else lr for a in ARGS]
        procs.append(subprocess.Popen([sys.executable, "-m", "robust_features", *args, "--device", "cpu",
                                       "--out-dir", str(tmp_path / "run")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    assert "different arguments than rank 0" in outs[0][1]
    assert "rank 1 was started with different arguments than rank 0" in outs[1][1]
