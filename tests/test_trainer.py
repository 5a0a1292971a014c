"""Trainer + Technique hooks + Distillation: real training behaviour."""

import keras
import numpy as np
import pytest

from keras_compact.training import (
    Distillation,
    StepContext,
    Technique,
    Trainer,
)


def _cnn(width, name, classes=3):
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, padding="same")(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(classes)(x), name=name)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, 8, 8, 1), dtype=np.float32),
        rng.integers(0, 3, n),
    )


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_trainer_trains_the_users_model_in_place():
    student = _cnn(4, "student")
    before = [w.numpy().copy() for w in student.trainable_weights]
    trainer = _compile(Trainer(student))
    x, y = _data()
    history = trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert {"loss", "task_loss", "accuracy"} <= set(history.history)
    after = [w.numpy() for w in student.trainable_weights]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    assert trainer.strip() is student
    np.testing.assert_allclose(
        trainer.predict(x, verbose=0),
        student.predict(x, verbose=0),
        atol=1e-6,
    )


def test_distillation_terms_weights_and_frozen_teacher():
    teacher, student = _cnn(16, "teacher"), _cnn(4, "student")
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    kd = Distillation(teacher, temperature=2.0, alpha=0.75)
    trainer = _compile(Trainer(student, techniques=[kd]))
    x, y = _data()
    history = trainer.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    # One step: loss == 0.25 * task + distillation term (already weighted).
    expected = 0.25 * history["task_loss"][0] + history["distillation_loss"][0]
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history["distillation_loss"][0] > 0
    for w, b in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(w.numpy(), b)
    logs = trainer.evaluate(x, y, verbose=0, return_dict=True)
    assert "distillation_loss" not in logs and "task_loss" not in logs


def test_distillation_value_matches_hand_computation():
    keras.utils.set_random_seed(0)
    teacher, student = _cnn(16, "teacher"), _cnn(4, "student")
    kd = Distillation(teacher, temperature=3.0, alpha=0.5)
    trainer = Trainer(student, techniques=[kd])
    x, y = _data(8)
    ctx = StepContext(trainer, x, y)
    ctx.y_pred = student(x)
    terms = kd.loss_terms(ctx)
    t, s = teacher(x).numpy() / 3.0, student(x).numpy() / 3.0

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(t), log_softmax(s)
    kl = (np.exp(lt) * (lt - ls)).sum(-1).mean() * 9.0
    # The KL of two near-uniform untrained heads is ~3e-4: float32 against
    # float64 agree to ~1e-3 relative there, not 1e-4.
    assert float(terms["distillation_loss"]) == pytest.approx(
        0.5 * kl, rel=1e-3, abs=1e-7
    )


def test_trainer_save_load_round_trip_without_custom_objects(tmp_path):
    teacher, student = _cnn(8, "teacher"), _cnn(4, "student")
    trainer = _compile(Trainer(student, [Distillation(teacher, alpha=0.6)]))
    x, y = _data()
    trainer.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Trainer)
    assert loaded.techniques[0].alpha == 0.6
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), trainer.predict(x, verbose=0)
    )
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)


class _CountingTechnique(Technique):
    term_names = ("counted",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="steps"
        )
        self.validated = 0

    def validate(self, trainer):
        self.validated += 1

    def callbacks(self, trainer):
        return [keras.callbacks.LambdaCallback()]

    def loss_terms(self, ctx):
        return {"counted": keras.ops.zeros(())}

    def transform_gradients(self, ctx, grads):
        return [keras.ops.zeros_like(g) for g in grads]

    def after_step(self, ctx):
        self.steps.assign_add(1.0)


def test_hooks_run_in_the_compiled_train_step():
    student = _cnn(4, "student")
    tech = _CountingTechnique()
    trainer = _compile(Trainer(student, [tech]))
    before = [w.numpy().copy() for w in student.trainable_weights]
    x, y = _data(32)
    trainer.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert float(tech.steps.numpy()) == 8.0
    assert tech.validated == 1
    # Zeroed gradients: SGD without momentum leaves the weights unchanged.
    for w, b in zip(student.trainable_weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="model="):
        Trainer("not a model")
    with pytest.raises(TypeError, match="techniques"):
        Trainer(_cnn(4, "s"), techniques=["kd"])
    with pytest.raises(TypeError, match="teacher="):
        Distillation(teacher=3)
    with pytest.raises(ValueError, match="temperature=0"):
        Distillation(_cnn(4, "t"), temperature=0)
    with pytest.raises(ValueError, match="alpha=1.5"):
        Distillation(_cnn(4, "t"), alpha=1.5)
    with pytest.raises(ValueError, match="shapes"):
        Trainer(_cnn(4, "s", classes=3), [Distillation(_cnn(4, "t", 5))])


