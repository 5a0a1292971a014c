"""Pins every private Keras access of keras_compact (keras_compact.compat):
a Keras upgrade that changes one of them fails here, by name."""

import keras
import numpy as np
import pytest

from keras_compact import compat


def _functional():
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="d1")(x)
    y = keras.layers.Add(name="add")([h, h])
    return keras.Model(x, y)


def test_call_graph_of_functional_models_only():
    model = _functional()
    assert compat.has_call_graph(model)

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not compat.has_call_graph(Sub())
    assert not compat.has_call_graph(keras.layers.Dense(2))


def test_nodes_by_depth_and_node_arguments():
    model = _functional()
    by_depth = compat.nodes_by_depth(model)
    assert isinstance(by_depth, dict)
    nodes = [
        n for depth in sorted(by_depth, reverse=True) for n in by_depth[depth]
    ]
    names = [n.operation.name for n in nodes]
    # Topological order: input, then the dense layer, then the add.
    assert names.index("x") < names.index("d1") < names.index("add")
    add = nodes[names.index("add")]
    args, kwargs = compat.node_arguments(add)
    assert isinstance(kwargs, dict)
    (pair,) = args
    dense_out = nodes[names.index("d1")].output_tensors[0]
    assert pair[0] is dense_out and pair[1] is dense_out
    assert {p.operation.name for p in add.parent_nodes} == {"d1"}
    assert nodes[names.index("x")].is_input


def test_compiled_loss_and_its_untracked_copy():
    x = keras.Input((4,))
    model = keras.Model(
        x,
        [
            keras.layers.Dense(2, name="a")(x),
            keras.layers.Dense(2, name="b")(x),
        ],
    )
    assert compat.compiled_loss(model) is None
    model.compile("sgd", loss=["mse", "mae"], loss_weights=[1.0, 0.5])
    compiled = compat.compiled_loss(model)
    copy = compat.untracked_loss_copy(compiled)
    assert copy is not compiled
    rng = np.random.default_rng(0)
    y = [rng.normal(size=(5, 2)).astype("float32") for _ in range(2)]
    p = [rng.normal(size=(5, 2)).astype("float32") for _ in range(2)]
    want = np.mean((y[0] - p[0]) ** 2) + 0.5 * np.mean(np.abs(y[1] - p[1]))
    np.testing.assert_allclose(float(compiled(y, p)), want, rtol=1e-5)
    np.testing.assert_allclose(float(copy(y, p)), want, rtol=1e-5)
    ids = {id(v) for m in compiled.metrics for v in m.variables}
    assert not ids & {id(v) for m in copy.metrics for v in m.variables}


def test_loss_tracker_is_what_fit_logs_as_loss():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    assert compat.loss_tracker(model) is None
    model.compile("sgd", "mse")
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    x = np.ones((8, 4), "float32")
    logs = model.fit(x, np.zeros((8, 1)), epochs=1, verbose=0)
    assert logs.history["loss"][0] == pytest.approx(float(tracker.result()))


def test_symbolic_build_creates_metric_variables_before_training():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", metrics=["mae"])
    ds = tf.data.Dataset.from_tensor_slices(
        (np.ones((4, 4), "float32"), np.ones((4, 2), "float32"))
    ).batch(2)
    before = len(model.metrics_variables)
    compat.symbolic_build(model, ds.element_spec)
    # The compiled "mae" metric now has its total and count.
    assert len(model.metrics_variables) == before + 2


def test_own_trainable_variables_exclude_sublayers():
    class Outer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner = keras.layers.Dense(2)

        def build(self, shape):
            self.w = self.add_weight(shape=(1,), name="w")
            self.inner.build(shape)

        def call(self, x):
            return self.inner(x) * self.w

    layer = Outer()
    layer(np.ones((1, 3), "float32"))
    assert [v.name for v in compat.own_trainable_variables(layer)] == ["w"]
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert len(compat.own_trainable_variables(dense)) == 2


@pytest.mark.parametrize(
    "optimizer, kinds",
    [
        (lambda: keras.optimizers.SGD(momentum=0.9), 1),
        (lambda: keras.optimizers.Adam(), 2),
        (
            lambda: keras.optimizers.LossScaleOptimizer(
                keras.optimizers.Adam()
            ),
            2,
        ),
    ],
)
def test_optimizer_slots_mirror_each_variable(optimizer, kinds):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    opt = optimizer()
    assert compat.optimizer_slots(opt, model.trainable_variables[0]) == []
    opt.build(model.trainable_variables)
    for v in model.trainable_variables:
        slots = compat.optimizer_slots(opt, v)
        assert len(slots) == kinds
        assert all(tuple(s.shape) == tuple(v.shape) for s in slots)
    kernel, bias = model.trainable_variables
    stranger = keras.Variable(np.zeros((3, 4)), name="stranger")
    assert compat.optimizer_slots(opt, stranger) == []
    # The i-th slot of each variable is the same kind of state.
    names_k = [s.name for s in compat.optimizer_slots(opt, kernel)]
    names_b = [s.name for s in compat.optimizer_slots(opt, bias)]
    for a, b in zip(names_k, names_b):
        assert a.rsplit("_", 1)[-1] == b.rsplit("_", 1)[-1]
