"""keras_compact.sparse: pure parts (distributions, drop-and-grow, schedules,
policies' counts and DSR's threshold control), no training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact.sparse import (
    DSR,
    SET,
    ConstantDropFraction,
    CosineDropFraction,
    PeriodSchedule,
    RigL,
    Static,
    algorithms,
    erk_densities,
    nonzero_counts,
    uniform_densities,
)
from keras_compact.sparse.policies import UpdateContext, get_policy

# ----------------------------------------------------------------------
# Distributions: exact counts
# ----------------------------------------------------------------------
SHAPES = [(3, 3, 16, 16), (3, 3, 16, 32), (3, 3, 32, 64), (64, 10)]


def test_uniform_counts_are_exact_per_layer():
    d = uniform_densities(SHAPES, 0.9)
    assert d == [pytest.approx(0.1)] * 4
    counts = nonzero_counts(SHAPES, d)
    assert counts == [230, 461, 1843, 64]  # round(0.1 * size)


def test_erk_matches_hand_computation_and_budget():
    d = erk_densities(SHAPES, 0.9)
    sizes = [math.prod(s) for s in SHAPES]
    # The Dense kernel would exceed density 1: it is made dense, and
    # epsilon is re-solved over the three convs (raw = sum/prod of shape).
    assert d[3] == 1.0
    eps = (0.1 * sum(sizes) - sizes[3]) / (38 + 54 + 102)
    assert d[:3] == pytest.approx(
        [eps * sum(s) / math.prod(s) for s in SHAPES[:3]]
    )
    total = round(0.1 * sum(sizes))
    counts = nonzero_counts(SHAPES, d, total=total)
    assert sum(counts) == total == 2598
    assert counts == [384, 545, 1029, 640]  # largest remainders
    # Smaller layers are denser.
    assert d[3] > d[0] > d[1] > d[2]


def test_erk_makes_overfull_layers_dense_and_resolves_epsilon():
    shapes = [(4, 3), (256, 256), (3, 3, 64, 64)]
    d = erk_densities(shapes, 0.5)
    assert d[0] == 1.0
    sizes = [math.prod(s) for s in shapes]
    assert sum(x * n for x, n in zip(d, sizes)) == pytest.approx(
        0.5 * sum(sizes)
    )
    assert all(0 < x <= 1 for x in d)


def test_nonzero_counts_never_empty_a_layer():
    assert nonzero_counts([(2, 2), (100, 100)], [0.01, 0.01]) == [1, 100]


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_distribution_errors_name_the_argument(bad):
    with pytest.raises(ValueError, match=f"sparsity={bad}"):
        uniform_densities(SHAPES, bad)
    with pytest.raises(ValueError, match=f"sparsity={bad}"):
        erk_densities(SHAPES, bad)


# ----------------------------------------------------------------------
# The shared step
# ----------------------------------------------------------------------
def test_select_top_is_exact_and_respects_validity():
    s = tf.constant([0.1, 0.9, 0.5, 0.7, 0.2])
    np.testing.assert_array_equal(
        algorithms.select_top(s, 2).numpy(), [0, 1, 0, 1, 0]
    )
    valid = tf.constant([True, False, True, False, False])
    # Callers score forbidden positions -inf; `valid` guards k > #valid.
    masked = tf.where(valid, s, float("-inf"))
    np.testing.assert_array_equal(
        algorithms.select_top(masked, 4, valid).numpy(), [1, 0, 1, 0, 0]
    )


def test_drop_and_grow_drops_smallest_and_grows_best_outside_kept():
    active = tf.constant([[True, True, True, False, False, False]])
    w = tf.constant([[0.5, -0.01, 0.3, 0.0, 0.0, 0.0]])
    grow = tf.constant([[0.0, 9.0, 0.0, 1.0, 3.0, 2.0]])
    new, kept = algorithms.drop_and_grow(active, tf.abs(w), grow, 1, 2)
    np.testing.assert_array_equal(kept.numpy(), [[1, 0, 1, 0, 0, 0]])
    # The just-dropped position (score 9) may be regrown (RigL semantics).
    np.testing.assert_array_equal(new.numpy(), [[1, 1, 1, 0, 1, 0]])
    # -inf forbids a position.
    grow2 = tf.where(active, float("-inf"), grow)
    new, _ = algorithms.drop_and_grow(active, tf.abs(w), grow2, 1, 1)
    np.testing.assert_array_equal(new.numpy(), [[1, 0, 1, 0, 1, 0]])


def test_allocate_is_proportional_capped_and_exact():
    seed = tf.constant([1, 2])
    c = algorithms.allocate(100, [30, 10, 60], [1000, 1000, 1000], seed)
    assert c.numpy().tolist() == [30, 10, 60]
    # A full layer's share goes to the others, in proportion.
    c = algorithms.allocate(100, [30, 10, 60], [1000, 1000, 5], seed)
    assert c.numpy().sum() == 100 and c.numpy()[2] == 5
    assert c.numpy()[0] == pytest.approx(71, abs=1)
    # Rounding remainder goes somewhere, never above capacity.
    for s in range(20):
        c = algorithms.allocate(
            7, [1, 1, 1], [5, 5, 5], tf.constant([s, 0])
        ).numpy()
        assert c.sum() == 7 and (c <= 5).all() and (c >= 2).all()
    # Not enough room: everything is filled.
    c = algorithms.allocate(50, [1, 1], [10, 20], seed).numpy()
    assert c.tolist() == [10, 20]


def test_threshold_drop_counts_never_empty_a_layer():
    mags = [tf.constant([0.1, 0.2, 5.0, 0.0]), tf.constant([0.1, 0.2])]
    acts = [tf.constant([True, True, True, False]), tf.constant([True, True])]
    counts = algorithms.threshold_drop_counts(mags, acts, 1.0)
    assert [int(c) for c in counts] == [2, 1]


# ----------------------------------------------------------------------
# DSR round on raw tensors: budget invariant and H control
# ----------------------------------------------------------------------
class _Holder(keras.layers.Layer):
    pass


def _dsr_round(policy, kernels, masks, step):
    ctx = UpdateContext(
        [tf.constant(k) for k in kernels],
        [tf.constant(m > 0) for m in masks],
        [None] * len(kernels),
        tf.constant(step, tf.int64),
        tf.constant(0, tf.int64),
        lambda i, salt: algorithms.seed_for(7, i, salt, step),
    )
    n_drop = policy.drop_counts(ctx)
    n_grow = policy.grow_counts(ctx, n_drop)
    grow_s = policy.grow_scores(ctx)
    new = []
    for i in range(len(kernels)):
        m, kept = algorithms.drop_and_grow(
            ctx.actives[i],
            tf.abs(ctx.kernels[i]),
            grow_s[i],
            n_drop[i],
            n_grow[i],
        )
        dropped = np.logical_and(masks[i] > 0, ~kept.numpy())
        grown = np.logical_and(m.numpy(), ~(masks[i] > 0))
        # Positions pruned in this round are not regrown.
        assert not np.logical_and(dropped, m.numpy()).any()
        assert grown.sum() == int(n_grow[i])
        new.append(m.numpy().astype("float32"))
    policy.after_update(ctx, n_drop)
    return new, sum(int(k) for k in n_drop), [int(k) for k in n_grow]


def test_dsr_budget_invariant_and_threshold_keeps_pruned_count_in_band():
    rng = np.random.default_rng(0)
    shapes = [(100, 200), (50, 100), (3, 3, 32, 32)]
    masks = []
    for s in shapes:
        m = (rng.random(s) < 0.5).astype("float32")
        masks.append(m)
    budget = sum(m.sum() for m in masks)
    n_p = 0.002 * 2**5 * budget  # reachable by doubling H from 1e-3
    policy = DSR(target_prunes=int(n_p), delta=0.1)
    policy.build(_Holder(), int(budget))
    pruned = []
    for step in range(1, 13):
        # "Training": active weights take fresh magnitudes U(0, 1) / 2.
        kernels = [
            (m * rng.uniform(-0.5, 0.5, m.shape)).astype("float32")
            for m in masks
        ]
        masks, k, grown = _dsr_round(policy, kernels, masks, step)
        assert sum(m.sum() for m in masks) == budget  # invariant
        assert sum(grown) == k
        pruned.append(k)
    band = [(1 - 0.1) * n_p, (1 + 0.1) * n_p]
    # H doubles from 1e-3 until the pruned count enters the band...
    assert pruned[0] < band[0]
    # ...then stays there.
    assert all(band[0] <= k <= band[1] for k in pruned[7:]), pruned
    h = float(policy.threshold.numpy())
    assert h == pytest.approx(1e-3 * 2**5, rel=1e-6)


def test_dsr_regrowth_is_proportional_to_survivors():
    shapes = [(100, 100), (100, 100)]
    masks = [np.ones(s, "float32") * 0 for s in shapes]
    masks[0][:40] = 1  # 4000 active
    masks[1][:10] = 1  # 1000 active
    kernels = [np.where(m > 0, 1.0, 0.0).astype("float32") for m in masks]
    kernels[0][:4] = 1e-5  # 400 prunable in layer 0
    kernels[1][:1] = 1e-5  # 100 prunable in layer 1
    policy = DSR(target_prunes=500)
    policy.build(_Holder(), 5000)
    _, k, grown = _dsr_round(policy, kernels, masks, 1)
    assert k == 500
    # survivors 3600 : 900 -> 400 : 100
    assert grown == [400, 100]


# ----------------------------------------------------------------------
# Schedules and policies: values and config round trips
# ----------------------------------------------------------------------
def test_period_schedule_values_and_scaling():
    s = PeriodSchedule()
    assert [int(s(e)) for e in (0, 24, 25, 79, 80, 140, 199)] == [
        100,
        100,
        200,
        200,
        400,
        800,
        800,
    ]
    t = s.scaled(epoch_factor=0.1, step_factor=0.2, min_period=10)
    assert t.boundaries == [2, 8, 14] and t.periods == [20, 40, 80, 160]
    with pytest.raises(ValueError, match="periods="):
        PeriodSchedule((1, 2), (10, 20))


def test_cosine_drop_fraction():
    f = CosineDropFraction(0.3, end_step=100)
    assert float(f(0)) == pytest.approx(0.3)
    assert float(f(50)) == pytest.approx(0.15)
    assert float(f(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(CosineDropFraction(0.3)(25, end_step=50)) == (
        pytest.approx(0.15)
    )
    with pytest.raises(ValueError, match="initial_fraction=0"):
        CosineDropFraction(0)


@pytest.mark.parametrize(
    "obj",
    [
        PeriodSchedule((3, 6), (10, 20, 40)),
        CosineDropFraction(0.2, 500),
        ConstantDropFraction(0.1),
        DSR(
            target_prunes=0.05,
            delta=0.2,
            period=PeriodSchedule((2,), (5, 9)),
            stop_epoch=7,
        ),
        SET(update_interval=10, drop_fraction=0.3),
        RigL(update_interval=7, end_fraction=0.5),
        Static(),
    ],
)
def test_configs_round_trip_without_custom_objects(obj):
    config = keras.saving.serialize_keras_object(obj)
    back = keras.saving.deserialize_keras_object(config)
    assert type(back) is type(obj)
    assert back.get_config() == obj.get_config()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DSR(target_prunes=-1), "target_prunes=-1"),
        (lambda: DSR(target_prunes=1.5), "target_prunes=1.5"),
        (lambda: DSR(delta=1.0), "delta=1.0"),
        (lambda: DSR(initial_threshold=0), "initial_threshold=0"),
        (lambda: RigL(update_interval=0), "update_interval=0"),
        (lambda: SET(end_fraction=0), "end_fraction=0"),
        (lambda: get_policy("magic"), "policy='magic'"),
    ],
)
def test_policy_errors_name_argument_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_dsr_with_zero_target_is_static():
    assert DSR(target_prunes=0).is_static
    assert not DSR().is_static
