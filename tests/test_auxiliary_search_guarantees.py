"""What the auxiliary structure search guarantees (issue 17).

Every searched structure reaches every block of a zoo model; the held-out
search step never writes the compact model's moving statistics; an
unseparated search falls back to connect-all and says so; the auxiliary
head has a deterministic inference mode.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact.auxiliary import AuxiliaryModule, search_connections
from keras_compact.graph.taps import find_taps
from keras_compact.models import get_model
from keras_compact.training import StepContext, Trainer

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, *shape), dtype=np.float32),
        rng.integers(0, 10, n).astype("int32"),
    )


def _searching(model, held=None, **kwargs):
    aux = AuxiliaryModule(
        connections="search", search_data=held, seed=0, **kwargs
    )
    trainer = Trainer(model, [aux])
    trainer.compile(keras.optimizers.SGD(0.0), SCCE)
    return aux, trainer


def _set_logits(aux, fn, steps):
    """Gives every extra edge `i -> j` the logit `fn(i, j)`."""
    booster = aux.boosters[0]
    values = [fn(i, j) for j, extra in enumerate(booster.extras) for i in extra]
    booster.arch_logits.assign(np.asarray(values, dtype="float32"))
    aux.search_steps.assign(steps)


def _aux_gradients_per_layer(model, aux, x, y):
    """Max |d aux loss / d w| over each trunk layer's trainable weights.

    The trunk is everything upstream of the last tap (the classifier head
    after it is not the auxiliary loss' business).
    """
    (taps,) = find_taps(model).values()
    trunk = keras.Model(model.input, taps[-1].tensor)
    layers = [layer for layer in trunk.layers if layer.trainable_weights]
    variables = [v for layer in layers for v in layer.trainable_weights]
    with tf.GradientTape() as tape:
        loss = SCCE(y, aux.auxiliary_outputs(x, training=True))
    grads = dict(
        zip((id(v) for v in variables), tape.gradient(loss, variables))
    )
    out = {}
    for layer in layers:
        gs = [grads[id(v)] for v in layer.trainable_weights]
        out[layer.name] = max(
            (float(np.abs(g).max()) for g in gs if g is not None), default=0.0
        )
    return out


def test_searched_structure_gives_every_tap_an_adaptor_and_every_block_grad():
    # The worst case for the old top-1 rule: every node's search logits
    # favour the earliest tap it may take. MobileNetV2-tiny has 18 taps.
    keras.utils.set_random_seed(0)
    model = get_model("mobilenet_v2_tiny", input_shape=(32, 32, 3))
    aux, _ = _searching(model)
    booster = aux.boosters[0]
    n = len(booster.tap_shapes)
    assert n == 18
    assert set(booster.adaptors) == {str(i) for i in range(n)}

    def earliest_wins(i, j):
        return 4.0 if i == min(booster.extras[j]) else -4.0

    _set_logits(aux, earliest_wins, steps=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every edge is decided: no warning
        searched = aux.fixed()
    assert searched.search_summary["logits"]["fallback"] is None
    (structure,) = searched.connections.values()
    names = aux.tap_lists["logits"]
    extra_edges = 0
    for j, node in enumerate(names):
        # Its own tap, plus the earliest candidate when it has extras.
        expected = sorted(
            {j} | ({min(booster.extras[j])} if booster.extras[j] else set())
        )
        assert structure[node] == [names[i] for i in expected]
        extra_edges += len(expected) - 1
    assert extra_edges >= 10

    x, y = _data(4, (32, 32, 3))
    trainer = Trainer(model, [searched])
    trainer.compile(keras.optimizers.SGD(0.0), SCCE)
    assert set(searched.boosters[0].adaptors) == {str(i) for i in range(n)}
    grads = _aux_gradients_per_layer(model, searched, x, y)
    assert len(grads) > 40
    dead = sorted(name for name, g in grads.items() if not g > 0)
    assert not dead, f"layers without auxiliary gradient: {dead}"

    # Control: the old top-1 structure (earliest tap only, own tap dropped)
    # leaves blocks without auxiliary gradient, which the check detects.
    old = {
        node: [names[min(booster.extras[j])] if booster.extras[j] else node]
        for j, node in enumerate(names)
    }
    keras.utils.set_random_seed(0)
    control_model = get_model("mobilenet_v2_tiny", input_shape=(32, 32, 3))
    control = AuxiliaryModule(connections=old, seed=0)
    Trainer(control_model, [control])
    assert len(control.boosters[0].adaptors) < n
    control_grads = _aux_gradients_per_layer(control_model, control, x, y)
    assert any(not g > 0 for g in control_grads.values())


def test_real_search_on_resnet8_reaches_every_block():
    keras.utils.set_random_seed(1)
    model = get_model("resnet8", input_shape=(16, 16, 3))
    x, y = _data(48, (16, 16, 3))
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(8)
    held = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)
    searched = search_connections(
        model,
        train,
        held,
        steps=8,
        loss=SCCE,
        optimizer=keras.optimizers.SGD(0.05),
        arch_learning_rate=0.1,
        min_separation=0.0,
        min_logit=0.0,
    )
    (structure,) = searched.connections.values()
    assert all(node in srcs for node, srcs in structure.items())
    assert searched.search_summary["logits"]["kept"] >= 1
    Trainer(model, [searched]).compile("sgd", SCCE)
    booster = searched.boosters[0]
    assert set(booster.adaptors) == {str(i) for i in range(len(structure))}
    grads = _aux_gradients_per_layer(model, searched, x[:8], y[:8])
    dead = sorted(name for name, g in grads.items() if not g > 0)
    assert not dead, f"layers without auxiliary gradient: {dead}"


def _moving_stats(layers_owner):
    return {
        v.path: v.numpy().copy()
        for v in layers_owner.non_trainable_weights
        if "moving" in v.path
    }


@pytest.mark.parametrize("compiled", [False, True])
def test_heldout_step_leaves_every_moving_statistic_untouched(compiled):
    keras.utils.set_random_seed(0)
    model = get_model("resnet8", input_shape=(16, 16, 3))
    x, y = _data(16, (16, 16, 3))
    # Held-out inputs far from the (zero-mean, unit-variance) initial
    # moving statistics, so a training-mode forward would move them.
    held = tf.data.Dataset.from_tensor_slices((3.0 + 5.0 * x, y)).batch(8)
    aux, trainer = _searching(model, held, arch_learning_rate=0.1)
    aux.validate(trainer)  # what `fit` does first: the optimizer
    before = _moving_stats(model)
    booster_before = _moving_stats(aux.boosters[0])
    assert len(before) == 2 * sum(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model.layers
    )
    logits_before = aux.boosters[0].arch_logits.numpy().copy()

    # The held-out batch arrives with the step's context, as in `fit`.
    (batch,) = list(aux.held_out_data(trainer).take(1))

    def step(batch):
        ctx = StepContext(trainer, x[:8], y[:8], held_out={aux.name: batch})
        aux.after_step(ctx)

    for _ in range(2):
        tf.function(step)(batch) if compiled else step(batch)

    after = _moving_stats(model)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    for path, value in booster_before.items():
        np.testing.assert_array_equal(
            _moving_stats(aux.boosters[0])[path], value, err_msg=path
        )
    # The step did run: the logits moved and the steps were counted.
    moved = aux.boosters[0].arch_logits.numpy() - logits_before
    assert np.abs(moved).min() > 0.05
    assert int(aux.search_steps.numpy()) == 2
    # Control: the same forward outside the step does write them.
    aux._private.heads.tap_model(3.0 + 5.0 * x[:8], training=True)
    changed = _moving_stats(model)
    assert any(not np.array_equal(changed[p], v) for p, v in before.items())


def test_unseparated_search_falls_back_to_connect_all_with_a_warning():
    keras.utils.set_random_seed(0)
    model = get_model("resnet8", input_shape=(16, 16, 3))
    x, y = _data(24, (16, 16, 3))
    train = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(8)
    held = tf.data.Dataset.from_tensor_slices((x[16:], y[16:])).batch(8)
    # Default arch_learning_rate (1e-2): 5 steps move a logit by <= ~0.05,
    # far below the 0.5 margin. Warned up front and at the end.
    with pytest.warns(UserWarning) as record:
        searched = search_connections(
            model, train, held, steps=5, loss=SCCE, seed=0
        )
    messages = [str(w.message) for w in record]
    assert any("cannot separate any edge" in m for m in messages)
    assert any("Falling back to connect-all" in m for m in messages)
    summary = searched.search_summary["logits"]
    assert summary["fallback"] == "connect-all"
    assert summary["decided"] == 0 and summary["kept"] == 0
    assert summary["edges"] == 4 and len(summary["undecided_edges"]) == 4
    assert summary["max_abs_logit"] < summary["margin"]
    assert "connect-all" in searched.search_description
    (structure,) = searched.connections.values()
    assert all(srcs == [node] for node, srcs in structure.items())


def test_picks_riding_on_tiny_logit_differences_are_not_taken():
    # The numbers: Adam 3e-4 for 40 steps, logits within 0.012.
    keras.utils.set_random_seed(0)
    model = get_model("resnet8", input_shape=(16, 16, 3))
    aux, _ = _searching(model, arch_learning_rate=3e-4)
    rng = np.random.default_rng(0)
    _set_logits(aux, lambda i, j: float(rng.uniform(-0.012, 0.012)), 40)
    with pytest.warns(UserWarning, match="Falling back to connect-all"):
        fixed = aux.fixed()
    assert fixed.search_summary["logits"]["fallback"] == "connect-all"
    assert fixed.search_summary["logits"]["gate_spread"] < 0.01
    (structure,) = fixed.connections.values()
    assert all(srcs == [node] for node, srcs in structure.items())
    # Separated logits (|beta| = 2 after 200 steps at 1e-2) are taken, and
    # no warning is given.
    aux2, _ = _searching(
        get_model("resnet8", input_shape=(16, 16, 3)), name="aux2"
    )
    _set_logits(aux2, lambda i, j: 2.0 if i == 0 else -2.0, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed2 = aux2.fixed()
    assert fixed2.search_summary["logits"]["fallback"] is None
    assert fixed2.search_summary["logits"]["kept"] >= 1


def test_auxiliary_head_inference_mode_is_deterministic_and_per_example():
    keras.utils.set_random_seed(0)
    model = get_model("resnet8", input_shape=(16, 16, 3))
    aux = AuxiliaryModule(seed=0)
    trainer = Trainer(model, [aux])
    trainer.compile(keras.optimizers.SGD(0.05), SCCE)
    x, y = _data(16, (16, 16, 3))
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    stats = _moving_stats(aux.boosters[0])
    first = np.asarray(aux.auxiliary_outputs(x, training=False))
    second = np.asarray(aux.auxiliary_outputs(x, training=False))
    np.testing.assert_array_equal(first, second)
    # Per example (moving statistics, not the batch's): the prediction of
    # one example does not depend on the rest of its batch.
    alone = np.asarray(aux.auxiliary_outputs(x[:2], training=False))
    np.testing.assert_allclose(alone, first[:2], atol=1e-5)
    # Inference mode does not write the booster's moving statistics.
    for path, value in stats.items():
        np.testing.assert_array_equal(
            _moving_stats(aux.boosters[0])[path], value
        )
    # The flag is passed through: training mode normalises by the batch.
    train_mode = np.asarray(aux.auxiliary_outputs(x[:2], training=True))
    assert np.abs(train_mode - alone).max() > 1e-3
