"""`TechniqueScalars`: technique state into the epoch logs (TensorBoard)."""

import keras
import numpy as np


class TechniqueScalars(keras.callbacks.Callback):
    """Adds the techniques' state that is not a loss to the epoch logs.

    `Trainer` already logs every technique's loss terms (`task_loss`,
    `distillation_loss`, `aux_loss`, `netaug_loss`, ...) as metrics, and the
    techniques' own callbacks add `sparse/density`, `sparse/density/<layer>`,
    `sparse/threshold`, `netaug_aug_loss` and `netaug_loss_ratio`. This
    callback fills the remaining gaps at every epoch end:

    - `auxiliary/gate/<head>/<source>_to_<node>`: the search weight
      `sigmoid(beta)` of every candidate edge of an `AuxiliaryModule`
      searching its connections, and `auxiliary/search_steps`.

    A technique's own values are never overwritten.

    Whatever is in the epoch logs reaches the callbacks after it:
    place it before `keras.callbacks.TensorBoard` and `CSVLogger`.
    It does nothing for a plain model (one without `techniques`).

    Example:

    ```python
    trainer.fit(
        train_ds,
        epochs=5,
        callbacks=[
            keras_compact.callbacks.TechniqueScalars(),
            keras.callbacks.TensorBoard("logs"),
        ],
    )
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for technique in getattr(self.model, "techniques", None) or ():
            for key, value in technique_scalars(technique).items():
                logs.setdefault(key, value)


def technique_scalars(technique):
    """The scalars `TechniqueScalars` logs for one technique.

    Args:
        technique: a `keras_compact.Technique`.

    Returns:
        A dict of name -> float (empty for a technique with nothing to add).
    """
    scalars = {}
    boosters = getattr(technique, "boosters", None)
    if boosters and getattr(technique, "searching", False):
        heads = list(getattr(technique, "heads", []))
        for k, booster in enumerate(boosters):
            if not getattr(booster, "search", False):
                continue
            head = heads[k] if k < len(heads) else str(k)
            names = technique.tap_lists.get(head, [])
            for j, gates in enumerate(booster.edge_gates()):
                gates = np.asarray(keras.ops.convert_to_numpy(gates))
                for e, i in enumerate(booster.extras[j]):
                    src = names[i] if i < len(names) else str(i)
                    dst = names[j] if j < len(names) else str(j)
                    key = f"auxiliary/gate/{head}/{src}_to_{dst}"
                    scalars[key] = float(gates[e])
        steps = getattr(technique, "search_steps", None)
        if steps is not None:
            scalars["auxiliary/search_steps"] = float(
                keras.ops.convert_to_numpy(steps)
            )
    return scalars
