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


def _two_logical_cpus():
    """Splits the CPU into two logical devices for the MirroredStrategy
    checks (keras_compact.testing.run_distributed_test). It must happen
    before TensorFlow initialises its devices, so here, once per session;
    single-device code keeps running on /cpu:0."""
    if os.environ.get("KERAS_BACKEND") != "tensorflow":
        return
    try:
        import tensorflow as tf
    except ImportError:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # TensorFlow was initialised already
        pass


_two_logical_cpus()


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
