"""Every technique against the shared promises (keras_compact.testing).

`run_technique_test` runs for every technique on a zoo model, a Sequential
model and a model with a softmax output, and once, with the cheapest
settings, on `keras.applications.MobileNetV2(weights=None)` (alpha 0.35,
32x32): the whole base on it is too long for CI (6 minutes for four
techniques; 314 s for one Distillation + DSR recipe at 2 steps per epoch,
each `fit` tracing MobileNetV2 anew for 50-60 s here), the cheapest run
about 60 s.

`run_distributed_test` (MirroredStrategy, 2 logical CPU devices set up by
conftest.py, against one device) runs for every technique on the zoo model.
"""

import keras
import numpy as np
import pytest

from keras_compact import (
    AuxiliaryModule,
    Distillation,
    NetAug,
    QuantizationAwareTraining,
    Reparameterize,
    SparseTraining,
    Trainer,
    models,
)
from keras_compact.testing import run_distributed_test, run_technique_test

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
    # QAT: `trainer.predict` (and `strip()`) is the user's float model, by
    # design; the fake-quant model against its int8 file is checked in
    # test_quantization.
    "qat": lambda m: lambda: QuantizationAwareTraining(),
    "reparameterize": lambda m: lambda: Reparameterize(),
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_technique_promises(technique, model):
    factory = MODELS[model]
    run_technique_test(TECHNIQUES[technique](factory), factory)


def mobilenet_v2():
    # The cheapest MobileNetV2 that keeps its structure: alpha 0.35, 32x32
    # inputs, its default softmax classifier.
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=CLASSES
    )


def test_mobilenet_v2_cheapest_base():
    """One run of the base on keras.applications.MobileNetV2 with the
    cheapest settings: distillation, one step per epoch, without the
    resume and .tflite checks (each costs another full trace of
    MobileNetV2, see the module docstring)."""
    run_technique_test(
        lambda: Distillation(_teacher_for(mobilenet_v2)()),
        mobilenet_v2,
        num_examples=8,
        batch_size=8,
        check_resume=False,
        check_tflite=False,
    )


# MirroredStrategy (2 replicas) against one device, zoo model only (CI
# time). The model's BatchNormalization layers are made synchronized by the
# base: unsynchronized, each replica normalises with its own half batch and
# no technique could match one device.
def _zoo_small():
    return models.get_model(
        "tiny_cnn", input_shape=(8, 8, 1), num_classes=CLASSES
    )


MIRRORED = {
    "distillation": lambda: Distillation(_teacher_for(_zoo_small)()),
    "auxiliary": lambda: AuxiliaryModule(connections="all"),
    # On this 8x8 model `start_at="auto"` is 0.5: the augmented pass is
    # masked, not skipped, in the first epoch (no cond across replicas).
    "netaug": lambda: NetAug(),
    "netaug_full_schedule": lambda: NetAug(start_at=0.0),
    # SparseTraining (DSR and RigL): tests/test_distributed.py, which also
    # checks every replica's masks and kernels.
    # BN folded with the (synchronized) batch statistics for 2 steps, then
    # frozen: both paths of the folded layers.
    "qat": lambda: QuantizationAwareTraining(freeze_bn_delay=2),
    "reparameterize_acnet": lambda: Reparameterize("acnet"),
}


# Each technique's own training-only normalization (the booster's and the
# branches' BatchNormalization layers, NetAug's augmented pass, QAT's folded
# BatchNormalization) reads the global batch under a strategy, and QAT's
# activation ranges are the global batch's: every technique matches.
@pytest.mark.parametrize("technique", sorted(MIRRORED))
def test_mirrored_equals_one_device(technique):
    run_distributed_test(MIRRORED[technique], _zoo_small)


def test_qat_delayed_start_refused_under_mirrored():
    # The switch from the float graph is a cond over the whole forward pass,
    # where no cross-replica reduction can run: refused before tracing.
    from keras_compact.testing.technique_test import (
        _logical_cpus,
        _mirrored_strategy,
    )

    with _mirrored_strategy(_logical_cpus(2)).scope():
        trainer = Trainer(
            _zoo_small(), techniques=[QuantizationAwareTraining(start=1)]
        )
        trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.zeros((4, 8, 8, 1), "float32")
    y = np.zeros((4,), "int32")
    with pytest.raises(ValueError, match="start=1, num_replicas_in_sync=2"):
        trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
