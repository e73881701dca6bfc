"""Shared test configuration: hypothesis profiles and the gpu / slow markers.

Profiles: ``dev`` (default, randomised, quick) and ``ci`` (derandomised, no example database,
more examples). CI selects ``ci`` through ``HYPOTHESIS_PROFILE=ci`` (see ``.ci/run``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Keep CPU runs predictable on small CI machines (2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "2")


def _gpu_available() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cupy missing or no driver
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture()
def umask():
    """Set the process umask for one test (call it with the mask) and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


@pytest.fixture()
def checkpoint(tmp_path):
    """An (untrained) digits MLP checkpoint: enough for eval/attack to run on (the CLI suites'
    shared one; a test module may define its own ``checkpoint`` instead)."""
    import torch

    from empirical.checkpoint import save_checkpoint
    from empirical.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, mean=(0.3,), std=(0.3,))
    return save_checkpoint(model, tmp_path / "ck" / "model.pt", arch="mlp", dataset="digits", num_classes=10,
                           in_channels=1, image_size=8, mean=(0.3,), std=(0.3,), extra={"data_seed": 0})
