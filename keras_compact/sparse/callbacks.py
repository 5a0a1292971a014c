"""Keras callbacks of `SparseTraining`: `SparsityMonitor`."""

import math
import warnings

import keras

from keras_compact.sparse import stats

#: Fewest iterations between two mask updates that the references use
#: (DSR: 100 to 800; RigL and SET as compared in RigL: 100). Regrown
#: weights start at zero and are judged by |w| at the next update.
MIN_UPDATE_SPACING = 100

#: Fraction of regrown weights pruned again by the next update above which
#: the monitor warns (once): the updates come too soon for them to grow.
MAX_REGROWN_PRUNED = 0.5


class SparsityMonitor(keras.callbacks.Callback):
    """Epoch bookkeeping and logging for `SparseTraining`.

    `Trainer.fit` installs it (ahead of the user's callbacks, so that
    TensorBoard, CSVLogger and History see its entries); there is no need
    to pass it by hand. It only acts on coarse events, never per batch, so
    Keras keeps dispatching steps asynchronously:

    - `on_train_begin`: resolves SET/RigL's last update step from the
      length of training (`end_fraction * epochs * steps_per_epoch`) when
      the policy has no explicit `end_step`, and warns once (per
      technique) if the policy updates the masks more often than every
      `MIN_UPDATE_SPACING` (100) iterations, the references' shortest
      spacing, giving the spacing in epochs too when the number of steps
      per epoch is known;
    - `on_epoch_begin`: stores the epoch index in the technique (DSR's
      period schedule and stop epoch are functions of the epoch);
    - `on_epoch_end`: adds `sparse/density`, `sparse/density/<layer>`,
      `sparse/threshold` (DSR), `sparse/dropped`, `sparse/updates` and
      `sparse/regrown_pruned` to the epoch logs and appends the same
      record to `technique.history`. `sparse/regrown_pruned` is the
      fraction of the weights regrown by one update that the next update
      pruned again, over the updates of this epoch (`nan` if no regrown
      weight was judged during the epoch); above `MAX_REGROWN_PRUNED`
      (0.5) the monitor warns once.

    Args:
        technique: the `SparseTraining` technique to serve.

    Raises:
        ValueError: at the start of `fit`, if SET/RigL need the training
            length but the number of steps per epoch is unknown (pass
            `steps_per_epoch` to `fit` or `end_step` to the policy).
    """

    def __init__(self, technique):
        super().__init__()
        self.technique = technique
        self._seen = (0, 0)

    def on_train_begin(self, logs=None):
        t = self.technique
        policy = t.policy
        if policy.is_static:
            return
        self._check_spacing()
        if not policy.needs_end_step:
            return
        if getattr(policy, "end_step", None) is not None:
            t.end_step.assign(int(policy.end_step))
            return
        epochs = self.params.get("epochs")
        steps = self.params.get("steps")
        if not epochs or not steps:
            raise ValueError(
                f"{type(policy).__name__} stops updating the masks at "
                "`end_fraction` of training, but the number of steps per "
                "epoch is unknown. Pass `steps_per_epoch` to `fit` or an "
                "explicit `end_step` to the policy. Received: "
                f"epochs={epochs}, steps={steps}, end_step=None"
            )
        end = max(1, int(policy.end_fraction * int(epochs) * int(steps)))
        policy.check_end_step(end)
        t.end_step.assign(end)

    def _warn_once(self, key, message):
        t = self.technique
        if key in t._warned:
            return
        t._warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=2)

    def _check_spacing(self):
        policy = self.technique.policy
        params = self.params or {}
        spacing = policy.update_spacing(params.get("epochs"))
        if spacing is None or spacing >= MIN_UPDATE_SPACING:
            return
        steps = params.get("steps")
        per_epoch = (
            f" ({spacing / steps:.2g} of an epoch of {steps} steps)"
            if steps
            else ""
        )
        self._warn_once(
            "spacing",
            f"{type(policy).__name__} updates the masks every {spacing} "
            f"iterations{per_epoch}. Regrown weights start at zero and are "
            f"judged by |w| {spacing} steps later, so most of them are "
            "pruned again before they can grow; the references wait at "
            f"least {MIN_UPDATE_SPACING} iterations (DSR: 100-800, RigL and "
            "SET: 100). Space the updates further apart (`period` for DSR, "
            "`update_interval` for SET/RigL) and watch "
            "`sparse/regrown_pruned`.",
        )

    def on_epoch_begin(self, epoch, logs=None):
        t = self.technique
        t.epoch.assign(int(epoch))
        # Read here, not at train begin: BackupAndRestore restores the
        # counters after this callback's `on_train_begin`.
        self._seen = t.regrown_pruned_counts()

    def on_epoch_end(self, epoch, logs=None):
        t = self.technique
        record, (d_pruned, d_judged) = stats.epoch_record(
            epoch,
            t._weights,
            t._counters,
            t.policy,
            self._seen,
            t.log_layer_density,
        )
        fraction = record.get("sparse/regrown_pruned", math.nan)
        if fraction > MAX_REGROWN_PRUNED:
            self._warn_once(
                "regrown_pruned",
                f"In epoch {epoch}, {d_pruned} of the {d_judged} "
                "weights regrown by an update "
                f"({fraction:.0%}) were pruned again by the next one: "
                "the updates come too soon for regrown weights to grow "
                "(they start at zero). Space the updates further apart "
                "(`period` for DSR, `update_interval` for SET/RigL).",
            )
        t.history.append(record)
        if logs is not None:
            logs.update({k: v for k, v in record.items() if k != "epoch"})
