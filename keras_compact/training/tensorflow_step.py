"""The TensorFlow side of the train step, in one module.

Everything of `Trainer`'s training step that is specific to the
TensorFlow backend lives here (as Keras keeps its own in
`backend/tensorflow/trainer.py`): the gradient tape, the finiteness
assertions tied to the update by control dependencies, the replica count
of a `tf.distribute` strategy, dense gradients and their all-reduce. A JAX
step can later sit beside it with the same `train_step(trainer, data)`.
"""

import keras

from keras_compact import compat

NON_FINITE = "keras_compact: non-finite training step"


def replicas():
    """Number of replicas of the current `tf.distribute` strategy (or 1)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def rescale(value, factor):
    """`value * factor` (or `value` itself when the factor is 1)."""
    if factor == 1:
        return value
    return keras.ops.multiply(value, keras.ops.cast(factor, value.dtype))


def densify(gradient):
    """A dense tensor for a gradient (which may be `tf.IndexedSlices`)."""
    import tensorflow as tf

    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


def all_reduce_sum(tensors):
    """Sums `tensors` over the replicas of the current strategy (inside a
    replica context); returns them unchanged on one replica."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if not tensors or ctx is None or replicas() == 1:
        return list(tensors)
    return list(ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors)))


def stateless_seed(base, *salts):
    """A stateless seed `(base mixed with salts, salts[-1])` as int32[2].

    `base` and each salt are Python ints or integer scalar tensors (e.g.
    the optimizer step), so a seed is a pure function of a technique's
    seed, an index and the step: every replica, every resumed run and
    every rerun draws the same numbers.
    """
    import tensorflow as tf

    mixed = tf.cast(base, tf.int64) % 2147483647
    for s in salts[:-1]:
        mixed = (mixed * 1000003 + tf.cast(s, tf.int64)) % 2147483647
    last = tf.cast(salts[-1], tf.int64) % 2147483647 if salts else 0
    return tf.cast(tf.stack([mixed, tf.cast(last, tf.int64)]), tf.int32)


def stateless_uniform(shape, base, *salts):
    """Uniform [0, 1) float32 draws, a pure function of `base` and
    `salts` (see `stateless_seed`)."""
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seed=stateless_seed(base, *salts))


def assert_finite(groups, step):
    """Returns `[assert_op]` checking that every tensor of every named
    group is finite (an empty list when eager: it raised already).

    The assertion's message starts with `NON_FINITE`, then the step and a
    `[name] [ok]` pair per group, which `Trainer.fit` parses into a
    `NonFiniteTrainingError`.
    """
    import tensorflow as tf

    def finite(value):
        if isinstance(value, tf.IndexedSlices):
            value = value.values
        return tf.reduce_all(tf.math.is_finite(value))

    data = [NON_FINITE, step]
    checks = []
    for name, values in groups.items():
        ok = tf.reduce_all(tf.stack([finite(v) for v in values] or [True]))
        checks.append(ok)
        data += [name, ok]
    op = tf.debugging.Assert(tf.reduce_all(tf.stack(checks)), data)
    return [] if op is None else [op]


def train_step(trainer, data):
    """One optimizer step of `trainer` (a `keras_compact.Trainer`).

    Order: inputs checked finite; forward pass and loss (the compiled task
    loss plus every technique's terms) under a gradient tape; each
    technique's `transform_gradients`; loss terms and gradients checked
    finite; then, tied to that check, the optimizer update and each
    technique's `after_step`. A failed check ends the step before anything
    of it is written.
    """
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    step = trainer.optimizer.iterations
    inputs_ok = assert_finite(
        {"inputs": [v for v in keras.tree.flatten(x) if v.dtype.is_floating]},
        step,
    )
    with tf.control_dependencies(inputs_ok):
        with tf.GradientTape() as tape:
            y_pred = trainer(x, training=True)
            loss = trainer.compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=True,
            )
            batch = tf.shape(keras.tree.flatten(x)[0])[0]
            compat.loss_tracker(trainer).update_state(
                rescale(loss, replicas()), sample_weight=batch
            )
            scaled = trainer.optimizer.scale_loss(loss)
    variables = trainer.trainable_weights
    grads = tape.gradient(scaled, variables)
    for t in trainer.techniques:
        grads = t.transform_gradients(trainer, grads, variables)
    checks = {k: [v] for k, v in trainer.step_terms.items()}
    checks["gradients"] = [g for g in grads if g is not None]
    with tf.control_dependencies(assert_finite(checks, step)):
        trainer.optimizer.apply_gradients(zip(grads, variables))
        for t in trainer.techniques:
            t.after_step(trainer)
    return trainer.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
