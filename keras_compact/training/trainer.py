"""`Trainer`: the one `keras.Model` through which techniques are trained."""

import keras

from keras_compact import compat
from keras_compact.api_export import keras_compact_export
from keras_compact.training import tensorflow_step
from keras_compact.training.technique import Technique
from keras_compact.training.tensorflow_step import rescale


class NonFiniteTrainingError(FloatingPointError):
    """Raised by `Trainer.fit` at the first non-finite loss or gradient.

    The step is stopped before the optimizer update and before any
    technique writes its state (masks, thresholds, moving statistics), so
    the model and the techniques hold the values of the last finite step.

    Non-finite inputs are caught before the forward pass. A non-finite
    value that first appears inside the forward pass (an overflow) is caught
    at the loss or the gradients, after the forward pass has updated the
    batch-normalization moving statistics of this step.

    Attributes:
        step: the 0-based optimizer step that produced non-finite values.
        terms: names of the non-finite loss terms (may be empty).
        gradients: whether some gradient was non-finite.
        inputs: whether the batch's inputs were non-finite.
    """

    def __init__(self, step, terms, gradients, inputs=False):
        self.step, self.terms = step, terms
        self.gradients, self.inputs = gradients, inputs
        parts = []
        if inputs:
            parts.append("inputs")
        if terms:
            parts.append(f"loss term(s) {', '.join(terms)}")
        if gradients:
            parts.append("gradient(s)")
        super().__init__(
            f"Training stopped at step {step}: non-finite (NaN or inf) "
            f"{' and '.join(parts) or 'values'}. Nothing of this step was "
            "applied: weights and technique state are those of the last "
            "finite step. Check the inputs and labels of this batch for "
            "NaN/inf, and the learning rate."
        )


def _raise_non_finite(error):
    """Turns the train step's failed finiteness assertion into a
    `NonFiniteTrainingError`; returns None for any other error."""
    import re

    text = str(error)
    if tensorflow_step.NON_FINITE not in text:
        return None
    fields = re.findall(
        r"\[([^\[\]]*)\]", text.split(tensorflow_step.NON_FINITE, 1)[1]
    )
    step = int(fields[0]) if fields and fields[0].isdigit() else -1
    pairs = list(zip(fields[1::2], fields[2::2]))
    bad = [name for name, ok in pairs if ok in ("0", "false", "False")]
    terms = [name for name in bad if name not in ("gradients", "inputs")]
    raise NonFiniteTrainingError(
        step, terms, "gradients" in bad, "inputs" in bad
    ) from None


