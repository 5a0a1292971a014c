"""Sparse training methods as small policies over one drop-and-grow step.

A policy says when the connectivity is updated and overrides only the
counts and scores of `algorithms.drop_and_grow`; the `SparseTraining`
technique owns the state (masks, counters) and runs the shared step. All
policies are Keras-serializable (`get_config` / `from_config`).
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_compact.api_export import keras_compact_export
from keras_compact.sparse import algorithms
from keras_compact.sparse.schedules import (
    ConstantDropFraction,
    CosineDropFraction,
    PeriodSchedule,
)
from keras_compact.training import arguments as args


class UpdateContext:
    """What a policy sees at an update: the state of every sparse weight.

    Attributes:
        kernels: current weight values (tensors), one per sparse weight.
        actives: boolean masks before the update.
        grads: dense gradients of the last step (RigL), or `None`s.
        step: the optimizer step (int64 scalar tensor) just completed.
        end_step: the last update step (int64 scalar tensor), if resolved.
        seed: callable `(layer_index, salt) -> int32[2]` stateless seed.
        targets: the final number of non-zeros of every sparse weight (the
            split of the budget; ints), or None.
    """

    def __init__(
        self, kernels, actives, grads, step, end_step, seed, targets=None
    ):
        self.kernels = kernels
        self.actives = actives
        self.grads = grads
        self.step = step
        self.end_step = end_step
        self.seed = seed
        self.targets = targets

    def uniform(self, i, salt):
        """Stateless U[0, 1) noise of layer `i`'s shape."""
        return tf.random.stateless_uniform(
            tf.shape(self.kernels[i]),
            seed=self.seed(i, salt),
            dtype=tf.float32,
        )


