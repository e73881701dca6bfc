"""Every subset is a seeded, class-stratified sample, the same whatever order the files came in.

The image folders here are class-sorted on disk (all of class 0, then class 1, ...), which is
exactly the layout where "the first N" used to cover one or two classes only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from empirical.data import load_imagefolder, stratified_subset
from robust_features.cli import main

CLASSES = ("ant", "bee", "cat", "dog")


def _class_sorted_folder(root: Path, per_class: dict[str, tuple[int, int]], *, size: int = 8, seed: int = 0,
                         names: str = "sorted") -> Path:
    """``root/{train,test}/<class>/NNNN.png`` with distinct random images; ``names="reversed"``
    writes the same images under file names in the opposite order (so the loader sees another order)."""
    rng = np.random.default_rng(seed)
    for c, (n_tr, n_te) in per_class.items():
        for split, n in (("train", n_tr), ("test", n_te)):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            imgs = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            for i, img in enumerate(imgs):
                k = i if names == "sorted" else n - 1 - i
                Image.fromarray(img).save(folder / f"{k:04d}.png")
    return root


def _counts(y: torch.Tensor, num_classes: int) -> list[int]:
    return np.bincount(y.numpy(), minlength=num_classes).tolist()


def test_subset_of_a_class_sorted_folder_has_every_class_in_proportion_and_ignores_file_order(tmp_path):
    per = {c: (10 + 10 * i, 6) for i, c in enumerate(CLASSES)}          # 10, 20, 30, 40 training images
    a = load_imagefolder(_class_sorted_folder(tmp_path / "a", per), cache_dir=tmp_path / "ca")
    b = load_imagefolder(_class_sorted_folder(tmp_path / "b", per, names="reversed"), cache_dir=tmp_path / "cb")
    assert a.y_train[:10].tolist() == [0] * 10                          # the folder really is class-sorted
    sa = stratified_subset(a.x_train, a.y_train, 20, seed=3)
    sb = stratified_subset(b.x_train, b.y_train, 20, seed=3)
    assert sa.class_counts == (2, 4, 6, 8) == tuple(_counts(a.y_train[sa.indices], 4))
    assert sa.content_sha256 == sb.content_sha256                      # the same images, in the same order
    assert sa.indices_sha256 != sb.indices_sha256                      # ... found at other positions
    assert torch.equal(a.x_train[sa.indices], b.x_train[sb.indices])
    # the sample interleaves the classes: its first 10 are not all of one class
    assert len(set(a.y_train[sa.indices[:10]].tolist())) >= 3
    other = stratified_subset(a.x_train, a.y_train, 20, seed=4)
    assert other.content_sha256 != sa.content_sha256
    assert other.class_counts == sa.class_counts


@given(n=st.integers(1, 100), m=st.integers(1, 100), seed=st.integers(0, 2**16))
def test_subsets_are_nested_proportional_and_sum_to_n(n, m, seed):
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.full((k,), c) for c, k in enumerate((7, 13, 29, 51))])       # 100 examples, sorted
    x = torch.rand((100, 1, 2, 2), generator=g)
    small, big = sorted((n, m))
    sb, ss = stratified_subset(x, y, big, seed=seed), stratified_subset(x, y, small, seed=seed)
    assert sb.n == big and sum(sb.class_counts) == big
    counts = np.array([7, 13, 29, 51])
    for sub, k in ((sb, big), (ss, small)):                                             # proportional, rounded
        assert np.all(np.abs(np.array(sub.class_counts) - counts * k / 100) < 1)
    assert set(ss.indices.tolist()) <= set(sb.indices.tolist())
    assert len(set(sb.indices.tolist())) == big


def test_asking_for_all_examples_keeps_their_order_and_bad_sizes_name_the_parameter():
    x, y = torch.rand(12, 1, 2, 2), torch.arange(12) % 3
    assert stratified_subset(x, y, None).indices.tolist() == list(range(12))
    assert stratified_subset(x, y, 50).indices.tolist() == list(range(12))
    with pytest.raises(ValueError, match=r"eval\.n_robust=0 must be a positive integer"):
        stratified_subset(x, y, 0, name="eval.n_robust")
    with pytest.raises(ValueError, match=r"n_train=1\.7 must be a positive integer"):
        stratified_subset(x, y, 1.7, name="n_train")
    with pytest.raises(ValueError, match=r"seed=-1 must be a non-negative integer"):
        stratified_subset(x, y, 3, seed=-1)


def test_workspace_subsets_train_test_eval_and_transfer_are_stratified_and_recorded(tmp_path):
    from dataclasses import replace

    from empirical.workspace import Workspace
    from empirical.reproduce import get_preset

    root = _class_sorted_folder(tmp_path / "imgs", {c: (30, 20) for c in CLASSES})
    cfg = replace(get_preset("synthetic-smoke"), data=f"imagefolder:{root}", n_train=40, n_test=24,
                  fig3_archs=("mlp",), subset_seed=5)
    cfg = replace(cfg, eval=replace(cfg.eval, n_robust=12), transfer=replace(cfg.transfer, n_examples=8))
    ws = Workspace(cfg=cfg, root=tmp_path / "run")
    d = ws.data()
    assert _counts(d.y_train, 4) == [10] * 4 and _counts(d.y_test, 4) == [6] * 4
    sub = ws.eval_subset()
    assert _counts(d.y_test[sub.indices], 4) == [3] * 4
    assert ws.subsets["train"]["seed"] == 5 and len(ws.subsets["train"]["indices_sha256"]) == 64
    # the robust-accuracy sample is nested in the test sample drawn with the same seed
    full = load_imagefolder(root)
    assert set(d.y_test[sub.indices].tolist()) == set(range(4))
    direct = stratified_subset(full.x_test, full.y_test, 12, seed=5)
    assert direct.content_sha256 == sub.content_sha256
    rec = ws.record("probe.json", experiment="test", metrics={}, started_at="now", start_time=0.0)
    assert rec["subsets"]["test"]["class_counts"] == [6] * 4


def test_transfer_attacks_a_stratified_sample(tmp_path):
    from empirical.models import build_model
    from empirical.transfer import TransferConfig, transfer_success

    y = torch.arange(4).repeat_interleave(10)                     # class-sorted
    x = torch.rand(40, 1, 4, 4)
    torch.manual_seed(0)
    m = build_model("mlp", num_classes=4, in_channels=1, image_size=4, mean=(0.5,), std=(0.3,))
    out = transfer_success(m, {"same": m}, x, y, TransferConfig(eps=0.5, steps=2, n_examples=8), num_classes=4,
                           subset_seed=1)
    assert out["__subset__"]["class_counts"] == [2, 2, 2, 2]
    assert out["__subset__"]["seed"] == 1


def test_cli_train_and_eval_samples_are_stratified_and_in_the_records(tmp_path, capsys):
    root = _class_sorted_folder(tmp_path / "imgs", {c: (30, 20) for c in CLASSES})
    out = tmp_path / "run"
    rc = main(["train", "--data", f"imagefolder:{root}", "--arch", "mlp", "--n-train", "40", "--n-eval", "16",
               "--epochs", "1", "--batch-size", "16", "--eval-steps", "2", "--no-progress", "--out-dir", str(out)])
    assert rc == 0
    rec = json.loads((out / "train.json").read_text())
    assert rec["subsets"]["train"]["class_counts"] == [10, 10, 10, 10]
    assert rec["subsets"]["eval"]["class_counts"] == [4, 4, 4, 4]
    assert rec["metrics"]["n_robust_eval"] == 16
    rc = main(["eval", "--checkpoint", str(out / "model.pt"), "--n", "8", "--steps", "2", "--subset-seed", "2",
               "--out", str(tmp_path / "ev.json")])
    assert rc == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["config"]["subset"]["class_counts"] == [2, 2, 2, 2] and ev["config"]["subset"]["seed"] == 2
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "model.pt"), "--n", "0"]) == 2
    assert "n=0 must be a positive integer" in capsys.readouterr().err