def _conv_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.mark.parametrize("sparse", [False, True])
def test_non_finite_input_stops_before_any_state_is_written(sparse):
    from keras_compact import NonFiniteTrainingError, SparseTraining

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=40)
    x[17, 3, 3, 0] = np.nan  # batch 2 of 8-example batches
    techniques = [SparseTraining(0.8, seed=0)] if sparse else []
    trainer = Trainer(_conv_model(), techniques=techniques)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    seen = []

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([np.array(w).copy() for w in trainer.weights])

    with pytest.raises(NonFiniteTrainingError, match="step 2") as info:
        trainer.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[Snapshot()],
        )
    assert info.value.step == 2 and info.value.inputs
    assert len(seen) == 2
    # Weights, masks and every technique variable: as after step 1.
    for before, after in zip(seen[-1], trainer.weights):
        np.testing.assert_array_equal(before, np.array(after))
    for w in trainer.compact_model.weights:
        assert np.all(np.isfinite(np.array(w)))
    if sparse:
        kernel = np.array(trainer.compact_model.get_layer("conv2").kernel)
        assert np.mean(kernel == 0) >= 0.75


def test_non_finite_loss_term_is_named():
    from keras_compact import NonFiniteTrainingError

    class Exploding(Technique):
        term_names = ("boom",)

        def loss_terms(self, ctx):
            step = keras.ops.cast(ctx.step, "float32")
            # Finite for steps 0-2, then log(0) * -1 = inf at step 3.
            return {"boom": -keras.ops.log(keras.ops.relu(3.0 - step))}

    x, y = _data(32)
    trainer = Trainer(_conv_model(), techniques=[Exploding()])
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(NonFiniteTrainingError, match="step 3.*boom"):
        trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) == 3


def test_distillation_detects_softmax_outputs():
    """A softmax-output teacher or student is distilled through its
    log-probabilities: the same loss as its logits twin."""
    keras.utils.set_random_seed(1)
    s_logits, t_logits = _cnn(4, "s"), _cnn(8, "t")

    def softmax_twin(model):
        out = keras.layers.Softmax()(model.outputs[0])
        return keras.Model(model.inputs, out)

    x, y = _data(16)

    def distill_loss(student, teacher, **kwargs):
        technique = Distillation(teacher, **kwargs)
        trainer = Trainer(student, techniques=[technique])
        trainer.compile(loss="sparse_categorical_crossentropy")
        ctx = StepContext(trainer, x, y)
        ctx.y_pred = student(x)
        return float(technique.loss_terms(ctx)["distillation_loss"])

    reference = distill_loss(s_logits, t_logits)
    for student, teacher in [
        (softmax_twin(s_logits), t_logits),
        (s_logits, softmax_twin(t_logits)),
        (softmax_twin(s_logits), softmax_twin(t_logits)),
    ]:
        assert distill_loss(student, teacher) == pytest.approx(reference, 1e-4)
    # Forcing logits on probabilities gives another (wrong) value.
    wrong = distill_loss(
        softmax_twin(s_logits), softmax_twin(t_logits), from_logits=True
    )
    assert abs(wrong - reference) > 1e-2
    with pytest.raises(ValueError, match="from_logits"):
        Distillation(t_logits, from_logits="yes")


# ----------------------------------------------------------------------
# The step contract: one context per step, declared tensors, one graph
# replacement, held-out batches.
# ----------------------------------------------------------------------
class _CountCalls(keras.layers.Layer):
    """Identity that counts its training calls in a weight."""

    def build(self, input_shape):
        self.calls = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="calls"
        )

    def call(self, x, training=False):
        if training:
            self.calls.assign_add(1.0)
        return x


def _counted_model():
    i = keras.Input((6,))
    h = keras.layers.Dense(5, name="hidden")(i)
    h = _CountCalls(name="counter")(h)
    a = keras.layers.Activation("relu", name="act")(h)
    return keras.Model(i, keras.layers.Dense(3, name="head")(a), name="m")


class _Reads(Technique):
    """Declares tensors and records what its step hooks receive."""

    term_names = ("read",)

    def __init__(self, declared, **kwargs):
        super().__init__(**kwargs)
        self.declared = declared
        self.seen = []  # (hook, id(ctx)) at trace time

    def tensors(self, trainer):
        return self.declared(trainer)

    def loss_terms(self, ctx):
        self.seen.append(("loss_terms", id(ctx)))
        ctx.state(self)["from_loss"] = 1
        feat = ctx.tensors[self.name]["feat"]
        return {"read": keras.ops.mean(keras.ops.square(feat))}

    def transform_gradients(self, ctx, grads):
        self.seen.append(("transform_gradients", id(ctx)))
        assert ctx.state(self)["from_loss"] == 1
        assert ctx.grads is not None and len(ctx.grads) == len(grads)
        return grads

    def after_step(self, ctx):
        self.seen.append(("after_step", id(ctx)))
        assert set(ctx.terms) == {"task_loss", "read"}