@keras_compact_export
class Trainer(keras.Model):
    """Trains a compact model with training-time techniques, via `fit`.

    The trainer wraps the user's compact model without copying it: `call`
    forwards to it, so `evaluate` and `predict` measure exactly the model
    that ships, and after `fit` the user's model object holds the trained
    weights. Each technique adds its loss terms (tracked as metrics named
    after them), may edit gradients and may update its own state after every
    optimizer step. `strip()` returns the deployable compact model.

    Args:
        model: the compact `keras.Model` to train (the single source of
            truth: it is what `strip()` returns and what gets exported).
        techniques: a list of `keras_compact.Technique` instances, applied in
            order (e.g. `[Distillation(teacher)]`).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: if `model` is not a Keras model or a technique is not a
            `Technique`.
        ValueError: if two techniques both replace the forward pass, or two
            techniques declare the same loss term name.

    Example:

    ```python
    student = keras_compact.models.get_model("tiny_cnn")
    teacher = ...  # a trained, wider model with the same outputs
    trainer = keras_compact.Trainer(
        student, techniques=[keras_compact.Distillation(teacher)]
    )
    trainer.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer.fit(train_ds, epochs=5)
    compact = trainer.strip()  # the user's model, ready to export
    ```
    """

    def __init__(self, model, techniques=None, **kwargs):
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Expected `model` to be a `keras.Model`. Received: "
                f"model={model!r} of type {type(model).__name__}"
            )
        techniques = list(techniques or [])
        for t in techniques:
            if not isinstance(t, Technique):
                raise TypeError(
                    "Expected every element of `techniques` to be a "
                    "`keras_compact.Technique`. Received: "
                    f"{t!r} of type {type(t).__name__}"
                )
        forwards = [
            i for i, t in enumerate(techniques) if type(t)._overrides("forward")
        ]
        required = [i for i in forwards if not techniques[i].forward_optional]
        forward_owners = [techniques[i].name for i in required]
        if len(forward_owners) > 1:
            raise ValueError(
                "At most one technique may replace the forward pass. "
                f"Received several: {forward_owners}"
            )
        kwargs.setdefault("name", f"{model.name}_trainer")
        super().__init__(**kwargs)
        self.compact_model = model
        self.techniques = techniques
        self._extras = None
        # Techniques whose `forward` runs: the one that must own the forward
        # pass, else those whose forward is optional (first non-None wins).
        self._forward_index = tuple(required or forwards)
        for t in techniques:
            t.attach(self)
        names = ["task_loss"]
        for t in techniques:
            for n in t.term_names:
                if n in names:
                    raise ValueError(
                        f"Two loss terms are named {n!r}; give the "
                        "techniques distinct names."
                    )
                names.append(n)
        self.term_trackers = {n: keras.metrics.Mean(name=n) for n in names}
        if model.built:
            # Everything is built already: `fit` callbacks that need a built
            # model (BackupAndRestore) work before the first batch.
            self.built = True

    def build(self, input_shape=None):
        # The compact model and the techniques' parts are built in
        # `__init__`; an unbuilt (subclassed) compact model builds here.
        if not self.compact_model.built and input_shape is not None:
            self.compact_model.build(input_shape)
        self.built = True

    # ------------------------------------------------------------------
    # Forward and loss
    # ------------------------------------------------------------------
    def call(self, inputs, training=False):
        self._extras = None
        if training:
            for i in self._forward_index:
                out = self.techniques[i].forward(self, inputs)
                if out is not None:
                    y_pred, self._extras = out
                    return y_pred
        return self.compact_model(inputs, training=training)

    @property
    def extras(self):
        """Extra tensors of the current training forward pass (or None)."""
        return self._extras

    def task_loss(self, y, y_pred, sample_weight=None):
        """The compiled loss of the task on `y_pred` (used by techniques).

        With several outputs, Keras' compiled loss also records each output's
        loss in the per-output metrics it logs (`<output>_loss`). A
        technique's extra prediction (an auxiliary or augmented head) must
        not pollute them, so it is scored by an untracked copy of the
        compiled loss (same losses and loss weights).
        """
        compiled = compat.compiled_loss(self)
        if compiled is None:
            raise ValueError(
                "The trainer has no loss: pass `loss=` to `compile()`."
            )
        if not keras.tree.is_nested(y_pred):
            return compiled(y, y_pred, sample_weight)
        cached = getattr(self, "_untracked_loss", None)
        if cached is None or cached[0] != id(compiled):
            cached = (id(compiled), compat.untracked_loss_copy(compiled))
            self._untracked_loss = cached
        return cached[1](y, y_pred, sample_weight)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        task = super().compute_loss(
            x, y, y_pred, sample_weight, training=training
        )
        if not training:
            return task
        weight = 1.0
        for t in self.techniques:
            weight *= t.task_loss_weight
        # Keras divides the compiled loss by the replica count; the terms
        # below get the same scale so that the gradients sum correctly, and
        # the trackers log unscaled values.
        replicas = tensorflow_step.replicas()
        self._step_terms = {"task_loss": task}
        self.term_trackers["task_loss"].update_state(rescale(task, replicas))
        total = task if weight == 1.0 else keras.ops.multiply(weight, task)
        for t in self.techniques:
            terms = t.loss_terms(self, x, y, y_pred, sample_weight)
            for name, value in terms.items():
                if name not in self.term_trackers:
                    raise ValueError(
                        f"Technique {t.name!r} returned the loss term "
                        f"{name!r} that it did not declare in `term_names` "
                        f"({list(t.term_names)})."
                    )
                value = keras.ops.convert_to_tensor(value)
                self._step_terms[name] = value
                self.term_trackers[name].update_state(value)
                total = keras.ops.add(total, rescale(value, 1.0 / replicas))
        return total

    # ------------------------------------------------------------------
    # Training step (TensorFlow backend): gradient and post-step hooks
    # ------------------------------------------------------------------
    @property
    def step_terms(self):
        """`{name: scalar}` of the loss terms of the step being traced
        (the task loss and every technique's terms)."""
        return dict(getattr(self, "_step_terms", {}))

    def train_step(self, data):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                "keras_compact.Trainer trains with the TensorFlow backend. "
                f"Received: KERAS_BACKEND={keras.backend.backend()!r}"
            )
        return tensorflow_step.train_step(self, data)

    def test_step(self, data):
        # The technique terms exist only in training: evaluation reports the
        # compact model's own loss and metrics, nothing else.
        logs = super().test_step(data)
        return {k: v for k, v in logs.items() if k not in self.term_trackers}

    def fit(self, *args, **kwargs):
        for t in self.techniques:
            t.validate(self)
        # Create the metric and optimizer state (accuracy counters, momentum
        # slots) before the train step is traced: created lazily inside the
        # first trace, they make TensorFlow trace the whole step twice.
        # (Under a tf.distribute strategy Keras builds them itself.)
        if (
            keras.backend.backend() == "tensorflow"
            and getattr(self, "_distribute_strategy", None) is None
        ):
            x = args[0] if args else kwargs.get("x")
            spec = getattr(x, "element_spec", None)  # a tf.data.Dataset
            if spec is not None and getattr(self, "compiled", False):
                compat.symbolic_build(self, spec)
            optimizer = getattr(self, "optimizer", None)
            if optimizer is not None and not optimizer.built:
                optimizer.build(self.trainable_weights)
        extra = [cb for t in self.techniques for cb in t.callbacks(self)]
        if extra:
            # Technique callbacks go first, so that what they add to the
            # epoch logs reaches the user's TensorBoard / CSVLogger.
            # `callbacks` is fit's 6th positional argument.
            if len(args) > 5:
                args = list(args)
                args[5] = extra + list(args[5] or [])
            else:
                kwargs["callbacks"] = extra + list(
                    kwargs.get("callbacks") or []
                )
        try:
            return super().fit(*args, **kwargs)
        except Exception as error:  # a failed finiteness check, or not
            _raise_non_finite(error)
            raise

    # ------------------------------------------------------------------
    # Deployment and serialization
    # ------------------------------------------------------------------
    def strip(self):
        """Returns the deployable compact model.

        Each technique removes what it added, last applied first. The result
        is the user's own model object (or an equal plain model), whose
        inference outputs equal this trainer's `predict`.
        """
        model = self.compact_model
        for t in reversed(self.techniques):
            model = t.strip(self, model)
        return model

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.compact_model),
            "techniques": [
                keras.saving.serialize_keras_object(t) for t in self.techniques
            ],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        techniques = [
            keras.saving.deserialize_keras_object(t)
            for t in config.pop("techniques", [])
        ]
        return cls(model, techniques=techniques, **config)
