"""The extension point through which every training-time technique plugs in."""

import keras

from keras_compact.api_export import keras_compact_export


@keras_compact_export
class Technique(keras.layers.Layer):
    """Base class of a training-time technique used by `Trainer`.

    A technique adds training-only parts around the user's compact model
    (a teacher, masks, auxiliary branches, an augmented super-network) and
    never keeps a private copy of it. It is a Keras layer so that its state
    (masks, thresholds, counters) lives in weights that `.keras` files and
    `keras.callbacks.BackupAndRestore` checkpoints save and restore, and so
    that it serializes through `get_config` like any layer.

    `Trainer` calls the hooks below; each has a do-nothing default, so a
    technique overrides only what it needs:

    - `attach(trainer)`: once, from `Trainer.__init__`: build training-only
      layers and state around `trainer.compact_model`.
    - `validate(trainer)`: at the start of every `fit`: raise a clear error
      for a missing piece instead of failing mid-training.
    - `callbacks(trainer)`: callbacks the technique needs for coarse events
      (epoch ends, phase switches); `Trainer.fit` adds them itself, so a
      user can never forget one.
    - `forward(trainer, x)`: a training forward pass that also returns
      extra tensors (e.g. auxiliary taps). At most one technique of a trainer
      may override it, unless the others set `forward_optional`.
    - `loss_terms(trainer, x, y, y_pred, sample_weight)`: the technique's
      weighted loss terms, a dict `{name: scalar}`; each is tracked as a
      metric of that name.
    - `transform_gradients(trainer, grads, variables)`: edit gradients before
      the optimizer step (e.g. mask them).
    - `after_step(trainer)`: after the optimizer step, inside the compiled
      train step (e.g. re-apply masks, reallocate weights).
    - `strip(trainer, model)`: return the deployable model; must not change
      inference outputs.

    Attributes:
        task_loss_weight: factor on the compiled task loss (a distillation
            technique lowers it); the product over techniques is used.
        term_names: names of the loss terms `loss_terms` returns, declared
            up front so that their metrics exist before tracing.
        forward_optional: `True` when the technique's `forward` only saves
            work (e.g. returns taps computed in the same pass) and its
            `loss_terms` copes when `trainer.extras` is not its own: another
            technique may then own the forward pass, and this `forward` is
            skipped.
    """

    task_loss_weight = 1.0
    term_names = ()
    forward_optional = False

    def build(self, input_shape=None):
        # State is created in `__init__` / `attach`, never from call shapes.
        self.built = True

    def attach(self, trainer):
        pass

    def validate(self, trainer):
        pass

    def callbacks(self, trainer):
        return []

    def forward(self, trainer, x):
        return None

    def loss_terms(self, trainer, x, y, y_pred, sample_weight):
        return {}

    def transform_gradients(self, trainer, grads, variables):
        return grads

    def after_step(self, trainer):
        pass

    def strip(self, trainer, model):
        return model

    def call(self, inputs):
        raise TypeError(
            f"{type(self).__name__} is a training technique, not a layer to "
            "call on tensors: pass it to `keras_compact.Trainer(model, "
            "techniques=[...])`."
        )

    @classmethod
    def _overrides(cls, name):
        return getattr(cls, name) is not getattr(Technique, name)
