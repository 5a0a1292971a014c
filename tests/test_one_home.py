"""Shared helpers with one home: batch-statistics BN, untracked holders."""

import keras
import numpy as np

from keras_compact.graph.batch_norm import batch_statistics_norm
from keras_compact.training.untracked import Untracked


def test_batch_statistics_norm_matches_keras_in_training_and_writes_nothing():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(8, 4, 4, 5)).astype("float32")
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build(x.shape)
    bn.gamma.assign(rng.uniform(0.5, 2.0, 5).astype("float32"))
    bn.beta.assign(rng.normal(size=5).astype("float32"))
    moving = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    out, mean, var = batch_statistics_norm(
        x, bn.axis, bn.epsilon, bn.gamma, bn.beta
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_mean), moving
    )
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-4)
    expected = bn(x, training=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    half, _, _ = batch_statistics_norm(x.astype("float16"), -1, 1e-3)
    assert keras.backend.standardize_dtype(half.dtype) == "float32"


def test_untracked_holder_is_invisible_to_keras_tracking():
    class Holder(keras.layers.Layer):
        def __init__(self, inner):
            super().__init__()
            self._refs = Untracked(layer=inner)

    inner = keras.layers.Dense(3)
    inner.build((None, 2))
    holder = Holder(inner)
    assert holder._refs.layer is inner
    assert holder.weights == []
    holder.tracked = inner  # a plain attribute is tracked: the contrast
    assert len(holder.weights) == 2
    assert repr(holder._refs) == "Untracked(layer)"
