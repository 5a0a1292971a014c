"""The Keras callbacks `NetAug` adds to `fit` (coarse, per-epoch events)."""

import keras

from keras_compact.netaug import sorting


class PhaseSchedule(keras.callbacks.Callback):
    """Turns a phase on for a span of the epochs: sets an int32 flag to 1
    at the start of the epochs in `[start_at * epochs, stop_at * epochs)`,
    else 0 (NetAug's width phase, `stop_width_at`, and its augmented pass,
    `start_at` / `stop_at`).

    Args:
        enabled: the int32 scalar variable that gates the phase.
        stop_at: the fraction of `fit`'s `epochs` (so `initial_epoch`
            resumes correctly) from which it is set to 0.
        start_at: the fraction before which it is set to 0.
    """

    def __init__(self, enabled, stop_at, start_at=0.0):
        super().__init__()
        self.enabled = enabled
        self.start_at = start_at
        self.stop_at = stop_at

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs") or 1
        on = self.start_at * epochs <= epoch < self.stop_at * epochs
        self.enabled.assign(int(on))


class ChannelSorting(keras.callbacks.Callback):
    """Sorts the expand groups' channels by importance at the start of
    every epoch of the width phase (after `PhaseSchedule` has set it), as
    the released code does (`sorting.sort_expand_channels`).

    Args:
        supernet: the `Supernet`.
        width_enabled: the int32 scalar variable of the width phase.
    """

    def __init__(self, supernet, width_enabled):
        super().__init__()
        self.supernet = supernet
        self.width_enabled = width_enabled
        self.sorted_epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        if not int(self.width_enabled.numpy()):
            return
        self.sorted_epochs.append(epoch)
        sorting.sort_expand_channels(
            self.supernet, getattr(self.model, "optimizer", None)
        )


class Monitor(keras.callbacks.Callback):
    """Adds `netaug_aug_loss` (the unweighted augmented loss, mean over the
    epoch) and `netaug_loss_ratio` (it over `task_loss`) to the epoch logs,
    and runs the stability check at every epoch end.

    Args:
        aug_loss: the `keras.metrics.Mean` of the augmented loss.
        num_groups: the number of augmented groups (0: nothing logged).
        check: called as `check(epoch, epochs, aug, task)`
            (`monitoring.StabilityCheck`).
        idle: None, or called as `idle(epochs)` at the end of a `fit` in
            which no epoch ran the augmented pass.
    """

    def __init__(self, aug_loss, num_groups, check, idle=None):
        super().__init__()
        self.aug_loss = aug_loss
        self.num_groups = num_groups
        self.check = check
        self.idle = idle
        self._ran = False

    def on_train_begin(self, logs=None):
        self._ran = False

    def on_train_end(self, logs=None):
        if self.num_groups and not self._ran and self.idle is not None:
            self.idle((self.params or {}).get("epochs") or 1)

    def on_epoch_begin(self, epoch, logs=None):
        self.aug_loss.reset_state()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.num_groups:
            return
        if not float(self.aug_loss.count.numpy()):
            return  # No augmented pass this epoch (`start_at` / `stop_at`).
        self._ran = True
        aug = float(self.aug_loss.result())
        logs["netaug_aug_loss"] = aug
        task = logs.get("task_loss")
        if task:
            logs["netaug_loss_ratio"] = aug / float(task)
        epochs = (self.params or {}).get("epochs") or 1
        self.check(epoch, epochs, aug, task)
