"""Quantization-aware training: fake quantization, BN folding, int8 export
with the trained ranges, and the microcontroller runtime check.

Kept fast: one tiny CNN trained on real Fashion-MNIST images and one
ResNet-8 on real CIFAR-10 images (module fixtures shared by the tests), the
rest on small random inputs.
"""

import os

import keras
import numpy as np
import pytest

import keras_compact as kc
from keras_compact.export import export_tflite, run_tflite, verify_tflite
from keras_compact.graph.taps import find_taps
from keras_compact.quantization import (
    NotInt8Error,
    QuantizationAwareTraining,
    QuantizationPlan,
    check_int8_ops,
    fake_quant,
    layerwise_fidelity,
    micro,
)
from keras_compact.quantization.micro import output_step


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def real_subset(name, n_train, n_test, seed=0):
    """Random (not class-sorted) real train and test images in [0, 1]."""
    d = os.environ.get("KERAS_COMPACT_DATA_DIR")
    if not d or not os.path.isdir(d):
        pytest.skip("real datasets not found (set KERAS_COMPACT_DATA_DIR)")
    from keras_compact.data.loaders import load_arrays

    (xt, yt), (xs, ys) = load_arrays(name, data_dir=d)
    rng = np.random.default_rng(seed)
    it = rng.permutation(len(xt))[:n_train]
    iv = rng.permutation(len(xs))[:n_test]
    return (
        (xt[it].astype("float32") / 255, yt[it].astype("int32")),
        (xs[iv].astype("float32") / 255, ys[iv].astype("int32")),
    )


