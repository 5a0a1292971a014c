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


def synchronized():
    """Whether batch statistics must be synchronized: True under a
    `tf.distribute` strategy of more than one replica.

    A technique's own training-only normalization (a `BatchNormalization`
    it adds, a batch-statistics function) reads the batch of every replica
    then, so that training equals one device; on one device it keeps the
    plain (unsynchronized) statistics, bit for bit.
    """
    return replicas() > 1


def unscale_loss(value):
    """A Keras loss value as the replica batch's own: Keras' losses divide
    by the replica count under a strategy (`value` itself on one
    replica)."""
    return rescale(value, replicas())


def all_reduce_min_max(low, high):
    """`(min over the replicas of low, max over the replicas of high)`
    (inside a replica context); `(low, high)` unchanged on one replica.

    Exact (`tf.distribute.ReduceOp` has no MIN or MAX): every replica's
    value is gathered on a new leading axis, then reduced.
    """
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or replicas() == 1:
        return low, high

    def gathered(value):
        return ctx.all_gather(tf.convert_to_tensor(value)[None], axis=0)

    return (
        tf.reduce_min(gathered(low), axis=0),
        tf.reduce_max(gathered(high), axis=0),
    )


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

    Builds the step's `StepContext` (one per step and per replica: a plain
    object of this trace) and passes it to every technique hook. Order:
    inputs checked finite; under a gradient tape, the training forward
    pass (predictions and every declared tensor, in one pass) and the loss
    (the compiled task loss plus every technique's `loss_terms(ctx)`);
    each technique's `transform_gradients(ctx, grads)`; loss terms and
    gradients checked finite; then, tied to that check, the optimizer
    update and each technique's `after_step(ctx)`. A failed check ends the
    step before anything of it is written.

    With techniques that take held-out batches (`Trainer.fit` zips them
    with the training data), `data` is `(batch, held_out_batches)`.
    """
    import tensorflow as tf

    from keras_compact.training.step_context import StepContext

    names = getattr(trainer, "_held_out_names", ())
    held_out = None
    if names:
        data, held = data
        held_out = dict(zip(names, held))
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    step = trainer.optimizer.iterations
    ctx = StepContext(trainer, x, y, sample_weight, step, held_out)
    inputs_ok = assert_finite(
        {"inputs": [v for v in keras.tree.flatten(x) if v.dtype.is_floating]},
        step,
    )
    with tf.control_dependencies(inputs_ok):
        with tf.GradientTape() as tape:
            ctx.y_pred, ctx.tensors = trainer.training_forward(x, ctx)
            loss = trainer.step_loss(ctx)
            batch = tf.shape(keras.tree.flatten(x)[0])[0]
            compat.loss_tracker(trainer).update_state(
                rescale(loss, replicas()), sample_weight=batch
            )
            scaled = trainer.optimizer.scale_loss(loss)
    ctx.variables = trainer.trainable_weights
    grads = tape.gradient(scaled, ctx.variables)
    ctx.grads = list(grads)
    for t in trainer.techniques:
        grads = list(t.transform_gradients(ctx, ctx.grads))
        ctx.grads = grads
    checks = {k: [v] for k, v in ctx.terms.items()}
    checks["gradients"] = [g for g in ctx.grads if g is not None]
    with tf.control_dependencies(assert_finite(checks, step)):
        trainer.optimizer.apply_gradients(zip(ctx.grads, ctx.variables))
        for t in trainer.techniques:
            t.after_step(ctx)
    return trainer.compute_metrics(
        x, y, ctx.y_pred, sample_weight=sample_weight
    )
