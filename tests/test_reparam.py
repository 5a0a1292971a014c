"""Reparameterize: exact folds, architecture kept, serialization, reports,
argument checks and composition with the other techniques."""

import keras
import numpy as np
import pytest

import keras_compact
from keras_compact import Reparameterize, Trainer
from keras_compact.reparam import folding

TOL = 1e-5


def _report(technique):
    """The technique's `TechniqueReport`, without printing it."""
    return technique.summary(print_fn=lambda line: None)


def _stack(i, p):
    """Every geometry the folds must get right, layer names prefixed."""
    # stride 2, odd kernel, no bias + BN (constant -> moving mean)
    x = keras.layers.Conv2D(
        8, 3, strides=2, padding="same", use_bias=False, name=f"{p}s2_bn"
    )(i)
    x = keras.layers.BatchNormalization(name=f"{p}bn_a")(x)
    x = keras.layers.ReLU()(x)
    # even kernel, stride 1, bias, no BN (constant -> bias)
    x = keras.layers.Conv2D(8, 2, padding="same", name=f"{p}even_bias")(x)
    x = keras.layers.ReLU()(x)
    # depthwise, stride 1 (RepVGG identity), BN
    x = keras.layers.DepthwiseConv2D(
        3, padding="same", use_bias=False, name=f"{p}dw"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{p}bn_b")(x)
    x = keras.layers.ReLU()(x)
    # grouped, even kernel, stride 2, no bias and no BN (no constant)
    x = keras.layers.Conv2D(
        8,
        4,
        strides=2,
        padding="same",
        groups=2,
        use_bias=False,
        activation="relu",
        name=f"{p}grouped",
    )(x)
    # 'valid' padding, bias and BN
    x = keras.layers.Conv2D(8, 3, padding="valid", name=f"{p}valid")(x)
    x = keras.layers.BatchNormalization(name=f"{p}bn_c")(x)
    # depthwise, multiplier 2, even kernel, stride 2, 'valid'
    x = keras.layers.DepthwiseConv2D(
        2, strides=2, depth_multiplier=2, use_bias=False, name=f"{p}dw_valid"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{p}bn_d")(x)
    return keras.layers.GlobalAveragePooling2D()(x)


def _geometries_model(name="zoo"):
    """Two inputs, even (16) and odd (17) spatial sizes, each through every
    geometry: strides 1 and 2, odd and even kernels, 'same' and 'valid',
    depthwise and grouped, with and without bias and BN."""
    even, odd = keras.Input((16, 16, 4)), keras.Input((17, 17, 4))
    x = keras.layers.Concatenate()([_stack(even, "e_"), _stack(odd, "o_")])
    return keras.Model(
        [even, odd], keras.layers.Dense(3, name="logits")(x), name=name
    )


def _pair(n=16, seed=0):
    (a, y), (b, _) = (
        _data((16, 16, 4), n, seed=seed),
        _data((17, 17, 4), n, seed=seed + 1),
    )
    return [a, b], y


def _data(shape, n=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(shape)).astype("float32")
    return x, rng.integers(0, classes, n)


def _compile(trainer, from_logits=True, eager=True):
    # Eager by default: tracing costs more than these few tiny steps; the
    # compiled train step is exercised by test_shared_technique_promises.
    trainer.compile(
        run_eagerly=eager,
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits
        ),
        metrics=["accuracy"],
    )
    return trainer


def _fold_error(rep, trainer, x):
    """max |f_train(x, training=False) - f_folded(x)|, after training."""
    rep.unfold()
    train_out = keras.ops.convert_to_numpy(
        rep.training_model(x, training=False)
    )
    folded = trainer.strip()
    return float(np.max(np.abs(train_out - folded.predict(x, verbose=0))))


@pytest.mark.parametrize(
    "family, main_norm",
    [
        ("repvgg", True),
        ("repvgg", False),
        ("acnet", True),
        ("expandnets", True),
        ("dbb", True),
    ],
)
def test_fold_is_exact_for_every_geometry(family, main_norm):
    keras.utils.set_random_seed(0)
    model = _geometries_model()
    x, y = _pair()
    rep = Reparameterize(family, expansion=2, main_norm=main_norm, seed=1)
    trainer = _compile(Trainer(model, [rep]))
    trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    applied = {r.item: r.values for r in _report(rep).applied}
    names = ["s2_bn", "even_bias", "dw", "grouped", "valid", "dw_valid"]
    expected = {p + n for p in ("e_", "o_") for n in names}
    if family == "expandnets":
        expected.add("logits")
    assert set(applied) == expected
    assert applied["e_s2_bn"]["constant_into"] == "batch_norm"
    assert applied["o_even_bias"]["constant_into"] == "bias"
    assert applied["e_grouped"]["constant_into"] == "none"
    if family == "repvgg":
        assert "identity" in applied["o_dw"]["branches"]
        assert "identity" not in applied["o_s2_bn"]["branches"]
    if family == "dbb":
        assert applied["e_dw"]["branches"] == ["1x1_kxk", "avg"]
        assert applied["e_dw_valid"]["branches"] == [
            "conv1x1",
            "1x1_kxk",
            "1x1_avg",
        ]
    # The branch BNs have moved from their initial statistics.
    bns = [
        w for b in rep.blocks for w in b.weights if "moving_variance" in w.path
    ]
    if family != "expandnets":
        assert bns and any(
            np.abs(keras.ops.convert_to_numpy(v) - 1).max() > 1e-3 for v in bns
        )
    # The main branch has its own BN (folded into the user's kernel)
    # exactly where the branches have theirs.
    for block in rep.blocks:
        has_main = block.main_bn is not None
        expected_main = main_norm and family != "expandnets" and block.constant
        assert has_main == expected_main, block.name
    # After fit the user's model already holds the folded weights.
    assert rep.is_folded
    predicted = trainer.predict(x, verbose=0)
    assert _fold_error(rep, trainer, x) < TOL
    np.testing.assert_allclose(model.predict(x, verbose=0), predicted)


@pytest.mark.parametrize("family", ["acnet", "dbb"])
def test_unknown_spatial_size_uses_the_full_kernel_and_stays_exact(family):
    keras.utils.set_random_seed(0)
    i = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(
        6, 3, strides=2, padding="same", use_bias=False, name="c"
    )(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(2)(x))
    rep = Reparameterize(family)
    trainer = _compile(Trainer(model, [rep]))
    x16, y = _data((10, 10, 3), classes=2)
    trainer.fit(x16, y, epochs=1, batch_size=8, verbose=0)
    rep.unfold()
    for shape in [(10, 10, 3), (11, 9, 3)]:
        xs, _ = _data(shape, n=4, seed=3)
        ref = keras.ops.convert_to_numpy(rep.training_model(xs))
        rep.fold()
        out = model.predict(xs, verbose=0)
        rep.unfold()
        assert np.max(np.abs(ref - out)) < TOL


def test_strip_returns_the_users_model_with_its_architecture():
    keras.utils.set_random_seed(0)
    model = keras_compact.models.get_model(
        "tiny_cnn", input_shape=(12, 12, 3), num_classes=4
    )
    params = model.count_params()
    configs = [layer.get_config() for layer in model.layers]
    weights = [tuple(w.shape) for w in model.weights]
    rep = Reparameterize("repvgg")
    trainer = _compile(Trainer(model, [rep]))
    x, y = _data((12, 12, 3), classes=4)
    trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    stripped = trainer.strip()
    assert stripped is model
    assert stripped.count_params() == params
    assert [layer.get_config() for layer in stripped.layers] == configs
    assert [tuple(w.shape) for w in stripped.weights] == weights
    assert _report(rep).totals["extra_params"] > 0


def test_sequential_softmax_output_expandnets_dense():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, padding="same", name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax", name="probs"),
        ]
    )
    rep = Reparameterize("expandnets")
    trainer = _compile(Trainer(model, [rep]), from_logits=False)
    assert rep.get_config()["include_pointwise"] is False
    x, y = _data((8, 8, 2))
    trainer.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert {r.item for r in _report(rep).applied} == {"c", "probs"}
    assert _fold_error(rep, trainer, x) < TOL
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def _wide_classifier_losses(techniques):
    """Loss per epoch of a Dense classifier on 1,280 non-negative
    features (MobileNetV2's head width) at SGD-Nesterov lr 0.05."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (0.4 * np.abs(rng.normal(size=(512, 1280)))).astype("float32")
    y = rng.integers(0, 10, 512)
    i = keras.Input((1280,))
    model = keras.Model(i, keras.layers.Dense(10, name="logits")(i))
    trainer = Trainer(model, techniques)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = trainer.fit(x, y, epochs=3, batch_size=128, verbose=0)
    return trainer, history.history["loss"]


def test_expandnets_dense_chain_starts_at_zero_and_trains_a_wide_head():
    # With a glorot last factor this chain diverged (loss 3.4 -> 971 in 3
    # epochs) where the plain classifier trains: the chain multiplied the
    # classifier's effective step on logits no normalization follows.
    _, plain = _wide_classifier_losses([])
    rep = Reparameterize("expandnets", seed=0)
    trainer, expanded = _wide_classifier_losses([rep])
    assert np.all(np.isfinite(expanded))
    assert expanded[-1] < expanded[0]
    assert expanded[-1] < plain[0]
    assert abs(expanded[-1] - plain[-1]) < 0.1
    # The chain learned (it is no longer zero) and folds exactly.
    (block,) = rep.blocks
    first, middle, last = [
        keras.ops.convert_to_numpy(k) for k in block._ref.branches[0].kernels
    ]
    assert np.abs(first @ middle @ last).max() > 1e-4
    x = np.abs(np.random.default_rng(1).normal(size=(8, 1280)))
    assert _fold_error(rep, trainer, x.astype("float32")) < TOL


@pytest.mark.parametrize("width", [6, 64, 1280])
def test_expandnets_dense_chain_starts_as_an_isometry(width):
    # With C at zero, a step on C moves the folded kernel by
    # A B (A B)^T times the plain layer's step: every singular value of
    # A B at 1 keeps that at the plain step (glorot A, B reached about 8x
    # on a 1,280-wide head and diverged at lr 0.1 on MobileNetV2).
    i = keras.Input((width,))
    model = keras.Model(i, keras.layers.Dense(10, name="logits")(i))
    rep = Reparameterize("expandnets", seed=0)
    Trainer(model, [rep])
    (block,) = rep.blocks
    first, middle, last = [
        keras.ops.convert_to_numpy(k) for k in block._ref.branches[0].kernels
    ]
    sv = np.linalg.svd(first @ middle, compute_uv=False)
    np.testing.assert_allclose(sv, 1.0, atol=1e-5)
    assert not last.any()


def test_expandnets_dense_chain_adds_nothing_at_the_start():
    keras.utils.set_random_seed(0)
    i = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu", name="hidden")(i)
    model = keras.Model(i, keras.layers.Dense(3, name="logits")(h))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    before = model.predict(x, verbose=0)
    rep = Reparameterize("expandnets", seed=0)
    Trainer(model, [rep])
    assert len(rep.blocks) == 2 and not rep.is_folded
    out = keras.ops.convert_to_numpy(rep.training_model(x, training=False))
    np.testing.assert_allclose(out, before, atol=1e-6)


def test_keras_round_trip_and_folded_validation(tmp_path):
    keras.utils.set_random_seed(0)
    i = keras.Input((16, 16, 4))
    model = keras.Model(i, keras.layers.Dense(3)(_stack(i, "")), name="rt")
    rep = Reparameterize("acnet", seed=3)
    trainer = _compile(Trainer(model, [rep]))
    x, y = _data((16, 16, 4))
    history = trainer.fit(
        x, y, epochs=1, batch_size=8, validation_data=(x, y), verbose=0
    )
    # Validation inside fit measured the folded model, i.e. the model that
    # ships (which is what the user's model holds after fit).
    logs = trainer.evaluate(x, y, verbose=0, return_dict=True)
    assert abs(history.history["val_loss"][-1] - logs["loss"]) < 1e-5
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Trainer)
    lrep = loaded.techniques[0]
    assert isinstance(lrep, Reparameterize)
    assert lrep.get_config() == rep.get_config()
    assert lrep.is_folded
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), trainer.predict(x, verbose=0), atol=1e-6
    )
    # The reloaded trainer resumes from the unfolded weights, and folds
    # exactly again.
    loaded.run_eagerly = True  # (the compiled step: the shared test)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert _fold_error(lrep, loaded, x) < TOL
    # The stripped model is a plain Keras model.
    plain = tmp_path / "plain.keras"
    loaded.strip().save(plain)
    again = keras.saving.load_model(plain)
    np.testing.assert_allclose(
        again.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6
    )


def test_selection_and_skipped_layers_are_reported():
    i = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = shared(shared(i))
    x = keras.layers.Conv2D(
        4, 3, dilation_rate=2, padding="same", name="dilated"
    )(x)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    x = keras.layers.Conv2D(4, 1, name="pointwise")(x)
    x = keras.layers.Conv2D(4, 3, name="plain")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="other")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(2, name="head")(x))
    rep = Reparameterize("repvgg")
    Trainer(model, [rep])
    report = _report(rep)
    assert [r.item for r in report.applied] == ["plain", "other"]
    reasons = {r.item: r.reason for r in report.skipped}
    assert "2 times" in reasons["shared"]
    assert "dilation" in reasons["dilated"]
    assert "SeparableConv2D" in reasons["sep"]
    assert "1x1" in reasons["pointwise"]
    assert "dense form" in reasons["head"]
    lines = []
    assert rep.summary(print_fn=lines.append).to_dict()["rows"]
    assert any("skipped  sep" in line for line in lines)
    named = Reparameterize("acnet", layers=["other", "pointwise"])
    Trainer(model, [named])
    assert [r.item for r in _report(named).applied] == ["other"]
    assert named.get_config()["layers"] == ["other"]
    picked = Reparameterize(
        "expandnets",
        include_pointwise=True,
        layers=lambda layer: "p" in layer.name,
    )
    Trainer(model, [picked])
    assert [r.item for r in _report(picked).applied] == [
        "pointwise",
        "plain",
    ]
    with pytest.raises(ValueError, match="Received: layers="):
        Trainer(model, [Reparameterize(layers=["nope"])])
    with pytest.raises(ValueError, match="No layer"):
        Trainer(model, [Reparameterize(layers=["sep"])])


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"family": 3}, TypeError, "Received: family=3"),
        ({"family": "vgg"}, ValueError, "Received: family='vgg'"),
        ({"expansion": 2.0}, TypeError, "Received: expansion=2.0"),
        ({"expansion": 0}, ValueError, "Received: expansion=0"),
        ({"layers": "conv"}, TypeError, "Received: layers='conv'"),
        ({"layers": []}, ValueError, "Received: layers=[]"),
        ({"layers": [1]}, TypeError, "Received: layers=[1]"),
        ({"identity": 1}, TypeError, "Received: identity=1"),
        ({"main_norm": None}, TypeError, "Received: main_norm=None"),
        ({"include_dense": "yes"}, TypeError, "Received: include_dense="),
        ({"include_pointwise": 0}, TypeError, "Received: include_pointwise="),
        ({"seed": 1.5}, TypeError, "Received: seed=1.5"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, text):
    with pytest.raises(error, match="Expected") as info:
        Reparameterize(**kwargs)
    assert text in str(info.value)
    if kwargs.get("family") == "vgg":
        assert "'repvgg', 'acnet', 'expandnets', 'dbb'" in str(info.value)


def test_callable_layers_serialize_only_once_attached():
    rep = Reparameterize(layers=lambda layer: True)
    with pytest.raises(ValueError, match="callable"):
        rep.get_config()


def test_folding_algebra():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(1, 3, 2, 4))
    full = folding.embed(k, (1, 0), (3, 3))
    assert full.shape == (3, 3, 2, 4) and np.all(full[0] == 0)
    with pytest.raises(ValueError):
        folding.embed(k, (0, 1), (3, 3))
    assert folding.same_padding(32, 3, 2) == (0, 1)
    assert folding.same_padding(33, 3, 2) == (1, 1)
    assert folding.same_padding(None, 4, 1) == (1, 2)
    assert folding.same_padding(None, 3, 2) is None


def test_shared_technique_promises():
    # The promises every technique makes (strip equality, architecture,
    # .keras round trips, BackupAndRestore resume, float32 .tflite, a NaN
    # batch writes nothing), on a Sequential model.
    from test_techniques import sequential

    from keras_compact.testing import run_technique_test

    run_technique_test(
        lambda: Reparameterize("dbb", seed=0), sequential, num_examples=16
    )


def test_multi_output_model_folds_every_output():
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    outputs = {
        "a": keras.layers.Dense(3, name="a")(x),
        "b": keras.layers.Dense(2, name="b")(x),
    }
    model = keras.Model(i, outputs, name="two_heads")
    params = model.count_params()
    rep = Reparameterize("acnet", seed=0)
    trainer = Trainer(model, [rep])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss={"a": loss, "b": loss},
        run_eagerly=True,
    )
    x, y = _data((8, 8, 3), n=16)
    trainer.fit(x, {"a": y, "b": y % 2}, batch_size=8, epochs=1, verbose=0)
    rep.unfold()
    train_out = rep.training_model(x, training=False)
    assert sorted(train_out) == ["a", "b"]
    folded = trainer.strip()
    assert folded is model and model.count_params() == params
    out = folded.predict(x, verbose=0)
    for key in ("a", "b"):
        ref = keras.ops.convert_to_numpy(train_out[key])
        assert np.max(np.abs(ref - out[key])) < TOL
    # Both convolutions got branches (the dense heads: no acnet form).
    assert len(_report(rep).applied) == 2


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_interrupted_fit_leaves_the_users_model_folded(interruption):
    # A fit that raises mid-epoch (or is interrupted) must not leave the
    # user's layers holding the main branch alone: the model object the
    # user ships computes the trained function.
    keras.utils.set_random_seed(0)
    i = keras.Input((16, 16, 4))
    model = keras.Model(i, keras.layers.Dense(3)(_stack(i, "")), name="stop")
    rep = Reparameterize("repvgg", seed=1)
    trainer = _compile(Trainer(model, [rep]))
    x, y = _data((16, 16, 4))

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise interruption("stop")

    with pytest.raises(interruption):
        trainer.fit(x, y, epochs=1, batch_size=4, callbacks=[Stop()])
    assert rep.is_folded
    folded = model.predict(x, verbose=0)
    rep.unfold()
    trained = keras.ops.convert_to_numpy(rep.training_model(x, training=False))
    # The branches changed the function (the check is not vacuous), and
    # the user's folded layers compute it.
    assert np.max(np.abs(model.predict(x, verbose=0) - trained)) > 1e-3
    np.testing.assert_allclose(folded, trained, atol=TOL)
