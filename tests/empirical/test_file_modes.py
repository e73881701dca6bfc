"""Checkpoints, shards, manifests and the imagefolder cache get 0666 minus the umask, like any
file open() creates (they used to be 0600 whatever the umask: tempfile.mkstemp)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from empirical.checkpoint import save_checkpoint
from empirical.data import load_imagefolder
from empirical.models import build_model
from empirical.shards import ShardedDatasetWriter


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoints_shards_and_caches_follow_the_umask(tmp_path, umask, mask, expected):
    from PIL import Image

    umask(mask)
    model = build_model("mlp", num_classes=2, in_channels=1, image_size=4, mean=(0.5,), std=(0.25,))
    ck = save_checkpoint(model, tmp_path / "ck" / "model.pt", arch="mlp", dataset="x", num_classes=2, in_channels=1,
                         image_size=4, mean=(0.5,), std=(0.25,))
    w = ShardedDatasetWriter(root=tmp_path / "ds", name="t", kind="D_rand", num_examples=3, shard_size=2,
                             storage="float32", seed=0, image_shape=(1, 4, 4), num_classes=2)
    for i in range(w.num_shards):
        start, stop = w.shard_range(i)
        w.write_shard(i, torch.rand(stop - start, 1, 4, 4), torch.zeros(stop - start, dtype=torch.long))
    w.finalize()
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / split / cls / "0.png")
    cache = load_imagefolder(tmp_path / "img", cache_dir=tmp_path / "cache").meta["cache_file"]
    files = [ck, ck.with_suffix(".json"), *sorted((tmp_path / "ds").iterdir()), cache]
    assert len(files) == 8
    assert {str(f): oct(stat.S_IMODE(os.stat(f).st_mode)) for f in files} == {str(f): oct(expected) for f in files}
