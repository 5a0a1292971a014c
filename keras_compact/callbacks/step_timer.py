"""`StepTimer`: wall-clock time of every training step, for fair comparisons."""

import time

import keras
import numpy as np


class StepTimer(keras.callbacks.Callback):
    """Records the wall-clock duration of every training batch.

    On a shared, noisy machine epoch times swing widely; the median step time
    of runs made one after the other in the same process is the figure to
    compare. The first `skip` steps of each `fit` (tracing, warm-up) are left
    out of `median_ms`.

    Note that a callback with `on_train_batch_end` makes Keras wait for every
    step, which is what timing needs; leave it out of runs that are not timed.

    Args:
        skip: number of initial steps of each `fit` excluded from the
            statistics. Defaults to 3.

    Example:

    ```python
    timer = keras_compact.callbacks.StepTimer()
    model.fit(ds, epochs=1, callbacks=[timer])
    print(timer.median_ms)
    ```
    """

    def __init__(self, skip=3):
        super().__init__()
        if not isinstance(skip, int) or skip < 0:
            raise ValueError(
                f"Expected `skip` to be an int >= 0. Received: skip={skip!r}"
            )
        self.skip = skip
        self.step_ms = []
        self._seen = 0
        self._t0 = None

    def on_train_begin(self, logs=None):
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._seen > self.skip and self._t0 is not None:
            self.step_ms.append((time.perf_counter() - self._t0) * 1e3)

    @property
    def median_ms(self):
        """Median step time in milliseconds (NaN before any timed step)."""
        return float(np.median(self.step_ms)) if self.step_ms else float("nan")
