"""Schedules of dynamic sparse training: when to reallocate, how much.

Each schedule follows `keras.optimizers.schedules.LearningRateSchedule`: a
`__call__` written with `keras.ops` (so it runs inside the compiled train
step) and a flat `get_config` so that `cls(**config)` round-trips.
"""

import math

import keras

from keras_compact.api_export import keras_compact_export


@keras_compact_export
class PeriodSchedule:
    """Reallocation period (in iterations) as a step function of the epoch.

    `period(epoch) = periods[i]` for `boundaries[i-1] <= epoch <
    boundaries[i]`. The defaults are DSR's CIFAR-10 WRN-28-2 schedule: every
    100 iterations for epochs 0-24, 200 for 25-79, 400 for 80-139, 800 from
    epoch 140 (200 epochs of 500 iterations).

    Args:
        boundaries: increasing epoch indices where the period changes.
        periods: positive iteration counts, one more than `boundaries`.

    Raises:
        ValueError: if the lengths do not match, `boundaries` is not
            increasing or a period is not a positive integer.

    Example:

    ```python
    schedule = PeriodSchedule()            # DSR, CIFAR-10
    schedule = schedule.scaled(epoch_factor=20 / 200, step_factor=0.2)
    ```

    Reference:
        Mostafa, Wang. "Parameter Efficient Training of Deep Convolutional
        Neural Networks by Dynamic Sparse Reparameterization", ICML 2019
        (arXiv:1902.05967), appendix (hyper-parameters).
    """

    def __init__(self, boundaries=(25, 80, 140), periods=(100, 200, 400, 800)):
        boundaries = [int(b) for b in boundaries]
        periods = [int(p) for p in periods]
        if len(periods) != len(boundaries) + 1:
            raise ValueError(
                "Expected `periods` to have one more entry than "
                f"`boundaries`. Received: boundaries={boundaries}, "
                f"periods={periods}"
            )
        if any(b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ValueError(
                "Expected `boundaries` to be strictly increasing. "
                f"Received: boundaries={boundaries}"
            )
        if min(periods) < 1:
            raise ValueError(
                "Expected every period to be an integer >= 1. "
                f"Received: periods={periods}"
            )
        self.boundaries = boundaries
        self.periods = periods

    def __call__(self, epoch):
        """The period (int32 tensor) for a 0-based epoch index."""
        epoch = keras.ops.cast(epoch, "int32")
        period = keras.ops.convert_to_tensor(self.periods[0], "int32")
        for b, p in zip(self.boundaries, self.periods[1:]):
            period = keras.ops.where(epoch >= b, p, period)
        return period

    def period_at(self, epoch):
        """The period for an epoch, as a Python int."""
        period = self.periods[0]
        for b, p in zip(self.boundaries, self.periods[1:]):
            if epoch >= b:
                period = p
        return period

    def scaled(self, epoch_factor=1.0, step_factor=1.0, min_period=1):
        """A copy for another budget.

        Boundaries are multiplied by `epoch_factor` (e.g. new epochs / 200)
        and rounded; periods by `step_factor` (e.g. new iterations per epoch
        / 500), rounded and at least `min_period`.
        """
        boundaries = []
        for b in self.boundaries:
            b = max(1, round(b * float(epoch_factor)))
            if boundaries and b <= boundaries[-1]:
                b = boundaries[-1] + 1
            boundaries.append(b)
        periods = [
            max(int(min_period), round(p * float(step_factor)))
            for p in self.periods
        ]
        return PeriodSchedule(boundaries, periods)

    def get_config(self):
        return {
            "boundaries": list(self.boundaries),
            "periods": list(self.periods),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras_compact_export
class CosineDropFraction:
    """RigL's drop fraction `f(t) = alpha / 2 * (1 + cos(pi * t / T_end))`.

    Args:
        initial_fraction: `alpha`, the drop fraction at step 0, in (0, 1].
            Defaults to 0.3 (RigL).
        end_step: `T_end`, the step where the fraction reaches 0. `None`
            lets the caller pass it at call time (the `SparseTraining`
            technique resolves it from the length of training).

    Raises:
        ValueError: for `initial_fraction` outside (0, 1] or a non-positive
            `end_step`.

    Reference:
        Evci et al. "Rigging the Lottery: Making All Tickets Winners",
        ICML 2020 (arXiv:2006.11477), equation (1).
    """

    def __init__(self, initial_fraction=0.3, end_step=None):
        if not 0.0 < float(initial_fraction) <= 1.0:
            raise ValueError(
                "Expected `initial_fraction` in (0, 1]. "
                f"Received: initial_fraction={initial_fraction!r}"
            )
        if end_step is not None and int(end_step) < 1:
            raise ValueError(
                "Expected `end_step` to be None or an integer >= 1. "
                f"Received: end_step={end_step!r}"
            )
        self.initial_fraction = float(initial_fraction)
        self.end_step = None if end_step is None else int(end_step)

    def __call__(self, step, end_step=None):
        end = self.end_step if self.end_step is not None else end_step
        if end is None:
            raise ValueError(
                "CosineDropFraction needs `end_step`: pass it to the "
                "constructor or at call time. Received: end_step=None"
            )
        step = keras.ops.cast(step, "float32")
        end = keras.ops.maximum(keras.ops.cast(end, "float32"), 1.0)
        progress = keras.ops.minimum(step / end, 1.0)
        return (
            0.5
            * self.initial_fraction
            * (1.0 + keras.ops.cos(math.pi * progress))
        )

    def get_config(self):
        return {
            "initial_fraction": self.initial_fraction,
            "end_step": self.end_step,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras_compact_export
class ConstantDropFraction:
    """A constant drop fraction (SET's `zeta`, 0.3 in the SET paper).

    Args:
        fraction: the fraction of active weights replaced at every update,
            in (0, 1].

    Raises:
        ValueError: for `fraction` outside (0, 1].

    Reference:
        Mocanu et al. "Scalable training of artificial neural networks with
        adaptive sparse connectivity inspired by network science", Nature
        Communications 9, 2383 (2018).
    """

    def __init__(self, fraction=0.3):
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(
                "Expected `fraction` in (0, 1]. "
                f"Received: fraction={fraction!r}"
            )
        self.fraction = float(fraction)

    def __call__(self, step, end_step=None):
        return keras.ops.convert_to_tensor(self.fraction, "float32")

    def get_config(self):
        return {"fraction": self.fraction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
