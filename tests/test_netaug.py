"""NetAug: exact min-width path, shared weights, training, saving, KD."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from netaug_models import concat_model, residual_model, se_model

import keras_compact  # noqa: F401  (registers the serializable classes)
from keras_compact import models
from keras_compact.graph.stats import count_macs
from keras_compact.netaug import NetAug
from keras_compact.training import Distillation, Trainer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _report(technique):
    """The technique's `TechniqueReport`, without printing it."""
    return technique.summary(print_fn=lambda line: None)


def _zoo(name, **kw):
    return lambda: models.get_model(name, **kw)


ARCHITECTURES = {
    "residual_add": residual_model,
    "concatenate": concat_model,
    "squeeze_excite": se_model,
    "zoo_mobilenet_v2_tiny": _zoo("mobilenet_v2_tiny", input_shape=(32, 32, 3)),
    "zoo_mobilenet_v2_w035": _zoo(
        "mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35
    ),
    "zoo_resnet8": _zoo("resnet8", input_shape=(16, 16, 3)),
    "keras_mobilenet_v2": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    ),
    "keras_mobilenet_v2_logits": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3),
        alpha=0.35,
        weights=None,
        classes=10,
        classifier_activation=None,
    ),
    "keras_mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, dropout_rate=0.0
    ),
}


def _attach(model, **kwargs):
    netaug = NetAug(seed=0, **kwargs)
    trainer = Trainer(model, techniques=[netaug])
    return trainer, netaug


def _images(model, batch=3, seed=0):
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).random(shape).astype("float32")


def _count_traces(netaug):
    traces = {"n": 0}
    sample = netaug.sample_widths

    def counted(*args, **kwargs):
        traces["n"] += 1  # Python runs only while tracing
        return sample(*args, **kwargs)

    netaug.sample_widths = counted
    return traces


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_min_width_path_is_the_compact_model(arch):
    model = ARCHITECTURES[arch]()
    params, config = model.count_params(), model.get_config()
    _, netaug = _attach(model)
    assert netaug.supernet.num_groups > 0
    x = _images(model)
    aug = netaug.augmented_model
    for training in (False, True):
        tiny = np.asarray(model(x, training=training))
        path = np.asarray(aug([x, netaug.min_widths()], training=training))
        np.testing.assert_allclose(path, tiny, atol=1e-5, rtol=0)
    wide = np.asarray(aug([x, netaug.max_widths()], training=True))
    assert wide.shape == tiny.shape and np.all(np.isfinite(wide))
    # Nothing was added to or changed in the compact model.
    assert model.count_params() == params
    assert model.get_config() == config
    # The tiny block of every elastic weight IS the user's variable.
    user = {id(v) for v in model.weights}
    for layer in netaug.elastic_layers:
        for slot in layer.slots:
            assert id(slot.variables()[0]) in user
    # The arithmetic cost model agrees with the project's MAC counter.
    _, tiny_macs = netaug.expected_macs(samples=10)
    assert tiny_macs == count_macs(model)


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("squeeze_excite", {}),
        # Groups left at their tiny width (here: every width group, or
        # every expand group) still see augmented activations.
        ("zoo_mobilenet_v2_w035", {"width_multipliers": (1.0,)}),
        ("zoo_mobilenet_v2_w035", {"expand_multipliers": (1.0,)}),
    ],
)
def test_augmented_pass_never_writes_the_tiny_moving_statistics(arch, kwargs):
    model = ARCHITECTURES[arch]()
    _, netaug = _attach(model, **kwargs)
    before = [v.numpy().copy() for v in model.non_trainable_weights]
    netaug.augmented_model(
        [_images(model, 4), netaug.max_widths()], training=True
    )
    for b, v in zip(before, model.non_trainable_weights):
        np.testing.assert_array_equal(b, v.numpy())


