"""Nothing the toolkit reads can run code: CIFAR-10 pickles go through a restricted unpickler,
torch files through weights_only=True, the imagefolder cache through allow_pickle=False; every
refusal or damaged file is one line naming the file (exit 2 at the CLI)."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from empirical.checkpoint import load_torch_file
from empirical.data import RestrictedUnpickler, UnsafePickleError, load_cifar10, load_imagefolder, restricted_pickle_load
from empirical.shards import load_released
from robust_features.cli import main


class _Payload:
    """Unpickling this calls ``func(*args)`` (what a crafted file does)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def _batch(n: int = 10, seed: int = 0) -> dict:
    """A batch of ``n`` >= 10 images holding every class (a loader refuses a missing class)."""
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", b"labels": rng.permutation(np.arange(n) % 10).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def _cifar(folder: Path, *, protocol: int = pickle.HIGHEST_PROTOCOL, evil: dict | None = None) -> dict:
    folder.mkdir(parents=True)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        b = _batch(seed=i)
        if evil and name in evil:
            b[b"extra"] = evil[name]
        (folder / name).write_bytes(pickle.dumps(b, protocol=protocol))
        out[name] = b
    meta = {b"label_names": [c.encode() for c in "abcdefghij"], b"num_cases_per_batch": 10, b"num_vis": 3072}
    if evil and "batches.meta" in evil:
        meta[b"extra"] = evil["batches.meta"]
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return out


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_format_batches_load_through_the_restricted_unpickler(tmp_path, protocol):
    raw = _cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    d = load_cifar10(tmp_path)
    assert d.x_train.shape == (50, 3, 32, 32) and d.classes == tuple("abcdefghij")
    expect = torch.from_numpy(raw["test_batch"][b"data"].reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(d.x_test, expect) and d.y_test.tolist() == raw["test_batch"][b"labels"]
    # numpy scalars and arrays of other dtypes are data too
    obj = {b"x": np.float32(1.5), b"y": np.arange(3, dtype=np.int64), b"z": (1, 2.0, "s", None, True)}
    back = restricted_pickle_load_bytes(pickle.dumps(obj, protocol=protocol))
    assert back[b"x"] == np.float32(1.5) and back[b"y"].tolist() == [0, 1, 2] and back[b"z"] == (1, 2.0, "s", None, True)


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as the official archive's Python 2 pickles are: protocol 2, str as
    SHORT_BINSTRING, the array through numpy.core.multiarray._reconstruct (numpy 1.x names)."""
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    n = data.shape[0]
    out = b"\x80\x02}q\x00(" + s(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85" + s(b"b") + b"\x87Rq\x03("
    out += b"K\x01J" + struct.pack("<i", n) + b"M\x00\x0c\x86"
    out += b"cnumpy\ndtype\nq\x04" + s(b"u1") + b"K\x00K\x01\x87Rq\x05(K\x03" + s(b"|")
    out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb"
    out += s(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    return out


def test_python2_batches_as_in_the_official_archive_load(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    raw = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        raw[name] = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
        (folder / name).write_bytes(_py2_batch(raw[name], [1, 2, 9, 0, 3, 4, 5, 6, 7, 8]))   # every class
    d = load_cifar10(tmp_path)
    assert d.x_train.shape == (50, 3, 32, 32) and d.y_test.tolist() == [1, 2, 9, 0, 3, 4, 5, 6, 7, 8]
    assert torch.equal(d.x_test, torch.from_numpy(raw["test_batch"].reshape(-1, 3, 32, 32)).float() / 255)


def restricted_pickle_load_bytes(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


@pytest.mark.parametrize("where", ["data_batch_1", "test_batch", "batches.meta"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_crafted_cifar_pickle_is_refused_and_runs_nothing(tmp_path, where, protocol):
    marker = tmp_path / "marker"
    _cifar(tmp_path / "cifar-10-batches-py", protocol=protocol,
           evil={where: _Payload(builtins.exec, _marker_code(marker))})
    with pytest.raises(ValueError, match=rf"{re.escape(where)}: refused to unpickle the global (__builtin__|builtins)\.exec"):
        load_cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("func, name", [(os.system, f"{os.name == 'nt' and 'nt' or 'posix'}.system"),
                                        (getattr, "builtins.getattr"), (Path, "pathlib"), (np.load, "numpy.load")])
def test_every_global_outside_the_format_is_refused(func, name):
    data = pickle.dumps({b"data": _Payload(func, "true")})
    with pytest.raises(UnsafePickleError, match=rf"global {re.escape(name)}"):
        restricted_pickle_load_bytes(data)
    # a protocol-2 pickle's _codecs.encode is allowed for latin-1 only
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x04\x00\x00\x00zlibq\x01\x86R."
    with pytest.raises(pickle.UnpicklingError, match="only latin-1"):
        restricted_pickle_load_bytes(evil)


def test_the_cli_refuses_a_crafted_batch_in_one_line(tmp_path, capsys):
    marker = tmp_path / "marker"
    _cifar(tmp_path / "data" / "cifar-10-batches-py", evil={"data_batch_3": _Payload(os.system, f"touch {marker}")})
    rc = main(["train", "--data", "cifar10", "--data-root", str(tmp_path / "data"), "--out-dir", str(tmp_path / "r"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert re.search(r"robust-features train: error: .*data_batch_3: refused to unpickle the global (posix|nt)\.system",
                     err), err
    assert not marker.exists() and not (tmp_path / "r" / "model.pt").exists()


def test_a_truncated_batch_is_one_line(tmp_path):
    _cifar(tmp_path / "c")
    p = tmp_path / "c" / "data_batch_2"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"data_batch_2 is not a CIFAR-10 pickle batch \((EOFError|UnpicklingError)"):
        load_cifar10(tmp_path / "c")


def test_restricted_pickle_load_names_the_file(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps([_Payload(builtins.eval, "1")]))
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}: refused to unpickle the global builtins\.eval"):
        restricted_pickle_load(p)


# ---------------------------------------------------------------------------------------------
# torch files: checkpoints, training state, the authors' released format
# ---------------------------------------------------------------------------------------------
def test_a_crafted_torch_file_is_refused_by_weights_only(tmp_path):
    marker = tmp_path / "marker"
    p = tmp_path / "CIFAR_ims"
    torch.save([torch.rand(2, 3, 4, 4), _Payload(builtins.exec, _marker_code(marker))], p)
    torch.save([torch.zeros(2)], tmp_path / "CIFAR_lab")
    with pytest.raises(ValueError, match=r"released images file .*CIFAR_ims refers to (builtins\.)?exec, which "
                                         r"torch.load\(weights_only=True\) refuses"):
        load_released(tmp_path)
    assert not marker.exists()


def test_a_truncated_or_foreign_torch_file_is_one_line(tmp_path):
    p = tmp_path / "state.pt"
    torch.save({"w": torch.rand(100)}, p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"checkpoint .*state.pt is truncated or damaged and cannot be read "
                                         r"\(RuntimeError: PytorchStreamReader failed") as info:
        load_torch_file(p)
    assert "\n" not in str(info.value)
    for junk in (b"", b"hello world", b"\x80\x04K\x01"):
        p.write_bytes(junk)
        with pytest.raises(ValueError, match=r"state.pt (is truncated or damaged|is damaged or not a torch.save)") as info:
            load_torch_file(p)
        assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "missing.pt")


def test_a_crafted_training_state_is_refused_on_resume(tmp_path):
    from empirical.models import build_model
    from empirical.train import TrainConfig, fit

    marker = tmp_path / "marker"
    torch.save({"fingerprint": "x", "evil": _Payload(builtins.exec, _marker_code(marker))}, tmp_path / "latest.pt")
    model = build_model("mlp", num_classes=2, in_channels=1, image_size=4, mean=(0.5,), std=(0.25,))
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 2
    with pytest.raises(ValueError, match=r"training state .*latest.pt refers to (builtins\.)?exec.*--no-resume"):
        fit(model, x, y, TrainConfig(epochs=1, batch_size=4, lr=0.1), device="cpu", out_dir=tmp_path, progress=False)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# the imagefolder cache (.npz) is never unpickled
# ---------------------------------------------------------------------------------------------
def test_an_imagefolder_cache_holding_pickled_objects_is_ignored_and_rebuilt(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "imgs" / split / cls / "0.png")
    cache = tmp_path / "cache"
    good = load_imagefolder(tmp_path / "imgs", cache_dir=cache)
    (cache_file,) = cache.glob("imagefolder-*.npz")
    marker = tmp_path / "marker"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(builtins.exec, _marker_code(marker))
    with np.load(cache_file) as z:
        arrays = {k: z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "x_train": evil})
    cache_file.write_bytes(buf.getvalue())
    again = load_imagefolder(tmp_path / "imgs", cache_dir=cache)
    assert not again.meta["from_cache"] and torch.equal(again.x_train, good.x_train)
    assert not marker.exists()


def test_an_unreachable_download_is_one_line(tmp_path):
    import socket

    with socket.socket() as sock:                        # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match=rf"cannot download http://127.0.0.1:{port}/c.tar.gz \(.*refused.*\); "
                                         rf"offline, fetch cifar-10-python.tar.gz elsewhere and unpack it under"):
        load_cifar10(tmp_path / "data", download=True, url=f"http://127.0.0.1:{port}/c.tar.gz")
    assert not list((tmp_path / "data").iterdir())       # the temporary archive was removed
