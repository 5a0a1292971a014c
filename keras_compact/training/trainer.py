"""`Trainer`: the one `keras.Model` through which techniques are trained."""

import keras

from keras_compact import compat
from keras_compact.api_export import keras_compact_export
from keras_compact.graph.walk import ModelGraph, as_functional
from keras_compact.training import tensorflow_step
from keras_compact.training.step_context import StepContext
from keras_compact.training.technique import Technique
from keras_compact.training.tensorflow_step import rescale
from keras_compact.training.untracked import Untracked


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


def _resolve_tensor(graph, technique, key, value):
    """The symbolic tensor of the compact model's graph that a technique
    declared (a tensor of the graph, or a layer name)."""
    if isinstance(value, str):
        nodes = _calls(graph, value)
        if len(nodes) != 1 or len(nodes[0].outputs) != 1:
            raise ValueError(
                f"Expected `tensors()` of technique {technique!r} to name a "
                "layer called once, with one output, in model "
                f"{graph.model.name!r}. Received: {key}={value!r} "
                f"({len(nodes)} calls)"
            )
        return nodes[0].outputs[0]
    if not isinstance(value, keras.KerasTensor):
        raise TypeError(
            f"Expected `tensors()` of technique {technique!r} to map keys to "
            "symbolic tensors of the compact model or layer names. Received: "
            f"{key}={value!r} of type {type(value).__name__}"
        )
    graph.producer(value)  # a ValueError for a tensor of another graph
    return value


def _calls(graph, name):
    try:
        return graph.nodes_of(name)
    except ValueError:
        return []


