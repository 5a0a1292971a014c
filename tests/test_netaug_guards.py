"""NetAug that never hurts by default: the output guard, the extra channels'
initial distribution, the gradient guard, sorting only in the width phase,
monitoring, Sequential and softmax-output models."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from netaug_models import residual_model, se_model
from test_netaug import _attach, _count_traces, _images

import keras_compact  # noqa: F401  (registers the serializable classes)
from keras_compact import models
from keras_compact.netaug import NetAug, Supernet
from keras_compact.training import StepContext, Trainer

L = keras.layers
LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _report(technique):
    """The technique's `TechniqueReport`, without printing it."""
    return technique.summary(print_fn=lambda line: None)


def _dataset(model, n=16, batch=4, seed=0):
    x = _images(model, n, seed)
    classes = model.outputs[0].shape[-1]
    y = np.random.default_rng(seed).integers(0, classes, n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _zoo_imagenet_strides():
    # 32x32 input with ImageNet strides: the 1280-channel head is at 1x1.
    return models.get_model(
        "mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35, num_classes=10
    )


def _sequential_softmax():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(8, 3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2D(16, 1),
            L.BatchNormalization(),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(3, activation="softmax"),
        ],
        name="seq",
    )


# ----------------------------------------------------------------------
# Exact no-op at the tiny width
# ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, kwargs",
    [
        (se_model, {}),
        (residual_model, {"output_guard": "tiny"}),
        (se_model, {"gradient_guard": True}),
        (_sequential_softmax, {}),
        (_sequential_softmax, {"gradient_guard": True}),
    ],
)
def test_tiny_path_is_the_compact_model_and_strip_is_unchanged(build, kwargs):
    model = build()
    params, config = model.count_params(), model.get_config()
    trainer, netaug = _attach(model, **kwargs)
    x = _images(model, 4)
    for training in (False, True):
        tiny = np.asarray(model(x, training=training))
        path = netaug.augmented_model(
            [x, netaug.min_widths()], training=training
        )
        np.testing.assert_allclose(np.asarray(path), tiny, atol=1e-5, rtol=0)
    assert trainer.strip() is model
    assert model.count_params() == params
    assert model.get_config() == config


# ----------------------------------------------------------------------
# Output guard
# ----------------------------------------------------------------------
def test_scale_guard_rescales_the_classifier_input_by_the_active_width():
    # se_model: head_conv (16 ch) -> gap -> flatten -> Dense "logits" with
    # bias; the guard multiplies the Dense input by sqrt(16 / active).
    model = se_model()
    _, scaled = _attach(model, output_guard="scale")
    _, plain = _attach(model, output_guard=None)
    for a, b in zip(scaled.weights, plain.weights):
        b.assign(a)
    net = scaled.supernet
    assert net.scaled_outputs == ["logits"]
    head = next(
        i for i, g in enumerate(net.augmented) if g.layers[0] == "head_conv"
    )
    bias = model.get_layer("logits").bias.numpy()
    x = _images(model, 8)
    rng = np.random.default_rng(0)
    for _ in range(3):
        widths = np.array([rng.choice(c) for c in net.choices], "int32")
        widths[head] = net.choices[head][-1]
        a = np.asarray(scaled.augmented_model([x, widths], training=True))
        b = np.asarray(plain.augmented_model([x, widths], training=True))
        factor = math.sqrt(16 / widths[head])
        np.testing.assert_allclose(a - bias, factor * (b - bias), atol=1e-5)


def test_scale_guard_keeps_the_wide_logits_at_the_tiny_scale():
    # At initialisation over a 1x1 head, with extras drawn like the tiny
    # channels, the largest model's logits are sqrt(3328 / 1280) = 1.6
    # times the tiny model's without a guard; the guard brings them back.
    # With the default extras (smaller: one draw at the widest shape) the
    # guarded logits are not above the tiny scale either.
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 32, 32, 3)).astype("float32")
    ratio = {}
    for guard, init in ((None, "tiny"), ("scale", "tiny"), ("scale", "wide")):
        model = _zoo_imagenet_strides()
        _, netaug = _attach(model, output_guard=guard, extra_init=init)
        tiny = np.asarray(model(x, training=True)).std()
        wide = netaug.augmented_model([x, netaug.max_widths()], training=True)
        ratio[guard, init] = np.asarray(wide).std() / tiny
    assert ratio[None, "tiny"] > 1.3
    assert 0.7 < ratio["scale", "tiny"] < 1.3
    assert ratio["scale", "wide"] < 1.3


