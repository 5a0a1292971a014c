"""Structure search of the auxiliary booster: pure functions and DARTS."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact.auxiliary import AuxiliaryModule, search_connections
from keras_compact.auxiliary import structure as structure_lib
from keras_compact.training import Trainer

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_candidate_edges_same_or_previous_stage():
    cands = structure_lib.candidate_edges([0, 0, 1, 1, 2])
    assert cands == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [2, 3, 4]]
    with pytest.raises(ValueError, match="stages"):
        structure_lib.candidate_edges([0, 1, 0])


def test_top_k_structure_and_ties():
    cands = [[0], [0, 1], [0, 1, 2]]
    zeros = [[0.0], [0.0, 0.0], [0.0, 0.0, 0.0]]
    # Untrained logits: ties go to the closest tap, i.e. the chain.
    assert structure_lib.top_k_structure(cands, zeros, 1) == [[0], [1], [2]]
    logits = [[0.0], [0.3, -0.1], [0.2, 0.5, 0.1]]
    assert structure_lib.top_k_structure(cands, logits, 1) == [[0], [0], [1]]
    assert structure_lib.top_k_structure(cands, logits, 2) == [
        [0],
        [0, 1],
        [0, 1],
    ]
    with pytest.raises(ValueError, match="k=0"):
        structure_lib.top_k_structure(cands, logits, 0)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(12, 3, padding="same", name="c3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(4, name="logits")(x))


def _datasets(n=48):
    rng = np.random.default_rng(0)
    x = rng.random((n, 12, 12, 3), dtype=np.float32)
    y = rng.integers(0, 4, n)
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(8)
    held = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)
    return train, held


def test_search_gives_valid_top_k_deterministic_and_leaves_model():
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    train, held = _datasets()
    taps = ["bn1", "bn2", "bn3"]
    kwargs = dict(
        steps=6,
        loss=SCCE,
        optimizer=keras.optimizers.SGD(0.05),
        top_k=2,
        seed=7,
        taps=taps,
        arch_learning_rate=0.05,
    )
    first = search_connections(model, train, held, **kwargs)
    second = search_connections(model, train, held, **kwargs)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    conn = first.connections["logits"]
    assert conn == second.connections["logits"]
    assert first.search_description == second.search_description
    np.testing.assert_array_equal(
        first.search_logits["logits"], second.search_logits["logits"]
    )
    assert np.abs(first.search_logits["logits"]).max() > 0
    # Valid top-2: every node keeps min(2, #candidates) of its candidates.
    cands = {
        "bn1": ["bn1"],
        "bn2": ["bn1", "bn2"],
        "bn3": ["bn1", "bn2", "bn3"],
    }
    assert list(conn) == taps
    for node, srcs in conn.items():
        assert len(srcs) == min(2, len(cands[node]))
        assert set(srcs) <= set(cands[node])
    assert "node  2 bn3" in first.search_description
    assert "searching" in first.search_description
    assert len(first.search_log["aux_loss"]) == 1
    # The searched structure trains with model.fit.
    trainer = Trainer(model, [first])
    trainer.compile("sgd", SCCE, run_eagerly=True)
    trainer.fit(train, epochs=1, verbose=0)
    assert trainer.techniques[0].structure == {"logits": conn}


def test_search_mode_in_fit_moves_only_the_architecture_logits():
    model = _model()
    train, held = _datasets()
    aux = AuxiliaryModule(
        connections="search",
        search_data=held,
        seed=0,
        arch_learning_rate=0.1,
    )
    trainer = Trainer(model, [aux])
    trainer.compile(keras.optimizers.SGD(0.0), SCCE)
    booster = aux.boosters[0]
    assert not booster.arch_logits.trainable
    assert booster.arch_logits.path not in {
        v.path for v in trainer.trainable_weights
    }
    trainer.fit(train, epochs=1, verbose=0)
    logits = booster.arch_logits.numpy()
    # Four steps of Adam(0.1) on held-out batches moved every multi-edge
    # node's logits; SGD(0) left every network weight alone.
    assert np.abs(logits).max() > 0.1
    fixed = aux.fixed(top_k=1)
    assert fixed.top_k == 1 and not fixed.searching
    for srcs in fixed.connections["logits"].values():
        assert len(srcs) == 1
    with pytest.raises(ValueError, match="top_k"):
        aux.fixed(top_k=0)


def test_search_arguments_are_checked():
    train, held = _datasets()
    with pytest.raises(ValueError, match="steps=0"):
        search_connections(_model(), train, held, steps=0, loss=SCCE)
    with pytest.raises(ValueError, match="connections='all'"):
        search_connections(
            _model(), train, held, steps=1, loss=SCCE, connections="all"
        )
    with pytest.raises(TypeError, match="train_data"):
        search_connections(_model(), [1, 2], held, steps=1, loss=SCCE)
