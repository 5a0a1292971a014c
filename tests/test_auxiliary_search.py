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


def test_select_edges_keeps_own_tap_and_only_decided_extras():
    cands = [[0], [0, 1], [0, 1, 2]]
    assert structure_lib.extra_candidates(cands) == [[], [0], [0, 1]]
    # Untrained logits: nothing decided, the chain (connect-all).
    zeros = [[], [0.0], [0.0, 0.0]]
    conn, undecided = structure_lib.select_edges(cands, zeros, 1, 0.0)
    assert conn == [[0], [1], [2]]
    assert undecided == [(0, 1), (0, 2), (1, 2)]
    # Own tap always kept; an extra edge only beyond the margin.
    logits = [[], [0.3], [2.0, 1.5]]
    conn, undecided = structure_lib.select_edges(cands, logits, 1, 0.5)
    assert conn == [[0], [1], [0, 2]]
    assert undecided == [(0, 1)]
    conn, _ = structure_lib.select_edges(cands, logits, 2, 0.5)
    assert conn == [[0], [1], [0, 1, 2]]
    # Strongly negative logits are decided: no extra edge, nothing undecided.
    conn, undecided = structure_lib.select_edges(
        cands, [[], [-1.0], [-1.0, -2.0]], 1, 0.5
    )
    assert conn == [[0], [1], [2]] and undecided == []
    with pytest.raises(ValueError, match="k=0"):
        structure_lib.select_edges(cands, logits, 0, 0.5)
    assert structure_lib.noise_level(0.01, 400) == pytest.approx(0.2)


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
        # No margin: every extra edge with a positive logit is decided, so
        # the selection itself (own tap + top-2 extras) is exercised.
        min_separation=0.0,
        min_logit=0.0,
    )
    first = search_connections(model, train, held, **kwargs)
    second = search_connections(model, train, held, **kwargs)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    conn = first.connections["logits"]
    assert conn == second.connections["logits"]
    assert first.search_description == second.search_description
    assert first.search_logits == second.search_logits
    # Per node, one logit per extra candidate (node 0 has none).
    assert [len(v) for v in first.search_logits["logits"]] == [0, 1, 2]
    flat = [v for node in first.search_logits["logits"] for v in node]
    assert max(abs(v) for v in flat) > 0
    # Every node keeps its own tap, plus its extras with a positive logit.
    cands = {
        "bn1": ["bn1"],
        "bn2": ["bn1", "bn2"],
        "bn3": ["bn1", "bn2", "bn3"],
    }
    assert list(conn) == taps
    logits = dict(zip(taps, first.search_logits["logits"]))
    for node, srcs in conn.items():
        assert node in srcs
        assert set(srcs) <= set(cands[node])
        extra = [t for t in cands[node] if t != node]
        wanted = {t for t, v in zip(extra, logits[node]) if v > 0}
        assert set(srcs) - {node} == wanted
    summary = first.search_summary["logits"]
    assert summary["steps"] == 6 and summary["edges"] == 3
    assert summary["kept"] == sum(len(s) - 1 for s in conn.values())
    assert "node  2 bn3" in first.search_description
    assert "searching, 6 steps" in first.search_description
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
    # Every tap has its adaptor while searching.
    assert set(booster.adaptors) == {"0", "1", "2"}
    trainer.fit(train, epochs=1, verbose=0)
    logits = booster.arch_logits.numpy()
    # Four steps of Adam(0.1) on held-out batches moved every extra edge's
    # logit; SGD(0) left every network weight alone.
    assert np.abs(logits).min() > 0.05
    assert int(aux.search_steps.numpy()) == 4
    # Four steps cannot clear the margin max(3 * 0.1 * 2, 0.5): the result
    # is connect-all, with a warning.
    with pytest.warns(UserWarning, match="connect-all"):
        fixed = aux.fixed(top_k=1)
    assert fixed.top_k == 1 and not fixed.searching
    assert fixed.search_summary["logits"]["fallback"] == "connect-all"
    for node, srcs in fixed.connections["logits"].items():
        assert srcs == [node]
    # Without the noise term the margin is the floor `min_logit`.
    with pytest.warns(UserWarning, match="connect-all"):
        loose = aux.fixed(top_k=1, min_separation=0.0)
    assert loose.search_summary["logits"]["margin"] == 0.5
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
