"""The shared graph core: iteration, call graph and replay."""

import keras
import numpy as np
import pytest

from keras_compact.graph import ModelGraph, iter_layers


def _residual():
    i = keras.Input((8, 8, 3), name="img")
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(i)
    b = keras.layers.Conv2D(4, 1, name="b")(i)
    s = keras.layers.Add(name="add")([a, b])
    p = keras.layers.GlobalAveragePooling2D(name="gap")(s)
    return keras.Model(i, keras.layers.Dense(2, name="head")(p))


def test_graph_order_parents_children_and_shapes():
    g = ModelGraph(_residual())
    names = [n.name for n in g.nodes]
    assert names.index("img") < names.index("a") < names.index("add")
    assert names.index("b") < names.index("add") < names.index("head")
    add = g.nodes_of("add")[0]
    assert sorted(p.name for p in add.parents) == ["a", "b"]
    assert [c.name for c in add.children] == ["gap"]
    assert add.output_shapes == [(None, 8, 8, 4)]
    assert g.producer(add.outputs[0]) is add
    assert [c.name for c in g.consumers(add.outputs[0])] == ["gap"]


def test_rebuild_shares_weights_and_can_swap_layers():
    model = _residual()
    g = ModelGraph(model)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    inp = keras.Input((8, 8, 3))
    same = keras.Model(inp, g.rebuild([inp])[id(model.outputs[0])])
    np.testing.assert_array_equal(same(x), model(x))
    assert len(same.weights) == len(model.weights)

    zero = keras.layers.Conv2D(4, 1, kernel_initializer="zeros", name="z")

    def swap(node):
        return zero if node.name == "b" else None

    inp2 = keras.Input((8, 8, 3))
    swapped = keras.Model(inp2, g.rebuild([inp2], swap)[id(model.outputs[0])])
    assert not np.allclose(swapped(x), model(x))


def test_iter_layers_enters_nested_and_subclassed_models():
    inner = _residual()

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = inner
            self.extra = keras.layers.Dense(3, name="extra")

        def call(self, x):
            return self.extra(self.body(x))

    names = [layer.name for layer in iter_layers(Sub())]
    assert {"a", "b", "head", "extra"} <= set(names)
    assert len(names) == len(set(names))


def test_errors_name_the_argument():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="model="):
        ModelGraph(Sub())
    with pytest.raises(TypeError, match="model="):
        list(iter_layers(42))
    with pytest.raises(ValueError, match="nope"):
        ModelGraph(_residual()).nodes_of("nope")


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(8, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )


def test_sequential_models_have_a_graph():
    model = _sequential()
    graph = ModelGraph(model)
    assert graph.model is model
    names = [n.operation.name for n in graph.nodes]
    assert names[-1] == model.layers[-1].name and len(names) >= 9
    assert list(iter_layers(model)) == list(model.layers)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="built Sequential"):
        ModelGraph(unbuilt)


@pytest.mark.parametrize("technique", ["aux", "sparse"])
def test_techniques_train_and_strip_sequential_models(technique):
    import keras_compact as kc

    keras.utils.set_random_seed(0)
    model = _sequential()
    make = {
        "aux": lambda: kc.AuxiliaryModule(),
        "sparse": lambda: kc.SparseTraining(0.5),
    }[technique]
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    trainer = kc.Trainer(model, [make()])
    trainer.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = trainer.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    stripped = trainer.strip()
    assert stripped is model
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), trainer.predict(x, verbose=0), atol=1e-6
    )