def train_and_export(
    name, data, path, float_epochs, qat_images, qat_kwargs=None, **kw
):
    (x, y), _ = data
    keras.utils.set_random_seed(0)
    model = kc.models.get_model(name, **kw)
    model.compile(keras.optimizers.Adam(3e-3), loss())
    model.fit(x, y, batch_size=64, epochs=float_epochs, verbose=0)
    qat = QuantizationAwareTraining(**(qat_kwargs or {}))
    trainer = kc.Trainer(model, techniques=[qat])
    trainer.compile(keras.optimizers.Adam(3e-4), loss())
    trainer.fit(
        x[:qat_images], y[:qat_images], batch_size=64, epochs=1, verbose=0
    )
    export_tflite(trainer, path, quantization="int8")
    return model, qat, trainer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny_cnn: float training then QAT on real Fashion-MNIST, exported."""
    data = real_subset("fashion_mnist", 2048, 500)
    path = str(tmp_path_factory.mktemp("qat") / "tiny_int8.tflite")
    model, qat, trainer = train_and_export("tiny_cnn", data, path, 1, 1024)
    return dict(model=model, qat=qat, trainer=trainer, path=path, test=data[1])


def agreement(path, qat, x):
    """Top-1 agreement and max difference (in output steps) of the file on
    the reference kernels and the fake-quant model."""
    ref = qat.quantized_model().predict(x, verbose=0)
    out = run_tflite(path, x, kernels="reference")
    steps = float(np.max(np.abs(out - ref))) / output_step(path)
    return float(np.mean(out.argmax(-1) == ref.argmax(-1))), steps


# ----------------------------------------------------------------------
# Pure parts: BN folding, weight grid, where the model is quantized
# ----------------------------------------------------------------------
def random_bn(channels, rng, ndim):
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build((None,) * (ndim - 1) + (channels,))
    bn.gamma.assign(rng.uniform(0.5, 2.0, channels))
    bn.beta.assign(rng.normal(size=channels))
    bn.moving_mean.assign(rng.normal(size=channels))
    bn.moving_variance.assign(rng.uniform(0.1, 3.0, channels))
    return bn


@pytest.mark.parametrize(
    "kind,size,stride",
    [
        ("conv", 9, 2),
        ("conv", 8, 2),
        ("conv", 7, 1),
        ("depthwise", 9, 2),
        ("depthwise", 8, 1),
        ("dense", 0, 0),
    ],
)
def test_bn_folding_is_exact_in_float(kind, size, stride):
    rng = np.random.default_rng(0)
    if kind == "dense":
        layer = keras.layers.Dense(6, use_bias=True)
        x = rng.normal(size=(4, 5)).astype("float32")
        channels = 6
    elif kind == "conv":
        layer = keras.layers.Conv2D(6, 3, strides=stride, padding="same")
        x = rng.normal(size=(2, size, size, 3)).astype("float32")
        channels = 6
    else:
        layer = keras.layers.DepthwiseConv2D(
            3, strides=stride, depth_multiplier=2, padding="same"
        )
        x = rng.normal(size=(2, size, size, 3)).astype("float32")
        channels = 6
    layer(x)
    layer.bias.assign(rng.normal(size=channels))
    bn = random_bn(channels, rng, x.ndim)
    expected = bn(layer(x), training=False)
    kernel, bias = fake_quant.fold_batch_norm(
        layer.kernel, layer.bias, bn, kind
    )
    if kind == "dense":
        got = x @ keras.ops.convert_to_numpy(kernel)
    elif kind == "conv":
        got = keras.ops.conv(x, kernel, strides=stride, padding="same")
    else:
        got = keras.ops.depthwise_conv(
            x, kernel, strides=stride, padding="same"
        )
    got = keras.ops.convert_to_numpy(got + bias)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_weights_are_quantized_per_output_channel_on_tflite_axis():
    rng = np.random.default_rng(1)
    # Depthwise (kh, kw, in=3, multiplier=2): channels are in * multiplier.
    kernel = rng.normal(size=(3, 3, 3, 2)).astype("float32")
    kernel[..., 1, 0] *= 1e-3  # one tiny channel keeps its own scale
    q = keras.ops.convert_to_numpy(
        fake_quant.quantize_weights(kernel, "depthwise")
    ).reshape(9, 6)
    flat = kernel.reshape(9, 6)
    for c in range(6):
        scale = np.max(np.abs(flat[:, c])) / 127
        levels = q[:, c] / scale
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert np.max(np.abs(levels)) == pytest.approx(127, abs=1e-3)
    conv = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    conv[..., 0, :] = 0.0  # exact zeros stay zero
    qc = keras.ops.convert_to_numpy(fake_quant.quantize_weights(conv, "conv"))
    assert np.all(qc[..., 0, :] == 0.0)


def test_plan_quantizes_where_tflite_does():
    plan = QuantizationPlan(kc.models.get_model("resnet8"))
    fused = {tuple(e["layers"]) for e in plan.entries if e["kind"] == "fused"}
    assert ("stem_conv", "stem_bn", "stem_relu") in fused
    assert ("stage2_block1_conv2", "stage2_block1_bn2") in fused
    requant = [e["layers"] for e in plan.entries if e["kind"] == "requantize"]
    assert ["stage1_block1_add", "stage1_block1_out"] in requant
    assert ["gap"] in requant
    # Never a range between a conv and its BN.
    assert not any(
        k.endswith("_conv1") or k.endswith("_bn1") for k in plan.keys
    )
    # Pre-activation BN (WRN) is its own fused scale with its ReLU.
    wrn = QuantizationPlan(kc.models.get_model("wrn16_2"))
    kinds = {tuple(e["layers"]): e["kind"] for e in wrn.entries}
    assert (
        kinds[("stage1_block2_preact_bn", "stage1_block2_preact_relu")]
        == "batch_norm"
    )
    assert kinds[("stem_conv", "stage1_block1_preact_bn",
                  "stage1_block1_preact_relu")] == "fused"  # fmt: skip
    mnv2 = QuantizationPlan(
        kc.models.get_model("mobilenet_v2", alpha=0.35, cifar_stem=True)
    )
    assert ("block2_dw", "block2_dw_bn", "block2_dw_relu") in {
        tuple(e["layers"]) for e in mnv2.entries
    }
    assert not mnv2.skipped


# ----------------------------------------------------------------------
# Int8 file vs the fake-quant model, microcontroller runtime
# ----------------------------------------------------------------------
def test_tiny_cnn_int8_file_equals_fake_quant_model(tiny):
    x, y = tiny["test"]
    report = verify_tflite(tiny["path"], tiny["trainer"], x, y, latency_runs=3)
    assert report.reference == "fake-quant"
    assert report.quantization == "int8"
    # Bit for bit: the fake-quant model follows the reference kernels'
    # integer arithmetic (every op of this file is integer-exact).
    assert report.top1_agreement == 1.0
    step = output_step(tiny["path"])
    assert report.max_abs_diff < 1e-3 * step, report.max_abs_diff / step
    assert not any(op.startswith("Flex") for op in report.ops)
    assert report.ops[0] == "QUANTIZE" and "CONV_2D" in report.ops
    if micro.available():
        assert report.micro == "equal"
        assert report.micro_samples == 100
        assert report.micro_arena_bytes > 0
    else:
        assert "pip install tflite-micro" in report.micro


def test_micro_runtime_equals_litert_on_100_images(tiny):
    if not micro.available():
        pytest.skip("tflite-micro is not installed (pip install tflite-micro)")
    x, _ = tiny["test"]
    result = micro.check_micro(tiny["path"], x[:100])
    assert result["equal"] and result["max_abs_diff"] == 0.0
    assert result["num_samples"] == 100
    assert 1000 < result["arena_bytes"] < 1_000_000


def test_only_builtin_int8_ops_and_float_ops_are_named(tiny, tmp_path):
    names = check_int8_ops(tiny["path"])
    assert set(names) <= {
        "QUANTIZE",
        "CONV_2D",
        "MAX_POOL_2D",
        "MEAN",
        "RESHAPE",
        "DEQUANTIZE",
    }
    float_path = str(tmp_path / "float.tflite")
    export_tflite(tiny["model"], float_path, quantization="float32")
    with pytest.raises(NotInt8Error, match="CONV_2D") as info:
        check_int8_ops(float_path)
    assert any("FULLY_CONNECTED" in op for op in info.value.ops)


def test_baked_biases_are_the_files_int32_biases(tiny):
    """The fake-quant model in inference adds the bias the file stores:
    each baked bias is an integer number of its int32 steps
    (`s_in * s_w` per channel), and that integer is the file's."""
    from keras_compact.export.interpreter import load_interpreter

    interpreter, _ = load_interpreter(tiny["path"], use_default_delegates=False)
    stored = []
    for d in interpreter.get_tensor_details():
        scales = d["quantization_parameters"]["scales"]
        if d["dtype"] == np.int32 and len(scales):
            try:
                q = interpreter.get_tensor(d["index"])
            except ValueError:
                continue
            stored.append((q.astype(np.float64), scales.astype(np.float64)))
    baked = [
        np.asarray(layer.bias_value, np.float64)
        for layer in tiny["qat"].export_model().layers
        if getattr(layer, "bias_value", None) is not None
    ]
    assert baked and len(stored) >= len(baked)
    for bias in baked:
        same = [(q, s) for q, s in stored if q.shape == bias.shape]
        errors = [np.max(np.abs(bias / s - q)) for q, s in same]
        assert min(errors) < 1e-2, (bias.shape, min(errors))


