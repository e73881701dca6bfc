"""Nothing read from disk is trusted (docs/conventions.md sec. 9), part B: loaded data is range-checked.

An imagefolder class folder without images, a decoded cache whose contents do not match its
images, a CIFAR-10 batch that is not uint8 pixel rows with labels in [0, 10), a dataset with a
class missing from a split, images that are not finite in [0, 1], and checkpoints with NaN or
Inf weights, entries of another dtype or a sidecar without its sha256 each end in one
``ValueError`` line naming the file or folder (exit 2 at the command line), or, for the cache,
in the images decoded again; never in a silent acceptance or a traceback later.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from empirical.checkpoint import load_model, sidecar_path
from empirical.data import IMAGE_SUFFIXES, ImageData, load_cifar10, load_dataset, load_imagefolder, make_synthetic
from foundation.records import file_sha256
from robust_features.cli import main

CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"robust-features {command}: error: "), err
    return err


# ---------------------------------------------------------------------------------------------
# imagefolder: every class folder holds images, in both splits
# ---------------------------------------------------------------------------------------------
def _folder(root: Path, classes=("ant", "bee", "cat"), n: int = 2, size: int = 4, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def _empty(folder: Path, leave: str | None) -> None:
    for f in folder.iterdir():
        f.unlink()
    if leave:
        (folder / leave).write_text("not an image")


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("leave, held", [(None, "it is empty"), ("README.md", "it holds only README.md"),
                                         ("notes.txt", "it holds only notes.txt"),
                                         (".DS_Store", "it holds only hidden files")])
def test_a_class_folder_without_images_is_refused_naming_it(tmp_path, split, leave, held):
    root = _folder(tmp_path / "imgs")
    _empty(root / split / "bee", leave)
    suffixes = re.escape(", ".join(IMAGE_SUFFIXES))
    with pytest.raises(ValueError, match=rf"^imagefolder class folder {re.escape(str(root / split / 'bee'))} has no "
                                         rf"images \({held}\); every class folder needs at least one image \(valid "
                                         rf"suffixes: {suffixes}\)") as info:
        load_imagefolder(root, cache_dir=tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()                     # refused before anything was decoded


def test_an_empty_test_class_stops_training_in_one_line_instead_of_evaluating_fewer_classes(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    _empty(root / "test" / "cat", None)
    rc = main(["train", "--data", f"imagefolder:{root}", "--arch", "mlp", "--epochs", "1", "--no-progress",
               "--out-dir", str(tmp_path / "run")])
    assert rc == 2
    err = _one_line(capsys, "train")
    assert f"imagefolder class folder {root / 'test' / 'cat'} has no images (it is empty)" in err
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("missing_in, only", [("test", "only in train: cat"), ("train", "only in test: cat")])
def test_a_class_folder_in_one_split_only_is_refused_naming_the_class(tmp_path, missing_in, only):
    root = _folder(tmp_path / "imgs")
    for f in (root / missing_in / "cat").iterdir():
        f.unlink()
    (root / missing_in / "cat").rmdir()
    with pytest.raises(ValueError, match=rf"differ from test classes .* in {re.escape(str(root))} \({only}\); every "
                                         r"class needs a folder with images in both train and test"):
        load_imagefolder(root, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# the imagefolder cache: contents that do not match the images are decoded again
# ---------------------------------------------------------------------------------------------
def _edit_cache(cache: Path, **arrays: np.ndarray) -> None:
    (cache_file,) = cache.glob("imagefolder-*.npz")
    with np.load(cache_file) as z:
        old = {k: z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez(buf, **{**old, **arrays})
    cache_file.write_bytes(buf.getvalue())


@pytest.mark.parametrize("edit", [
    lambda a: {"y_train": a["y_train"] + 5},                                      # labels above C
    lambda a: {"y_test": a["y_test"] - 1},                                        # a label -1
    lambda a: {"y_train": np.zeros_like(a["y_train"])},                           # in range, but not the files'
    lambda a: {"y_train": a["y_train"].astype(np.int32)},
    lambda a: {"x_train": a["x_train"].astype(np.float32) * 3},                   # not uint8
    lambda a: {"x_test": a["x_test"].reshape(len(a["x_test"]), 3, 2, 8)},         # not square
    lambda a: {"x_test": a["x_test"][:, :1]},                                     # one channel for RGB
    lambda a: {"x_train": a["x_train"][:-1]},                                     # an image short
    lambda a: {"x_train": a["x_train"][:, :, :2, :2]},                            # train and test sizes differ
], ids=["labels-above-C", "label-minus-1", "labels-not-the-files", "int32-labels", "float-images",
        "not-square", "one-channel", "one-short", "sizes-differ"])
def test_a_cache_whose_contents_do_not_match_the_images_is_decoded_again(tmp_path, edit):
    root, cache = _folder(tmp_path / "imgs"), tmp_path / "cache"
    good = load_imagefolder(root, cache_dir=cache)
    with np.load(next(cache.glob("imagefolder-*.npz"))) as z:
        _edit_cache(cache, **edit({k: z[k] for k in z.files}))
    again = load_imagefolder(root, cache_dir=cache)
    assert not again.meta["from_cache"]
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, name), getattr(good, name)), name
    assert again.class_counts("train") == again.class_counts("test") == [2, 2, 2]
    assert load_imagefolder(root, cache_dir=cache).meta["from_cache"]            # the rebuilt cache is reused


# ---------------------------------------------------------------------------------------------
# CIFAR-10 batches: uint8 rows of 3072 pixels and N integer labels in [0, 10), nothing cast
# ---------------------------------------------------------------------------------------------
def _cifar(folder: Path, edit: dict[str, dict] | None = None, names: list[bytes] | None = None) -> Path:
    """``cifar-10-batches-py`` under ``folder`` (10 images per batch, every class once), with
    ``edit[batch]`` merged into that batch's dict."""
    rng = np.random.default_rng(0)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in CIFAR_NAMES:
        b = {b"batch_label": name.encode(), b"labels": rng.permutation(10).tolist(),
             b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8)}
        b.update((edit or {}).get(name, {}))
        with open(batches / name, "wb") as fh:
            pickle.dump(b, fh)
    with open(batches / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names or [c.encode() for c in "abcdefghij"], b"num_cases_per_batch": 10}, fh)
    return folder


