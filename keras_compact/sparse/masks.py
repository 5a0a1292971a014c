"""Masks at work: masked gradients, masked kernels, the update of all masks.

Plain functions over `state.SparseWeight`s, a policy and the counters;
they run eagerly (tests, custom loops) and inside the compiled train step.
The per-layer drop-and-grow step itself is `algorithms.drop_and_grow`; the
policy supplies its counts and scores.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_compact.compat import optimizer_slots
from keras_compact.sparse import algorithms
from keras_compact.sparse.policies import UpdateContext
from keras_compact.training import tensorflow_step


def mask_gradients(weights, variables, grads):
    """Multiplies the gradient of every sparse weight by its mask.

    Args:
        weights: the `SparseWeight`s.
        variables: the variables that `grads` are aligned with.
        grads: the gradients (`None` entries are left alone).

    Returns:
        The new list of gradients (sparse ones made dense first).
    """
    index = {id(v): i for i, v in enumerate(variables)}
    grads = list(grads)
    for w in weights:
        i = index.get(id(w.variable))
        if i is None or grads[i] is None:
            continue
        g = tensorflow_step.densify(grads[i])
        grads[i] = g * keras.ops.cast(w.mask.value, g.dtype)
    return grads


def apply_masks(weights):
    """Multiplies every sparse weight by its mask (in place)."""
    for w in weights:
        w.variable.assign(w.variable.value * w.mask.value)


def update_if_due(policy, counters, optimizer, update):
    """Runs `update(step)` in the train step when the policy says so.

    Args:
        policy: the `SparsePolicy` (`should_update(step, epoch, end_step)`).
        counters: the `state.SparseCounters` (epoch and end step).
        optimizer: the optimizer whose `iterations` is the step.
        update: a callable `update(step) -> bool tensor`.
    """
    step = optimizer.iterations
    due = policy.should_update(
        step.value, counters.epoch.value, counters.end_step.value
    )
    tf.cond(due, lambda: update(step.value), lambda: tf.constant(False))


def strip_masks(weights):
    """Re-applies the masks eagerly (`SparseTraining.strip`).

    Kernels are already exactly sparse after every step; this covers
    weights assigned by hand since the last step.
    """
    for w in weights:
        w.variable.assign(w.variable * w.mask)


def _regrown_values(value, born, regrow_init, seed):
    """`value` with the `born` positions set to their initial value."""
    if regrow_init == "he_normal":
        shape = tuple(value.shape)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        noise = tf.random.stateless_normal(
            tf.shape(value),
            seed=seed,
            stddev=float(np.sqrt(2.0 / fan_in)),
            dtype=value.dtype,
        )
        return tf.where(born, noise, value)
    return tf.where(born, tf.zeros_like(value), value)


def update_masks(
    weights, policy, counters, optimizer, step, grads, seed, regrow_init
):
    """One drop-and-grow update of every mask.

    Drops and grows the positions the policy chooses, sets regrown weights
    to their initial value, zeroes the optimizer slots of every replaced
    position, lets the policy adapt its state, and updates the counters.

    Args:
        weights: the `SparseWeight`s.
        policy: the `SparsePolicy`.
        counters: the `state.SparseCounters`.
        optimizer: the optimizer whose slots are reset (`None`: no slots).
        step: the step that seeds random draws (`None`:
            `optimizer.iterations`, or 0 without an optimizer).
        grads: dense gradients per sparse weight (RigL), or `None`.
        seed: the int seed of the technique.
        regrow_init: `"zeros"` or `"he_normal"`.

    Returns:
        A boolean tensor `True`.
    """
    if step is None:
        step = optimizer.iterations.value if optimizer is not None else 0
    step = tf.cast(step, tf.int64)
    n = len(weights)

    def seed_fn(i, salt):
        return algorithms.seed_for(seed, i, salt, step)

    kernels = [w.variable.value for w in weights]
    actives = [w.mask.value > 0 for w in weights]
    ctx = UpdateContext(
        kernels,
        actives,
        list(grads) if grads else [None] * n,
        step,
        counters.end_step.value,
        seed_fn,
        [w.target for w in weights],
    )
    n_drop = policy.drop_counts(ctx)
    drop_scores = policy.drop_scores(ctx)
    n_grow = policy.grow_counts(ctx, n_drop)
    grow_scores = policy.grow_scores(ctx)
    judged, pruned_again = [], []
    for i, w in enumerate(weights):
        new, kept = algorithms.drop_and_grow(
            actives[i], drop_scores[i], grow_scores[i], n_drop[i], n_grow[i]
        )
        born = tf.logical_and(new, tf.logical_not(actives[i]))
        keep = tf.logical_and(new, actives[i])
        if w.regrown is not None:
            young = tf.logical_and(w.regrown.value > 0, actives[i])
            # Judged by the drop step: a position it drops counts as
            # pruned even if the random regrowth picks it again.
            j, p = algorithms.regrown_pruned_counts(young, actives[i], kept)
            judged.append(j)
            pruned_again.append(p)
            w.regrown.assign(tf.cast(born, w.regrown.dtype))
        noise_seed = seed_fn(i, 4) if regrow_init == "he_normal" else None
        value = _regrown_values(kernels[i], born, regrow_init, noise_seed)
        new_f = tf.cast(new, value.dtype)
        w.variable.assign(value * new_f)
        w.mask.assign(tf.cast(new, w.mask.dtype))
        keep_f = tf.cast(keep, value.dtype)
        for slot in optimizer_slots(optimizer, w.variable):
            slot.assign(slot.value * tf.cast(keep_f, slot.dtype))
    policy.after_update(ctx, n_drop)
    if judged:
        j = tf.cast(tf.add_n(judged), tf.int64)
        p = tf.cast(tf.add_n(pruned_again), tf.int64)
        counters.regrown_judged.assign(j)
        counters.regrown_pruned.assign(p)
        counters.total_regrown_judged.assign_add(j)
        counters.total_regrown_pruned.assign_add(p)
    counters.update_count.assign_add(tf.constant(1, tf.int64))
    counters.dropped.assign(
        tf.cast(tf.add_n([tf.cast(k, tf.int32) for k in n_drop]), tf.int64)
    )
    return tf.constant(True)