def test_int8_io_file_agrees(tiny, tmp_path):
    path = str(tmp_path / "io.tflite")
    export_tflite(tiny["trainer"], path, quantization="int8", int8_io=True)
    x, _ = tiny["test"]
    agree, steps = agreement(path, tiny["qat"], x[:200])
    print(f"tiny_cnn int8 I/O: agreement {agree:.4f}, {steps:.3f} steps")
    assert agree >= 0.99 and steps <= 2.0001


def test_resnet8_cifar10_int8_file_equals_fake_quant_model(tmp_path):
    data = real_subset("cifar10", 2048, 500)
    path = str(tmp_path / "resnet8.tflite")
    # BN statistics frozen from the start: the ranges are learned on the
    # fold the file computes. With batch statistics (the default) this
    # barely trained model (2 epochs, many near-tied logits) agrees on
    # 99.2% of the images.
    _, qat, _ = train_and_export(
        "resnet8", data, path, 2, 512, qat_kwargs={"freeze_bn_delay": 0}
    )
    agree, steps = agreement(path, qat, data[1][0])
    print(f"resnet8: agreement {agree:.4f}, max diff {steps:.3f} steps")
    assert agree >= 0.995, agree
    assert steps <= 2.0001, steps
    assert "ADD" in check_int8_ops(path)