_UNIT = np.random.default_rng(1).random((10, 3072)).astype(np.float32)
_NAN = np.where(np.arange(3072) % 7 == 0, np.nan, 0.5).astype(np.float32)[None].repeat(10, 0)


@pytest.mark.parametrize("data, found", [
    (_UNIT, r"a float32 array of shape \(10, 3072\) with values in \[\S+, 0\.9999\]"),
    (_NAN, r"a float32 array of shape \(10, 3072\) with 4390 NaN or infinite values and finite values in \[0\.5, 0\.5\]"),
    (np.full((10, 3072), 300, np.int64), r"an int64 array of shape \(10, 3072\) with values in \[300, 300\]"),
    (np.full((10, 3072), -1, np.int16), r"an int16 array of shape \(10, 3072\) with values in \[-1, -1\]"),
    (np.zeros((10, 1024), np.uint8), r"a uint8 array of shape \(10, 1024\) with values in \[0, 0\]"),
    (np.zeros((10, 3, 32, 32), np.uint8), r"a uint8 array of shape \(10, 3, 32, 32\) with values in \[0, 0\]"),
    ([b"\x00" * 3072] * 10, r"a list of length 10"),
], ids=["float-in-unit-range", "nan", "ints-above-255", "negative-int16", "1024-columns", "4-d", "list-of-bytes"])
def test_a_cifar_batch_whose_data_is_not_uint8_pixel_rows_is_refused_naming_it_and_what_it_holds(tmp_path, data, found):
    root = _cifar(tmp_path, {"data_batch_2": {b"data": data}})
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(batch))}: data is {found}; a CIFAR-10 batch holds uint8 "
                                         r"pixel rows of shape \(N, 3072\) with values 0\.\.255; delete it and fetch "
                                         r"the official archive \(--download\)$"):
        load_cifar10(root)


