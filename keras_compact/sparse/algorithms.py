"""The drop-and-grow machinery, written once, free of Keras layers.

Pure TensorFlow functions on tensors (they run eagerly in tests and inside
the compiled train step in training). All shapes are static: selections are
made by ranking the whole tensor (`argsort` + inverse permutation) and
comparing ranks with a count tensor, never with a data-dependent `top_k`,
so the same code runs under XLA and under `tf.distribute`.

Every method is expressed through `drop_and_grow`:

- a drop count per layer (SET/RigL: a fraction of the active weights; DSR:
  the number of active weights below the global threshold, which are
  exactly the smallest-magnitude ones) and a drop score (|w|);
- a grow count per layer (SET/RigL: as many as dropped; DSR: the global
  total split across layers by `allocate`) and a grow score (SET/DSR:
  random; RigL: |dense gradient|). A score of `-inf` forbids a position;
  DSR ranks the positions free before the round above the just-pruned
  ones, which it uses only if nothing else is left.
"""

import tensorflow as tf

from keras_compact.training.tensorflow_step import stateless_seed

NEG_INF = float("-inf")


def select_top(scores, k, valid=None):
    """Boolean mask of the `k` highest `scores` (ties: lowest flat index).

    Args:
        scores: a float tensor of any static shape.
        k: an integer scalar tensor (may be data dependent).
        valid: optional boolean tensor of the same shape; invalid positions
            are never selected, even if `k` exceeds their number.

    Returns:
        A boolean tensor of the shape of `scores`.
    """
    flat = tf.reshape(scores, [-1])
    order = tf.argsort(flat, direction="DESCENDING", stable=True)
    rank = tf.math.invert_permutation(order)
    chosen = tf.reshape(rank < tf.cast(k, rank.dtype), tf.shape(scores))
    if valid is not None:
        chosen = tf.logical_and(chosen, valid)
    return chosen


def count(mask):
    """Number of `True` entries of a boolean tensor, as int32."""
    return tf.reduce_sum(tf.cast(mask, tf.int32))


def drop_and_grow(active, drop_score, grow_score, n_drop, n_grow):
    """One layer's mask update.

    Keeps the `n_active - n_drop` active positions with the highest
    `drop_score`, then activates the `n_grow` positions outside the kept set
    with the highest `grow_score` (positions scored `-inf` are never grown).

    Args:
        active: boolean tensor, the current mask.
        drop_score: float tensor, higher means more worth keeping (|w|).
        grow_score: float tensor, higher means grown first.
        n_drop: int32 scalar, how many active positions to drop.
        n_grow: int32 scalar, how many positions to grow.

    Returns:
        `(new_active, kept)`: the new boolean mask and the kept positions.
    """
    n_keep = count(active) - tf.cast(n_drop, tf.int32)
    kept = select_top(
        tf.where(active, drop_score, NEG_INF), n_keep, valid=active
    )
    candidates = tf.logical_and(tf.logical_not(kept), grow_score > NEG_INF)
    grown = select_top(
        tf.where(candidates, grow_score, NEG_INF), n_grow, valid=candidates
    )
    return tf.logical_or(kept, grown), kept


def threshold_drop_counts(magnitudes, actives, threshold):
    """DSR's drop counts: active weights with |w| < H, layer never emptied.

    Args:
        magnitudes: list of float tensors |w_l|.
        actives: list of boolean masks.
        threshold: float scalar H.

    Returns:
        A list of int32 scalars: `min(#{active, |w| < H}, n_active - 1)`
        (0 for an empty layer).
    """
    out = []
    for w, a in zip(magnitudes, actives):
        below = count(tf.logical_and(a, w < tf.cast(threshold, w.dtype)))
        out.append(tf.minimum(below, tf.maximum(count(a) - 1, 0)))
    return out


def regrown_pruned_counts(regrown, active, kept):
    """How many weights regrown by the previous update this update prunes.

    Args:
        regrown: boolean mask of the positions the previous update grew.
        active: boolean mask before this update.
        kept: boolean mask of the active positions that this update's drop
            step keeps (`drop_and_grow`'s second output).

    Returns:
        `(judged, pruned)` int32 scalars: the regrown positions still
        active (the ones this update judges) and those among them that it
        does not keep.
    """
    judged = tf.logical_and(regrown, active)
    return count(judged), count(tf.logical_and(judged, tf.logical_not(kept)))


def fraction_drop_counts(actives, fraction):
    """SET/RigL's drop counts: `floor(fraction * n_active_l)` per layer."""
    fraction = tf.cast(fraction, tf.float32)
    return [
        tf.cast(tf.floor(fraction * tf.cast(count(a), tf.float32)), tf.int32)
        for a in actives
    ]


def _exclusive_cumsum(x, order):
    xo = tf.gather(x, order)
    return xo, tf.cumsum(xo, exclusive=True)


def allocate(total, weights, capacity, seed):
    """Splits `total` units across layers in proportion to `weights`.

    DSR's regrowth rule: `c_l = round(share_l * total)` with
    `share_l = weights_l / sum(weights)`, capped at `capacity_l`; what full
    layers cannot take is redistributed over the others in proportion to
    their weights; the rounding remainder goes to a random layer (and on,
    in a random order, if that layer is full).

    Args:
        total: int32 scalar, the number of units to place.
        weights: int32 or float vector (one entry per layer), e.g. the
            number of surviving weights of each layer.
        capacity: int32 vector, how many units each layer can take.
        seed: int32 vector of shape (2,), for the random order.

    Returns:
        An int32 vector `c` with `0 <= c <= capacity` and
        `sum(c) == min(total, sum(capacity))`.
    """
    total = tf.cast(total, tf.int32)
    capacity = tf.cast(capacity, tf.int32)
    w = tf.cast(weights, tf.float32)
    n = int(capacity.shape[0])
    sw = tf.reduce_sum(w)
    share = tf.math.divide_no_nan(w, sw)
    c = tf.minimum(
        tf.cast(tf.round(share * tf.cast(total, tf.float32)), tf.int32),
        capacity,
    )
    c = tf.maximum(c, 0)
    for _ in range(n):
        rem = total - tf.reduce_sum(c)
        spare = capacity - c
        w_open = tf.where(spare > 0, w, 0.0)
        s_open = tf.reduce_sum(w_open)
        # Layers with spare room but zero weight still take a fair share
        # when no weighted layer is left.
        w_open = tf.where(s_open > 0.0, w_open, tf.cast(spare > 0, tf.float32))
        s_open = tf.reduce_sum(w_open)
        add = tf.cast(
            tf.floor(
                tf.math.divide_no_nan(w_open, s_open)
                * tf.cast(tf.maximum(rem, 0), tf.float32)
            ),
            tf.int32,
        )
        c = c + tf.minimum(add, spare)
    order = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
    rem = total - tf.reduce_sum(c)
    spare_o, before = _exclusive_cumsum(capacity - c, order)
    give = tf.clip_by_value(tf.maximum(rem, 0) - before, 0, spare_o)
    have_o, before = _exclusive_cumsum(c, order)
    take = tf.clip_by_value(tf.maximum(-rem, 0) - before, 0, have_o)
    inverse = tf.math.invert_permutation(order)
    return c + tf.gather(give - take, inverse)


# One home for stateless seeds: the backend step module.
seed_for = stateless_seed
