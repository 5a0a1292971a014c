"""Subclassed and multi-output user models: what works, and the one
shared refusal for the techniques that need a call graph."""

import keras
import numpy as np
import pytest

from keras_compact import (
    AuxiliaryModule,
    NetAug,
    QuantizationAwareTraining,
    Reparameterize,
)
from keras_compact.graph.walk import require_call_graph
from keras_compact.training import Distillation, StepContext, Trainer


class SubclassedNet(keras.Model):
    def __init__(self, width=4, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(width, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(classes)

    def call(self, x, training=None):
        h = keras.ops.relu(self.bn(self.conv(x), training=training))
        return self.head(self.pool(h))


def _subclassed():
    model = SubclassedNet()
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model


def _two_outputs(width, name):
    i = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(i)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = {
        "a": keras.layers.Dense(3, name="a")(h),
        "b": keras.layers.Dense(2, name="b")(h),
    }
    return keras.Model(i, outputs, name=name)


def _teacher():
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kl(t, s, temperature):
    lt, ls = _log_softmax(t / temperature), _log_softmax(s / temperature)
    return (np.exp(lt) * (lt - ls)).sum(-1).mean() * temperature**2


def test_subclassed_model_is_refused_by_name_with_the_alternatives():
    with pytest.raises(TypeError) as err:
        require_call_graph(_subclassed(), "NetAug", "build its super-network")
    message = str(err.value)
    for part in ("NetAug", "functional", "Distillation", "SparseTraining"):
        assert part in message
    assert "SubclassedNet" in message


@pytest.mark.parametrize(
    "technique",
    [AuxiliaryModule, NetAug, QuantizationAwareTraining, Reparameterize],
    ids=lambda t: t.__name__,
)
def test_graph_techniques_refuse_a_subclassed_model_naming_alternatives(
    technique,
):
    with pytest.raises(TypeError) as err:
        Trainer(_subclassed(), techniques=[technique()])
    message = str(err.value)
    assert message.startswith(f"{technique.__name__} needs the compact model")
    for part in ("functional", "Distillation", "SparseTraining"):
        assert part in message


def test_graph_models_pass_and_sequential_is_viewed_as_functional():
    seq = _teacher()
    graph = require_call_graph(seq, "NetAug", "build its super-network")
    assert isinstance(graph, keras.Model) and graph.layers[-1] is seq.layers[-1]
    functional = _two_outputs(4, "f")
    assert require_call_graph(functional, "NetAug", "x") is functional
    with pytest.raises(ValueError, match="built"):
        require_call_graph(
            keras.Sequential([keras.layers.Dense(2)]), "NetAug", "x"
        )


def test_distillation_trains_a_subclassed_student_in_place():
    keras.utils.set_random_seed(0)
    student = _subclassed()
    before = [w.numpy().copy() for w in student.trainable_weights]
    trainer = Trainer(student, techniques=[Distillation(_teacher())])
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    history = trainer.fit(x, rng.integers(0, 3, 16), batch_size=8, verbose=0)
    assert np.isfinite(history.history["distillation_loss"][-1])
    assert history.history["distillation_loss"][-1] > 0
    assert any(
        not np.allclose(b, w.numpy())
        for b, w in zip(before, student.trainable_weights)
    )
    assert trainer.strip() is student
    np.testing.assert_allclose(
        trainer.predict(x, verbose=0), student(x), atol=1e-6
    )


def test_distillation_of_two_outputs_sums_the_per_output_terms():
    keras.utils.set_random_seed(0)
    teacher, student = _two_outputs(8, "teacher"), _two_outputs(4, "student")
    kd = Distillation(teacher, temperature=2.0, alpha=0.5)
    trainer = Trainer(student, techniques=[kd])
    rng = np.random.default_rng(1)
    x = rng.random((8, 8, 8, 1), dtype=np.float32)
    y = {"a": rng.integers(0, 3, 8), "b": rng.integers(0, 2, 8)}
    ctx = StepContext(trainer, x, y)
    ctx.y_pred = student(x)
    got = float(kd.loss_terms(ctx)["distillation_loss"])
    t, s = teacher(x), student(x)
    want = 0.5 * sum(
        _kl(np.asarray(t[k], np.float64), np.asarray(s[k], np.float64), 2.0)
        for k in ("a", "b")
    )
    assert want > 0
    assert got == pytest.approx(want, rel=1e-3, abs=1e-7)


def test_distillation_refuses_a_teacher_with_other_outputs():
    student = _two_outputs(4, "student")
    with pytest.raises(ValueError, match="teacher's outputs"):
        Trainer(student, techniques=[Distillation(_teacher())])