@pytest.mark.parametrize("labels, found", [
    ([1.7] * 10, r"labels are a float64 array of shape \(10,\) with values in \[1\.7, 1\.7\]"),
    (["cat"] * 10, r"labels are a <U3 array of shape \(10,\)"),
    ([[1, 2]] * 10, r"labels are an int64 array of shape \(10, 2\)"),
    ([True] * 10, r"labels are a bool array of shape \(10,\)"),
    ([2 ** 70] * 10, r"labels are an object array of shape \(10,\)"),
    (list(range(1, 11)), r"labels range over \[1, 10\]; CIFAR-10 labels are integers in \[0, 10\)"),
    (list(range(-1, 9)), r"labels range over \[-1, 8\]; CIFAR-10 labels are integers in \[0, 10\)"),
], ids=["floats", "strings", "2-d", "bools", "huge", "above-9", "negative"])
def test_cifar_labels_that_are_not_integers_in_0_to_9_are_refused_naming_the_batch(tmp_path, labels, found):
    root = _cifar(tmp_path, {"test_batch": {b"labels": labels}})
    batch = root / "cifar-10-batches-py" / "test_batch"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(batch))}: {found}"):
        load_cifar10(root)


def test_the_cli_refuses_float_cifar_pixels_in_one_line_instead_of_training_on_zeros(tmp_path, capsys):
    root = _cifar(tmp_path / "data", {"data_batch_4": {b"data": _UNIT}})
    rc = main(["train", "--data", "cifar10", "--data-root", str(root), "--out-dir", str(tmp_path / "run"),
               "--no-progress"])
    assert rc == 2
    err = _one_line(capsys, "train")
    assert f"{root / 'cifar-10-batches-py' / 'data_batch_4'}: data is a float32 array of shape (10, 3072)" in err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_cifar_test_batch_missing_a_class_is_refused_naming_it(tmp_path):
    root = _cifar(tmp_path, {"test_batch": {b"labels": [0, 1, 2, 4, 5, 6, 7, 8, 9, 0]}})
    batch = root / "cifar-10-batches-py" / "test_batch"
    with pytest.raises(ValueError, match=rf"^dataset cifar10: the test split \({re.escape(str(batch))}\) has no "
                                         r"example of class 'd' \(label 3\); every one of its 10 classes needs at "
                                         r"least one training and one test example"):
        load_cifar10(root)


def test_batches_meta_must_name_ten_classes(tmp_path):
    root = _cifar(tmp_path, names=[c.encode() for c in "abcdefghijk"])
    with pytest.raises(ValueError, match=r"batches.meta lists 11 label_names; CIFAR-10 has 10 classes"):
        load_cifar10(root)


# ---------------------------------------------------------------------------------------------
# ImageData: what every loader returns
# ---------------------------------------------------------------------------------------------
def _data(**change) -> ImageData:
    fields = dict(name="toy", x_train=torch.rand(4, 1, 2, 2), y_train=torch.tensor([0, 1, 0, 1]),
                  x_test=torch.rand(2, 1, 2, 2), y_test=torch.tensor([0, 1]), classes=("a", "b"),
                  mean=(0.5,), std=(0.25,))
    return ImageData(**{**fields, **change})


