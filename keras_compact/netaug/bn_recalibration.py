"""Re-estimation of BatchNormalization statistics on training data."""

import weakref

import keras
import numpy as np
from keras import ops

from keras_compact.graph.batch_norm import batch_statistics_norm
from keras_compact.graph.walk import ModelGraph
from keras_compact.training.untracked import Untracked

_PROBES = weakref.WeakKeyDictionary()


class _BatchStatistics(keras.layers.Layer):
    """Normalises with the batch statistics (never the moving ones) and also
    returns them."""

    def __init__(self, bn, **kwargs):
        super().__init__(name=f"{bn.name}_stats", **kwargs)
        self._bn = Untracked(layer=bn)
        self.built = True

    def call(self, x):
        bn = self._bn.layer
        out, mean, var = batch_statistics_norm(
            ops.cast(x, "float32"), bn.axis, bn.epsilon, bn.gamma, bn.beta
        )
        return ops.cast(out, x.dtype), mean, var


def recalibrate_batch_norm(model, data, num_images=2000):
    """Sets every BatchNormalization layer's moving statistics to the mean
    batch statistics of the model on `data`.

    The model runs in inference mode (no dropout) except that every
    BatchNormalization layer normalises with the statistics of the batch,
    as in training; each layer's moving mean and variance become the
    average over batches of its batch mean and variance (the procedure of
    the NetAug and Once-for-All code). Layers are updated together at the
    end, so the result does not depend on layer order.

    Args:
        model: a functional or Sequential `keras.Model`.
        data: a `tf.data.Dataset` or iterable of batches `x` or `(x, y, ...)`.
        num_images: how many images to use (at least one batch), > 0.

    Returns:
        The number of images used.

    Raises:
        ValueError: for `num_images` <= 0 or empty data.
    """
    if not isinstance(num_images, int) or num_images <= 0:
        raise ValueError(
            "Expected `num_images` to be a positive int. "
            f"Received: num_images={num_images!r}"
        )
    probe = _probe(model)
    if probe is None:
        return 0
    bns, stats, run = probe
    sums = [np.zeros(s.shape[-1], "float64") for s in stats]
    seen = batches = 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        values = run(x)
        for i, v in enumerate(values):
            sums[i] += np.asarray(v, "float64")
        batches += 1
        seen += int(keras.tree.flatten(x)[0].shape[0])
        if seen >= num_images:
            break
    if not batches:
        raise ValueError("`data` yielded no batch.")
    per_layer = {}
    for k, bn in enumerate(bns):
        mean, var = sums[2 * k] / batches, sums[2 * k + 1] / batches
        acc = per_layer.setdefault(id(bn), [bn, 0.0, 0.0, 0])
        acc[1] += mean
        acc[2] += var
        acc[3] += 1
    for bn, mean, var, calls in per_layer.values():
        bn.moving_mean.assign(mean / calls)
        bn.moving_variance.assign(var / calls)
    return seen


def _probe(model):
    """`(bn layers per call, stat tensors, compiled function)`, built once
    per model and cached on it."""
    cached = _PROBES.get(model)
    if cached is not None:
        return cached
    graph = ModelGraph(model)
    bns, stats = [], []

    def layer_fn(node):
        op = node.operation
        if type(op) is not keras.layers.BatchNormalization:
            return None
        layer = _BatchStatistics(op)

        def call(x, **kwargs):
            out, mean, var = layer(x)
            bns.append(op)
            stats.extend([mean, var])
            return out

        return call

    inputs = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype)
        for t in graph.inputs
    ]
    graph.rebuild(inputs, layer_fn)
    if not bns:
        return None
    probe = keras.Model(inputs, stats)
    cached = (bns, stats, _compiled(probe))
    _PROBES[model] = cached
    return cached


def _compiled(probe):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: probe(x, training=False))
    return lambda x: probe(x, training=False)


class BNRecalibration(keras.callbacks.Callback):
    """Re-estimates the compact model's BatchNorm statistics during `fit`.

    Before every validation pass of `fit` and at the end of training, the
    moving statistics of the compact model (`trainer.compact_model` when
    training a `keras_compact.Trainer`, else the model itself) are replaced
    by the mean batch statistics over `num_images` training images (see
    `recalibrate_batch_norm`). This is the NetAug paper's procedure; with
    `NetAug` it is optional, because the augmented pass never writes the
    compact model's moving statistics.

    Args:
        data: a `tf.data.Dataset` (or iterable) of training batches.
        num_images: images per re-estimation, > 0. Defaults to 2000 (the
            paper uses about 16,000 for ImageNet).

    Example:

    ```python
    trainer.fit(
        train_ds,
        epochs=10,
        callbacks=[keras_compact.netaug.BNRecalibration(train_ds)],
    )
    ```
    """

    def __init__(self, data, num_images=2000):
        super().__init__()
        if not isinstance(num_images, int) or num_images <= 0:
            raise ValueError(
                "Expected `num_images` to be a positive int. "
                f"Received: num_images={num_images!r}"
            )
        self.data = data
        self.num_images = num_images
        self._training = False
        self.calls = 0

    def _recalibrate(self):
        model = getattr(self.model, "compact_model", self.model)
        recalibrate_batch_norm(model, self.data, self.num_images)
        self.calls += 1

    def on_train_begin(self, logs=None):
        self._training = True

    def on_test_begin(self, logs=None):
        if self._training:
            self._recalibrate()

    def on_train_end(self, logs=None):
        self._training = False
        self._recalibrate()