def test_tiny_guard_keeps_the_groups_feeding_the_classifier_tiny():
    model = _zoo_imagenet_strides()
    _, full = _attach(_zoo_imagenet_strides(), output_guard=None)
    _, netaug = _attach(model, output_guard="tiny")
    net = netaug.supernet
    assert [
        (net.channel_groups.groups[gi].size, n) for gi, n in net.guarded
    ] == [(1280, "logits")]
    assert len(net.augmented) == len(full.supernet.augmented) - 1
    assert all(g.layers[0] != "head_conv" for g in net.augmented)
    assert "output_guard='tiny'" in str(_report(netaug))
    assert "(read by 'logits')" in str(_report(netaug))
    assert netaug.widened_output_inputs() == {}
    assert full.widened_output_inputs() == {"logits": ["head_conv"]}


# ----------------------------------------------------------------------
# Extra channels' initial distribution
# ----------------------------------------------------------------------
def test_extra_channels_start_from_the_tiny_channels_distribution():
    model = _zoo_imagenet_strides()
    # A "trained" layer whose weights no longer follow the initializer.
    block = model.get_layer("block5_expand").kernel
    block.assign(block.numpy() * 3.0)
    _, netaug = _attach(model, extra_init="tiny")
    checked = 0
    for layer in netaug.elastic_layers:
        slot = getattr(layer, "kernel_slot", None)
        if slot is None or "bn" in layer.layer.name:
            continue
        tiny = slot.get_tiny().numpy()
        for extra in slot.extras:
            if extra is None or extra.numpy().size < 256:
                continue
            ratio = extra.numpy().std() / tiny.std()
            assert 0.85 < ratio < 1.15, (layer.layer.name, extra.name, ratio)
            checked += 1
    assert checked > 20
    # The head conv: glorot over the tiny shape (112 -> 1280), variance
    # 2 / 1392, not over the wide one (variance 2 / 3619).
    head = next(
        layer
        for layer in netaug.elastic_layers
        if layer.layer.name == "head_conv"
    )
    for extra in head.kernel_slot.extras:
        assert abs(extra.numpy().var() / (2 / 1392) - 1) < 0.1


def test_default_extra_init_cuts_the_extras_from_the_largest_layer():
    model = _zoo_imagenet_strides()
    block = model.get_layer("block5_expand").kernel
    block.assign(block.numpy() * 3.0)
    _, netaug = _attach(model)  # the default
    assert netaug.get_config()["extra_init"] == "wide"
    assert NetAug.from_config(netaug.get_config()).extra_init == "wide"
    # One default for the lower-level classes too.
    assert netaug.supernet.extra_init == "wide"
    assert Supernet(model, (1.0, 2.0), (1.0,)).extra_init == "wide"
    by_name = {layer.layer.name: layer for layer in netaug.elastic_layers}
    # The head conv: glorot over the widest shape (291 -> 3328 channels,
    # variance 2 / 3619), not over the tiny one (2 / 1392).
    for extra in by_name["head_conv"].kernel_slot.extras:
        assert abs(extra.numpy().var() / (2 / 3619) - 1) < 0.1
    # Not rescaled to a trained tiny kernel: the initializer's scale.
    slot = by_name["block5_expand"].kernel_slot
    ratios = [
        e.numpy().std() / slot.get_tiny().numpy().std()
        for e in slot.extras
        if e is not None
    ]
    assert ratios and max(ratios) < 0.5
    # Still an exact no-op at the tiny widths.
    x = _images(model, 3)
    for training in (False, True):
        np.testing.assert_allclose(
            netaug.augmented_model([x, netaug.min_widths()], training=training),
            model(x, training=training),
            atol=1e-5,
            rtol=0,
        )


