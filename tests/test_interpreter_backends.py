"""Interpreter backends: the fallback order and clear messages when
`tflite_runtime` cannot run here (numpy 2, ops newer than the runtime).
`tflite_runtime` itself is faked: its wheels need numpy<2."""

import sys
import types

import keras
import numpy as np
import pytest

from keras_compact.export import export_tflite
from keras_compact.export import interpreter as interp


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="dense")]
    )
    path = tmp_path_factory.mktemp("interp") / "float32.tflite"
    export_tflite(model, path)
    return path


def _fake_tflite_runtime(monkeypatch, version, error=None):
    """Installs a fake `tflite_runtime`; returns the list of the
    interpreters it was asked to create."""
    created = []

    class Interpreter:
        def __init__(self, model_path, **kwargs):
            created.append(model_path)
            if error is not None:
                raise error

    sub = types.ModuleType("tflite_runtime.interpreter")
    sub.Interpreter = Interpreter
    sub.OpResolverType = types.SimpleNamespace(
        AUTO=0, BUILTIN_WITHOUT_DEFAULT_DELEGATES=1
    )
    top = types.ModuleType("tflite_runtime")
    top.__version__ = version
    top.interpreter = sub
    monkeypatch.setitem(sys.modules, "tflite_runtime", top)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", sub)
    return created


@pytest.mark.parametrize(
    "runtime, numpy_version, usable",
    [
        ("2.14.0", "2.4.6", False),
        ("2.20.0dev20250409", "2.0.0", False),
        ("2.14.0", "1.26.4", True),
        ("2.21.0", "2.4.6", True),  # a later build is tried
    ],
)
def test_tflite_runtime_problem(runtime, numpy_version, usable):
    problem = interp.tflite_runtime_problem(runtime, numpy_version)
    assert (problem is None) == usable
    if problem:
        assert runtime in problem and numpy_version in problem
        assert "ai-edge-litert" in problem and "numpy<2" in problem


def test_tf_lite_comes_before_tflite_runtime(tflite_file, monkeypatch):
    created = _fake_tflite_runtime(monkeypatch, "2.14.0")
    monkeypatch.setattr(interp, "tflite_runtime_problem", lambda: None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.warns(UserWarning, match="'tf.lite' interpreter"):
        _, backend = interp.load_interpreter(tflite_file)
    assert backend == "tf.lite"
    assert created == []


@pytest.mark.skipif(
    int(np.__version__.split(".")[0]) < 2, reason="needs numpy 2"
)
def test_old_tflite_runtime_under_numpy2_is_refused_clearly(
    tflite_file, monkeypatch
):
    created = _fake_tflite_runtime(
        monkeypatch, "2.14.0", error=AssertionError("must not be created")
    )
    with pytest.raises(ImportError, match="compiled against numpy 1.x") as e:
        interp.load_interpreter(tflite_file, backend="tflite_runtime")
    assert "backend='tflite_runtime'" in str(e.value)
    assert created == []  # refused before touching the C extension


def test_systemerror_and_new_ops_become_clear_errors(tflite_file, monkeypatch):
    cause = ImportError("numpy.core.multiarray failed to import")
    error = SystemError("CreateWrapperFromFile returned a result with an")
    error.__cause__ = cause
    _fake_tflite_runtime(monkeypatch, "9.0.0", error=error)
    with pytest.raises(ImportError, match="multiarray failed to import"):
        interp.load_interpreter(tflite_file, backend="tflite_runtime")

    op_error = ValueError(
        "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. "
        "An older version of this builtin might be supported.\n"
        "Registration failed.\n"
    )
    _fake_tflite_runtime(monkeypatch, "9.0.0", error=op_error)
    with pytest.raises(ImportError, match="older than the converter") as e:
        interp.load_interpreter(tflite_file, backend="tflite_runtime")
    assert "FULLY_CONNECTED' version '12'" in str(e.value)
    # Other ValueErrors are not hidden.
    _fake_tflite_runtime(monkeypatch, "9.0.0", error=ValueError("bad file"))
    with pytest.raises(ValueError, match="bad file"):
        interp.load_interpreter(tflite_file, backend="tflite_runtime")


def test_unusable_tflite_runtime_falls_back_with_its_reason(
    tflite_file, monkeypatch
):
    _fake_tflite_runtime(monkeypatch, "9.0.0", error=SystemError("boom"))
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setattr(interp, "BACKENDS", ("tflite_runtime", "tf.lite"))
    with pytest.warns(UserWarning, match="BackendUnusableError"):
        _, backend = interp.load_interpreter(tflite_file)
    assert backend == "tf.lite"