def test_reference_kernels_are_the_micro_runtimes_and_validated(tiny):
    x, _ = tiny["test"]
    reference = run_tflite(tiny["path"], x[:20], kernels="reference")
    # The fake-quant model computes these kernels' integers exactly.
    fake_quant = tiny["qat"].quantized_model().predict(x[:20], verbose=0)
    step = output_step(tiny["path"])
    assert np.max(np.abs(reference - fake_quant)) < 1e-3 * step
    if micro.available():
        on_micro, _ = micro.run_micro(tiny["path"], x[:20])
        np.testing.assert_array_equal(reference, on_micro)
    with pytest.raises(ValueError, match="Received: kernels='fast'"):
        run_tflite(tiny["path"], x[:2], kernels="fast")
    with pytest.raises(ValueError, match="use_default_delegates=True"):
        run_tflite(
            tiny["path"], x[:2], kernels="reference", use_default_delegates=True
        )


def test_preserve_all_tensors_must_be_a_bool(tiny):
    from keras_compact.export import load_interpreter

    with pytest.raises(TypeError, match="preserve_all_tensors='yes'"):
        load_interpreter(tiny["path"], preserve_all_tensors="yes")


# Every zoo model: conv + max pooling + MEAN (tiny_cnn), residual ADD
# (resnets), depthwise + ReLU6 (MobileNetV2s), pre-activation BN as a 1x1
# depthwise convolution (WRNs).
@pytest.mark.parametrize("name", [m["name"] for m in kc.models.list_models()])
def test_zoo_int8_file_computes_each_op_as_the_fake_quant_model(name, tmp_path):
    """Op by op: each requantized tensor recomputed by
    the fake-quant model from the int8 file's OWN input tensors is within
    one step of the file's (integer kernels round differently from float
    arithmetic); a quantizer in the wrong place, a BN folded differently or
    a wrong bias grid would be many steps off. End to end, these one-step
    differences compound with depth (benchmarks/results/qat_layerwise_*)."""
    keras.utils.set_random_seed(0)
    model = kc.models.get_model(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, 10, 64)
    qat = QuantizationAwareTraining(freeze_bn_delay=0)
    trainer = kc.Trainer(model, techniques=[qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / f"{name}.tflite")
    export_tflite(trainer, path, quantization="int8")
    rows = layerwise_fidelity(qat, path, x[:4])
    assert rows and all(r["op"] for r in rows), rows
    isolated = [r for r in rows if r["isolated_max"] is not None]
    # Every tensor but the model input's has a recomputed value.
    assert len(isolated) == len(rows) - 1, rows
    worst = max(isolated, key=lambda r: r["isolated_max"])
    assert worst["isolated_max"] <= 1.0001, worst
    # Convolutions, dense layers, the MEAN and ADD follow the reference
    # kernels' integer arithmetic: bit for bit (with float rounding, 0.1-0.4%
    # of the conv values and 12% of the MEAN's were one step off). Other ops
    # are left to float arithmetic: a rare tie may round the other way.
    for r in isolated:
        if r["op"] in INTEGER_EXACT:  # up to float32 dequantization
            assert r["isolated_max"] < 1e-3, r
        else:
            assert r["isolated_share_off"] <= 0.02, r
    # End to end, from the image: bit for bit at every tensor.
    assert max(r["propagated_max"] for r in rows) < 1e-3, rows
    if name != "resnet8":
        return
    # Rounding once in float32 instead (integer_inference=False) puts a
    # share of the conv values one step off.
    qat.integer_inference = False
    rows = layerwise_fidelity(qat, path, x[:4])
    off = [r for r in rows if r["op"] == "CONV_2D" and r["isolated_share_off"]]
    assert off, rows


INTEGER_EXACT = {
    "ADD",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MEAN",
}


def gemmlowp_multiply(x, significand, shift):
    """TFLite's `MultiplyByQuantizedMultiplier` on Python integers."""
    x <<= max(shift, 0)
    ab = x * significand
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    high = abs(t) >> 31 if t >= 0 else -(abs(t) >> 31)
    e = max(-shift, 0)
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> e) + (1 if (high & mask) > threshold else 0)


