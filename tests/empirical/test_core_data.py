"""empirical.data: digits, synthetic ground truth, cifar10 pickle layout (local + loopback HTTP
download with checksum), imagefolder with uint8 cache, and the on-device Loader."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import math
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical.data import (
    Augment,
    Loader,
    augment_batch,
    check_images,
    load_cifar10,
    load_dataset,
    load_imagefolder,
    make_synthetic,
    planted_feature_scores,
)


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
def test_digits_is_a_stratified_1437_360_split_in_unit_range():
    d = load_dataset("digits")
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert set(torch.unique(d.x_train * 16).tolist()) <= set(range(17))          # 17 grey levels / 16
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 1, 8)
    counts = torch.bincount(d.y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37                   # stratified: 1797 * 0.2 / 10
    again = load_dataset("digits")
    assert again.meta["split_sha256"] == d.meta["split_sha256"] and torch.equal(again.x_test, d.x_test)
    assert load_dataset("digits", seed=1).meta["split_sha256"] != d.meta["split_sha256"]
    assert d.mean[0] == pytest.approx(float(d.x_train.mean()), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------------
def test_synthetic_planted_patterns_are_orthogonal_with_the_stated_norms_and_bands():
    d = make_synthetic(n_train=200, n_test=50, seed=3)
    r = d.meta["robust_pattern"].double().flatten(1)
    nr = d.meta["nonrobust_pattern"].double().flatten(1)
    C = d.num_classes
    torch.testing.assert_close(r @ r.T, d.meta["robust_norm"] ** 2 * torch.eye(C, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(nr @ nr.T, d.meta["nonrobust_norm"] ** 2 * torch.eye(C, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert float((r @ nr.T).abs().max()) < 1e-5                                   # disjoint frequency bands
    assert float(r.sum(1).abs().max()) < 1e-4 and float(nr.sum(1).abs().max()) < 1e-4   # orthogonal to constants

    def roughness(p: torch.Tensor) -> float:    # mean squared neighbour difference / mean square
        p = p.view(C, *d.x_train.shape[1:])
        dx = (p[..., 1:] - p[..., :-1]).pow(2).mean()
        return float(dx / p.pow(2).mean())

    assert roughness(r) < 0.2 and roughness(nr) > 3.0        # low vs high spatial frequency


def test_synthetic_ground_truth_nonrobust_always_agrees_robust_agrees_at_the_planted_rate():
    d = make_synthetic(n_train=4000, n_test=100, seed=0)
    s = planted_feature_scores(d.x_train, d.meta)
    assert s["robust"].shape == s["nonrobust"].shape == (4000, 10)
    nonrobust_agree = float((s["nonrobust"].argmax(1) == d.y_train).float().mean())
    robust_agree = float((s["robust"].argmax(1) == d.y_train).float().mean())
    assert nonrobust_agree > 0.995
    p = d.meta["robust_agreement"]
    assert abs(robust_agree - p) < 4 * math.sqrt(p * (1 - p) / 4000)
    assert float((s["robust"].argmax(1) == d.meta["robust_label_train"]).float().mean()) > 0.999
    # scores are in units of the pattern: ~1 for the shown class, ~0 elsewhere
    own = s["nonrobust"].gather(1, d.y_train[:, None]).squeeze(1)
    assert float(own.mean()) == pytest.approx(1.0, abs=0.05)


def test_synthetic_nonrobust_feature_is_swapped_by_a_small_l2_perturbation_robust_one_is_not():
    d = make_synthetic(n_train=100, n_test=500, seed=1)
    nr, r = d.meta["nonrobust_pattern"], d.meta["robust_pattern"]
    y, y2 = d.y_test, (d.y_test + 1) % d.num_classes
    delta = nr[y2] - nr[y]
    norms = delta.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, math.sqrt(2) * d.meta["nonrobust_norm"]),
                               atol=1e-5, rtol=0)
    swapped = (d.x_test + delta).clamp(0, 1)
    s = planted_feature_scores(swapped, d.meta)
    assert float((s["nonrobust"].argmax(1) == y2).float().mean()) > 0.99
    # the same budget along the robust patterns cannot change the robust feature's class
    step = (r[y2] - r[y]) / (r[y2] - r[y]).flatten(1).norm(dim=1).view(-1, 1, 1, 1) * norms.view(-1, 1, 1, 1)
    s2 = planted_feature_scores((d.x_test + step).clamp(0, 1), d.meta)
    assert torch.equal(s2["robust"].argmax(1), planted_feature_scores(d.x_test, d.meta)["robust"].argmax(1))


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(ValueError, match=r"robust_agreement=1.5 must be a number in \[0, 1\]"):
        make_synthetic(robust_agreement=1.5)
    with pytest.raises(ValueError, match=r"n_train=0 must be a positive integer"):
        make_synthetic(n_train=0)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 pickle layout
# ---------------------------------------------------------------------------------------------
def _fake_cifar(folder: Path, n_per_batch: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Batches of ``n_per_batch`` >= 10 images holding every class (a loader refuses a missing class)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.permutation(np.arange(n_per_batch) % 10).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
        out[name] = data
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n_per_batch}, fh)
    return out


def test_cifar10_loads_the_pickle_layout_losslessly(tmp_path):
    raw = _fake_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.x_train.shape == (50, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    expect = torch.from_numpy(raw["data_batch_2"].reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(d.x_train[10:20], expect)                 # batch order, CHW layout, /255 exact
    assert d.classes[0] == "airplane" and d.mean == (0.4914, 0.4822, 0.4465)
    assert load_cifar10(tmp_path / "cifar-10-batches-py").x_test.shape[0] == 10  # batches folder itself


def test_cifar10_missing_or_malformed_root_shows_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected layout ROOT/cifar-10-batches-py/\{data_batch_1"):
        load_dataset("cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs a data root"):
        load_dataset("cifar10")
    _fake_cifar(tmp_path / "bad" / "cifar-10-batches-py")
    (tmp_path / "bad" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR-10 pickle batch.*expected layout"):
        load_dataset("cifar10", root=str(tmp_path / "bad"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - keep test output clean
        pass


@pytest.fixture()
def archive_server(tmp_path):
    """A loopback HTTP server serving a locally built cifar-10-python.tar.gz."""
    src = tmp_path / "src"
    raw = _fake_cifar(src / "cifar-10-batches-py", n_per_batch=11, seed=5)
    served = tmp_path / "served"
    served.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (served / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz", md5, raw
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_cifar10_download_over_loopback_http_checks_the_md5(tmp_path, archive_server):
    url, md5, raw = archive_server
    root = tmp_path / "data"
    d = load_cifar10(root, download=True, url=url, md5=md5)
    assert d.x_train.shape == (55, 3, 32, 32)
    assert torch.equal(d.x_test, torch.from_numpy(raw["test_batch"].reshape(-1, 3, 32, 32)).float() / 255)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(root.glob("*.tmp"))                                  # temporary archive removed

    root2 = tmp_path / "data2"
    with pytest.raises(ValueError, match=r"has md5 [0-9a-f]{32}, expected 0{32}; the file was discarded"):
        load_cifar10(root2, download=True, url=url, md5="0" * 32)
    assert not (root2 / "cifar-10-batches-py").exists() and not list(root2.glob("*"))


# ---------------------------------------------------------------------------------------------
# imagefolder
# ---------------------------------------------------------------------------------------------
def _fake_imagefolder(root: Path, size: int = 8, fmt: str = "png") -> dict[str, list[np.ndarray]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "ant"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(a).save(root / split / cls / f"{i}.{fmt}")
                arrays[split].append(a)
    return arrays


def test_imagefolder_decodes_pngs_exactly_and_caches_uint8_arrays(tmp_path):
    _fake_imagefolder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    d = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", cache_dir=str(cache))
    assert d.classes == ("ant", "cat")                                   # sorted class names = labels
    assert d.x_train.shape == (6, 3, 8, 8) and d.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    from PIL import Image

    a = np.array(Image.open(tmp_path / "imgs" / "train" / "cat" / "1.png"))
    assert torch.equal(d.x_train[4], torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    files = list(cache.glob("imagefolder-*.npz"))
    assert len(files) == 1 and not d.meta["from_cache"]
    with np.load(files[0]) as z:
        assert z["x_train"].dtype == np.uint8
    again = load_imagefolder(tmp_path / "imgs", cache_dir=cache)
    assert again.meta["from_cache"] and torch.equal(again.x_train, d.x_train)


def test_imagefolder_reads_jpegs_and_reports_a_malformed_layout(tmp_path):
    _fake_imagefolder(tmp_path / "jpg", fmt="jpg")
    d = load_imagefolder(tmp_path / "jpg", cache_dir=tmp_path / "c")
    assert d.x_test.shape == (4, 3, 8, 8) and 0 <= float(d.x_test.min()) and float(d.x_test.max()) <= 1
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"has no 'test' folder; expected layout PATH/train/<class>"):
        load_imagefolder(tmp_path / "only_train")
    with pytest.raises(FileNotFoundError, match="does not exist; expected layout"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


def test_unknown_dataset_lists_the_valid_ones_and_images_outside_the_box_are_rejected():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid: digits, synthetic, cifar10, imagefolder:PATH"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"x has values in \[-0.5, 1\]; images must lie in \[0, 1\]"):
        check_images(torch.tensor([-0.5, 1.0]).view(1, 1, 1, 2))


# ---------------------------------------------------------------------------------------------
# Loader and augmentation
# ---------------------------------------------------------------------------------------------
def test_loader_is_a_deterministic_permutation_per_epoch():
    x = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1) / 50
    y = torch.arange(50)
    L = Loader(x, y, batch_size=16, shuffle=True, device="cpu", seed=7)
    assert len(L) == 4
    L.set_epoch(1)
    e1 = torch.cat([yb for _, yb in L])
    assert sorted(e1.tolist()) == list(range(50))                       # every example exactly once
    assert torch.equal(e1, torch.cat([yb for _, yb in L]))              # same epoch -> same order
    L.set_epoch(2)
    assert not torch.equal(e1, torch.cat([yb for _, yb in L]))
    for xb, yb in L:
        assert torch.equal((xb.view(-1) * 50).round().long(), yb)       # pairs stay aligned
    assert len(Loader(x, y, batch_size=16, shuffle=False, device="cpu", drop_last=True)) == 3


@settings(max_examples=25)
@given(pad=st.integers(1, 3), flip=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_augmented_images_are_windows_of_the_padded_image_possibly_mirrored(pad, flip, seed):
    x = torch.rand(6, 2, 5, 5)
    gen = torch.Generator().manual_seed(seed)
    aug = Augment(crop_padding=pad, flip=flip)
    out = augment_batch(x, aug, gen)
    again = augment_batch(x, aug, torch.Generator().manual_seed(seed))
    assert torch.equal(out, again)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(6):
        candidates = []
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                w = xp[i, :, oy : oy + 5, ox : ox + 5]
                candidates += [w, w.flip(2)] if flip else [w]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_augment_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"crop_padding=-1 must be a non-negative integer"):
        Augment(crop_padding=-1)
    with pytest.raises(ValueError, match=r"padding_mode='wrap' is not valid; valid: zeros, reflect"):
        Augment(crop_padding=2, padding_mode="wrap")


@pytest.mark.gpu
def test_gpu_loader_is_resident_and_matches_the_cpu_permutation():
    x, y = torch.rand(300, 3, 8, 8), torch.arange(300)
    gpu = Loader(x, y, batch_size=64, shuffle=True, device="cuda", seed=3, augment=Augment(2, True))
    cpu = Loader(x, y, batch_size=64, shuffle=True, device="cpu", seed=3, augment=Augment(2, True))
    assert gpu.x.is_cuda
    for (xg, yg), (_, yc) in zip(gpu, cpu):
        assert xg.is_cuda and torch.equal(yg.cpu(), yc)