# ----------------------------------------------------------------------
# Gradient guard
# ----------------------------------------------------------------------
def test_gradient_guard_bounds_the_augmented_gradient_of_shared_weights():
    model = se_model()
    trainer, netaug = _attach(model, gradient_guard=True, alpha=2.0)
    trainer.compile(optimizer="sgd", loss=LOGITS_LOSS)
    shared = model.trainable_weights
    taps = dict((id(v), t) for v, t in netaug._taps)
    # Every kernel, depthwise and BN weight of the compact model is tapped.
    assert {id(v) for v in shared} <= set(taps)
    x = _images(model, 8)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    widths = netaug.max_widths()

    def aug_loss():
        return 2.0 * netaug.augmented_loss(trainer, x, y, widths)

    with tf.GradientTape() as tape:
        loss = aug_loss()
    direct = tape.gradient(loss, shared)
    # The augmented pass's gradient reaches the shared weights only
    # through their taps.
    assert all(g is None or not np.any(np.asarray(g)) for g in direct)
    with tf.GradientTape() as tape:
        tiny = LOGITS_LOSS(y, model(x, training=True))
    g_tiny = tape.gradient(tiny, shared)
    with tf.GradientTape() as tape:
        loss = aug_loss()
    g_aug = tape.gradient(loss, [taps[id(v)] for v in shared])
    with tf.GradientTape() as tape:
        total = LOGITS_LOSS(y, model(x, training=True)) + aug_loss()
    ctx = StepContext(trainer, x, y)
    ctx.variables = variables = trainer.trainable_weights
    grads = netaug.transform_gradients(ctx, tape.gradient(total, variables))
    by_id = {id(v): g for v, g in zip(variables, grads)}
    clipped = 0
    for v, gt, ga in zip(shared, g_tiny, g_aug):
        gt, ga = np.asarray(gt), np.asarray(ga)
        factor = min(1.0, np.linalg.norm(gt) / np.linalg.norm(ga))
        clipped += factor < 1.0
        np.testing.assert_allclose(
            np.asarray(by_id[id(v)]), gt + factor * ga, atol=1e-5, rtol=1e-4
        )
        assert not np.any(np.asarray(by_id[id(taps[id(v)])]))
    assert clipped > 0


def test_gradient_guard_trains_with_one_trace_and_zero_taps():
    model = se_model()
    trainer, netaug = _attach(model, gradient_guard=True)
    traces = _count_traces(netaug)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=LOGITS_LOSS
    )
    before = model.get_layer("logits").kernel.numpy().copy()
    history = trainer.fit(_dataset(model), epochs=2, verbose=0)
    assert traces["n"] == 1
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(model.get_layer("logits").kernel.numpy(), before)
    for _, tap in netaug._taps:
        assert not np.any(tap.numpy())
    assert "Gradient guard on" in str(_report(netaug))


# ----------------------------------------------------------------------
# Sorting only in the width phase
# ----------------------------------------------------------------------
def test_channels_are_sorted_only_during_the_width_phase(monkeypatch):
    from keras_compact.netaug import sorting

    phases = []
    real = sorting.sort_expand_channels

    def spy(supernet, optimizer=None):
        phases.append(int(netaug.width_enabled.numpy()))
        return real(supernet, optimizer)

    monkeypatch.setattr(sorting, "sort_expand_channels", spy)
    model = se_model()
    trainer, netaug = _attach(model, sort_channels=True, stop_width_at=0.5)
    trainer.compile(optimizer="sgd", loss=LOGITS_LOSS)
    trainer.fit(_dataset(model, n=8), epochs=4, verbose=0)
    assert phases == [1, 1]  # epochs 0 and 1 of 4
    assert int(netaug.width_enabled.numpy()) == 0