def test_integer_multiplier_matches_tflite_rounding():
    from keras_compact.quantization import integer

    rng = np.random.default_rng(0)
    for trial in range(60):
        significand = int(rng.integers(1 << 30, 1 << 31))
        if trial % 4 == 0:
            significand = 1 << 30  # exact halves: ties at every shift
        shift = int(rng.integers(-20, 2))
        x = rng.integers(-(1 << 23), 1 << 23, 64)
        x[:16] = rng.integers(-64, 64, 16)
        got = integer.multiply_by_quantized_multiplier(
            x.astype("int64"), np.int64(significand), np.int64(shift)
        )
        want = [gemmlowp_multiply(int(v), significand, shift) for v in x]
        np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("real", [3.3e-5, 0.00123, 0.5, 0.75, 1.0, 1.017])
def test_quantize_multiplier_is_tflites(real):
    import math

    from keras_compact.quantization import integer

    fraction, shift = math.frexp(real)
    significand = int(round(fraction * (1 << 31)))
    if significand == 1 << 31:
        significand, shift = significand // 2, shift + 1
    got = integer.quantize_multiplier(np.array([real]))
    assert (int(got[0][0]), int(got[1][0])) == (significand, shift)


# ----------------------------------------------------------------------
# Technique contract: strip, serialization, start, composition
# ----------------------------------------------------------------------
def test_strip_returns_the_users_float_model_unchanged(tiny):
    model, trainer = tiny["model"], tiny["trainer"]
    assert trainer.strip() is model
    x, _ = tiny["test"]
    np.testing.assert_array_equal(
        trainer.predict(x[:32], verbose=0), model.predict(x[:32], verbose=0)
    )
    assert [type(layer) for layer in model.layers] == [
        type(layer) for layer in kc.models.get_model("tiny_cnn").layers
    ]


def test_keras_round_trip_restores_ranges_and_fake_quant_outputs(
    tiny, tmp_path
):
    path = str(tmp_path / "qat.keras")
    tiny["trainer"].save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    qat2 = loaded.techniques[0]
    assert isinstance(qat2, QuantizationAwareTraining)
    assert qat2.get_config() == tiny["qat"].get_config()
    for key, var in tiny["qat"].ranges.items():
        np.testing.assert_array_equal(var.numpy(), qat2.ranges[key].numpy())
    x, _ = tiny["test"]
    np.testing.assert_allclose(
        qat2.quantized_model().predict(x[:32], verbose=0),
        tiny["qat"].quantized_model().predict(x[:32], verbose=0),
        atol=1e-6,
    )


def small_model(shape=(12, 12, 1)):
    keras.utils.set_random_seed(1)
    return kc.models.get_model("tiny_cnn", input_shape=shape)