def _regression(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


def _fit(trainer, x, y, steps):
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    if y is None:  # a dataset
        return trainer.fit(x, epochs=1, verbose=0).history
    return trainer.fit(
        x, y, batch_size=len(x) // steps, epochs=1, shuffle=False, verbose=0
    ).history


@pytest.mark.parametrize("by", ["name", "tensor"])
def test_declared_tensors_come_from_the_one_training_forward_pass(by):
    model = _counted_model()

    def declared(trainer):
        if by == "name":
            return {"feat": "act"}
        return {"feat": model.get_layer("act").output}

    tech = _Reads(declared, name="reader")
    trainer = Trainer(model, [tech])
    x, y = _regression()
    history = _fit(trainer, x, y, steps=4)
    # One forward pass per step: the counting layer ran 4 times in 4 steps.
    assert float(model.get_layer("counter").calls.numpy()) == 4.0
    # The term is computed on the declared tensor (the activations).
    feat = keras.Model(model.input, model.get_layer("act").output)(x)
    expected = float(keras.ops.mean(keras.ops.square(feat)))
    assert history["read"][0] == pytest.approx(expected, rel=1e-5)
    # One context per step trace, shared by all hooks of the step.
    hooks = [h for h, _ in tech.seen]
    assert hooks == ["loss_terms", "transform_gradients", "after_step"]
    assert len({c for _, c in tech.seen}) == 1


class _Replaces(Technique):
    """Replaces the training graph; `drop` names layers it leaves out."""

    def __init__(self, drop=(), **kwargs):
        super().__init__(**kwargs)
        self.drop = tuple(drop)

    def training_graph(self, trainer, model):
        from keras_compact.graph.walk import ModelGraph

        graph = ModelGraph(model)

        def layer_fn(node):
            if node.name in self.drop:
                return keras.ops.relu  # a plain function: no layer node
            return None

        mapping = graph.rebuild(layer_fn=layer_fn)
        out = mapping[id(graph.outputs[0])]
        return keras.Model(graph.inputs[0], out, name="replaced")


def test_declared_tensors_are_read_from_the_replaced_graph():
    model = _counted_model()
    tech = _Reads(lambda t: {"feat": "hidden"}, name="reader")
    replacer = _Replaces(drop=("act",), name="replacer")
    trainer = Trainer(model, [tech, replacer])
    x, y = _regression()
    _fit(trainer, x, y, steps=2)
    assert float(model.get_layer("counter").calls.numpy()) == 2.0


def test_two_graph_replacements_are_refused():
    with pytest.raises(ValueError, match="At most one technique.*'a'.*'b'"):
        Trainer(_counted_model(), [_Replaces(name="a"), _Replaces(name="b")])


def test_a_declared_layer_missing_from_the_replaced_graph_is_refused():
    tech = _Reads(lambda t: {"feat": "act"}, name="reader")
    replacer = _Replaces(drop=("act",), name="replacer")
    with pytest.raises(ValueError, match="'act'.*'replacer'.*'reader'"):
        Trainer(_counted_model(), [tech, replacer])


def test_unknown_declared_layer_is_refused():
    tech = _Reads(lambda t: {"feat": "nope"}, name="reader")
    with pytest.raises(ValueError, match="Received: feat='nope'"):
        Trainer(_counted_model(), [tech])
    tech = _Reads(lambda t: {"feat": 3}, name="reader")
    with pytest.raises(TypeError, match="Received: feat=3"):
        Trainer(_counted_model(), [tech])


class _HeldOut(Technique):
    """Sums the held-out batch it gets with each step."""

    extra_forward_passes = 1

    def __init__(self, data, **kwargs):
        super().__init__(**kwargs)
        self.data = data
        self.total = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="total"
        )

    def held_out_data(self, trainer):
        return self.data

    def after_step(self, ctx):
        x, _ = ctx.held_out[self.name]
        self.total.assign_add(keras.ops.sum(x))


def test_held_out_batches_arrive_with_each_training_batch():
    import tensorflow as tf

    # Held-out batch k is all k: 3 held-out batches for 4 steps (repeated).
    held = tf.data.Dataset.from_tensor_slices(
        (np.repeat(np.arange(3.0), 2)[:, None], np.zeros(6))
    ).batch(2)
    tech = _HeldOut(held, name="held")
    trainer = Trainer(_counted_model(), [tech])
    assert trainer.forward_passes == 2
    x, y = _regression()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    _fit(trainer, data, None, steps=4)
    # Steps 0..3 get batches 0, 1, 2, 0: each of 2 values.
    assert float(tech.total.numpy()) == 2 * (0 + 1 + 2 + 0)
    # Arrays are batched into a dataset (same batches, no shuffling).
    tech.total.assign(0.0)
    _fit(trainer, x, y, steps=4)
    assert float(tech.total.numpy()) == 6.0
    with pytest.raises(TypeError, match="Expected `x` to be a tf.data"):
        trainer.fit(iter([(x, y)]), verbose=0)
