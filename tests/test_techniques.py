"""Every technique against the shared promises (keras_compact.testing), on
a zoo model, a Sequential model and a model with a softmax output.

keras.applications.MobileNetV2 is trained by each technique in its own
tests (test_netaug_guards, test_auxiliary); running the whole
base on it took 6 minutes here, too long for CI."""

import keras
import pytest

from keras_compact import (
    AuxiliaryModule,
    Distillation,
    NetAug,
    SparseTraining,
    models,
)
from keras_compact.testing import run_technique_test

CLASSES = 4


def zoo():
    return models.get_model(
        "tiny_cnn", input_shape=(12, 12, 1), num_classes=CLASSES
    )


def sequential():
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(16, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES),
        ],
        name="seq",
    )


def softmax():
    x = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    y = keras.layers.Dense(CLASSES, activation="softmax")(h)
    return keras.Model(x, y, name="softmax_model")


MODELS = {
    "zoo": zoo,
    "sequential": sequential,
    "softmax": softmax,
}


def _teacher_for(model_factory):
    def make():
        shape = tuple(model_factory().inputs[0].shape[1:])
        return keras.Sequential(
            [
                keras.Input(shape),
                keras.layers.Flatten(),
                keras.layers.Dense(CLASSES),
            ]
        )

    return make


TECHNIQUES = {
    "distillation": lambda m: lambda: Distillation(_teacher_for(m)()),
    "auxiliary": lambda m: lambda: AuxiliaryModule(),
    "netaug": lambda m: lambda: NetAug(),
    "dsr": lambda m: lambda: SparseTraining(0.8, policy="dsr"),
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_technique_promises(technique, model):
    factory = MODELS[model]
    run_technique_test(TECHNIQUES[technique](factory), factory)
