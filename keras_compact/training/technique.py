"""The extension point through which every training-time technique plugs in."""

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.training.report import TechniqueReport


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
    technique overrides only what it needs.

    Set-up hooks (Python, outside the train step):

    - `attach(trainer)`: once, from `Trainer.__init__`: build training-only
      layers and state around `trainer.compact_model`.
    - `tensors(trainer)`: the intermediate tensors of the compact model
      that the technique reads in its step hooks, declared up front as
      `{key: tensor or layer name}` (symbolic tensors of the compact
      model's functional graph, `keras_compact.graph.walk.as_functional`,
      or names of single-call layers whose output is meant). The trainer
      builds one training view of the compact model that returns its
      outputs and every declared tensor in one forward pass; in the step
      they arrive as `ctx.tensors[technique.name][key]`.
    - `training_graph(trainer, model)`: for a technique that trains a
      different graph over the compact model's variables (fake
      quantization, re-parameterisation branches): return that functional
      model (same inputs and outputs as `model`, the compact model's
      functional view). At most one technique of a trainer may override
      it; the trainer builds its training view from the returned graph,
      and the tensors declared by other techniques are taken from it by
      layer name. `training_graph_active(ctx)` may return a boolean
      scalar tensor to switch between the replaced and the original graph
      per step (default `True`: always the replaced one).
    - `held_out_data(trainer)`: a `tf.data.Dataset` of held-out batches
      (or None). `Trainer.fit` zips it, repeated, with the training data,
      so that one held-out batch arrives with each training batch as
      `ctx.held_out[technique.name]`.
    - `validate(trainer)`: at the start of every `fit`: raise a clear error
      for a missing piece instead of failing mid-training.
    - `callbacks(trainer)`: callbacks the technique needs for coarse events
      (epoch ends, phase switches); `Trainer.fit` adds them itself, so a
      user can never forget one.
    - `after_fit(trainer)`: at the end of every `fit`, also when it raises
      or is interrupted (`KeyboardInterrupt`): leave the compact model in
      its deployable state (e.g. folded re-parameterisation branches).
    - `strip(trainer, model)`: return the deployable model; must not change
      inference outputs.

    Step hooks (traced inside the train step; `ctx` is the step's
    `keras_compact.training.StepContext`):

    - `loss_terms(ctx)`: the technique's weighted loss terms, a dict
      `{name: scalar}`; each is tracked as a metric of that name. `ctx`
      holds the batch, `y_pred`, the declared `tensors` and the `terms`
      returned so far.
    - `transform_gradients(ctx, grads)`: edit the gradients (aligned with
      `ctx.variables`) before the optimizer step (e.g. mask them); return
      the new list. `ctx.dense_gradients(variables)` gives dense gradients
      summed over the replicas.
    - `after_step(ctx)`: after the optimizer step, inside the compiled
      train step (e.g. re-apply masks, reallocate weights, an
      architecture step on `ctx.held_out`). Values computed by an earlier
      hook of the same step come through `ctx.state(self)`.

    Attributes:
        task_loss_weight: factor on the compiled task loss (a distillation
            technique lowers it); the product over techniques is used.
        term_names: names of the loss terms `loss_terms` returns, declared
            up front so that their metrics exist before tracing.
        extra_forward_passes: forward passes of (part of) the compact
            model that the technique runs in its step hooks besides the
            training forward pass (NetAug's augmented model: 1). The
            trainer sums them in `Trainer.forward_passes`.
    """

    task_loss_weight = 1.0
    term_names = ()
    extra_forward_passes = 0

    def build(self, input_shape=None):
        # State is created in `__init__` / `attach`, never from call shapes.
        self.built = True

    def attach(self, trainer):
        pass

    def tensors(self, trainer):
        return {}

    def training_graph(self, trainer, model):
        return model

    def training_graph_active(self, ctx):
        return True

    def held_out_data(self, trainer):
        return None

    def validate(self, trainer):
        pass

    def callbacks(self, trainer):
        return []

    def loss_terms(self, ctx):
        return {}

    def transform_gradients(self, ctx, grads):
        return grads

    def after_step(self, ctx):
        pass

    def after_fit(self, trainer):
        pass

    def strip(self, trainer, model):
        return model

    def summary(self, print_fn=None):
        """Prints what the technique did to the model and returns it.

        Args:
            print_fn: called with each line (`print` by default), as in
                `keras.Model.summary`.

        Returns:
            A `keras_compact.TechniqueReport` (applied / kept / skipped,
            with reasons).
        """
        return self._report().print(print_fn)

    def _report(self):
        """The `TechniqueReport` that `summary` prints (override it)."""
        return TechniqueReport(type(self).__name__)

    def call(self, inputs):
        raise TypeError(
            f"{type(self).__name__} is a training technique, not a layer to "
            "call on tensors: pass it to `keras_compact.Trainer(model, "
            "techniques=[...])`."
        )

    @classmethod
    def _overrides(cls, name):
        return getattr(cls, name) is not getattr(Technique, name)
