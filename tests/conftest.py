"""Shared pytest setup: quiet TensorFlow, TF backend, real data location."""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_SHARED = (
    pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
)
if "KERAS_COMPACT_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["KERAS_COMPACT_DATA_DIR"] = str(_SHARED)

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_data: needs the real datasets (KERAS_COMPACT_DATA_DIR)",
    )


@pytest.fixture
def data_dir():
    """The real datasets folder; skips the test when it is not available."""
    d = os.environ.get("KERAS_COMPACT_DATA_DIR")
    if not d or not os.path.isdir(d):
        pytest.skip("real datasets not found (set KERAS_COMPACT_DATA_DIR)")
    return d
