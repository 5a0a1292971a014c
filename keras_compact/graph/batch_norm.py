"""Batch normalisation with the statistics of the batch, written once.

Several techniques run a user's `BatchNormalization` in training mode
without letting it write its moving statistics (NetAug's augmented pass,
its elastic twins, BN re-calibration): they all call `batch_statistics_norm`.
"""

import keras
from keras import ops

from keras_compact.training import tensorflow_step


def batch_statistics_norm(
    x, axis=-1, epsilon=1e-3, gamma=None, beta=None, synchronized=False
):
    """Normalises `x` with its own mean and variance; writes no state.

    The statistics are taken over every axis but `axis`. Half-precision
    inputs (float16, bfloat16) are normalised in float32. Under a
    `tf.distribute` strategy of several replicas they are those of the
    global batch (synchronized over the replicas), so that training
    equals one device.

    Args:
        x: a tensor.
        axis: the feature axis (as `BatchNormalization.axis`).
        epsilon: added to the variance (`BatchNormalization.epsilon`).
        gamma: optional scale, a vector over `axis` (cast to the
            computation dtype).
        beta: optional offset, likewise.
        synchronized: synchronize the statistics even on one replica (as
            `BatchNormalization(synchronized=True)`: pass the layer's flag).

    Returns:
        `(outputs, mean, variance)`, in float32 for half-precision inputs,
        else in `x`'s dtype.
    """
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    rank = len(x.shape)
    # -1 for the last axis: no reshape of the statistics, so a channel axis
    # of unknown size (NetAug's sliced widths) works.
    axis = -1 if axis % rank == rank - 1 else axis % rank
    reduce = [i for i in range(rank) if i != axis % rank]
    mean, variance = ops.moments(
        x,
        axes=reduce,
        synchronized=synchronized or tensorflow_step.synchronized(),
    )
    outputs = ops.batch_normalization(
        x,
        mean,
        variance,
        axis=axis,
        offset=None if beta is None else ops.cast(beta, x.dtype),
        scale=None if gamma is None else ops.cast(gamma, x.dtype),
        epsilon=epsilon,
    )
    return outputs, mean, variance