# ----------------------------------------------------------------------
# Monitoring and the instability warning
# ----------------------------------------------------------------------
def _fit_recording(trainer, data, epochs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(data, epochs=epochs, verbose=0)
    ours = [w for w in caught if "NetAug" in str(w.message)]
    return history, ours


def test_history_has_the_augmented_loss_and_the_ratio():
    model = se_model()
    trainer, netaug = _attach(model, alpha=0.5)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOGITS_LOSS)
    history, ours = _fit_recording(trainer, _dataset(model), 3)
    h = history.history
    assert ours == []
    for k in ("netaug_aug_loss", "netaug_loss_ratio", "netaug_loss"):
        assert len(h[k]) == 3 and np.all(np.isfinite(h[k]))
    np.testing.assert_allclose(
        h["netaug_loss"], 0.5 * np.array(h["netaug_aug_loss"]), rtol=1e-5
    )
    np.testing.assert_allclose(
        h["netaug_loss_ratio"],
        np.array(h["netaug_aug_loss"]) / np.array(h["task_loss"]),
        rtol=1e-5,
    )
    logs = trainer.evaluate(_dataset(model), verbose=0, return_dict=True)
    assert not any(k.startswith("netaug") for k in logs)


def test_an_unstable_augmented_pass_warns_once_naming_the_cause():
    # No guard, and the classifier rows of the extra head channels made
    # huge: the augmented logits explode while the tiny model is fine.
    model = se_model()
    trainer, netaug = _attach(model, output_guard=None, stop_width_at=1.0)
    dense = next(
        layer for layer in netaug.elastic_layers if layer.layer.name == "logits"
    )
    rows = dense.kernel_slot.extras[1]
    rows.assign(rows.numpy() * 300.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOGITS_LOSS)
    history, ours = _fit_recording(trainer, _dataset(model), 4)
    h = history.history
    assert h["netaug_aug_loss"][-1] > math.log(3)
    assert h["netaug_loss_ratio"][-1] > 1.25
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "ln(3)" in message and "after warm-up (epoch 2)" in message
    assert "logits reads head_conv" in message
    assert "output_guard" in message


# ----------------------------------------------------------------------
# Sequential and softmax-output models
# ----------------------------------------------------------------------
def test_softmax_outputs_are_scored_on_logits_exactly_at_the_tiny_width():
    model = _sequential_softmax()
    trainer, netaug = _attach(model)
    trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    net = netaug.supernet
    assert net.softmax_outputs == [True]
    x = _images(model, 8)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    logits = net(x, netaug.min_widths(), training=True, logits=True)
    np.testing.assert_allclose(
        keras.ops.softmax(logits), model(x, training=True), atol=1e-5
    )
    expected = keras.losses.sparse_categorical_crossentropy(
        y, model(x, training=True)
    )
    loss = netaug.augmented_loss(trainer, x, y, netaug.min_widths())
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)
    # A loss on probabilities would saturate at -log(1e-7) = 16.1: on
    # logits it does not.
    net.compact.layers[-1].bias.assign([-40.0, 0.0, 0.0])
    loss = netaug.augmented_loss(trainer, x, np.zeros(8), netaug.min_widths())
    assert float(loss) > 30.0


@pytest.mark.parametrize("label_smoothing", [None, 0.1])
def test_sequential_softmax_model_trains_with_a_comparable_loss(
    label_smoothing,
):
    model = _sequential_softmax()
    trainer, netaug = _attach(model, label_smoothing=label_smoothing)
    traces = _count_traces(netaug)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    history = trainer.fit(_dataset(model), epochs=3, verbose=0)
    assert traces["n"] == 1
    ratio = history.history["netaug_loss_ratio"]
    assert np.all((0.5 < np.array(ratio)) & (np.array(ratio) < 2.0)), ratio
    assert "Softmax output" in str(_report(netaug))


def test_keras_mobilenet_v2_with_softmax_trains():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=3
    )
    # Every group augmented (its head is at 1x1: min_resolution=4 would
    # keep the classifier's input tiny, with nothing to scale).
    trainer, netaug = _attach(model, min_resolution=None)
    assert netaug.supernet.softmax_outputs == [True]
    assert netaug.supernet.scaled_outputs == ["predictions"]
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    history = trainer.fit(_dataset(model, n=8), epochs=1, verbose=0)
    ratio = history.history["netaug_loss_ratio"][0]
    assert 0.5 < ratio < 2.0


def test_unbuilt_sequential_is_a_clear_error():
    model = keras.Sequential([L.Dense(3)])
    with pytest.raises(ValueError, match="built Sequential"):
        Trainer(model, techniques=[NetAug()])
