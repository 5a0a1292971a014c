"""`SparsityMonitor`: the coarse-event callback of `SparseTraining`."""

import keras
import numpy as np


class SparsityMonitor(keras.callbacks.Callback):
    """Epoch bookkeeping and logging for `SparseTraining`.

    `Trainer.fit` installs it (ahead of the user's callbacks, so that
    TensorBoard, CSVLogger and History see its entries); there is no need
    to pass it by hand. It only acts on coarse events, never per batch, so
    Keras keeps dispatching steps asynchronously:

    - `on_train_begin`: resolves SET/RigL's last update step from the
      length of training (`end_fraction * epochs * steps_per_epoch`) when
      the policy has no explicit `end_step`;
    - `on_epoch_begin`: stores the epoch index in the technique (DSR's
      period schedule and stop epoch are functions of the epoch);
    - `on_epoch_end`: adds `sparse/density`, `sparse/density/<layer>`,
      `sparse/threshold` (DSR), `sparse/dropped` and `sparse/updates` to
      the epoch logs and appends the same record to `technique.history`.

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

    def on_train_begin(self, logs=None):
        t = self.technique
        policy = t.policy
        if not policy.needs_end_step or policy.is_static:
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
        t.end_step.assign(
            max(1, int(policy.end_fraction * int(epochs) * int(steps)))
        )

    def on_epoch_begin(self, epoch, logs=None):
        self.technique.epoch.assign(int(epoch))

    def on_epoch_end(self, epoch, logs=None):
        t = self.technique
        densities = t.layer_densities()
        sizes = {w.key: w.size for w in t._weights}
        total = sum(sizes.values())
        overall = sum(densities[k] * sizes[k] for k in densities) / total
        record = {
            "epoch": int(epoch),
            "sparse/density": overall,
            "sparse/dropped": int(
                np.asarray(keras.ops.convert_to_numpy(t.dropped))
            ),
            "sparse/updates": int(
                np.asarray(keras.ops.convert_to_numpy(t.update_count))
            ),
        }
        h = t.threshold_value()
        if h is not None:
            record["sparse/threshold"] = h
        if t.log_layer_density:
            for k, d in densities.items():
                record[f"sparse/density/{k}"] = d
        t.history.append(record)
        if logs is not None:
            logs.update({k: v for k, v in record.items() if k != "epoch"})