def test_sampler_is_uniform_per_group_and_follows_the_schedule():
    _, netaug = _attach(se_model())
    choices = netaug.supernet.choices
    draws = np.stack([netaug.sample_widths().numpy() for _ in range(200)])
    for j, options in enumerate(choices):
        values, counts = np.unique(draws[:, j], return_counts=True)
        assert values.tolist() == options
        assert counts.min() > 200 / len(options) / 2
    netaug.width_enabled.assign(0)
    draws = np.stack([netaug.sample_widths().numpy() for _ in range(50)])
    for j, g in enumerate(netaug.supernet.augmented):
        if g.kind == "width":
            assert set(draws[:, j]) == {g.size}
        else:
            assert len(set(draws[:, j])) > 1
    aug, tiny = netaug.expected_macs(width_phase=True)
    aug2, _ = netaug.expected_macs(width_phase=False)
    assert aug > aug2 > tiny


def _dataset(model, n=16, batch=4, classes=3, seed=0):
    x = _images(model, n, seed)
    y = np.random.default_rng(seed).integers(0, classes, n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _compile(trainer):
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=LOSS,
        metrics=["accuracy"],
    )


def test_fit_traces_once_trains_the_users_model_and_strips_to_it():
    model = residual_model()
    params, config = model.count_params(), model.get_config()
    kernel = model.get_layer("c1").kernel
    start = kernel.numpy().copy()
    trainer, netaug = _attach(model, stop_width_at=0.5)
    traces = _count_traces(netaug)
    _compile(trainer)
    history = trainer.fit(_dataset(model), epochs=4, verbose=0)
    steps = 4 * 4
    assert traces["n"] == 1 < steps  # one trace serves every sub-model
    assert "netaug_loss" in history.history
    assert np.all(np.isfinite(history.history["netaug_loss"]))
    assert model.get_layer("c1").kernel is kernel  # same variable, trained
    assert not np.allclose(kernel.numpy(), start)
    assert int(netaug.width_enabled.numpy()) == 0  # schedule: last half
    stripped = trainer.strip()
    assert stripped is model
    assert stripped.count_params() == params
    assert stripped.get_config() == config
    x = _images(model, 4)
    np.testing.assert_allclose(
        trainer.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    logs = trainer.evaluate(_dataset(model), verbose=0, return_dict=True)
    assert "netaug_loss" not in logs


def test_save_load_round_trip_and_resume(tmp_path):
    model = concat_model()
    trainer, netaug = _attach(
        model, width_multipliers=[1.0, 2.0], label_smoothing=0.1
    )
    _compile(trainer)
    data = _dataset(model)
    trainer.fit(data, epochs=1, verbose=0)
    path = str(tmp_path / "trainer.keras")
    trainer.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert isinstance(loaded, Trainer)
    (restored,) = loaded.techniques
    assert isinstance(restored, NetAug)
    assert restored.get_config() == netaug.get_config()
    for a, b in zip(netaug.weights, restored.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = _images(model, 4)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), trainer.predict(x, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(
        restored.augmented_model([x, restored.max_widths()]),
        netaug.augmented_model([x, netaug.max_widths()]),
        atol=1e-5,
    )
    loaded.fit(data, epochs=1, verbose=0)  # resumes training


def test_netaug_composes_with_distillation():
    student = se_model()
    teacher = se_model()
    trainer = Trainer(
        student, techniques=[NetAug(seed=1), Distillation(teacher)]
    )
    _compile(trainer)
    history = trainer.fit(_dataset(student), epochs=1, verbose=0)
    for name in ("netaug_loss", "distillation_loss", "task_loss"):
        assert np.isfinite(history.history[name][-1])


def test_nothing_to_augment_warns_and_reports():
    i = keras.Input((4,))
    model = keras.Model(i, keras.layers.Dense(2)(i))
    with pytest.warns(UserWarning, match="nothing to augment"):
        _, netaug = _attach(model)
    assert "0 augmented" in str(_report(netaug))


def test_stop_at_ends_the_augmented_pass_and_then_steps_like_plain():
    model = residual_model()
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    trainer, netaug = _attach(model, stop_at=0.5)
    _compile(trainer)
    history = trainer.fit(_dataset(model), epochs=4, verbose=0).history
    # Epochs 0-1 augmented, 2-3 not: no term, no augmented loss logged.
    assert min(history["netaug_loss"][:2]) > 0
    assert history["netaug_loss"][2:] == [0.0, 0.0]
    assert len(history["netaug_aug_loss"]) == 2
    # A step after the stop is a plain step: same update as a plain
    # trainer from the same weights (plain SGD, so no optimizer state).
    plain = Trainer(twin)
    for t in (trainer, plain):
        t.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    twin.set_weights(model.get_weights())
    x, y = next(iter(_dataset(model, n=4)))
    trainer.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # A fit resumed in the augmented phase turns it back on.
    trainer.fit(_dataset(model), epochs=4, initial_epoch=1, verbose=0)
    assert len(trainer.history.history["netaug_aug_loss"]) == 1


def test_start_at_delays_the_augmented_pass():
    model = residual_model()
    trainer, netaug = _attach(model, start_at=0.5)
    _compile(trainer)
    history = trainer.fit(_dataset(model), epochs=4, verbose=0).history
    assert history["netaug_loss"][:2] == [0.0, 0.0]
    assert min(history["netaug_loss"][2:]) > 0
    assert len(history["netaug_aug_loss"]) == 2
    config = netaug.get_config()
    assert (config["start_at"], config["stop_at"]) == (0.5, 1.0)
    assert NetAug.from_config(config).start_at == 0.5


def _two_resolution_model():
    """An 8x8 stem group and a group on a 2x2 map (below min_resolution)."""
    L = keras.layers
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.ReLU()(L.BatchNormalization(name="stem_bn")(x))
    x = L.Conv2D(8, 3, strides=4, padding="same", name="down")(x)
    x = L.ReLU()(L.BatchNormalization(name="down_bn")(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Dense(3, name="head")(x), name="two_res")


def test_start_at_auto_delays_the_augmented_pass_only_with_small_maps():
    assert NetAug().start_at == "auto"
    assert NetAug().effective_start_at == 0.0  # not attached
    model = _two_resolution_model()
    trainer, netaug = _attach(model)  # start_at="auto", min_resolution=4
    assert [layer for _, layer in netaug.supernet.small_maps] == ["down"]
    assert netaug.supernet.num_groups == 1  # the stem group is augmented
    assert netaug.effective_start_at == 0.5
    assert "Augmented pass from 50% of the epochs on (start_at='auto'" in (
        str(_report(netaug))
    )
    _compile(trainer)
    history = trainer.fit(_dataset(model), epochs=4, verbose=0).history
    assert history["netaug_loss"][:2] == [0.0, 0.0]
    assert min(history["netaug_loss"][2:]) > 0
    config = netaug.get_config()
    assert config["start_at"] == "auto"
    assert NetAug.from_config(config).start_at == "auto"
    # No map below min_resolution: the augmented pass runs from the start.
    for model, kw in (
        (residual_model(), {}),
        (_two_resolution_model(), {"min_resolution": None}),
    ):
        trainer, netaug = _attach(model, **kw)
        assert netaug.effective_start_at == 0.0
        assert "Augmented pass from" not in str(_report(netaug))
        _compile(trainer)
        history = trainer.fit(_dataset(model), epochs=2, verbose=0).history
        assert min(history["netaug_loss"]) > 0


def test_a_fit_too_short_for_the_delayed_pass_warns():
    model = _two_resolution_model()
    trainer, netaug = _attach(model)  # "auto": 0.5 on this model
    _compile(trainer)
    with pytest.warns(UserWarning, match="start_at='auto' is 0.5") as rec:
        history = trainer.fit(_dataset(model), epochs=1, verbose=0).history
    ours = [str(w.message) for w in rec if "never ran" in str(w.message)]
    assert len(ours) == 1 and "epochs=1" in ours[0]
    assert history["netaug_loss"] == [0.0]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")  # two epochs: the second one runs it
        trainer.fit(_dataset(model), epochs=2, verbose=0)
    assert not [w for w in rec if "never ran" in str(w.message)]


def test_start_at_auto_with_an_early_stop_at_is_refused_at_attach():
    netaug = NetAug(stop_at=0.5)  # fine until a model resolves "auto"
    with pytest.raises(ValueError, match="start_at='auto'` is 0.5 for 'two"):
        Trainer(_two_resolution_model(), techniques=[netaug])
    assert netaug.supernet is None  # not left half attached
    Trainer(residual_model(), techniques=[netaug])  # "auto" is 0 there
    assert netaug.effective_start_at == 0.0


@pytest.mark.parametrize(
    "kwargs, match, error",
    [
        ({"start_at": "later"}, "start_at='later'", TypeError),
        (
            {"width_multipliers": [0.5, 1.0]},
            "width_multipliers=\\[0.5, 1.0\\]",
            ValueError,
        ),
        ({"expand_multipliers": [1.5, 2.0]}, "expand_multipliers=", ValueError),
        ({"width_multipliers": []}, "width_multipliers=\\[\\]", ValueError),
        ({"alpha": -1}, "alpha=-1", ValueError),
        ({"label_smoothing": 1.0}, "label_smoothing=1.0", ValueError),
        ({"stop_width_at": 0}, "stop_width_at=0", ValueError),
        ({"stop_width_at": "later"}, "stop_width_at='later'", TypeError),
        ({"stop_at": 0}, "stop_at=0", ValueError),
        ({"stop_at": 1.5}, "stop_at=1.5", ValueError),
        ({"stop_at": None}, "stop_at=None", TypeError),
        ({"start_at": 1.0}, "start_at=1.0", ValueError),
        (
            {"start_at": 0.5, "stop_at": 0.5},
            "start_at=0.5, stop_at=0.5",
            ValueError,
        ),
        ({"sort_channels": "yes"}, "sort_channels='yes'", TypeError),
        ({"seed": 1.5}, "seed=1.5", TypeError),
        ({"exclude": "head_conv"}, "exclude='head_conv'", TypeError),
        ({"exclude": [3]}, "exclude=\\[3\\]", TypeError),
        ({"output_guard": "big"}, "output_guard='big'", ValueError),
        ({"output_guard": ["scale"]}, "output_guard=\\['scale'\\]", TypeError),
        ({"gradient_guard": "yes"}, "gradient_guard='yes'", TypeError),
        ({"min_resolution": 0}, "min_resolution=0", ValueError),
        ({"min_resolution": "4"}, "min_resolution='4'", TypeError),
        ({"extra_init": "glorot"}, "extra_init='glorot'", ValueError),
        ({"extra_init": None}, "extra_init=None", TypeError),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, match, error):
    # A wrong type raises TypeError, a wrong value ValueError.
    with pytest.raises(error, match=match):
        NetAug(**kwargs)


def test_missing_loss_is_a_clear_error():
    model = residual_model()
    trainer, _ = _attach(model)
    trainer.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="loss="):
        trainer.fit(_dataset(model), epochs=1, verbose=0)


def test_exclude_keeps_the_named_layers_output_group_at_the_tiny_width():
    build = ARCHITECTURES["zoo_mobilenet_v2_w035"]
    _, full = _attach(build())
    model = build()
    params, config = model.count_params(), model.get_config()
    _, netaug = _attach(model, exclude=["head_conv"])
    net = netaug.supernet
    head = [g for g in full.supernet.augmented if "head_conv" == g.layers[0]]
    assert len(head) == 1 and head[0].size == 1280
    assert [g.layers[0] for g in net.augmented] == [
        g.layers[0] for g in full.supernet.augmented if g is not head[0]
    ]
    assert "output of 'head_conv'" in str(_report(netaug))
    # The largest sub-model keeps the head at 1280 channels; the tiny path
    # is still the compact model, which is unchanged.
    assert net.macs(net.max_widths()) < full.supernet.macs(
        full.supernet.max_widths()
    )
    x = _images(model)
    np.testing.assert_allclose(
        netaug.supernet(x, netaug.min_widths(), training=False),
        model(x, training=False),
        atol=1e-5,
    )
    assert model.count_params() == params
    assert model.get_config() == config


def test_min_resolution_keeps_the_groups_on_small_feature_maps_tiny():
    # ImageNet strides at 32x32: 16x16 after the stem, 8x8 from block 2,
    # 4x4 from block 4, 2x2 from block 7's depthwise, 1x1 from block 14.
    def build(cifar_stem):
        return models.get_model(
            "mobilenet_v2",
            input_shape=(32, 32, 3),
            alpha=0.35,
            cifar_stem=cifar_stem,
        )

    model = build(False)
    params, config = model.count_params(), model.get_config()
    _, full = _attach(build(False), min_resolution=None)
    _, netaug = _attach(model)  # the default, min_resolution=4
    net = netaug.supernet
    assert [g.layers[0] for g in net.augmented] == [
        "stem_conv",
        "block1_project",
        "block2_expand",
        "block2_project",
        "block3_expand",
        "block4_expand",
        "block4_project",
        "block5_expand",
        "block6_expand",
    ]
    assert len(net.augmented) + len(net.small_maps) == full.supernet.num_groups
    groups = net.channel_groups.groups
    kept = [groups[gi].layers[0] for gi, _ in net.small_maps]
    assert kept[0] == "block7_expand" and "head_conv" in kept
    report = str(_report(netaug))
    assert "min_resolution=4 (on the 'block7_dw'" in report
    # start_at="auto" is 0.5 here, after the width phase (0.5 with expand
    # groups): the report says only the expand groups are augmented.
    assert (netaug.effective_start_at, netaug.effective_stop_width_at) == (
        0.5,
        0.5,
    )
    assert "only the expand groups are augmented" in report
    assert "only the expand groups" not in str(_report(full))
    x = _images(model)
    np.testing.assert_allclose(
        net(x, netaug.min_widths(), training=False),
        model(x, training=False),
        atol=1e-5,
    )
    assert model.count_params() == params
    assert model.get_config() == config
    # CIFAR strides (4x4 at the head): nothing is below 4.
    _, cifar = _attach(build(True), min_resolution=4)
    assert cifar.supernet.small_maps == []
    assert cifar.supernet.num_groups == 24
    assert cifar.effective_start_at == 0.0


def test_min_resolution_ignores_gates_and_heads_after_global_pooling():
    # se_model: 8x8 maps; its squeeze-excite gate (GAP -> Reshape -> 1x1
    # convs -> Multiply) and its GAP(keepdims) -> Flatten head are 1x1
    # tensors but no feature map: nothing is kept at min_resolution=2.
    _, full = _attach(se_model(), min_resolution=None)
    _, netaug = _attach(se_model(), min_resolution=2)
    assert netaug.supernet.small_maps == []
    assert netaug.supernet.num_groups == full.supernet.num_groups == 4
    # Every 8x8 group is below 9; the gate's own group follows the
    # expand group it multiplies.
    _, small = _attach(se_model(), min_resolution=9)
    groups = small.supernet.channel_groups.groups
    kept = {groups[gi].layers[0] for gi, _ in small.supernet.small_maps}
    assert {"stem", "expand", "head_conv"} <= kept


def test_exclude_names_an_unknown_layer_clearly():
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        _attach(residual_model(), exclude=["nope"])


def test_config_round_trip():
    netaug = NetAug(
        width_multipliers=[2, 1],
        stop_width_at=0.6,
        sort_channels=True,
        label_smoothing=0.1,
        exclude=["head_conv"],
        output_guard="tiny",
        gradient_guard=True,
        min_resolution=4,
        seed=3,
        name="na",
    )
    config = netaug.get_config()
    assert config["min_resolution"] == 4
    assert config["exclude"] == ["head_conv"]
    assert config["output_guard"] == "tiny" and config["gradient_guard"]
    assert NetAug().get_config()["output_guard"] == "scale"
    assert NetAug(output_guard=None).get_config()["output_guard"] is None
    assert config["width_multipliers"] == [1.0, 2.0]
    assert NetAug.from_config(config).get_config() == config


def test_gradients_reach_the_shared_weights_exactly():
    # At the tiny widths the augmented pass IS the tiny pass, so its
    # gradient with respect to the user's variables is the tiny gradient.
    model = concat_model()
    _, netaug = _attach(model)
    x = _images(model, 4)
    y = np.array([0, 1, 2, 0])

    def grads(fn, variables):
        with tf.GradientTape() as tape:
            loss = LOSS(y, fn())
        return tape.gradient(loss, variables)

    shared = model.trainable_weights
    tiny = grads(lambda: model(x, training=True), shared)
    aug = netaug.augmented_model
    path = grads(lambda: aug([x, netaug.min_widths()], training=True), shared)
    for a, b in zip(tiny, path):
        np.testing.assert_allclose(b, a, atol=1e-5)
    extras = [w for w in netaug.trainable_weights]
    wide = grads(lambda: aug([x, netaug.max_widths()], training=True), extras)
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in wide)


def _drop_channels_beyond(netaug, widths):
    """Zeroes, in every elastic layer, the kernel rows that read extra input
    channels beyond `widths`: the largest augmented model then computes
    the sub-model of those widths (its other extra channels are computed
    but read by nobody)."""
    for layer in netaug.elastic_layers:
        for slot in layer.slots:
            rows = slot.extras[1] if slot.kind == "kernel" else None
            if rows is None:
                continue
            value = rows.numpy()
            for seg in slot.in_segs:
                if seg.widx is None or not seg.extra:
                    continue
                used = int(widths[seg.widx]) - seg.size
                value[..., seg.offset + used : seg.offset + seg.extra, :] = 0
            rows.assign(value)


@pytest.mark.parametrize(
    "arch",
    ["residual_add", "concatenate", "squeeze_excite", "zoo_mobilenet_v2_w035"],
)
def test_every_sub_model_is_the_largest_model_restricted_to_its_channels(
    arch,
):
    # Catches any misaligned slice: channel k of a layer's output must be
    # what its consumers read as channel k, at every sampled width. (Without
    # the output guard, whose "scale" depends on the active width by
    # design: tests/test_netaug_guards.py checks it.)
    model = ARCHITECTURES[arch]()
    _, netaug = _attach(model, output_guard=None)
    x = _images(model, 8)
    rng = np.random.default_rng(1)
    for _ in range(3):
        choices = netaug.supernet.choices
        widths = np.array([rng.choice(c) for c in choices], dtype="int32")
        if np.all(widths == netaug.min_widths()):
            widths[0] = choices[0][1]  # a wider sub-model, not the tiny one
        sub = np.asarray(netaug.augmented_model([x, widths], training=True))
        saved = [v.numpy() for v in netaug.trainable_weights]
        _drop_channels_beyond(netaug, widths)
        wide = netaug.augmented_model([x, netaug.max_widths()], training=True)
        for v, s in zip(netaug.trainable_weights, saved):
            v.assign(s)
        np.testing.assert_allclose(np.asarray(wide), sub, atol=1e-4, rtol=0)


def _two_output_model():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = {
        "a": keras.layers.Dense(3, name="a")(h),
        "b": keras.layers.Dense(2, name="b")(h),
    }
    return keras.Model(x, outputs)


def test_multi_output_augmented_loss_is_the_compiled_loss_on_every_output():
    model = _two_output_model()
    trainer, netaug = _attach(model)
    assert netaug.supernet.num_groups > 0
    trainer.compile(
        optimizer="sgd",
        loss={"a": LOSS, "b": LOSS},
        loss_weights={"a": 1.0, "b": 0.5},
    )
    x = _images(model, batch=4)
    y = {"a": np.array([0, 1, 2, 0]), "b": np.array([1, 0, 1, 1])}
    # The tiny path is the model itself, output by output.
    tiny = netaug.supernet(x, netaug.min_widths(), training=False)
    assert sorted(tiny) == ["a", "b"]
    for k, v in model(x, training=False).items():
        np.testing.assert_allclose(tiny[k], v, atol=1e-5, rtol=0)
    # The augmented loss scores every output with its loss and weight.
    wide = netaug.max_widths()
    y_aug = netaug.supernet(x, wide, training=True)
    a, b = float(LOSS(y["a"], y_aug["a"])), float(LOSS(y["b"], y_aug["b"]))
    loss = float(netaug.augmented_loss(trainer, x, y, wide))
    np.testing.assert_allclose(loss, a + 0.5 * b, rtol=1e-5)
    assert min(a, b) > 0
    history = trainer.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["netaug_loss"][0])
    assert trainer.strip() is model


def test_multi_output_label_smoothing_is_a_clear_error():
    model = _two_output_model()
    trainer, _ = _attach(model, label_smoothing=0.1)
    trainer.compile(optimizer="sgd", loss={"a": LOSS, "b": LOSS})
    x = _images(model, batch=4)
    y = {"a": np.zeros(4, "int32"), "b": np.zeros(4, "int32")}
    with pytest.raises(ValueError, match="single-output.*2 outputs"):
        trainer.fit(x, y, epochs=1, batch_size=4, verbose=0)
