"""The Keras callbacks `NetAug` adds to `fit` (coarse, per-epoch events)."""

import keras

from keras_compact.netaug import sorting


class WidthSchedule(keras.callbacks.Callback):
    """Turns width augmentation off after `stop_width_at` of the epochs.

    Args:
        width_enabled: the int32 scalar variable the sampler reads.
        stop_width_at: the fraction of `fit`'s `epochs` (so `initial_epoch`
            resumes correctly) after which it is set to 0.
    """

    def __init__(self, width_enabled, stop_width_at):
        super().__init__()
        self.width_enabled = width_enabled
        self.stop_width_at = stop_width_at

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs") or 1
        self.width_enabled.assign(int(epoch < self.stop_width_at * epochs))


class ChannelSorting(keras.callbacks.Callback):
    """Sorts the expand groups' channels by importance at the start of
    every epoch of the width phase (after `WidthSchedule` has set it), as
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
    """

    def __init__(self, aug_loss, num_groups, check):
        super().__init__()
        self.aug_loss = aug_loss
        self.num_groups = num_groups
        self.check = check

    def on_epoch_begin(self, epoch, logs=None):
        self.aug_loss.reset_state()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.num_groups:
            return
        aug = float(self.aug_loss.result())
        logs["netaug_aug_loss"] = aug
        task = logs.get("task_loss")
        if task:
            logs["netaug_loss_ratio"] = aug / float(task)
        epochs = (self.params or {}).get("epochs") or 1
        self.check(epoch, epochs, aug, task)