def _map_tensor(graph, replaced, tensor, technique, replacer):
    """The tensor of the replaced training graph that corresponds to
    `tensor` of the compact model's graph: the same output of the same
    call of the layer with the same name."""
    node = graph.producer(tensor)
    call = graph.nodes_of(node.name).index(node)
    index = next(i for i, t in enumerate(node.outputs) if t is tensor)
    if node.is_input:
        k = next(i for i, t in enumerate(graph.inputs) if t is tensor)
        return replaced.inputs[k]
    nodes = _calls(replaced, node.name)
    if len(nodes) <= call or len(nodes[call].outputs) <= index:
        raise ValueError(
            f"Technique {technique!r} reads the output of layer "
            f"{node.name!r}, which technique {replacer.name!r} removes from "
            "its training graph (`training_graph`). Expected the declared "
            "layers to be kept by the replaced graph. Received: "
            f"techniques {technique!r} and {replacer.name!r} together; "
            "declare other layers, or train with one, then the other."
        )
    return nodes[call].outputs[index]


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
        ValueError: if two techniques both replace the training graph, a
            technique declares a tensor that the replaced graph lacks, or
            two techniques declare the same loss term name.

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
        kwargs.setdefault("name", f"{model.name}_trainer")
        super().__init__(**kwargs)
        self.compact_model = model
        self.techniques = techniques
        # The training views share the compact model's layers (saved once,
        # with the model): kept out of Keras tracking.
        self._views = Untracked(
            replacer=None, plain=None, replaced=None, declared=False
        )
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
        self._build_training_views()
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
    # Training view: one forward pass for the outputs and declared tensors
    # ------------------------------------------------------------------
    def _build_training_views(self):
        """Builds the training view(s) of the compact model (see
        `training_forward`), or none when the compact model itself is
        enough (no declared tensors, no replaced graph)."""
        replacers = [
            t for t in self.techniques if type(t)._overrides("training_graph")
        ]
        if len(replacers) > 1:
            raise ValueError(
                "At most one technique may replace the training graph. "
                "Expected one technique overriding `training_graph`. "
                f"Received: {[t.name for t in replacers]} (techniques "
                f"{', '.join(repr(t.name) for t in replacers)} both replace "
                "it; train with one, then fine-tune with the other)"
            )
        declared = {}
        for t in self.techniques:
            spec = dict(t.tensors(self) or {})
            if spec:
                declared[t.name] = spec
        views = self._views
        views.replacer = replacers[0] if replacers else None
        views.plain = views.replaced = None
        views.declared = bool(declared)
        if not declared and views.replacer is None:
            return
        base = as_functional(self.compact_model)
        graph = ModelGraph(base)
        declared = {
            name: {
                key: _resolve_tensor(graph, name, key, value)
                for key, value in spec.items()
            }
            for name, spec in declared.items()
        }
        if declared:
            views.plain = keras.Model(
                base.input,
                {"outputs": base.output, "tensors": declared},
                name=f"{self.compact_model.name}_training_view",
            )
        if views.replacer is None:
            return
        replaced = views.replacer.training_graph(self, base)
        if declared:
            replaced_graph = ModelGraph(replaced)
            mapped = {
                name: {
                    key: _map_tensor(
                        graph, replaced_graph, tensor, name, views.replacer
                    )
                    for key, tensor in spec.items()
                }
                for name, spec in declared.items()
            }
            replaced = keras.Model(
                replaced.input,
                {"outputs": replaced.output, "tensors": mapped},
                name=f"{replaced.name}_training_view",
            )
        views.replaced = replaced

    @property
    def forward_passes(self):
        """Forward passes of (part of) the compact model per train step:
        the training forward pass plus each technique's declared
        `extra_forward_passes`."""
        return 1 + sum(t.extra_forward_passes for t in self.techniques)

    def training_forward(self, x, ctx=None):
        """The training forward pass: `(y_pred, tensors)`.

        One call of the training view: the compact model (or the graph a
        technique put in its place, `Technique.training_graph`) in
        training mode, returning its predictions and
        `{technique name: {key: tensor}}` of every declared tensor.

        Args:
            x: a batch of inputs.
            ctx: the step's `StepContext`, passed to the replacing
                technique's `training_graph_active` (default: a context of
                `x` alone).
        """
        views = self._views

        def run(view):
            if view is None:
                return {"outputs": self.compact_model(x, training=True)}
            out = view(x, training=True)
            return out if views.declared else {"outputs": out}

        if views.replacer is None:
            out = run(views.plain)
        else:
            if ctx is None:
                ctx = StepContext(self, x)
            on = views.replacer.training_graph_active(ctx)
            if on is True:
                out = run(views.replaced)
            else:
                out = keras.ops.cond(
                    on,
                    lambda: run(views.replaced),
                    lambda: run(views.plain),
                )
        return out["outputs"], dict(out.get("tensors", {}))

    # ------------------------------------------------------------------
    # Forward and loss
    # ------------------------------------------------------------------
    def call(self, inputs, training=False):
        return self.compact_model(inputs, training=training)

    def task_loss(self, y, y_pred, sample_weight=None):
        """The compiled loss of the task on `y_pred` (used by techniques).

        With several outputs, Keras' compiled loss also records each output's
        loss in the per-output metrics it logs (`<output>_loss`). A
        technique's extra prediction (an auxiliary or augmented head) must
        not pollute them, so it is scored by an untracked copy of the
        compiled loss (same losses and loss weights).

        The value is the replica batch's own under a `tf.distribute`
        strategy (not divided by the replica count as Keras' losses are):
        a loss term, which `step_loss` scales once.
        """
        compiled = compat.compiled_loss(self)
        if compiled is None:
            raise ValueError(
                "The trainer has no loss: pass `loss=` to `compile()`."
            )
        if not keras.tree.is_nested(y_pred):
            loss = compiled(y, y_pred, sample_weight)
        else:
            cached = getattr(self, "_untracked_loss", None)
            if cached is None or cached[0] != id(compiled):
                cached = (id(compiled), compat.untracked_loss_copy(compiled))
                self._untracked_loss = cached
            loss = cached[1](y, y_pred, sample_weight)
        return tensorflow_step.unscale_loss(loss)

    def step_loss(self, ctx):
        """The training loss of the step of `ctx` (a `StepContext` with
        `y_pred` and `tensors` set): the compiled task loss, weighted by
        the techniques' `task_loss_weight`, plus every technique's
        `loss_terms(ctx)`. Fills `ctx.terms` and the term trackers."""
        task = super().compute_loss(
            ctx.x, ctx.y, ctx.y_pred, ctx.sample_weight, training=True
        )
        weight = 1.0
        for t in self.techniques:
            weight *= t.task_loss_weight
        # Keras divides the compiled loss by the replica count; the terms
        # below get the same scale so that the gradients sum correctly, and
        # the trackers log unscaled values.
        replicas = tensorflow_step.replicas()
        ctx.terms["task_loss"] = task
        self.term_trackers["task_loss"].update_state(rescale(task, replicas))
        total = task if weight == 1.0 else keras.ops.multiply(weight, task)
        for t in self.techniques:
            terms = t.loss_terms(ctx)
            for name, value in terms.items():
                if name not in self.term_trackers:
                    raise ValueError(
                        f"Technique {t.name!r} returned the loss term "
                        f"{name!r} that it did not declare in `term_names` "
                        f"({list(t.term_names)})."
                    )
                value = keras.ops.convert_to_tensor(value)
                ctx.terms[name] = value
                self.term_trackers[name].update_state(value)
                total = keras.ops.add(total, rescale(value, 1.0 / replicas))
        return total

    # ------------------------------------------------------------------
    # Training step (TensorFlow backend): gradient and post-step hooks
    # ------------------------------------------------------------------
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

    def _with_held_out(self, args, kwargs):
        """`fit`'s arguments with each technique's held-out data zipped,
        repeated, with the training data: each training batch then comes
        with one held-out batch per technique (`StepContext.held_out`)."""
        sources = []
        for t in self.techniques:
            data = t.held_out_data(self)
            if data is not None:
                sources.append((t.name, data))
        self._held_out_names = tuple(name for name, _ in sources)
        if not sources:
            return args, kwargs
        import inspect

        import tensorflow as tf

        bound = inspect.signature(keras.Model.fit).bind(None, *args, **kwargs)
        kw = dict(bound.arguments)
        kw.pop("self", None)
        kw.update(kw.pop("kwargs", {}))
        x = kw.get("x")
        if not isinstance(x, tf.data.Dataset):
            x = self._arrays_as_dataset(kw, names=self._held_out_names)
        held = tuple(data.repeat() for _, data in sources)
        kw["x"] = tf.data.Dataset.zip((x, held))
        return (), kw

    @staticmethod
    def _arrays_as_dataset(kw, names):
        """A `tf.data.Dataset` for `fit(x, y, ...)` given as arrays (what
        Keras would batch and shuffle), removing those arguments."""
        import numpy as np
        import tensorflow as tf

        x, y = kw.get("x"), kw.get("y")
        ok = x is not None and all(
            isinstance(a, (np.ndarray, tf.Tensor))
            for a in keras.tree.flatten(x)
        )
        if not ok:
            raise TypeError(
                f"Technique(s) {list(names)} take held-out batches with "
                "each training batch, so `fit` needs a `tf.data.Dataset` or "
                "arrays `(x, y)`. Expected `x` to be a tf.data.Dataset or "
                f"arrays. Received: x of type {type(x).__name__}"
            )
        if kw.get("validation_split"):
            raise ValueError(
                f"Technique(s) {list(names)} take held-out batches with each "
                "training batch; pass `validation_data` instead of "
                "`validation_split`. Received: "
                f"validation_split={kw['validation_split']}"
            )
        parts = [x] + [
            kw[k] for k in ("y", "sample_weight") if kw.get(k) is not None
        ]
        if y is None and len(parts) > 1:
            raise ValueError(
                "Expected `y` with `sample_weight`. Received: y=None"
            )
        data = tf.data.Dataset.from_tensor_slices(tuple(parts))
        if kw.get("shuffle", True):
            n = keras.tree.flatten(x)[0].shape[0]
            data = data.shuffle(n, reshuffle_each_iteration=True)
        data = data.batch(kw.get("batch_size") or 32)
        for k in ("y", "sample_weight", "batch_size"):
            kw.pop(k, None)
        kw["shuffle"] = False  # shuffled above, per epoch, when asked
        return data

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
        args, kwargs = self._with_held_out(args, kwargs)
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
        finally:
            for t in self.techniques:
                t.after_fit(self)

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
