"""TFLite export, interpreter runs and export reports."""

import json
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact.export import (
    ExportReport,
    export_and_verify,
    export_tflite,
    format_reports,
    load_interpreter,
    run_tflite,
    verify_tflite,
)

SHAPE = (16, 16, 3)
CLASSES = 3


def _toy(n, seed):
    """Separable toy images: the class is the brightest channel."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = 0.3 * rng.random((n,) + SHAPE).astype("float32")
    x[np.arange(n), :, :, y] += 0.6
    return x, y


def _cnn(filters=16, name="toy_cnn"):
    i = keras.Input(SHAPE)
    h = keras.layers.Conv2D(filters, 3, padding="same")(i)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(2 * filters, 3, strides=2, padding="same")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(i, keras.layers.Dense(CLASSES)(h), name=name)


@pytest.fixture(scope="module")
def data():
    return _toy(192, 0), _toy(64, 1)


@pytest.fixture(scope="module")
def model(data):
    keras.utils.set_random_seed(0)
    (x, y), _ = data
    m = _cnn()
    m.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    m.fit(x, y, batch_size=32, epochs=4, verbose=0)
    return m


@pytest.fixture(scope="module")
def reports(model, data, tmp_path_factory):
    (x_train, _), (x, y) = data
    out = tmp_path_factory.mktemp("reports")
    result = export_and_verify(
        model,
        out,
        ("float32", "float16", "dynamic_range", "int8"),
        x=x,
        y=y,
        representative_data=x_train,
        num_calibration=64,
        latency_runs=5,
    )
    return {r.quantization: r for r in result}


def test_float32_matches_keras(model, reports, data):
    r = reports["float32"]
    assert r.max_abs_diff < 1e-4
    assert r.top1_agreement == 1.0
    assert r.keras_accuracy > 0.9 and r.tflite_accuracy == r.keras_accuracy
    assert not r.int8_io and not r.sparse
    noise = np.random.default_rng(2).random((8,) + SHAPE).astype("float32")
    out = run_tflite(r.path, noise)
    np.testing.assert_allclose(out, model.predict(noise, verbose=0), atol=1e-4)


@pytest.mark.parametrize("mode", ["float16", "dynamic_range"])
def test_float16_and_dynamic_range_run_close(reports, mode):
    r = reports[mode]
    assert r.quantization == mode
    assert r.max_abs_diff < 0.1
    assert r.top1_agreement >= 0.95
    assert r.size_bytes < reports["float32"].size_bytes


def test_int8_float_io(reports):
    r = reports["int8"]
    assert not r.int8_io
    assert r.top1_agreement >= 0.9
    assert r.tflite_accuracy >= 0.9
    assert r.size_bytes < reports["float32"].size_bytes
    assert r.latency_ms_1_thread > 0 and r.latency_ms_2_threads > 0


def test_int8_io_from_dataset(model, data, reports, tmp_path):
    (x_train, y_train), (x, y) = data
    ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(16)
    path = export_tflite(
        model,
        tmp_path / "sub" / "m_int8io.tflite",
        quantization="int8",
        representative_data=ds,
        int8_io=True,
        num_calibration=64,
    )
    interpreter, backend = load_interpreter(path)
    assert backend == "ai_edge_litert"
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    out = run_tflite(path, x)  # quantized in, dequantized out
    assert out.dtype == np.float32
    float_io = run_tflite(reports["int8"].path, x)
    np.testing.assert_allclose(out, float_io, atol=0.2)
    r = verify_tflite(path, model, x, y, latency_runs=3)  # mode inferred
    assert r.quantization == "int8" and r.int8_io
    assert r.top1_agreement >= 0.9


def test_sparsity_runs_without_xnnpack(data, tmp_path):
    _, (x, _) = data
    keras.utils.set_random_seed(1)
    m = _cnn(filters=32)
    rng = np.random.default_rng(0)
    for layer in m.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            k = layer.kernel.numpy()
            k[rng.random(k.shape) < 0.8] = 0.0
            layer.kernel.assign(k)
    kw = dict(quantization="dynamic_range")
    dense = export_tflite(m, tmp_path / "dense.tflite", **kw)
    sparse = export_tflite(m, tmp_path / "sparse.tflite", sparsity=True, **kw)
    _, backend = load_interpreter(sparse, use_default_delegates=False)
    assert backend == "ai_edge_litert"
    out = run_tflite(sparse, x[:8])  # automatic: no default delegates
    np.testing.assert_allclose(out, run_tflite(dense, x[:8]), atol=1e-5)
    r = verify_tflite(sparse, m, x[:16], latency_runs=3)
    assert r.sparse and r.quantization == "dynamic_range"
    assert "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in r.delegates
    assert r.max_abs_diff < 0.1
    d = verify_tflite(dense, m, x[:16], latency_runs=3)
    # Sparse storage shrinks the raw file; gzip already squeezes the zeros
    # of a dense int8 kernel, so gzip_bytes is not compared.
    assert r.size_bytes < d.size_bytes
    assert "no XNNPack" in format_reports([d, r])


def test_report_json_round_trip(reports, tmp_path):
    r = reports["int8"]
    path = r.save(tmp_path / "dir" / "report.json")
    with open(path) as f:
        d = json.load(f)
    for field in (
        "quantization",
        "max_abs_diff",
        "top1_agreement",
        "tflite_accuracy",
        "keras_accuracy",
        "size_bytes",
        "gzip_bytes",
        "latency_ms_1_thread",
        "latency_ms_2_threads",
        "backend",
        "delegates",
        "num_params",
    ):
        assert field in d
    assert d["quantization"] == "int8"
    assert ExportReport.load(path) == r
    assert json.loads(r.to_json()) == r.to_dict()


def test_str_and_format_reports(reports, model):
    text = str(reports["float32"])
    assert "max |diff| vs Keras" in text and "ai_edge_litert" in text
    assert f"{model.count_params():,}" in text
    table = format_reports(reports.values())
    lines = table.splitlines()
    assert len(lines) == 2 + len(reports)
    for mode in ("float32", "float16", "dynamic_range", "int8"):
        assert any(line.startswith(mode) for line in lines[2:])
    with pytest.raises(TypeError, match="ExportReport"):
        format_reports([{"quantization": "int8"}])


def test_bad_inputs(model, tmp_path):
    ok = tmp_path / "m.tflite"
    with pytest.raises(TypeError, match="model=.*str"):
        export_tflite("not a model", ok)
    with pytest.raises(ValueError, match="path=.*m.h5"):
        export_tflite(model, tmp_path / "m.h5")
    with pytest.raises(ValueError, match="quantization='int4'"):
        export_tflite(model, ok, quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, ok, quantization="int8")
    with pytest.raises(ValueError, match="int8_io=True"):
        export_tflite(model, ok, quantization="dynamic_range", int8_io=True)
    with pytest.raises(ValueError, match="num_calibration=0"):
        export_tflite(
            model,
            ok,
            quantization="int8",
            representative_data=np.zeros((1,) + SHAPE),
            num_calibration=0,
        )
    with pytest.raises(TypeError, match="strip"):
        export_tflite(type("T", (), {"strip": lambda self: 3})(), ok)
    with pytest.raises(FileNotFoundError, match="path="):
        run_tflite(tmp_path / "missing.tflite", np.zeros((1,) + SHAPE))
    assert not ok.exists()


def test_strip_is_exported(model, data, tmp_path):
    _, (x, _) = data

    class Wrapper:
        def strip(self):
            return model

    path = export_tflite(Wrapper(), tmp_path / "stripped.tflite")
    np.testing.assert_allclose(
        run_tflite(path, x[:4]), model.predict(x[:4], verbose=0), atol=1e-4
    )
    r = verify_tflite(path, Wrapper(), x[:4], latency_runs=2)
    assert r.num_params == model.count_params()


def test_fallback_interpreter_is_announced(reports, data, monkeypatch):
    _, (x, _) = data
    path = reports["float32"].path
    expected = run_tflite(path, x[:4])
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    with pytest.warns(UserWarning, match="'tf.lite' interpreter"):
        _, backend = load_interpreter(path)
    assert backend == "tf.lite"
    out = run_tflite(path, x[:4], backend="tf.lite")
    np.testing.assert_array_equal(out, expected)


def test_export_report_micro_summary_is_one_phrase_for_every_reader():
    fields = dict(
        path="m.tflite",
        quantization="int8",
        int8_io=False,
        sparse=False,
        num_params=10,
        size_bytes=2048,
        gzip_bytes=1024,
        num_samples=4,
        max_abs_diff=0.0,
        top1_agreement=1.0,
        tflite_accuracy=None,
        keras_accuracy=None,
        latency_ms_1_thread=0.1,
        latency_ms_2_threads=0.1,
        backend="ai_edge_litert",
        delegates="default",
    )
    assert ExportReport(**fields).micro_summary() is None
    absent = ExportReport(**fields, micro="not run: no tflite-micro")
    assert absent.micro_summary() == "not run: no tflite-micro"
    ran = ExportReport(
        **fields,
        micro="equal",
        micro_arena_bytes=3072,
        micro_max_abs_diff=0.0,
        micro_samples=100,
    )
    phrase = ran.micro_summary()
    assert phrase == (
        "equal to LiteRT's reference kernels on 100 inputs (max |diff| 0), "
        "tensor arena 3.0 KB"
    )
    assert str(ran).endswith(f"microcontroller      {phrase}")


@pytest.mark.parametrize(
    "steps, want",
    [(0, "equal"), (1, "1 step apart on 3 of 400 outputs"), (2, "different")],
)
def test_micro_verdict_names_one_step_roundings(monkeypatch, steps, want):
    from keras_compact.export import verify
    from keras_compact.quantization import micro

    result = {
        "arena_bytes": 1024,
        "max_abs_diff": 0.01 * steps,
        "equal": steps == 0,
        "num_samples": 100,
        "max_steps_apart": steps,
        "outputs_apart": 0 if steps == 0 else 3,
        "outputs": 400,
    }
    monkeypatch.setattr(micro, "available", lambda: True)
    monkeypatch.setattr(micro, "check_micro", lambda path, x: result)
    fields = verify._micro_check("m.tflite", None, "auto")
    assert fields["micro"] == want
    assert fields["micro_samples"] == 100
