"""AuxiliaryModule: training, stripping, saving, composing, errors."""

import keras
import numpy as np
import pytest

from keras_compact.auxiliary import AuxiliaryBooster, AuxiliaryModule
from keras_compact.training import (
    Distillation,
    StepContext,
    Technique,
    Trainer,
)

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _report(technique):
    """The technique's `TechniqueReport`, without printing it."""
    return technique.summary(print_fn=lambda line: None)


def _resnet(name="tiny_resnet", classes=5, width=8):
    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem")(i)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    for k, (w, s) in enumerate([(width, 1), (2 * width, 2)]):
        y = keras.layers.Conv2D(w, 3, strides=s, padding="same")(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(w, 3, padding="same")(y)
        y = keras.layers.BatchNormalization()(y)
        sc = x if s == 1 else keras.layers.Conv2D(w, 1, strides=s)(x)
        x = keras.layers.Add(name=f"add{k}")([y, sc])
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(
        i, keras.layers.Dense(classes, name="logits")(x), name=name
    )


def _data(n=32, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, 16, 16, 3), dtype=np.float32),
        rng.integers(0, classes, n),
    )


def _compile(trainer, lr=0.01, eager=True):
    # Eager by default: tracing costs more than these few tiny steps; the
    # compiled path is exercised by the strip and save/load tests.
    trainer.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=SCCE,
        metrics=["accuracy"],
        run_eagerly=eager,
    )
    return trainer


def test_strip_keeps_the_users_model_and_outputs():
    model = _resnet()
    params = model.count_params()
    aux = AuxiliaryModule(seed=0)
    trainer = _compile(Trainer(model, [aux]), eager=False)
    x, y = _data()
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert {"task_loss", "aux_loss", "loss"} <= set(history)
    stripped = trainer.strip()
    assert stripped is model
    assert stripped.count_params() == params
    assert len(stripped.layers) == len(_resnet().layers)
    assert any(
        np.abs(w.numpy() - b).max() > 0
        for w, b in zip(model.trainable_weights, before)
    )
    # The training graph's main output (inference mode) equals the model.
    tapped = aux._private.heads.tap_model(x, training=False)["main"]
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), np.asarray(tapped), atol=1e-5
    )
    np.testing.assert_allclose(
        trainer.predict(x, verbose=0),
        stripped.predict(x, verbose=0),
        atol=1e-6,
    )
    # Training-only parts: adaptors and booster exist and have weights.
    assert aux.boosters[0].count_params() > 0
    assert not set(map(id, aux.boosters[0].weights)) & set(
        map(id, model.weights)
    )


def test_loss_is_main_plus_weighted_aux():
    model = _resnet()
    aux = AuxiliaryModule(lambda_aux=0.5, seed=0)
    trainer = _compile(Trainer(model, [aux]), lr=0.0)
    x, y = _data(16)
    h = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert h["loss"][0] == pytest.approx(
        h["task_loss"][0] + h["aux_loss"][0], rel=1e-5
    )
    taps = aux._private.heads.tap_model(x, training=True)["taps"]
    aux_pred = aux._private.heads.predict(taps, training=True)
    assert h["aux_loss"][0] == pytest.approx(
        0.5 * float(SCCE(y, aux_pred)), rel=1e-4
    )


def test_aux_loss_alone_trains_the_compact_blocks():
    # lambda_aux only (the main loss has zero weight through Distillation
    # alpha=1 with a teacher equal to the student): the blocks still move.
    model = _resnet()
    aux = AuxiliaryModule(seed=0)
    trainer = Trainer(model, [aux])
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss=SCCE)
    x, y = _data(16)
    variables = trainer.trainable_weights
    import tensorflow as tf

    with tf.GradientTape() as tape:
        taps = aux._private.heads.tap_model(x, training=True)["taps"]
        loss = SCCE(y, aux._private.heads.predict(taps, training=True))
    grads = tape.gradient(loss, variables)
    by_name = {v.path: g for v, g in zip(variables, grads)}
    stem_kernel = model.get_layer("stem").kernel.path
    assert by_name[stem_kernel] is not None
    assert float(np.abs(by_name[stem_kernel]).max()) > 0
    # The head is not reached by the auxiliary loss.
    assert by_name[model.get_layer("logits").kernel.path] is None


def test_save_load_round_trip_keeps_structure_and_weights(tmp_path):
    model = _resnet()
    structure = {
        "stem_bn": ["stem_bn"],
        "add0": ["stem_bn"],
        "add1": ["add0", "add1"],
    }
    aux = AuxiliaryModule(connections=structure, seed=3, aux_width_mult=1.5)
    trainer = _compile(Trainer(model, [aux]), eager=False)
    x, y = _data()
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "aux_trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    laux = loaded.techniques[0]
    assert isinstance(laux, AuxiliaryModule)
    assert laux.structure == {"logits": structure}
    assert laux.aux_width_mult == 1.5
    for a, b in zip(aux.boosters[0].weights, laux.boosters[0].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), trainer.predict(x, verbose=0)
    )
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert "add1 " in str(_report(laux))


