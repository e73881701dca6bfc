"""empirical.shards + the construction driver: determinism, resume after a crash, tamper detection,
storage precision, and the authors' released-format loader (plain tensors, no models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical import shards as S
from empirical.construct import ShardOutput, construct_sharded, start_points, targets_for
from empirical.settings import STORAGES


def _toy_data(n=37, shape=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g), torch.randint(0, 5, (n,), generator=g)


def _noisy_shard(i, xs, ys, idx, gen):
    """A stand-in construction: random perturbation from the shard generator, labels shifted."""
    noise = torch.randn(xs.shape, generator=gen) * 0.05
    return ShardOutput(x=(xs + noise).clamp(0, 1), y=(ys + 1) % 5, aux={"l2": noise.flatten(1).norm(dim=1),
                                                                         "flag": noise.flatten(1)[:, 0] > 0})


def _build(root, x, y, **kw):
    args = dict(name="toy", kind="D_det", x=x, y=y, num_classes=5, make_shard=_noisy_shard, seed=3,
                shard_size=8, storage="float32", settings={"eps": 0.1})
    args.update(kw)
    return construct_sharded(root, **args)


def _shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted(root.glob("shard-*.bin"))}


# ---------------------------------------------------------------------------------------------
def test_shard_seeds_depend_only_on_seed_and_index_and_differ_between_shards():
    seeds = [S.shard_seed(7, i) for i in range(200)]
    assert len(set(seeds)) == 200
    assert S.shard_seed(7, 5) == S.shard_seed(7, 5) and S.shard_seed(7, 5) != S.shard_seed(8, 5)
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match=r"shard index=-1 must be a non-negative integer"):
        S.shard_seed(0, -1)


@settings(max_examples=25)
@given(n=st.integers(1, 6), storage=st.sampled_from(STORAGES), seed=st.integers(0, 2**16))
def test_encode_decode_round_trip_error_is_bounded_by_the_storage_precision(n, storage, seed):
    x = torch.rand((n, 3, 5, 5), generator=torch.Generator().manual_seed(seed))
    arrays = {"x": S.encode_images(x, storage), "y": np.arange(n, dtype=np.int64)}
    back = S.decode_shard(S.encode_shard(arrays))
    err = (S.decode_images(back["x"]) - x).abs().max().item()
    bound = {"float32": 0.0, "float16": 2.0**-11, "uint8": 0.5 / 255 + 1e-7}[storage]
    assert err <= bound
    assert back["y"].tolist() == list(range(n))
    # encoding is a pure function of the arrays
    assert S.encode_shard(arrays) == S.encode_shard({k: v.copy() for k, v in arrays.items()})


def test_uint8_storage_can_destroy_a_small_l2_perturbation():
    """Why storage precision is recorded: a 0.001-per-pixel shift rounds away entirely in uint8."""
    x = torch.full((1, 3, 32, 32), 100 / 255)
    delta = torch.full_like(x, 0.001)          # l2 norm 0.055
    assert torch.equal(S.quantize(x + delta, "uint8"), S.quantize(x, "uint8"))
    assert not torch.equal(S.quantize(x + delta, "float16"), S.quantize(x, "float16"))


def test_bad_storage_and_out_of_range_images_raise():
    with pytest.raises(ValueError, match=r"storage='bfloat8' is not a storage precision; valid: float32, float16, uint8"):
        S.encode_images(torch.rand(1, 1, 2, 2), "bfloat8")
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        S.encode_images(torch.full((1, 1, 2, 2), 1.5), "float32")


def test_complete_build_round_trips_and_records_sanity_metrics(tmp_path):
    x, y = _toy_data()
    res = _build(tmp_path / "d", x, y)
    assert res.built_shards == tuple(range(5)) and res.reused_shards == ()
    ds = S.load_constructed(tmp_path / "d")
    assert ds.x.shape == x.shape and torch.equal(ds.y, (y + 1) % 5)
    m = ds.manifest
    assert m["complete"] and m["num_shards"] == 5 and m["storage"] == "float32" and m["seed"] == 3
    assert sum(m["label_histogram"]) == 37
    assert np.array_equal(m["label_histogram"], np.bincount(((y + 1) % 5).numpy(), minlength=5))
    assert m["metrics"]["l2_mean"] == pytest.approx(ds.aux["l2"].double().mean().item(), rel=1e-6)
    assert 0 <= m["metrics"]["flag_rate"] <= 1
    assert m["settings"] == {"eps": 0.1}


def test_resume_after_a_crash_gives_a_byte_identical_dataset(tmp_path):
    x, y = _toy_data()
    _build(tmp_path / "full", x, y)

    class Crash(RuntimeError):
        pass

    def crash_after_two(i, entry):
        if i == 1:
            raise Crash("simulated crash after shard 1")

    with pytest.raises(Crash):
        _build(tmp_path / "crashy", x, y, on_shard=crash_after_two)
    assert not json.loads((tmp_path / "crashy" / "manifest.json").read_text())["complete"]
    with pytest.raises(ValueError, match="incomplete construction; re-run the same command to resume"):
        S.load_constructed(tmp_path / "crashy")
    # a shard file written without its sidecar (crash between the two writes) is rebuilt, not trusted
    (tmp_path / "crashy" / "shard-00002.bin").write_bytes(b"half-written")
    calls = []
    res = _build(tmp_path / "crashy", x, y, on_shard=lambda i, e: calls.append(i))
    assert res.reused_shards == (0, 1) and res.built_shards == (2, 3, 4) and calls == [2, 3, 4]
    assert _shard_bytes(tmp_path / "crashy") == _shard_bytes(tmp_path / "full")
    a, b = S.load_constructed(tmp_path / "crashy"), S.load_constructed(tmp_path / "full")
    assert a.content_sha256 == b.content_sha256 and torch.equal(a.x, b.x)
    # a third run reuses everything
    assert _build(tmp_path / "crashy", x, y).built_shards == ()


def test_a_different_seed_changes_the_data_and_restarting_with_other_settings_is_refused(tmp_path):
    x, y = _toy_data()
    _build(tmp_path / "a", x, y)
    _build(tmp_path / "b", x, y, seed=4)
    assert _shard_bytes(tmp_path / "a") != _shard_bytes(tmp_path / "b")
    with pytest.raises(ValueError, match=r"already holds a dataset built with different seed"):
        _build(tmp_path / "a", x, y, seed=4)
    with pytest.raises(ValueError, match=r"different storage, settings"):
        _build(tmp_path / "a", x, y, storage="float16", settings={"eps": 0.2})


def test_truncated_tampered_and_missing_shards_fail_with_clear_errors(tmp_path):
    x, y = _toy_data()
    root = tmp_path / "d"
    _build(root, x, y)
    shard = root / "shard-00001.bin"
    good = shard.read_bytes()
    shard.write_bytes(good[:-10])
    with pytest.raises(ValueError, match=r"shard .*shard-00001.bin is truncated or resized"):
        S.load_constructed(root)
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    shard.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"shard .*shard-00001.bin was tampered with: sha256"):
        S.load_constructed(root)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-00001.bin listed in the manifest is missing"):
        S.load_constructed(root)
    # resuming rebuilds the damaged shard identically
    _build(root, x, y)
    assert shard.read_bytes() == good
    with pytest.raises(ValueError, match=r"is not a robust-features shard"):
        S.decode_shard(b"garbage!" * 4, where="x.bin")
    with pytest.raises(FileNotFoundError, match=r"manifest.json is missing"):
        S.load_constructed(tmp_path / "nothing")


def test_writer_rejects_bad_shapes_and_labels(tmp_path):
    w = S.ShardedDatasetWriter(root=tmp_path, name="t", kind="D_det", num_examples=4, shard_size=4,
                               storage="float32", seed=0, image_shape=(1, 2, 2), num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        w.write_shard(0, torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"images have shape \(3, 1, 2, 2\); expected \(4, 1, 2, 2\)"):
        w.write_shard(0, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shard_size=0 must be >= 1"):
        S.ShardedDatasetWriter(root=tmp_path / "z", name="t", kind="D_det", num_examples=4, shard_size=0,
                               storage="float32", seed=0, image_shape=(1,), num_classes=3)


def test_targets_follow_the_paper_rules():
    y = torch.arange(10).repeat(50)
    assert torch.equal(targets_for("D_det", y, 10), (y + 1) % 10)
    g = torch.Generator().manual_seed(0)
    t = targets_for("D_rand", y, 10, g)
    assert (t == y).float().mean().item() == pytest.approx(0.1, abs=0.05)   # t = y allowed
    t2 = targets_for("D_rand", y, 10, g, exclude_true_label=True)
    assert not bool((t2 == y).any()) and set(t2.tolist()) == set(range(10))
    with pytest.raises(ValueError, match=r"kind='D_R' has no target rule"):
        targets_for("D_R", y, 10)


def test_start_points_never_start_from_the_target_and_noise_matches_the_notebook():
    pool = torch.rand(5, 1, 2, 2)
    idx = torch.arange(5)
    for s in range(20):
        x0, j = start_points("random_image", pool, idx, tuple(pool.shape), torch.Generator().manual_seed(s))
        assert not bool((j == idx).any()) and torch.equal(x0, pool[j])
    z, j = start_points("noise", pool, torch.arange(5000), (5000, 1, 2, 2), torch.Generator().manual_seed(0))
    assert bool((j == -1).all()) and abs(z.mean().item() - 0.5) < 0.01 and abs(z.std().item() - 0.05) < 0.005


def test_released_format_loader_reads_lists_of_chunks_and_rejects_malformed_files(tmp_path):
    folder = tmp_path / "d_robust_CIFAR"
    folder.mkdir()
    ims = [torch.rand(4, 3, 8, 8), torch.rand(2, 3, 8, 8)]
    labs = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5])]
    torch.save(ims, folder / "CIFAR_ims")
    torch.save(labs, folder / "CIFAR_lab")
    x, y = S.load_released(folder)
    assert torch.equal(x, torch.cat(ims)) and y.tolist() == [0, 1, 2, 3, 4, 5] and y.dtype == torch.int64
    torch.save([torch.tensor([0, 1])], folder / "CIFAR_lab")
    with pytest.raises(ValueError, match=r"6 images but 2 labels"):
        S.load_released(folder)
    torch.save([torch.full((1, 3, 8, 8), 2.0)], folder / "CIFAR_ims")
    with pytest.raises(ValueError, match=r"values lie in \[2, 2\]; expected \[0, 1\]"):
        S.load_released(folder)
    with pytest.raises(FileNotFoundError, match=r"released layout is <folder>/CIFAR_ims"):
        S.load_released(tmp_path / "nowhere")