def _with(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[1] = value
    return x


@pytest.mark.parametrize("change, message", [
    ({"x_train": _with(torch.rand(4, 1, 2, 2), float("nan"))},
     r"dataset toy: x_train holds 1 NaN values; images must be finite and lie in \[0, 1\]"),
    ({"x_test": _with(torch.rand(2, 1, 2, 2), float("inf"))}, r"dataset toy: x_test has values in \[\S+, inf\]; images must lie in \[0, 1\]"),
    ({"x_test": torch.rand(2, 1, 2, 2) * 255}, r"dataset toy: x_test has values in \[\S+, \S+\]; images must lie in \[0, 1\]"),
    ({"x_train": _with(torch.rand(4, 1, 2, 2), -0.25)}, r"dataset toy: x_train has values in \[-0.25, \S+\]"),
    ({"x_train": torch.zeros(4, 1, 2, 2, dtype=torch.uint8)},
     r"dataset toy: x_train must be a floating tensor with values in \[0, 1\]; got dtype torch.uint8"),
    ({"y_train": torch.tensor([0, 1, 0, 2])}, r"dataset toy: y_train holds labels in \[0, 2\]; labels must lie in \[0, 2\) "
                                              r"for its 2 classes"),
    ({"y_test": torch.tensor([-1, 1])}, r"dataset toy: y_test holds labels in \[-1, 1\]; labels must lie in \[0, 2\)"),
    ({"y_test": torch.tensor([0.0, 1.0])}, r"dataset toy: y_test has dtype float32; labels must be int64 class indices "
                                           r"in \[0, 2\)"),
    ({"y_train": torch.tensor([0, 1, 0, 1], dtype=torch.int32)}, r"dataset toy: y_train has dtype int32"),
], ids=["nan", "inf", "0-255", "negative", "uint8", "label-C", "label-minus-1", "float-labels", "int32-labels"])
def test_image_data_refuses_images_outside_0_1_and_labels_outside_0_c(change, message):
    with pytest.raises(ValueError, match=message):
        _data(**change)


def test_digits_pass_through_the_check(monkeypatch):
    """A corrupted copy of scikit-learn's bundled digits (a grey level of 17 of 16) is refused."""
    import sklearn.datasets

    real = sklearn.datasets.load_digits

    def hot():
        bunch = real()
        bunch.images[5, 3, 3] = 17.0
        return bunch

    assert min(load_dataset("digits").class_counts("test")) > 0                  # the real one loads
    monkeypatch.setattr(sklearn.datasets, "load_digits", hot)
    with pytest.raises(ValueError, match=r"dataset digits: x_(train|test) has values in \[0, 1.062\]"):
        load_dataset("digits")


def test_synthetic_draws_too_small_for_every_class_are_refused():
    assert make_synthetic(n_train=200, n_test=50, seed=3).class_counts("test")[0] > 0
    with pytest.raises(ValueError, match=r"dataset synthetic: the test split \(n_test=5, seed 0\) has no example of "
                                         r"class 'class\d' \(label \d\) \(and \d more classes\); every one of its 10 "
                                         r"classes needs at least one training and one test example; draw more"):
        make_synthetic(n_train=100, n_test=5)


def test_every_loader_checks_what_it_returns(tmp_path, monkeypatch):
    """digits, synthetic, cifar10 and imagefolder all end in the every-class check (and so went
    through ImageData's range checks first)."""
    import empirical.data as D

    seen = []
    real = D._require_every_class

    def spy(d, sources, advice=""):
        seen.append(d.name.partition(":")[0])
        return real(d, sources, advice)

    monkeypatch.setattr(D, "_require_every_class", spy)
    load_dataset("digits")
    load_dataset("synthetic")
    load_dataset("cifar10", root=str(_cifar(tmp_path / "c")))
    load_dataset(f"imagefolder:{_folder(tmp_path / 'i')}", cache_dir=str(tmp_path / "cache"))
    assert seen == ["digits", "synthetic", "cifar10", "imagefolder"]


# ---------------------------------------------------------------------------------------------
# checkpoints: finite weights of the model's dtypes, verified against the sidecar's sha256
# ---------------------------------------------------------------------------------------------
def _rewrite(path: Path, edit, *, resign: bool = True) -> dict[str, torch.Tensor]:
    """Edit the saved state_dict; with ``resign`` the sidecar records the new sha256 (so the file
    passes verification and what is checked is its content)."""
    state = edit(torch.load(path, weights_only=True))
    torch.save(state, path)
    if resign:
        meta = json.loads(sidecar_path(path).read_text())
        sidecar_path(path).write_text(json.dumps({**meta, "sha256": file_sha256(path)}))
    return state


def _second_weight(state, value):
    k = [k for k, v in state.items() if v.is_floating_point() and v.numel() > 3][1]     # not the first tensor
    state[k].view(-1)[3] = value
    return state


@pytest.mark.parametrize("value, counts", [(float("nan"), "1 NaN and 0 infinite"), (float("inf"), "0 NaN and 1 infinite"),
                                           (-float("inf"), "0 NaN and 1 infinite")])
@pytest.mark.parametrize("verify", [True, False])
def test_a_checkpoint_with_nan_or_inf_weights_is_refused_naming_the_first_bad_tensor(checkpoint, value, counts, verify):
    state = _rewrite(checkpoint, lambda s: _second_weight(s, value))
    first_bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()][0]
    with pytest.raises(ValueError, match=rf"^checkpoint {re.escape(str(checkpoint))} holds non-finite weights: "
                                         rf"{re.escape(first_bad)} has {counts} values of \d+; the training that wrote "
                                         r"it diverged or the file was altered"):
        load_model(checkpoint, verify=verify)