@keras_compact_export
class SparsePolicy:
    """Base class: a static mask (never updated).

    Subclasses override `should_update`, the counts and the scores.

    Attributes:
        needs_gradients: whether `grow_scores` reads dense gradients.
        needs_end_step: whether the policy needs the training length.
        is_static: whether the mask never changes (no update is traced).
        starts_dense: whether training starts with every weight active
            and the policy prunes down to the budget (dense to sparse);
            otherwise the budget holds from the first step.
    """

    needs_gradients = False
    needs_end_step = False
    is_static = False
    starts_dense = False

    def check_budget(self, budget):
        """Raises `ValueError` if the policy cannot work with `budget`.

        Called when the technique is attached, before any mask is made, so
        that a failed check leaves the model untouched. `budget` is the
        total number of non-zeros of all sparse weights.
        """

    def build(self, technique, budget):
        """Creates policy state as weights of `technique` (e.g. DSR's H).

        `budget` is the total number of non-zeros of all sparse weights.
        """

    def should_update(self, step, epoch, end_step):
        return tf.constant(False)

    def check_end_step(self, end_step):
        """Raises `ValueError` if the policy cannot work with the last
        update step resolved at the start of `fit` (an int)."""

    def update_spacing(self, epochs=None):
        """The fewest iterations between two mask updates.

        Args:
            epochs: the length of the run in epochs, if known (policies
                whose period depends on the epoch look only at these).

        Returns:
            An int, or `None` when the masks never change.
        """
        return None

    def drop_counts(self, ctx):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `drop_counts(ctx)`: how "
            "many weights each sparse layer drops at an update."
        )

    def drop_scores(self, ctx):
        return [tf.abs(tf.cast(k, tf.float32)) for k in ctx.kernels]

    def grow_counts(self, ctx, n_drop):
        return list(n_drop)

    def grow_scores(self, ctx):
        return [ctx.uniform(i, 1) for i in range(len(ctx.kernels))]

    def after_update(self, ctx, n_drop):
        """Adapts policy state once the masks are updated."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras_compact_export
class Static(SparsePolicy):
    """Static sparse training: a fixed random mask (the baseline).

    Example:

    ```python
    SparseTraining(sparsity=0.9, policy=Static())
    ```

    Reference:
        Mostafa, Wang (ICML 2019) and Evci et al. (ICML 2020) use it as
        the static baseline.
    """

    is_static = True


def _check_interval(update_interval):
    if int(update_interval) != update_interval or int(update_interval) < 1:
        raise ValueError(
            "Expected `update_interval` to be an integer >= 1. "
            f"Received: update_interval={update_interval!r}"
        )
    return int(update_interval)


def _check_end(end_step, end_fraction):
    if end_step is not None and (
        int(end_step) != end_step or int(end_step) < 1
    ):
        raise ValueError(
            "Expected `end_step` to be None or an integer >= 1. "
            f"Received: end_step={end_step!r}"
        )
    if not 0.0 < float(end_fraction) <= 1.0:
        raise ValueError(
            "Expected `end_fraction` in (0, 1]. "
            f"Received: end_fraction={end_fraction!r}"
        )
    return (None if end_step is None else int(end_step)), float(end_fraction)


def _drop_schedule(drop_fraction):
    if isinstance(drop_fraction, (int, float)):
        return ConstantDropFraction(float(drop_fraction))
    if isinstance(drop_fraction, dict):
        return keras.saving.deserialize_keras_object(drop_fraction)
    if not callable(drop_fraction):
        raise ValueError(
            "Expected `drop_fraction` to be a float or a drop-fraction "
            f"schedule. Received: drop_fraction={drop_fraction!r}"
        )
    return drop_fraction


class _FractionPolicy(SparsePolicy):
    """Shared part of SET and RigL: per-layer fraction, every dT steps."""

    needs_end_step = True

    def __init__(
        self,
        update_interval=100,
        drop_fraction=None,
        end_step=None,
        end_fraction=0.75,
    ):
        self.update_interval = _check_interval(update_interval)
        if drop_fraction is None:
            drop_fraction = CosineDropFraction(0.3)
        self.drop_fraction = _drop_schedule(drop_fraction)
        self.end_step, self.end_fraction = _check_end(end_step, end_fraction)

    def should_update(self, step, epoch, end_step):
        step = tf.cast(step, tf.int64)
        return tf.logical_and(
            tf.equal(step % self.update_interval, 0),
            step <= tf.cast(end_step, tf.int64),
        )

    def update_spacing(self, epochs=None):
        return self.update_interval

    def fraction(self, ctx):
        return self.drop_fraction(ctx.step, ctx.end_step)

    def drop_counts(self, ctx):
        return algorithms.fraction_drop_counts(ctx.actives, self.fraction(ctx))

    def get_config(self):
        return {
            "update_interval": self.update_interval,
            "drop_fraction": keras.saving.serialize_keras_object(
                self.drop_fraction
            ),
            "end_step": self.end_step,
            "end_fraction": self.end_fraction,
        }


@keras_compact_export
class SET(_FractionPolicy):
    """Sparse Evolutionary Training: drop the smallest, grow at random.

    Every `update_interval` steps until `end_step`, each sparse layer drops
    `floor(f(t) * n_active)` of its active weights with the smallest |w|
    and regrows as many at random inactive positions of the same layer (no
    movement across layers), zero-initialised. With the defaults the drop
    fraction follows RigL's cosine schedule, as in RigL's comparison of the
    two; pass `drop_fraction=0.3` for SET's original constant zeta.

    Regrown weights start at zero and are judged by |w| at the next update,
    so `update_interval` must leave them time to grow: the default is RigL's
    `dT = 100` iterations (its CIFAR-10 and ImageNet runs), and a run that
    updates more often is warned about at the start of `fit`.

    Which layers are sparse: the SET paper's MLPs make every layer sparse;
    the `SparseTraining` default (`dense_layers="auto"`) keeps the first
    layer and 1x1 shortcut convolutions dense and the classifier sparse,
    as RigL's comparison of SET (pass `dense_layers=None` for all sparse).

    Args:
        update_interval: steps between updates (`dT`). Defaults to 100.
        drop_fraction: a float (constant) or a schedule called as
            `schedule(step, end_step)`. Defaults to
            `CosineDropFraction(0.3)`.
        end_step: last step at which the mask changes; `None` uses
            `end_fraction` of the training length (known at `fit` start).
        end_fraction: fraction of training after which updates stop when
            `end_step` is None. Defaults to 0.75.

    Raises:
        ValueError: for a non-positive `update_interval` or `end_step`, or
            `end_fraction` outside (0, 1].

    Reference:
        Mocanu et al. "Scalable training of artificial neural networks with
        adaptive sparse connectivity inspired by network science", Nature
        Communications 9, 2383 (2018).
    """


@keras_compact_export
class RigL(_FractionPolicy):
    """RigL: drop the smallest |w|, grow where the dense gradient is largest.

    Every `update_interval` steps until `end_step`, each sparse layer drops
    `k = floor(f(t) * n_active)` active weights with the smallest |w| and
    grows the `k` positions outside the kept set with the largest |dense
    gradient| of that step, zero-initialised, optimizer slots reset, with
    `f(t) = alpha / 2 * (1 + cos(pi * t / T_end))`. Under a multi-replica
    strategy the sparse kernels' dense gradients are all-reduced every step
    (a collective cannot sit inside the conditional update), so that every
    replica grows the same positions.

    The default `dT = 100` iterations is the reference's (google-research/
    rigl, CIFAR-10 and ImageNet): a regrown weight starts at zero and is
    judged by |w| at the next update, so it needs those iterations to grow;
    a run that updates more often is warned about at the start of `fit`.

    Which layers are sparse: the reference's CIFAR-10 WRN keeps the first
    layer dense and makes the classifier sparse (`prune_first_layer=False`,
    `prune_last_layer=True`); so does the `SparseTraining` default
    (`dense_layers="auto"`), which also keeps 1x1 shortcut convolutions
    dense (the reference makes them sparse; they are under 1% of a
    ResNet's weights).

    Args:
        update_interval: `dT`. Defaults to 100.
        drop_fraction: a float or a schedule; defaults to
            `CosineDropFraction(0.3)` (`alpha = 0.3`).
        end_step: `T_end`; `None` uses `end_fraction` of training.
        end_fraction: defaults to 0.75 (RigL).

    Raises:
        ValueError: as `SET`.

    Example:

    ```python
    SparseTraining(sparsity=0.9, policy=RigL(), distribution="erk")
    ```

    Reference:
        Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
        Tickets Winners", ICML 2020 (arXiv:2006.11477).
    """

    needs_gradients = True

    def grow_scores(self, ctx):
        out = []
        for g, k in zip(ctx.grads, ctx.kernels):
            if g is None:
                out.append(tf.zeros(tf.shape(k), tf.float32))
            else:
                out.append(tf.abs(tf.cast(g, tf.float32)))
        return out


@keras_compact_export
class DSR(SparsePolicy):
    """Dynamic Sparse Reparameterization (Mostafa and Wang, 2019).

    Every `period(epoch)` iterations (while `epoch < stop_epoch`): prune
    every active weight with |w| below ONE global threshold `H` (a layer is
    never emptied), regrow as many zero-initialised weights at random free
    positions, split across layers in proportion to each layer's survivors
    (rounding remainder to a random layer; the positions pruned in this
    round are excluded, and used only if no other free position is left),
    then adapt `H`: halve it if more than `(1 + delta) * N_p` weights were
    pruned, double it if fewer than `(1 - delta) * N_p`, and keep it within
    `[MIN_THRESHOLD, max |w|]` (the largest magnitude among the sparse
    weights), so that it never runs away from the weights it thresholds.
    Per-layer sparsity is not set by hand: it emerges.

    `N_p` is a fraction of the budget by default: the paper's
    `N_p = 20000` on CIFAR-10 WRN-28-2 at 90% sparsity is 13.8% of its
    145,280 non-zeros (`20000 / (0.1 * 1452800)`), and the same fraction
    keeps the same per-round churn on any model. An absolute `N_p` that a
    model's budget cannot sustain (`N_p >= (1 - delta) * budget`: no round
    can ever prune enough, `H` only grows and every round empties all
    layers but one weight each) is an error when the technique is attached.

    Which layers are sparse: the `SparseTraining` default
    (`dense_layers="auto"`) keeps the first layer and the 1x1 shortcut
    convolutions dense and makes the classifier sparse, as the paper's
    WRN-28-2 (its 1,452,800 sparse weights are exactly the 3x3 block convs
    plus the final linear layer's kernel).

    `target_prunes=0` is static sparse training (no update is ever made).

    Args:
        target_prunes: `N_p`, the number of weights to prune per round: a
            float in (0, 1 - delta) read as a fraction of the total number
            of non-zeros (the budget), or an int >= 0. Defaults to 0.138
            (the paper's CIFAR-10 WRN-28-2 value at 90% sparsity, as a
            fraction of the budget).
        delta: tolerance `delta` of the threshold adaptation, in [0, 1).
            Defaults to 0.1.
        initial_threshold: `H_0` > 0. Defaults to 1e-3.
        period: a `PeriodSchedule`: iterations between reallocations, per
            epoch range. Defaults to the paper's CIFAR-10 schedule: every
            100 iterations for epochs 0-24, 200 for 25-79, 400 for 80-139
            and 800 from epoch 140 on (the IntelAI reference code's
            values). Regrown weights start at zero and are judged by |w| at
            the next round, so they need tens of iterations to grow:
            shorter periods make most of them die young (see
            `SparseTraining.regrown_pruned_fraction`).
        stop_epoch: no reallocation from this epoch on (`None`: never
            stop). Defaults to 190.

    Raises:
        ValueError: for a negative int `target_prunes`, a float one outside
            (0, 1 - delta), `delta` outside [0, 1), a non-positive
            `initial_threshold` or a negative `stop_epoch`; when attached,
            for an `N_p >= (1 - delta) * budget`.
        TypeError: if `target_prunes` is not an int or a float, or
            `period` is not a `PeriodSchedule`.

    Example:

    ```python
    SparseTraining(sparsity=0.9, policy=DSR(target_prunes=0.05))
    ```

    Reference:
        Mostafa, Wang. "Parameter Efficient Training of Deep Convolutional
        Neural Networks by Dynamic Sparse Reparameterization", ICML 2019
        (arXiv:1902.05967), algorithm 1.
    """

    #: Lower bound of `H` (a threshold of 0 could never double again).
    MIN_THRESHOLD = 1e-8

    def __init__(
        self,
        target_prunes=0.138,
        delta=0.1,
        initial_threshold=1e-3,
        period=None,
        stop_epoch=190,
    ):
        if isinstance(target_prunes, bool) or not isinstance(
            target_prunes, numbers.Real
        ):
            raise TypeError(
                "Expected `target_prunes` to be an int (a count) or a float "
                "(a fraction of the budget). "
                f"Received: target_prunes={target_prunes!r}"
            )
        if isinstance(target_prunes, numbers.Integral):
            target_prunes = int(target_prunes)
        else:
            target_prunes = float(target_prunes)
        if not 0.0 <= float(delta) < 1.0:
            raise ValueError(
                f"Expected `delta` in [0, 1). Received: delta={delta!r}"
            )
        if isinstance(target_prunes, int) and target_prunes < 0:
            raise ValueError(
                "Expected `target_prunes` to be an int >= 0 or a float in "
                f"(0, 1). Received: target_prunes={target_prunes!r}"
            )
        if isinstance(target_prunes, float) and not 0 < target_prunes < 1:
            raise ValueError(
                "Expected `target_prunes` to be an int >= 0 or a float in "
                f"(0, 1). Received: target_prunes={target_prunes!r}"
            )
        if isinstance(target_prunes, float) and target_prunes >= 1 - delta:
            raise ValueError(
                "Expected a float `target_prunes` below 1 - delta = "
                f"{1 - float(delta):g}: no round could prune enough, and "
                "the threshold would only grow. "
                f"Received: target_prunes={target_prunes!r}, delta={delta!r}"
            )
        if not float(initial_threshold) > 0.0:
            raise ValueError(
                "Expected `initial_threshold` > 0. "
                f"Received: initial_threshold={initial_threshold!r}"
            )
        if isinstance(period, dict):
            period = keras.saving.deserialize_keras_object(period)
        period = PeriodSchedule() if period is None else period
        if not isinstance(period, PeriodSchedule):
            raise TypeError(
                "Expected `period` to be a PeriodSchedule. "
                f"Received: period={period!r}"
            )
        if stop_epoch is not None and int(stop_epoch) < 0:
            raise ValueError(
                "Expected `stop_epoch` to be None or an integer >= 0. "
                f"Received: stop_epoch={stop_epoch!r}"
            )
        self.target_prunes = target_prunes
        self.delta = float(delta)
        self.initial_threshold = float(initial_threshold)
        self.period = period
        self.stop_epoch = None if stop_epoch is None else int(stop_epoch)
        self.is_static = target_prunes == 0
        self.num_prunes = None
        self.threshold = None

    def prunes_for(self, budget):
        """`N_p` for a budget of non-zeros, as an int."""
        if isinstance(self.target_prunes, float):
            return max(1, round(self.target_prunes * int(budget)))
        return int(self.target_prunes)

    def check_budget(self, budget):
        budget = int(budget)
        n_p = self.prunes_for(budget)
        if not self.is_static and n_p >= (1.0 - self.delta) * budget:
            raise ValueError(
                "Expected `target_prunes` (N_p, weights pruned per round) "
                f"below (1 - delta) * budget = {1.0 - self.delta:g} * "
                f"{budget} = {(1.0 - self.delta) * budget:g} non-zeros: a "
                "larger N_p can never be reached, so the threshold would "
                "grow every round until each layer keeps one weight. Pass a "
                "fraction of the budget instead (e.g. target_prunes=0.138). "
                f"Received: target_prunes={self.target_prunes!r} "
                f"(N_p={n_p}, budget={budget}, delta={self.delta:g})"
            )

    def build(self, technique, budget):
        self.check_budget(budget)
        self.num_prunes = self.prunes_for(budget)
        self.threshold = technique.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_threshold),
            trainable=False,
            name="threshold",
        )

    def update_spacing(self, epochs=None):
        last = epochs if epochs else max(self.period.boundaries, default=0) + 1
        if self.stop_epoch is not None:
            last = min(last, self.stop_epoch)
        if last < 1:
            return None
        return min(self.period.period_at(e) for e in range(int(last)))

    def should_update(self, step, epoch, end_step):
        step = tf.cast(step, tf.int64)
        period = tf.cast(self.period(epoch), tf.int64)
        due = tf.logical_and(step > 0, tf.equal(step % period, 0))
        if self.stop_epoch is None:
            return due
        return tf.logical_and(due, tf.cast(epoch, tf.int64) < self.stop_epoch)

    def drop_counts(self, ctx):
        magnitudes = self.drop_scores(ctx)
        return algorithms.threshold_drop_counts(
            magnitudes, ctx.actives, self.threshold.value
        )

    def grow_counts(self, ctx, n_drop):
        total = tf.add_n([tf.cast(k, tf.int32) for k in n_drop])
        actives = ctx.actives
        sizes = [a.shape.num_elements() for a in actives]
        n_active = tf.stack([algorithms.count(a) for a in actives])
        drops = tf.stack([tf.cast(k, tf.int32) for k in n_drop])
        survivors = n_active - drops
        free = tf.stack([tf.cast(s, tf.int32) for s in sizes]) - n_active
        first = algorithms.allocate(
            total, survivors, free, ctx.seed(len(actives), 2)
        )
        short = total - tf.reduce_sum(first)
        second = algorithms.allocate(
            short, survivors, drops, ctx.seed(len(actives), 3)
        )
        grow = first + second
        return [grow[i] for i in range(len(actives))]

    def grow_scores(self, ctx):
        # Positions free before the round rank above the just-pruned ones.
        return [
            tf.where(a, u, u + 1.0)
            for a, u in (
                (ctx.actives[i], ctx.uniform(i, 1))
                for i in range(len(ctx.kernels))
            )
        ]

    def after_update(self, ctx, n_drop):
        pruned = tf.cast(
            tf.add_n([tf.cast(k, tf.int32) for k in n_drop]), tf.float32
        )
        h = self.threshold.value
        high = (1.0 + self.delta) * self.num_prunes
        low = (1.0 - self.delta) * self.num_prunes
        h = tf.where(pruned > high, h / 2.0, tf.where(pruned < low, h * 2.0, h))
        # Keep H within the weights' range: above the largest |w| it would
        # prune every weight but one per layer, and doubling would go on.
        top = tf.reduce_max(
            tf.stack(
                [
                    tf.reduce_max(tf.abs(tf.cast(k, h.dtype)))
                    for k in ctx.kernels
                ]
            )
        )
        h = tf.maximum(tf.minimum(h, top), self.MIN_THRESHOLD)
        self.threshold.assign(h)

    def get_config(self):
        return {
            "target_prunes": self.target_prunes,
            "delta": self.delta,
            "initial_threshold": self.initial_threshold,
            "period": keras.saving.serialize_keras_object(self.period),
            "stop_epoch": self.stop_epoch,
        }


@keras_compact_export
class GradualPruning(SparsePolicy):
    """Gradual magnitude pruning (Zhu and Gupta, 2017): dense to sparse.

    Training starts dense. Every `update_interval` steps from `begin_step`
    to `end_step` (and at `end_step` itself), each sparse layer keeps its
    largest-|w| weights and prunes the others, so that the pruned share of
    what the layer must lose follows the cubic schedule
    `s(t) = 1 - (1 - (t - begin_step) / (end_step - begin_step))**power`:
    at `end_step` every layer holds exactly its share of the budget
    (`distribution`), and the mask stays fixed afterwards. Pruned weights
    never come back; nothing is regrown.

    Unlike DSR, SET and RigL (sparse from the first step, a fixed budget of
    non-zeros), it trains dense weights first: more compute and memory
    during training, and at short schedules the better sparse model
    (RigL's authors match it only by training longer). The defaults are
    tensorflow-model-optimization's `PolynomialDecay` as the scoreboard's
    peer runs it: power 3, from step 0, every 100 steps, until 75% of
    training, uniform per-layer sparsity.

    Args:
        update_interval: steps between pruning steps. Defaults to 100.
        begin_step: the step pruning starts at (>= 0). Defaults to 0.
        end_step: the step at which the final sparsity is reached; `None`
            uses `end_fraction` of the training length (known at `fit`).
        end_fraction: fraction of training at which pruning ends when
            `end_step` is None. Defaults to 0.75.
        power: the schedule's exponent, > 0. Defaults to 3.

    Raises:
        TypeError: for a `begin_step` that is not an int or a `power` that
            is not a number.
        ValueError: for a non-positive `update_interval` or `power`, a
            negative `begin_step`, an `end_step` not after `begin_step`,
            or `end_fraction` outside (0, 1].

    Example:

    ```python
    SparseTraining(sparsity=0.9, policy=GradualPruning())
    ```

    Reference:
        Zhu, Gupta. "To prune, or not to prune: exploring the efficacy of
        pruning for model compression", ICLR Workshop 2018
        (arXiv:1710.01878).
    """

    needs_end_step = True
    starts_dense = True

    def __init__(
        self,
        update_interval=100,
        begin_step=0,
        end_step=None,
        end_fraction=0.75,
        power=3.0,
    ):
        self.update_interval = _check_interval(update_interval)
        self.begin_step = args.check_int(begin_step, "begin_step", minimum=0)
        self.end_step, self.end_fraction = _check_end(end_step, end_fraction)
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise ValueError(
                "Expected `end_step` after `begin_step`. Received: "
                f"begin_step={begin_step!r}, end_step={end_step!r}"
            )
        args.check_float(power, "power", low=0.0, low_open=True)
        self.power = float(power)

    def should_update(self, step, epoch, end_step):
        step = tf.cast(step, tf.int64)
        end = tf.cast(end_step, tf.int64)
        begin = tf.constant(self.begin_step, tf.int64)
        on_grid = tf.logical_or(
            tf.equal((step - begin) % self.update_interval, 0),
            tf.equal(step, end),
        )
        return tf.logical_and(
            on_grid, tf.logical_and(step > begin, step <= end)
        )

    def update_spacing(self, epochs=None):
        return self.update_interval

    def check_end_step(self, end_step):
        if end_step <= self.begin_step:
            raise ValueError(
                "GradualPruning would never prune: its end step comes at or "
                "before `begin_step`. Expected an end step after "
                f"begin_step={self.begin_step}. Received: end_step="
                f"{end_step} (end_fraction={self.end_fraction} of this "
                "fit); lower `begin_step` or train longer."
            )

    def pruned_share(self, step, end_step):
        """`s(t)`: the share of each layer's prunable weights pruned by
        `step` (0 at `begin_step`, 1 from `end_step` on)."""
        begin = float(self.begin_step)
        t = (tf.cast(step, tf.float32) - begin) / tf.maximum(
            tf.cast(end_step, tf.float32) - begin, 1.0
        )
        t = tf.clip_by_value(t, 0.0, 1.0)
        return 1.0 - (1.0 - t) ** self.power

    def drop_counts(self, ctx):
        share = self.pruned_share(ctx.step, ctx.end_step)
        out = []
        for active, target in zip(ctx.actives, ctx.targets):
            size = int(np.prod(active.shape))
            keep = size - tf.cast(
                tf.round(share * float(size - int(target))), tf.int32
            )
            out.append(tf.maximum(algorithms.count(active) - keep, 0))
        return out

    def grow_counts(self, ctx, n_drop):
        return [tf.constant(0, tf.int32) for _ in n_drop]

    def grow_scores(self, ctx):
        return [tf.fill(tf.shape(k), algorithms.NEG_INF) for k in ctx.kernels]

    def get_config(self):
        return {
            "update_interval": self.update_interval,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "end_fraction": self.end_fraction,
            "power": self.power,
        }


_ALIASES = {
    "dsr": DSR,
    "set": SET,
    "rigl": RigL,
    "static": Static,
    "gmp": GradualPruning,
}


def get_policy(policy):
    """A policy instance from a name ("dsr", "set", "rigl", "static",
    "gmp"), a config dict or an instance."""
    if isinstance(policy, SparsePolicy):
        return policy
    if isinstance(policy, str) and policy.lower() in _ALIASES:
        return _ALIASES[policy.lower()]()
    if isinstance(policy, dict):
        obj = keras.saving.deserialize_keras_object(policy)
        if isinstance(obj, SparsePolicy):
            return obj
    raise ValueError(
        f"Expected `policy` to be one of {sorted(_ALIASES)} or a "
        f"SparsePolicy instance. Received: policy={policy!r}"
    )