def small_data(n=64, shape=(12, 12, 1)):
    rng = np.random.default_rng(0)
    return (
        rng.uniform(0, 1, (n,) + shape).astype("float32"),
        rng.integers(0, 10, n).astype("int32"),
    )


def test_fractional_start_and_bn_freezing():
    x, y = small_data()
    model = small_model()
    qat = QuantizationAwareTraining(start=0.5, freeze_bn_delay=2)
    trainer = kc.Trainer(model, techniques=[qat])
    trainer.compile(keras.optimizers.SGD(0.01), loss())
    with pytest.raises(ValueError, match="quant_steps=0"):
        qat.export_model()
    bn = model.get_layer("conv1_bn")
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(bn.moving_mean.numpy().copy())

    trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Watch()])
    assert int(qat.start_step.numpy()) == 4  # after 1 of 2 epochs
    assert int(qat.quant_steps.numpy()) == 4
    # Float steps and 2 QAT steps update the BN statistics, then frozen.
    assert not np.array_equal(seen[4], seen[5])
    np.testing.assert_array_equal(seen[6], seen[7])
    assert np.all(np.isfinite(trainer.predict(x[:4], verbose=0)))


def test_composes_with_sparse_training_zeros_stay_zero(tmp_path):
    x, y = small_data(128)
    model = small_model()
    sparse = kc.SparseTraining(0.9, policy="static", dense_layers=None, seed=0)
    qat = QuantizationAwareTraining()
    trainer = kc.Trainer(model, techniques=[sparse, qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "sparse.tflite")
    export_tflite(trainer, path, quantization="int8")
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    kernels = [
        interpreter.get_tensor(t["index"])
        for t in interpreter.get_tensor_details()
        if t["dtype"] == np.int8 and len(t["shape"]) >= 2
        and t["quantization_parameters"]["scales"].size > 1
    ]  # fmt: skip
    total = sum(k.size for k in kernels)
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    assert len(kernels) == 4 and zeros / total >= 0.9
    agree, steps = agreement(path, qat, x)
    assert steps <= 2.0001


def test_composes_with_distillation():
    x, y = small_data()
    teacher = small_model()
    student = small_model()
    qat = QuantizationAwareTraining()
    trainer = kc.Trainer(student, techniques=[kc.Distillation(teacher), qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    history = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["distillation_loss"][-1])
    assert int(qat.quant_steps.numpy()) == 2


def test_composes_with_netaug_the_tiny_pass_is_quantized(tmp_path):
    # NetAug's augmented pass runs its float super-network; the tiny pass
    # (the training graph) is the fake-quant one, whose int8 file ships.
    x, y = small_data()
    model = small_model()
    qat = QuantizationAwareTraining()
    netaug = kc.NetAug(seed=0, start_at=0.0)  # the augmented pass runs
    trainer = kc.Trainer(model, techniques=[netaug, qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    history = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["netaug_aug_loss"][-1])
    assert history.history["netaug_aug_loss"][-1] > 0
    assert int(qat.quant_steps.numpy()) == 2
    path = str(tmp_path / "netaug_qat.tflite")
    export_tflite(trainer, path, quantization="int8")
    _, steps = agreement(path, qat, x)
    assert steps <= 2.0001
    assert trainer.strip() is model


def test_composes_with_auxiliary_taps_the_fake_quant_graph_keeps():
    # The pooling layers survive in the fake-quant graph (conv, BN and
    # activation become one fused layer, as in the int8 file).
    x, y = small_data()
    qat = QuantizationAwareTraining()
    aux = kc.AuxiliaryModule(taps=["pool1", "pool2"], seed=0)
    trainer = kc.Trainer(small_model(), techniques=[aux, qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    history = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["aux_loss"][-1])
    assert history.history["aux_loss"][-1] > 0
    assert int(qat.quant_steps.numpy()) == 2


def test_automatic_auxiliary_taps_read_the_folded_pre_activations():
    # The automatic taps are BN outputs before the ReLU; in the fake-quant
    # graph each is the output of the fused layer (int8 kernel with the BN
    # folded in), named after the BN.
    x, y = small_data()
    model = small_model()
    qat = QuantizationAwareTraining(freeze_bn_delay=0)
    aux = kc.AuxiliaryModule(seed=0)
    trainer = kc.Trainer(model, techniques=[aux, qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    history = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["aux_loss"][-1])
    assert int(qat.quant_steps.numpy()) == 2
    names = [t.name for t in find_taps(model)["logits"]]
    assert names == ["conv1_bn", "conv2_bn", "conv3_bn"]
    _, tensors = trainer.training_forward(x)
    float_taps = keras.Model(
        model.input, [model.get_layer(n).output for n in names]
    )(x, training=False)
    for i, want in enumerate(float_taps):
        got = keras.ops.convert_to_numpy(tensors[aux.name][f"tap_{i}"])
        want = keras.ops.convert_to_numpy(want)
        assert got.shape == want.shape
        assert (got < 0).any()  # before the activation
        # Frozen BN folded with the moving statistics, as in inference;
        # only the int8 kernels (and the quantized inputs) differ.
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= 0.05 * scale
        assert np.abs(got - want).max() > 0  # the fake-quant graph's


def test_a_tap_on_a_conv_whose_bn_is_folded_is_refused():
    # The conv's own output (before its BN) exists in no fused layer.
    qat = QuantizationAwareTraining()
    aux = kc.AuxiliaryModule(taps=["conv1", "conv2"], seed=0)
    with pytest.raises(ValueError, match="reads the output of layer 'conv1'"):
        kc.Trainer(small_model(), techniques=[aux, qat])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"start": "0"}, TypeError, "Received: start='0'"),
        ({"start": True}, TypeError, "start=True"),
        ({"start": -1}, ValueError, "Received: start=-1"),
        ({"start": 1.5}, ValueError, "Received: start=1.5"),
        ({"freeze_bn_delay": 1.0}, TypeError, "freeze_bn_delay=1.0"),
        ({"freeze_bn_delay": -2}, ValueError, "freeze_bn_delay=-2"),
        ({"ema_decay": "x"}, TypeError, "ema_decay='x'"),
        ({"ema_decay": 1.0}, ValueError, "ema_decay=1.0"),
        ({"integer_inference": 1}, TypeError, "integer_inference=1"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        QuantizationAwareTraining(**kwargs)


def test_verify_rejects_bad_micro_arguments(tiny):
    x, _ = tiny["test"]
    with pytest.raises(ValueError, match="micro='yes'"):
        verify_tflite(tiny["path"], tiny["trainer"], x[:4], micro="yes")
    with pytest.raises(ValueError, match="micro_samples=0"):
        verify_tflite(tiny["path"], tiny["trainer"], x[:4], micro_samples=0)


def test_missing_micro_ops_are_listed(tiny, monkeypatch):
    if not micro.available():
        pytest.skip("tflite-micro is not installed (pip install tflite-micro)")
    from tflite_micro.python.tflite_micro import runtime

    def refuse(*args, **kwargs):
        os.write(2, b"Didn't find op for builtin opcode 'GELU'\n")
        raise RuntimeError("TFLM failed to allocate tensors")

    monkeypatch.setattr(runtime.Interpreter, "from_file", refuse)
    with pytest.raises(micro.MicroUnsupportedOpsError, match="GELU") as e:
        micro.run_micro(tiny["path"], tiny["test"][0][:2])
    assert e.value.ops == ["GELU"]


def test_multi_output_model_quantizes_and_exports_every_output(tmp_path):
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(i)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = {
        "a": keras.layers.Dense(4, name="a")(h),
        "b": keras.layers.Dense(2, name="b")(h),
    }
    model = keras.Model(i, outputs, name="two_heads")
    x, y = small_data(32, (8, 8, 1))
    qat = QuantizationAwareTraining()
    trainer = kc.Trainer(model, techniques=[qat])
    trainer.compile(keras.optimizers.Adam(1e-3), {"a": loss(), "b": loss()})
    trainer.fit(x, {"a": y % 4, "b": y % 2}, batch_size=16, epochs=1, verbose=0)
    assert int(qat.quant_steps.numpy()) == 2
    # Every output is fake-quantized on its own trained range.
    assert {"a", "b"} <= set(qat.plan.keys)
    for key in ("a", "b"):
        low, high = qat.ranges[key].numpy()
        assert low < high
    ref = qat.quantized_model().predict(x[:8], verbose=0)
    assert sorted(ref) == ["a", "b"]
    path = str(tmp_path / "two_heads.tflite")
    export_tflite(trainer, path, quantization="int8")  # int8 ops checked
    outs = run_tflite(path, x[:8])
    assert sorted(o.shape[-1] for o in outs) == [2, 4]
    for out in outs:
        key = "a" if out.shape[-1] == 4 else "b"
        low, high = qat.ranges[key].numpy()
        step = (high - low) / 255  # one int8 step of that output
        assert np.max(np.abs(out - ref[key])) <= 1.0001 * step


def test_calibrate_sets_every_range_from_the_float_model(tmp_path):
    # Training batches brighter than the deployed images (as augmentation
    # can make them): the trained ranges are wider than those images need;
    # `calibrate` sets each to the float model's [min, max] on them.
    model = small_model()
    x, y = small_data()
    qat = QuantizationAwareTraining()
    trainer = kc.Trainer(model, techniques=[qat])
    trainer.compile(keras.optimizers.Adam(1e-3), loss())
    trainer.fit(3.0 * x, y, batch_size=16, epochs=1, verbose=0)
    trained = {k: keras.ops.convert_to_numpy(v) for k, v in qat.ranges.items()}
    clean = x[:20]
    qat.calibrate(clean, batch_size=8)
    ranges = {k: keras.ops.convert_to_numpy(v) for k, v in qat.ranges.items()}
    np.testing.assert_allclose(ranges["input"], [0.0, clean.max()], rtol=1e-6)
    assert trained["input"][1] > 2 * ranges["input"][1]
    out_key = qat.plan.tensor_key(qat.plan.graph.outputs[0])
    logits = model.predict(clean, verbose=0)
    np.testing.assert_allclose(
        ranges[out_key],
        [min(0.0, logits.min()), max(0.0, logits.max())],
        rtol=1e-5,
    )
    for key, value in ranges.items():
        assert value[0] <= 0.0 <= value[1] and value[1] > value[0], key
    # The fake-quant model and the int8 file use the calibrated ranges.
    path = str(tmp_path / "calibrated.tflite")
    export_tflite(trainer, path, quantization="int8")
    top1, steps = agreement(path, qat, clean)
    assert top1 == 1.0 and steps < 1e-3


def test_calibrate_rejects_bad_input():
    qat = QuantizationAwareTraining()
    with pytest.raises(ValueError, match="not attached"):
        qat.calibrate(np.zeros((2, 12, 12, 1)))
    kc.Trainer(small_model(), techniques=[qat])
    with pytest.raises(ValueError, match=r"Expected `images` of shape"):
        qat.calibrate(np.zeros((2, 12, 12)))
    with pytest.raises(ValueError, match=r"Expected `images` of shape"):
        qat.calibrate(np.zeros((0, 12, 12, 1)))
    with pytest.raises(ValueError, match="batch_size"):
        qat.calibrate(np.zeros((2, 12, 12, 1)), batch_size=0)
    a, b = keras.Input((4,)), keras.Input((4,))
    two = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Add()([a, b])))
    qat = QuantizationAwareTraining()
    kc.Trainer(two, techniques=[qat])
    with pytest.raises(ValueError, match="one input"):
        qat.calibrate(np.zeros((2, 4)))
