"""Reparameterize with Distillation, AuxiliaryModule, SparseTraining and
NetAug (refused)."""

import keras
import numpy as np
import pytest

from keras_compact import (
    AuxiliaryModule,
    Distillation,
    NetAug,
    Reparameterize,
    SparseTraining,
    Trainer,
)

TOL = 1e-5


def _resnet(name="tiny_resnet", classes=4, width=8):
    i = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(
        width, 3, padding="same", use_bias=False, name="stem"
    )(i)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    for k, (w, s) in enumerate([(width, 1), (2 * width, 2)]):
        y = keras.layers.Conv2D(
            w, 3, strides=s, padding="same", use_bias=False, name=f"b{k}_c1"
        )(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(
            w, 3, padding="same", use_bias=False, name=f"b{k}_c2"
        )(y)
        y = keras.layers.BatchNormalization()(y)
        sc = x if s == 1 else keras.layers.Conv2D(w, 1, strides=s)(x)
        x = keras.layers.Add(name=f"add{k}")([y, sc])
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(
        i, keras.layers.Dense(classes, name="logits")(x), name=name
    )


def _data(n=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 12, 12, 3)).astype("float32"),
        rng.integers(0, classes, n),
    )


def _fit(trainer, x, y):
    trainer.compile(
        run_eagerly=True,
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return trainer.fit(x, y, epochs=1, batch_size=8, verbose=0).history


def _fold_error(rep, trainer, x):
    rep.unfold()
    ref = keras.ops.convert_to_numpy(rep.training_model(x, training=False))
    out = trainer.strip().predict(x, verbose=0)
    return float(np.max(np.abs(ref - out)))


def test_with_distillation():
    keras.utils.set_random_seed(0)
    teacher, student = _resnet("teacher", width=12), _resnet("student")
    rep = Reparameterize("acnet")
    trainer = Trainer(student, [rep, Distillation(teacher, alpha=0.5)])
    history = _fit(trainer, *_data())
    assert "distillation_loss" in history
    assert _fold_error(rep, trainer, _data()[0]) < TOL


def test_with_auxiliary_module():
    keras.utils.set_random_seed(0)
    model = _resnet()
    rep = Reparameterize("repvgg")
    aux = AuxiliaryModule(seed=0)
    trainer = Trainer(model, [rep, aux])
    history = _fit(trainer, *_data())
    assert np.isfinite(history["aux_loss"][-1])
    assert trainer.strip() is model
    assert _fold_error(rep, trainer, _data()[0]) < TOL


def test_with_sparse_training_sparsifies_the_folded_kernel():
    keras.utils.set_random_seed(0)
    model = _resnet()
    sparse = SparseTraining(sparsity=0.5, policy="static", seed=0)
    rep = Reparameterize("acnet")
    trainer = Trainer(model, [sparse, rep])
    _fit(trainer, *_data())
    stripped = trainer.strip()
    assert rep.is_folded
    for key, variable, mask in sparse.sparse_weights:
        w = keras.ops.convert_to_numpy(variable)
        m = keras.ops.convert_to_numpy(mask)
        assert np.all(w[m == 0] == 0), key
    folded = {b.layer.name for b in rep.blocks}
    sparse_layers = {key.split("/")[0] for key, _, _ in sparse.sparse_weights}
    assert folded & sparse_layers
    assert stripped is model


def test_netaug_is_refused():
    model = _resnet()
    with pytest.raises(ValueError, match="NetAug"):
        Trainer(model, [Reparameterize(), NetAug(seed=0)])
    with pytest.raises(ValueError, match="NetAug"):
        Trainer(_resnet("b"), [NetAug(seed=0), Reparameterize()])


def test_quantization_aware_training_is_a_second_phase():
    # Both replace the forward pass, so the trainer refuses them together:
    # fold first (strip), then train the folded model with QAT.
    from keras_compact import QuantizationAwareTraining

    with pytest.raises(ValueError, match="At most one technique"):
        Trainer(_resnet(), [Reparameterize(), QuantizationAwareTraining()])

    # The two phases: train re-parameterised, fold, then QAT on the folded
    # user model (what the scoreboard's combined recipe ships).
    keras.utils.set_random_seed(0)
    model = _resnet("two_phase")
    x, y = _data()
    rep = Reparameterize("dbb")
    trainer = Trainer(model, [rep])
    _fit(trainer, x, y)
    folded = trainer.strip()
    assert folded is model and rep.is_folded
    params, folded_out = model.count_params(), folded.predict(x, verbose=0)
    qat = QuantizationAwareTraining(freeze_bn_delay=0)
    qat_trainer = Trainer(folded, [qat])
    # At lr 0 QAT only learns its ranges: the fake-quant model is then the
    # folded model up to int8 rounding.
    qat_trainer.compile(
        run_eagerly=True,
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    qat_trainer.fit(x, y, epochs=1, batch_size=16, verbose=0)
    fake_quant = qat.quantized_model().predict(x, verbose=0)
    error = np.max(np.abs(fake_quant - folded_out))
    assert 0 < error <= 0.1 * np.max(np.abs(folded_out)), error
    assert qat_trainer.strip() is model
    assert model.count_params() == params