def test_eval_refuses_a_nan_checkpoint_in_one_line(checkpoint, capsys):
    _rewrite(checkpoint, lambda s: _second_weight(s, float("nan")))
    assert main(["eval", "--checkpoint", str(checkpoint), "--n", "10"]) == 2
    assert f"checkpoint {checkpoint} holds non-finite weights: " in _one_line(capsys, "eval")


def test_a_checkpoint_entry_of_another_dtype_is_refused_naming_the_tensor_and_both_dtypes(checkpoint):
    saved = torch.load(checkpoint, weights_only=True)
    _rewrite(checkpoint, lambda s: {k: (v * 100).long() if k.endswith("weight") else v for k, v in s.items()})
    first = [k for k in saved if k.endswith("weight")][0]
    with pytest.raises(ValueError, match=rf"^checkpoint {re.escape(str(checkpoint))} holds {re.escape(first)} as int64, "
                                         r"but the architecture 'mlp' of its sidecar model.json keeps it as float32 "
                                         r"\(and \d+ more tensors of another dtype\); loading would cast it silently"):
        load_model(checkpoint)
    # one float64 buffer alone: named, without "more"
    _rewrite(checkpoint, lambda s: {**saved, "normalize.mean": saved["normalize.mean"].double()})
    with pytest.raises(ValueError, match=r"holds normalize.mean as float64, but the architecture 'mlp' of its sidecar "
                                         r"model.json keeps it as float32; loading"):
        load_model(checkpoint)


@pytest.mark.parametrize("recorded", ["absent", None, ""])
def test_a_sidecar_without_sha256_is_refused_unless_verify_is_false(checkpoint, recorded):
    zeroed = _rewrite(checkpoint, lambda s: {k: torch.zeros_like(v) for k, v in s.items()}, resign=False)
    meta = json.loads(sidecar_path(checkpoint).read_text())
    if recorded == "absent":
        del meta["sha256"]
    else:
        meta["sha256"] = recorded
    sidecar_path(checkpoint).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"^the sidecar of {re.escape(str(checkpoint))} records no sha256; the "
                                         r"checkpoint cannot be verified; re-save it, or pass verify=False "
                                         r"\(--no-verify\) to load it unverified$"):
        load_model(checkpoint)
    loaded = load_model(checkpoint, verify=False)                 # asked for explicitly: the weights as they are
    assert all(torch.equal(v, zeroed[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("recorded", [123, "abc", "A" * 64, ["x"]])
def test_a_sidecar_sha256_that_is_not_a_digest_is_refused(checkpoint, recorded):
    meta = json.loads(sidecar_path(checkpoint).read_text())
    sidecar_path(checkpoint).write_text(json.dumps({**meta, "sha256": recorded}))
    with pytest.raises(ValueError, match=rf"the sidecar of {re.escape(str(checkpoint))} records sha256="
                                         rf"{re.escape(repr(recorded))}, not a 64-digit hex digest; the checkpoint "
                                         r"cannot be verified"):
        load_model(checkpoint)


def test_eval_refuses_an_unverifiable_checkpoint_in_one_line(checkpoint, capsys):
    meta = json.loads(sidecar_path(checkpoint).read_text())
    del meta["sha256"]
    sidecar_path(checkpoint).write_text(json.dumps(meta))
    assert main(["eval", "--checkpoint", str(checkpoint), "--n", "10"]) == 2
    assert f"the sidecar of {checkpoint} records no sha256; the checkpoint cannot be verified" in _one_line(capsys, "eval")