def test_config_round_trip_of_the_technique():
    aux = AuxiliaryModule(
        taps=["add0", "add1"],
        lambda_aux=0.3,
        lambda_mut=0.2,
        temperature=2.0,
        top_k=2,
        seed=5,
    )
    again = AuxiliaryModule.from_config(aux.get_config())
    assert again.get_config() == aux.get_config()
    Trainer(_resnet(), [aux])
    attached = AuxiliaryModule.from_config(aux.get_config())
    assert attached.taps == {"logits": ["add0", "add1"]}
    assert attached.term_names == ("aux_loss", "mutual_loss")


def test_composes_with_distillation():
    teacher, student = _resnet("teacher", width=12), _resnet("student")
    kd = Distillation(teacher, alpha=0.5)
    aux = AuxiliaryModule(seed=0)
    trainer = _compile(Trainer(student, [kd, aux]), lr=0.0)
    x, y = _data(16)
    h = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert h["loss"][0] == pytest.approx(
        0.5 * h["task_loss"][0] + h["distillation_loss"][0] + h["aux_loss"][0],
        rel=1e-5,
    )
    assert trainer.strip() is student


class _SameGraph(Technique):
    """Replaces the training graph by a replay of the same graph (as QAT
    and Reparameterize replace it by theirs)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.graphs = 0

    def training_graph(self, trainer, model):
        from keras_compact.graph.walk import ModelGraph

        self.graphs += 1
        graph = ModelGraph(model)
        mapping = graph.rebuild()
        return keras.Model(
            graph.inputs[0], mapping[id(graph.outputs[0])], name="replay"
        )


def test_taps_come_from_a_replaced_training_graph():
    x, y = _data(16)
    losses = []
    for techniques in ([], [_SameGraph(name="replacer")]):
        keras.utils.set_random_seed(0)
        aux = AuxiliaryModule(seed=0)
        trainer = _compile(Trainer(_resnet(), [aux] + techniques), lr=0.0)
        h = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
        losses.append(h["aux_loss"][0])
    assert techniques[0].graphs == 1
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def _two_heads():
    i = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, padding="same")(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    g = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(
        i,
        {
            "fine": keras.layers.Dense(10, name="fine")(g),
            "coarse": keras.layers.Dense(
                3, activation="softmax", name="coarse"
            )(g),
        },
    )


def test_multi_output_one_booster_per_head_and_clean_metrics():
    model = _two_heads()
    aux = AuxiliaryModule(seed=0, lambda_mut=0.5)
    trainer = Trainer(model, [aux])
    cce = keras.losses.SparseCategoricalCrossentropy()
    trainer.compile(
        keras.optimizers.SGD(0.0),
        loss={"fine": SCCE, "coarse": cce},
        loss_weights={"fine": 1.0, "coarse": 0.5},
    )
    assert len(aux.boosters) == 2
    assert aux.heads == ["coarse", "fine"]
    assert [b.units for b in aux.boosters] == [3, 10]
    assert aux.boosters[0].activation == "softmax"
    assert aux.boosters[1].activation is None
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 16, 1), dtype=np.float32)
    yf = rng.integers(0, 10, 16)
    h = trainer.fit(
        x, {"fine": yf, "coarse": yf % 3}, batch_size=16, verbose=0
    ).history
    assert h["mutual_loss"][0] > 0 and h["aux_loss"][0] > 0
    # Per-output loss metrics measure the compact model only.
    out = model(x, training=True)
    assert h["fine_loss"][0] == pytest.approx(
        float(SCCE(yf, out["fine"])), rel=1e-4
    )
    assert h["coarse_loss"][0] == pytest.approx(
        float(cce(yf % 3, out["coarse"])), rel=1e-4
    )
    described = str(_report(aux))
    assert "coarse" in described and "fine" in described


def test_keras_applications_mobilenet_v2_auxiliary_loss():
    model = keras.applications.MobileNetV2(
        weights=None,
        input_shape=(32, 32, 3),
        classes=10,
        classifier_activation=None,
        alpha=0.35,
    )
    aux = AuxiliaryModule(seed=0)
    trainer = _compile(Trainer(model, [aux]))
    assert len(aux.boosters[0].tap_shapes) == 18
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 4)
    ctx = StepContext(trainer, x, y)
    ctx.y_pred, ctx.tensors = trainer.training_forward(x)
    assert tuple(ctx.y_pred.shape) == (4, 10)
    assert len(ctx.tensors[aux.name]) == 18
    terms = aux.loss_terms(ctx)
    assert np.isfinite(float(terms["aux_loss"]))
    assert trainer.strip() is model


def test_booster_shapes_and_identity_downsampling():
    booster = AuxiliaryBooster(
        tap_shapes=[(8, 8, 4), (8, 8, 4), (4, 4, 8)],
        tap_stages=[0, 0, 1],
        units=3,
        connections=[[0], [1], [2]],
        seed=0,
    )
    booster.build()
    assert set(booster.downs) == {"2"}  # identity between equal shapes
    assert booster.downs["2"].strides == (2, 2)
    assert not booster.edges
    taps = [np.ones((2, 8, 8, 4)), np.ones((2, 8, 8, 4)), np.ones((2, 4, 4, 8))]
    assert tuple(booster(taps).shape) == (2, 3)
    again = AuxiliaryBooster.from_config(booster.get_config())
    assert again.get_config() == booster.get_config()


def test_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match="lambda_aux=-1"):
        AuxiliaryModule(lambda_aux=-1)
    with pytest.raises(ValueError, match="lambda_mut=-0.5"):
        AuxiliaryModule(lambda_mut=-0.5)
    with pytest.raises(ValueError, match="top_k=0"):
        AuxiliaryModule(top_k=0)
    with pytest.raises(ValueError, match="aux_width_mult=0"):
        AuxiliaryModule(aux_width_mult=0)
    with pytest.raises(ValueError, match="temperature=0"):
        AuxiliaryModule(temperature=0)
    with pytest.raises(ValueError, match="connections='some'"):
        AuxiliaryModule(connections="some")
    with pytest.raises(TypeError, match="lambda_aux='x'"):
        AuxiliaryModule(lambda_aux="x")
    with pytest.raises(ValueError, match="Unknown tap layer 'nope'"):
        Trainer(_resnet(), [AuxiliaryModule(taps=["nope"])])
    with pytest.raises(ValueError, match="Unknown tap name"):
        Trainer(_resnet(), [AuxiliaryModule(connections={"add0": ["x"]})])
    with pytest.raises(ValueError, match="node 1 may only take taps 0..1"):
        Trainer(
            _resnet(),
            [AuxiliaryModule(connections={"add0": ["add1"]})],
        )
    aux = AuxiliaryModule(connections="search")
    trainer = _compile(Trainer(_resnet(), [aux]))
    x, y = _data(8)
    with pytest.raises(ValueError, match="search_data=None"):
        trainer.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="already attached"):
        Trainer(_resnet(), [aux])
    with pytest.raises(ValueError, match="attached"):
        AuxiliaryModule().structure


def test_composes_with_netaug_in_one_trainer():
    netaug = pytest.importorskip("keras_compact.netaug")
    model = _resnet()
    params = model.count_params()
    aux = AuxiliaryModule(seed=0)
    trainer = _compile(Trainer(model, [netaug.NetAug(seed=0), aux]))
    x, y = _data(16)
    h = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert h["aux_loss"][0] > 0
    assert len(h) > 4  # task, aux, NetAug's term(s), loss, accuracy
    stripped = trainer.strip()
    assert stripped is model and stripped.count_params() == params


def test_multi_output_each_booster_predicts_its_own_output():
    # Dict keys unlike the head layers' names and their insertion order:
    # booster k follows model.outputs[k], its prediction goes to that key.
    from keras_compact.graph import outputs

    i = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="c1")(i)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c2")(h)
    g = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(
        i,
        {
            "zeta": keras.layers.Dense(4, name="a_head")(g),
            "alpha": keras.layers.Dense(2, name="z_head")(g),
        },
    )
    aux = AuxiliaryModule(taps=["c1", "c2"], lambda_mut=0.5, seed=0)
    trainer = Trainer(model, [aux])
    trainer.compile(
        keras.optimizers.SGD(0.0),
        loss={"zeta": SCCE, "alpha": SCCE},
        loss_weights={"zeta": 1.0, "alpha": 0.25},
    )
    assert aux.heads == ["z_head", "a_head"]  # model.outputs order
    assert [b.units for b in aux.boosters] == [2, 4]
    rng = np.random.default_rng(0)
    x = rng.random((6, 8, 8, 3), dtype=np.float32)
    y = {"zeta": rng.integers(0, 4, 6), "alpha": rng.integers(0, 2, 6)}
    predicted = aux.auxiliary_outputs(x)
    assert tuple(predicted["zeta"].shape) == (6, 4)
    assert tuple(predicted["alpha"].shape) == (6, 2)
    ctx = StepContext(trainer, x, y)
    ctx.y_pred, ctx.tensors = trainer.training_forward(x)
    terms = aux.loss_terms(ctx)
    aux_pred = aux._private.heads.predict(ctx.tensors[aux.name], training=True)
    # Each auxiliary prediction is scored against its own output's target,
    # with that output's loss weight.
    expected = float(SCCE(y["zeta"], aux_pred["zeta"])) + 0.25 * float(
        SCCE(y["alpha"], aux_pred["alpha"])
    )
    assert float(terms["aux_loss"]) == pytest.approx(expected, rel=1e-5)
    # The mutual term pairs each output with its own auxiliary prediction.
    kl = outputs.soft_target_kl
    mutual = sum(
        float(kl(aux_pred[k], ctx.y_pred[k]) + kl(ctx.y_pred[k], aux_pred[k]))
        for k in ("zeta", "alpha")
    )
    assert float(terms["mutual_loss"]) == pytest.approx(0.5 * mutual, 1e-5)
