"""Sharded construction and evaluation under torch.distributed (2 gloo ranks on CPU).

* a 2-rank construction (D_det and D_rand with random PGD starts, and D_R) is byte-for-byte the
  single-process dataset: same shard bytes, same manifest shard hashes and sanity metrics;
* a rank that dies mid-construction leaves only whole shards: re-running with 1 or 2 ranks
  completes and equals the uninterrupted dataset;
* ``robust-features construct`` and ``robust-features eval`` under torchrun equal one process;
* bad launches (too many ranks, ranks with different arguments, incomplete rendezvous
  environment) fail with clear errors.

Ranks are started with torch.multiprocessing (API level) or ``python -m torch.distributed.run``
(CLI level), as in test_distributed_plumbing.py / test_distributed_train.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from empirical import distributed as D
from empirical.construct import (
    RepresentationConfig,
    TargetedConfig,
    build_representation_dataset,
    build_targeted_dataset,
    construct_sharded,
)
from empirical.shards import load_constructed

N = 60            # 8 shards of 8 (the last one holds 4): rank 0 builds 0,2,4,6 and rank 1 builds 1,3,5,7
SHARD = 8
# random starts + 2 restarts: the per-shard attack generator matters, not only the shard data
TARGETED = TargetedConfig(eps=1.0, steps=3, step_size=0.3, random_start=True, restarts=2, batch_size=16,
                          shard_size=SHARD, seed=5)
REPRESENTATION = RepresentationConfig(steps=3, step_size=0.1, batch_size=16, shard_size=SHARD, seed=5)
# D_det: targets (y+1) mod C; D_rand: targets drawn from the shard generator; D_R: starts drawn from it
KINDS = ("D_det", "D_rand", "D_R")
_RDZV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RDZV}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _data_and_model():
    from empirical.data import load_dataset
    from empirical.models import build_model

    d = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                        mean=d.mean, std=d.std)
    return d.x_train[:N], d.y_train[:N], d.num_classes, model.eval()


def _construct(kind: str, root: Path, *, dist_info=None, on_shard=None):
    x, y, classes, model = _data_and_model()
    common = dict(kind=kind, model=model, x=x, y=y, num_classes=classes, device="cpu",
                  source={"model": "mlp-seed0"}, on_shard=on_shard, dist_info=dist_info)
    if kind in ("D_R", "D_NR"):
        return build_representation_dataset(root, cfg=REPRESENTATION, **common)
    return build_targeted_dataset(root, cfg=TARGETED, **common)


def _worker(rank: int, world: int, port: int, jobs: list, crash_rank, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        info = D.init_distributed("cpu")
        out = {}
        for kind, root in jobs:
            def die_after_first_shard(i, entry):
                os._exit(17)   # the shard and its sidecar are on disk; nothing else runs

            res = _construct(kind, Path(root), dist_info=info,
                             on_shard=die_after_first_shard if rank == crash_rank else None)
            out[kind] = {"built": list(res.built_shards), "reused": list(res.reused_shards),
                         "manifest": res.manifest}
        results[rank] = out
    except BaseException:  # report, don't hang the parent
        results[rank] = {"crash": traceback.format_exc()}
    finally:
        D.shutdown()


def _run_ranks(world: int, jobs: list, crash_rank: int | None = None, allow_errors: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_worker, args=(world, _free_port(), jobs, crash_rank, results), nprocs=world,
                           join=True, start_method="spawn")
        res = dict(results)
    if not allow_errors:
        assert not any("crash" in r for r in res.values()), res
    return res


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*.bin"))}


def _same_dataset(root: Path, ref: Path) -> None:
    """Shard files byte-identical and the manifests agree on everything but the build timings (and so
    the hash of the manifest's body, which covers them)."""
    assert _shard_bytes(root) == _shard_bytes(ref)
    a, b = json.loads((root / "manifest.json").read_text()), json.loads((ref / "manifest.json").read_text())
    assert a["complete"] and b["complete"]
    assert a["shards"] == b["shards"] and a["content_sha256"] == b["content_sha256"]
    a.pop("build"), b.pop("build")
    a.pop("body_sha256"), b.pop("body_sha256")
    assert a == b
    assert torch.equal(load_constructed(root).x, load_constructed(ref).x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Single-process datasets (what every distributed run must reproduce)."""
    root = tmp_path_factory.mktemp("single")
    return {kind: _construct(kind, root / kind).root for kind in KINDS}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    jobs = [(kind, str(root / kind)) for kind in KINDS]
    return root, _run_ranks(2, jobs)


# ---------------------------------------------------------------------------------------------
# (a) 2 ranks == 1 process, bitwise
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_two_rank_construction_equals_the_single_process_dataset_bitwise(kind, reference, two_ranks):
    root, res = two_ranks
    _same_dataset(root / kind, reference[kind])
    # rank r built exactly the shards i % 2 == r, and both ranks return rank 0's manifest
    assert res[0][kind]["built"] == [0, 2, 4, 6] and res[1][kind]["built"] == [1, 3, 5, 7]
    assert res[0][kind]["manifest"] == res[1][kind]["manifest"]
    build = res[0][kind]["manifest"]["build"]
    assert build["world_size"] == 2 and build["shards_built_last_call"] == 8 and build["images_per_second_last_call"] > 0
    # the shards really differ from each other and from the input (a construction happened)
    x, _, _, _ = _data_and_model()
    ds = load_constructed(root / kind)
    assert not torch.equal(ds.x, x)
    if kind != "D_R":
        assert ds.aux["l2"].max() > 0.1


# ---------------------------------------------------------------------------------------------
# (b) a rank dying mid-construction leaves resumable state
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resume_world", [1, 2])
def test_a_rank_dying_mid_construction_leaves_state_that_resumes_to_the_same_dataset(
        resume_world, reference, tmp_path):
    root = tmp_path / "D_det"
    with pytest.raises(mp.ProcessExitedException) as info:
        _run_ranks(2, [("D_det", str(root))], crash_rank=1)
    assert info.value.exit_code == 17 and info.value.error_index == 1
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["complete"] is False and "shards" not in manifest
    present = {int(p.stem.split("-")[1]) for p in root.glob("shard-*.json")}
    assert 1 in present and not present & {3, 5, 7}        # rank 1 died right after its first shard
    with pytest.raises(ValueError, match="incomplete construction"):
        load_constructed(root)

    if resume_world == 1:
        res = _construct("D_det", root)
        built = set(res.built_shards)
    else:
        out = _run_ranks(2, [("D_det", str(root))])
        built = set(out[0]["D_det"]["built"]) | set(out[1]["D_det"]["built"])
        assert out[1]["D_det"]["reused"] == [1] and out[1]["D_det"]["built"] == [3, 5, 7]
    assert built == set(range(8)) - present                 # only the missing shards were built
    _same_dataset(root, reference["D_det"])


def test_a_folder_built_with_other_settings_is_refused_on_every_rank_before_any_shard(reference, tmp_path):
    root = tmp_path / "D_det"
    shutil.copytree(reference["D_det"], root)
    before = _shard_bytes(root)
    res = _run_ranks(2, [("D_rand", str(root))], allow_errors=True)
    assert "already holds a dataset built with different" in res[0]["crash"]
    assert "rank 0 refused to open" in res[1]["crash"]
    assert _shard_bytes(root) == before                       # nothing was overwritten


# ---------------------------------------------------------------------------------------------
# (c) the commands under torchrun
# ---------------------------------------------------------------------------------------------
def _torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # `--` ends torchrun's own options: its parser would otherwise reject flags such as `--n`
    # as ambiguous abbreviations of --nnodes / --nproc-per-node
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "robust_features", "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, cwd=cwd)


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robust_features", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=300, cwd=cwd)


CONSTRUCT = ["construct", "D_det", "--preset", "digits-smoke", "--device", "cpu", "--quiet"]


@pytest.mark.slow
def test_construct_command_under_torchrun_equals_one_process(tmp_path):
    one = _cli([*CONSTRUCT, "--out-dir", "one"], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    # the source model is missing: rank 0 trains it alone while rank 1 waits, then both build shards
    two = _torchrun(2, [*CONSTRUCT, "--out-dir", "two"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = tmp_path / "one" / "digits-smoke", tmp_path / "two" / "digits-smoke"
    assert (a / "models/standard/model.pt").read_bytes() == (b / "models/standard/model.pt").read_bytes()
    _same_dataset(b / "datasets/D_det", a / "datasets/D_det")
    assert json.loads((b / "datasets/D_det/manifest.json").read_text())["build"]["world_size"] == 2
    # rank 0 alone wrote the record and printed the summary
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    rec_a, rec_b = (json.loads((r / "construct_D_det.json").read_text()) for r in (a, b))
    assert rec_b["content_sha256"] == rec_a["content_sha256"]
    assert rec_b["metrics"]["target_success_rate"] == rec_a["metrics"]["target_success_rate"]
    assert two.stdout.count("D_det: 96 examples") == 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from empirical.checkpoint import save_checkpoint
    from empirical.data import load_dataset
    from empirical.models import build_model
    from empirical.train import TrainConfig, fit

    d = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    m = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=d.mean, std=d.std)
    m = fit(m, d.x_train, d.y_train, TrainConfig(epochs=2, batch_size=64, lr=0.05), device="cpu",
            progress=False, dist_info=D.SINGLE_PROCESS).model
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(m, path, arch="mlp", dataset="digits", num_classes=10, in_channels=1, image_size=8,
                    mean=d.mean, std=d.std, extra={"data_seed": 0})
    return path


def _eval_args(ckpt: Path, out: str) -> list[str]:
    return ["eval", "--checkpoint", str(ckpt), "--threat", "l2:0.75", "--threat", "linf:0.1", "--restarts", "2",
            "--steps", "3", "--n", "90", "--batch-size", "16", "--device", "cpu", "--seed", "4", "--out", out]


@pytest.mark.slow
def test_eval_command_under_torchrun_equals_one_process(checkpoint, tmp_path):
    from robust_features.cli import main

    assert main(_eval_args(checkpoint, str(tmp_path / "one.json"))) == 0
    two = _torchrun(2, _eval_args(checkpoint, str(tmp_path / "two.json")), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert a["metrics"] == b["metrics"]                     # exact: same batches, summed integer counts
    assert b["config"]["world_size"] == 2 and b["metrics"]["n"] == 90
    rob = b["metrics"]["robust_accuracy"]
    assert b["metrics"]["clean_accuracy"] > 0.8 and all(v < b["metrics"]["clean_accuracy"] for v in rob.values())


def test_evaluation_split_by_batches_reproduces_the_single_process_counts(checkpoint, monkeypatch):
    """Per-rank counts (no process group: reduce_sums returns the local counts) add up to the
    1-process counts for 2 and 3 ranks, because batch b's random starts are seeded by (seed, b)."""
    from empirical.checkpoint import load_model
    from empirical.data import load_dataset
    from empirical.evaluate import AttackSpec, evaluate

    d = load_dataset("digits", seed=0)
    x, y = d.x_test[:70], d.y_test[:70]
    model = load_model(checkpoint)
    specs = [AttackSpec("l2", 1.0, steps=3, restarts=3, random_start=True)]
    single = evaluate(model, x, y, attacks=specs, device="cpu", batch_size=16, seed=9)
    key = specs[0].key()
    assert 0 < single["robust"][key] < single["clean"]
    monkeypatch.setattr(D, "reduce_sums", lambda values, info: {k: float(v) for k, v in values.items()})
    for world in (2, 3):
        parts = [evaluate(model, x, y, attacks=specs, device="cpu", batch_size=16, seed=9,
                          dist_info=D.DistInfo(rank=r, world_size=world)) for r in range(world)]
        assert round(sum(p["clean"] for p in parts) * 70) == round(single["clean"] * 70)
        assert round(sum(p["robust"][key] for p in parts) * 70) == round(single["robust"][key] * 70)
        assert all(p["robust"][key] > 0 for p in parts)   # every rank attacked a non-empty slice


# ---------------------------------------------------------------------------------------------
# (d) bad input
# ---------------------------------------------------------------------------------------------
def test_more_ranks_than_shards_fails_before_anything_is_written(tmp_path):
    for rank in (0, 1, 2):
        with pytest.raises(ValueError, match=r"world size 3 is larger than the number of shards \(2\); use at most 2"):
            _construct_toy(tmp_path / "toy", D.DistInfo(rank=rank, world_size=3))
    assert not (tmp_path / "toy").exists()


def _construct_toy(root: Path, info):
    from empirical.construct import ShardOutput

    x = torch.rand(10, 1, 2, 2)
    return construct_sharded(root, name="toy", kind="D_det", x=x, y=torch.zeros(10, dtype=torch.long),
                             num_classes=2, make_shard=lambda i, xs, ys, idx, g: ShardOutput(xs, ys), shard_size=5,
                             dist_info=info)


def test_more_ranks_than_evaluation_batches_is_a_clear_error(checkpoint):
    from empirical.checkpoint import load_model
    from empirical.evaluate import AttackSpec, evaluate

    x = torch.rand(40, 1, 8, 8)
    with pytest.raises(ValueError, match=r"world size 4 is larger than the number of evaluation batches \(3 batches "
                                         r"of batch_size=16 over n=40 examples\); use at most 3 processes"):
        evaluate(load_model(checkpoint), x, torch.zeros(40, dtype=torch.long), attacks=[AttackSpec("l2", 0.5)],
                 device="cpu", batch_size=16, dist_info=D.DistInfo(rank=0, world_size=4))


@pytest.mark.slow
def test_construct_with_more_ranks_than_shards_fails_on_every_rank(tmp_path):
    two = _torchrun(2, [*CONSTRUCT, "--out-dir", "runs", "--set", "targeted.shard_size=100"], tmp_path)
    assert two.returncode != 0
    assert two.stderr.count("world size 2 is larger than the number of shards (1); use at most 1 processes") == 2
    assert not (tmp_path / "runs/digits-smoke/models").exists()     # failed before training anything


@pytest.mark.slow
@pytest.mark.parametrize("command", ["construct", "eval"])
def test_ranks_started_with_different_arguments_fail_clearly(command, checkpoint, tmp_path):
    port = _free_port()
    procs = []
    for rank in (0, 1):
        if command == "construct":
            args = [*CONSTRUCT, "--out-dir", "runs", "--set", f"targeted.eps={1.0 + rank}"]
        else:
            args = _eval_args(checkpoint, str(tmp_path / "e.json"))
            args[args.index("--seed") + 1] = str(rank)
        env = _env() | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "robust_features", *args], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    assert f"robust-features {command}: error: 1 rank(s) were started with different arguments" in outs[0][1]
    assert "rank 1 was started with different arguments than rank 0" in outs[1][1]
    assert not (tmp_path / "runs/digits-smoke/models").exists() and not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("command", ["construct", "eval"])
def test_incomplete_rendezvous_environment_is_one_clear_line(command, monkeypatch, capsys, tmp_path):
    from robust_features.cli import main

    for var in _RDZV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    args = ([*CONSTRUCT, "--out-dir", str(tmp_path)] if command == "construct"
            else ["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu"])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"robust-features {command}: error: distributed launch is incomplete: missing environment "
                   "variable(s) MASTER_ADDR, MASTER_PORT; start the command with `torchrun --nproc_per_node=N ...` "
                   "(or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT yourself)")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(D.RendezvousError, match=r"RANK=2 must lie in \[0, WORLD_SIZE=2\)"):
        D.init_distributed("cpu")


def test_single_process_experiment_commands_refuse_torchrun(monkeypatch, capsys, tmp_path):
    from robust_features.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    for command in ("fig2", "reproduce"):
        assert main([command, "--preset", "digits-smoke", "--out-dir", str(tmp_path)]) == 2
        assert f"`robust-features {command}` runs in one process; under torchrun use" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
