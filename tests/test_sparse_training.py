"""keras_compact.sparse.SparseTraining through Trainer.fit on tiny models."""

import gzip

import keras
import numpy as np
import pytest

from keras_compact.sparse import (
    DSR,
    SET,
    GradualPruning,
    PeriodSchedule,
    RigL,
    SparseTraining,
    Static,
    default_dense_layers,
    nonzero_counts,
    optimizer_slots,
    plot_density,
    uniform_densities,
)
from keras_compact.training import Trainer

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# These tests update the masks every 2-3 steps on purpose (many updates in
# a few steps); the warnings about it are tested in test_sparse_dsr_defaults.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*updates the masks every:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*were pruned again:UserWarning"),
]


def _report(technique):
    """The technique's `TechniqueReport`, without printing it."""
    return technique.summary(print_fn=lambda line: None)


def tiny_resnet(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c1")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(16, 3, padding="same", name="c2")(y)
    y = keras.layers.BatchNormalization()(y)
    s = keras.layers.Conv2D(16, 1, strides=2, name="short")(x)
    s = keras.layers.BatchNormalization()(s)
    x = keras.layers.ReLU()(keras.layers.Add()([y, s]))
    x = keras.layers.SeparableConv2D(16, 3, padding="same", name="sep")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2DTranspose(8, 3, padding="same", name="up")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    out = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inp, out, name="tiny_resnet")


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 3), dtype=np.float32), rng.integers(0, 4, n))


def make(policy, sparsity=0.8, seed=3, optimizer=None, model_seed=0, **kw):
    model = tiny_resnet(model_seed)
    tech = SparseTraining(sparsity, policy=policy, seed=seed, **kw)
    trainer = Trainer(model, techniques=[tech])
    trainer.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9),
        loss=SCE,
    )
    return model, tech, trainer


def dsr(**kw):
    kw.setdefault("target_prunes", 0.05)
    kw.setdefault("period", PeriodSchedule((1,), (2, 3)))
    kw.setdefault("stop_epoch", None)
    kw.setdefault("initial_threshold", 0.05)
    return DSR(**kw)


POLICIES = {
    "dsr": dsr,
    "set": lambda: SET(update_interval=2, end_step=100),
    "rigl": lambda: RigL(update_interval=2, end_step=100),
    "gmp": lambda: GradualPruning(update_interval=2, end_step=11),
}


def masks_of(tech):
    return {
        k: keras.ops.convert_to_numpy(m).copy()
        for k, _, m in tech.sparse_weights
    }


def kernels_of(tech):
    return {
        k: keras.ops.convert_to_numpy(v).copy()
        for k, v, _ in tech.sparse_weights
    }


# ----------------------------------------------------------------------
# Layer selection, counts, report
# ----------------------------------------------------------------------
def test_layers_defaults_and_exact_uniform_counts():
    model, tech, _ = make("static", sparsity=0.8)
    assert default_dense_layers(model) == {
        "stem": "first layer",
        "short": "1x1 shortcut conv",
    }
    rep = _report(tech)
    keys = [k for k, _, _ in tech.sparse_weights]
    assert keys == [
        "c1",
        "c2",
        "sep.depthwise_kernel",
        "sep.pointwise_kernel",
        "dw",
        "up",
        "fc",
        "logits",
    ]
    shapes = [r.values["shape"] for r in rep.applied]
    expected = nonzero_counts(shapes, uniform_densities(shapes, 0.8))
    assert [r.values["nonzeros"] for r in rep.applied] == expected
    # The kernels themselves are sparse from the start.
    for k, v, m in tech.sparse_weights:
        kv, mv = keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(m)
        assert np.count_nonzero(kv) == int(mv.sum())


def test_erk_counts_sum_to_the_budget():
    _, tech, _ = make("static", sparsity=0.9, distribution="erk")
    rep = _report(tech)
    total = sum(r.values["size"] for r in rep.applied)
    assert sum(r.values["nonzeros"] for r in rep.applied) == round(0.1 * total)


def test_dense_layers_override_by_names_and_predicate():
    _, tech, _ = make("static", dense_layers=["logits", "c1"])
    dense = {r.item for r in _report(tech).kept}
    assert dense == {"logits", "c1"}
    assert "stem" in [r.item for r in _report(tech).applied]
    _, tech, _ = make(
        "static",
        dense_layers=lambda layer: isinstance(layer, keras.layers.Dense),
    )
    assert {r.item for r in _report(tech).kept} == {"fc", "logits"}
    # The resolved names are what the config stores.
    assert sorted(tech.get_config()["dense_layers"]) == ["fc", "logits"]


class RawKernel(keras.layers.Layer):
    """A user layer with its own weight and no prunable declaration."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 4), name="w")

    def call(self, x):
        return x @ self.w


class DeclaredKernel(RawKernel):
    """The same layer, declaring its prunable weight (duck typing)."""

    @property
    def prunable_weights(self):
        return [self.w]


class Block(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv = keras.layers.Conv2D(8, 3, padding="same", name="inner")

    def call(self, x):
        return keras.ops.relu(self.conv(x))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.stem = keras.layers.Conv2D(4, 3, name="sub_stem")
        self.block = Block(name="block")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.lstm_in = keras.layers.Reshape((1, 8))
        self.lstm = keras.layers.LSTM(4, name="lstm")
        self.raw = RawKernel(name="raw")
        self.declared = DeclaredKernel(name="declared")

    def call(self, x):
        x = self.pool(self.block(self.stem(x)))
        x = self.lstm(self.lstm_in(x))
        return self.declared(self.raw(x))


def test_subclassed_model_nested_duck_typed_and_unsupported_layers():
    model = Subclassed()
    x, y = data(32)
    model(x[:2])
    tech = SparseTraining(0.5, policy=dsr(), seed=0)
    with pytest.warns(UserWarning, match="raw"):
        trainer = Trainer(model, techniques=[tech])
    rep = _report(tech)
    assert [r.item for r in rep.applied] == ["inner", "declared"]
    skipped = {r.item: r.reason for r in rep.skipped}
    assert "raw" in skipped and "register_prunable" in skipped["raw"]
    assert any("lstm" in k for k in skipped)
    trainer.compile(optimizer="sgd", loss=SCE)
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)  # no crash


# ----------------------------------------------------------------------
# Invariants after every step
# ----------------------------------------------------------------------
class StepCheck(keras.callbacks.Callback):
    def __init__(self, tech):
        super().__init__()
        self.tech = tech
        self.totals = []
        self.violations = 0

    def on_train_batch_end(self, batch, logs=None):
        total = 0
        for _, v, m in self.tech.sparse_weights:
            kv = keras.ops.convert_to_numpy(v)
            mv = keras.ops.convert_to_numpy(m)
            self.violations += int(np.count_nonzero(kv[mv == 0]))
            total += int(mv.sum())
        self.totals.append(total)


@pytest.mark.parametrize("name", ["dsr", "set", "rigl"])
def test_exact_sparsity_and_budget_after_every_step(name):
    _, tech, trainer = make(POLICIES[name]())
    before = masks_of(tech)
    check = StepCheck(tech)
    x, y = data()
    trainer.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[check])
    assert check.violations == 0
    assert len(set(check.totals)) == 1  # budget invariant (all rounds)
    after = masks_of(tech)
    assert any((before[k] != after[k]).any() for k in before)  # it moved
    assert int(keras.ops.convert_to_numpy(tech.update_count)) >= 4


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(1e-2),
    ],
    ids=["sgd_momentum", "adam"],
)
def test_optimizer_slots_of_regrown_and_inactive_weights_are_zero(optimizer):
    # DSR updates every 2 steps: step 4, the one after the refill, is one.
    policy = dsr(period=PeriodSchedule((), (2,)), initial_threshold=0.2)
    _, tech, trainer = make(policy, optimizer=optimizer())
    x, y = data()
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, steps_per_epoch=3)
    before = masks_of(tech)
    # Fill the slots (small values: they must not move the weights much) so
    # that only an explicit reset can zero them.
    for _, v, _ in tech.sparse_weights:
        for slot in optimizer_slots(trainer.optimizer, v):
            slot.assign(np.full(slot.shape, 1e-4, "float32"))
    trainer.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        initial_epoch=1,
        verbose=0,
        steps_per_epoch=1,
    )
    after = masks_of(tech)
    n_slots = 0
    grown_total = 0
    for key, v, _ in tech.sparse_weights:
        grown = (after[key] > 0) & (before[key] == 0)
        dropped = (after[key] == 0) & (before[key] > 0)
        grown_total += int(grown.sum())
        for slot in optimizer_slots(trainer.optimizer, v):
            n_slots += 1
            s = keras.ops.convert_to_numpy(slot)
            assert (s[grown] == 0).all()
            assert (s[dropped] == 0).all()
    assert grown_total > 0
    assert n_slots == len(tech.sparse_weights) * (
        2 if isinstance(trainer.optimizer, keras.optimizers.Adam) else 1
    )


def test_zero_target_prunes_is_static_sparse():
    x, y = data()
    runs = []
    for policy in (dsr(target_prunes=0), Static()):
        model, tech, trainer = make(policy)
        start = masks_of(tech)
        trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        assert all((start[k] == v).all() for k, v in masks_of(tech).items())
        runs.append(kernels_of(tech))
    for k in runs[0]:
        np.testing.assert_allclose(runs[0][k], runs[1][k], atol=1e-6)


@pytest.mark.parametrize("name", ["dsr", "rigl"])
def test_seeded_runs_are_deterministic(name):
    x, y = data()
    results = []
    for seed in (5, 5, 6):
        _, tech, trainer = make(POLICIES[name](), seed=seed)
        trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        results.append(masks_of(tech))
    same = all((results[0][k] == results[1][k]).all() for k in results[0])
    differ = any((results[0][k] != results[2][k]).any() for k in results[0])
    assert same and differ


# ----------------------------------------------------------------------
# State: .keras, BackupAndRestore, strip, logs
# ----------------------------------------------------------------------
def test_keras_round_trip_restores_masks_threshold_and_outputs(tmp_path):
    _, tech, trainer = make(dsr())
    x, y = data()
    trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    path = str(tmp_path / "sparse.keras")
    trainer.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    tech2 = loaded.techniques[0]
    assert isinstance(tech2, SparseTraining)
    assert isinstance(tech2.policy, DSR)
    for k, m in masks_of(tech).items():
        np.testing.assert_array_equal(m, masks_of(tech2)[k])
    assert tech2.threshold_value() == tech.threshold_value()
    assert int(keras.ops.convert_to_numpy(tech2.update_count)) == int(
        keras.ops.convert_to_numpy(tech.update_count)
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0),
        trainer.predict(x, verbose=0),
        atol=1e-6,
    )
    # Training goes on from the restored state, still exactly sparse.
    check = StepCheck(tech2)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[check])
    assert check.violations == 0


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("name", ["dsr", "rigl", "gmp"])
def test_backup_and_restore_resume_reproduces_masks(tmp_path, name):
    x, y = data()
    kw = dict(batch_size=16, epochs=4, verbose=0, shuffle=False)
    _, ref, trainer = make(POLICIES[name]())
    trainer.fit(x, y, **kw)

    backup = str(tmp_path / "backup")
    _, _, trainer = make(POLICIES[name]())
    trainer(x[:1])  # BackupAndRestore needs a built model
    with pytest.raises(RuntimeError, match="interrupted"):
        trainer.fit(
            x,
            y,
            callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()],
            **kw,
        )
    _, resumed, trainer = make(POLICIES[name](), model_seed=1)
    trainer(x[:1])
    trainer.fit(
        x, y, callbacks=[keras.callbacks.BackupAndRestore(backup)], **kw
    )
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 16
    for k, m in masks_of(ref).items():
        np.testing.assert_array_equal(m, masks_of(resumed)[k])
    for k, v in kernels_of(ref).items():
        np.testing.assert_allclose(v, kernels_of(resumed)[k], atol=1e-5)


def test_strip_equals_training_model_and_is_exactly_sparse():
    model, tech, trainer = make(POLICIES["rigl"]())
    x, y = data()
    trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    ref = trainer.predict(x, verbose=0)
    stripped = trainer.strip()
    assert stripped is model
    assert not any("mask" in w.path for w in stripped.weights)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), ref, atol=1e-5)
    for key, v, m in tech.sparse_weights:
        kv = keras.ops.convert_to_numpy(v)
        assert np.count_nonzero(kv) <= int(keras.ops.convert_to_numpy(m).sum())


class LogSpy(keras.callbacks.Callback):
    """Stands for TensorBoard / CSVLogger: a user callback reading logs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(dict(logs))


def test_logs_reach_history_and_user_callbacks_and_plot(tmp_path):
    _, tech, trainer = make(dsr())
    x, y = data()
    spy = LogSpy()
    hist = trainer.fit(
        x, y, batch_size=16, epochs=3, verbose=0, callbacks=[spy]
    )
    h = hist.history
    for key in (
        "sparse/density",
        "sparse/threshold",
        "sparse/dropped",
        "sparse/updates",
        "sparse/density/c2",
    ):
        assert len(h[key]) == 3, key
        # A user callback (TensorBoard writes every entry it sees as an
        # `epoch_<name>` scalar) receives the entries too.
        assert all(key in logs for logs in spy.seen), key
    assert h["sparse/density"] == pytest.approx([0.2] * 3, abs=1e-3)
    assert len(tech.history) == 3
    sizes = {r.item: r.values["size"] for r in _report(tech).applied}
    path = tmp_path / "density.png"
    plot_density(hist, path=str(path), sizes=sizes)
    assert path.stat().st_size > 1000
    plot_density(tech)  # the technique's own records work too


# ----------------------------------------------------------------------
# Errors at construction and at the start of fit
# ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match, error",
    [
        (dict(sparsity=1.0), "sparsity=1.0", ValueError),
        (dict(sparsity=-0.5), "sparsity=-0.5", ValueError),
        (dict(sparsity="0.5"), "sparsity='0.5'", TypeError),
        (dict(distribution="gaussian"), "distribution='gaussian'", ValueError),
        (dict(regrow_init="ones"), "regrow_init='ones'", ValueError),
        (dict(dense_layers=3), "dense_layers=3", TypeError),
        (dict(seed=-1), "seed=-1", ValueError),
        (dict(seed=1.5), "seed=1.5", TypeError),
        (dict(policy="nope"), "policy='nope'", ValueError),
    ],
)
def test_constructor_errors_name_argument_and_value(kw, match, error):
    # A wrong type raises TypeError, a wrong value ValueError.
    with pytest.raises(error, match=match):
        SparseTraining(**kw)


@pytest.mark.parametrize(
    "kw, match, error",
    [
        (dict(update_interval=0), "update_interval=0", ValueError),
        (dict(begin_step=-1), "begin_step=-1", ValueError),
        (dict(begin_step=1.5), "begin_step=1.5", TypeError),
        (dict(begin_step=5, end_step=5), "end_step=5", ValueError),
        (dict(end_fraction=0.0), "end_fraction=0.0", ValueError),
        (dict(power=0), "power=0", ValueError),
        (dict(power="3"), "power='3'", TypeError),
    ],
)
def test_gradual_pruning_errors_name_argument_and_value(kw, match, error):
    with pytest.raises(error, match=match):
        GradualPruning(**kw)


def test_attach_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown: \['nope'\]"):
        Trainer(
            tiny_resnet(), techniques=[SparseTraining(dense_layers=["nope"])]
        )
    sub = Subclassed()
    with pytest.raises(ValueError, match="must be built"):
        Trainer(sub, techniques=[SparseTraining()])


def test_fit_start_errors_are_clear():
    import tensorflow as tf

    model, tech, trainer = make(RigL(update_interval=2))
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    ds = ds.filter(lambda a, b: True)  # unknown cardinality
    with pytest.raises(ValueError, match="steps_per_epoch"):
        trainer.fit(ds, epochs=1, verbose=0)
    model, tech, trainer = make(dsr())
    model.get_layer("c1").trainable = False
    with pytest.raises(ValueError, match=r"frozen sparse weights=\['c1'\]"):
        trainer.fit(x, y, epochs=1, verbose=0)


# ----------------------------------------------------------------------
# Export: sparse TFLite is smaller once compressed
# ----------------------------------------------------------------------
def test_sparse_tflite_export_is_smaller_after_gzip(tmp_path):
    from keras_compact.export import export_tflite

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(64, 3, padding="same", name="stem")(inp)
    h = keras.layers.Conv2D(64, 3, padding="same", name="big")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(h))
    dense_path = str(tmp_path / "dense.tflite")
    export_tflite(model, dense_path)
    trainer = Trainer(
        model, techniques=[SparseTraining(0.9, policy="static", seed=0)]
    )
    sparse_path = str(tmp_path / "sparse.tflite")
    export_tflite(trainer, sparse_path, sparsity=True)

    def gz(p):
        with open(p, "rb") as f:
            return len(gzip.compress(f.read(), 9))

    assert gz(sparse_path) < 0.5 * gz(dense_path)


def test_eager_update_with_he_normal_regrowth():
    _, tech, _ = make(
        SET(update_interval=2, end_step=100), regrow_init="he_normal"
    )
    before = masks_of(tech)
    tech.update_masks(None, step=2)
    grown = 0
    for key, v, m in tech.sparse_weights:
        kv = keras.ops.convert_to_numpy(v)
        new = (keras.ops.convert_to_numpy(m) > 0) & (before[key] == 0)
        grown += int(new.sum())
        assert (kv[new] != 0).all()  # He-normal draws, not zeros
        assert int(keras.ops.convert_to_numpy(m).sum()) == int(
            before[key].sum()
        )
    assert grown > 0


# ----------------------------------------------------------------------
# Model kinds: subclassed and multi-output models
# ----------------------------------------------------------------------
class SmallSubclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(5, 3, name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.hidden = keras.layers.Dense(10, activation="relu", name="hidden")
        self.head = keras.layers.Dense(4, name="head")

    def call(self, x):
        return self.head(self.hidden(self.pool(self.conv(x))))


def test_subclassed_model_trains_and_strips_exactly_sparse():
    keras.utils.set_random_seed(0)
    model = SmallSubclassed()
    x, y = data(32)
    model(x[:2])
    trainer = Trainer(model, techniques=[SparseTraining(0.8, seed=0)])
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss=SCE)
    tech = trainer.techniques[0]
    assert [k for k, _, _ in tech.sparse_weights] == ["hidden", "head"]
    before = kernels_of(tech)
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert any((before[k] != v).any() for k, v in kernels_of(tech).items())
    ref = trainer.predict(x, verbose=0)
    stripped = trainer.strip()
    assert stripped is model
    assert not any("mask" in w.path for w in stripped.weights)
    for layer in (stripped.hidden, stripped.head):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.mean(kernel == 0) >= 0.8
    np.testing.assert_allclose(stripped.predict(x, verbose=0), ref, atol=1e-6)


def test_multi_output_model_trains_at_exact_target_sparsity():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, name="stem")(inp)
    h = keras.layers.Conv2D(10, 3, name="body")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = {
        "a": keras.layers.Dense(4, name="a")(h),
        "b": keras.layers.Dense(2, name="b")(h),
    }
    model = keras.Model(inp, out)
    tech = SparseTraining(0.8, policy=POLICIES["rigl"](), seed=0)
    trainer = Trainer(model, techniques=[tech])
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss={"a": SCE, "b": SCE},
    )
    x, y = data(32)
    before = masks_of(tech)
    check = StepCheck(tech)
    trainer.fit(
        x,
        {"a": y, "b": y % 2},
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[check],
    )
    assert int(keras.ops.convert_to_numpy(tech.update_count)) >= 2
    assert any((before[k] != m).any() for k, m in masks_of(tech).items())
    # 720 + 40 + 20 sparse weights, 20% of each kept: 144 + 8 + 4.
    assert check.violations == 0
    assert set(check.totals) == {156}
    rep = _report(tech)
    assert [r.item for r in rep.applied] == ["body", "a", "b"]
    assert rep.totals["sparsity"] == pytest.approx(0.8, abs=1e-12)


# ----------------------------------------------------------------------
# Gradual magnitude pruning: dense to sparse
# ----------------------------------------------------------------------
def _cubic_keep(size, target, step, begin, end, power=3.0):
    """Zhu and Gupta's schedule: the weights a layer keeps after `step`."""
    # float32 throughout, as the policy computes it.
    t = np.float32(step - begin) / np.float32(end - begin)
    t = np.clip(t, np.float32(0.0), np.float32(1.0))
    share = np.float32(1.0) - (np.float32(1.0) - t) ** np.float32(power)
    return size - int(np.round(share * np.float32(size - target)))


def test_gradual_pruning_starts_dense_and_follows_the_cubic_schedule():
    # 4 steps an epoch, 4 epochs; pruning every 2 steps and at step 11
    # (end_step off the grid), the final counts from step 11 on.
    _, tech, trainer = make(POLICIES["gmp"](), sparsity=0.8)
    sizes = {w.key: w.size for w in tech._weights}
    targets = {w.key: w.target for w in tech._weights}
    shapes = [tuple(v.shape) for _, v, _ in tech.sparse_weights]
    counts = nonzero_counts(shapes, uniform_densities(shapes, 0.8))
    assert targets == dict(zip(sizes, counts))  # the budget's split
    assert all(m.all() for m in masks_of(tech).values())  # starts dense
    check = StepCheck(tech)
    x, y = data()
    trainer.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[check])
    assert check.violations == 0  # exactly sparse after every step
    expected = []
    for step in range(1, 17):
        last = max([u for u in (2, 4, 6, 8, 10, 11) if u <= step], default=0)
        expected.append(
            sum(_cubic_keep(sizes[k], targets[k], last, 0, 11) for k in sizes)
        )
    assert check.totals == expected
    for k, m in masks_of(tech).items():  # the final budget, layer by layer
        assert int(m.sum()) == targets[k]
    assert int(keras.ops.convert_to_numpy(tech.update_count)) == 6
    assert _report(tech).totals["regrown_pruned_overall"] is None


def test_gradual_pruning_keeps_the_largest_magnitudes_and_regrows_none():
    _, tech, _ = make(GradualPruning(update_interval=1, end_step=4))
    before = kernels_of(tech)
    tech.update_masks(step=2)  # 7/8 of the way: s = 1 - (1/2)**3
    for w in tech._weights:
        m = keras.ops.convert_to_numpy(w.mask).astype(bool)
        mag = np.abs(before[w.key])
        assert m.sum() == _cubic_keep(w.size, w.target, 2, 0, 4)
        if not m.all():
            # Every kept weight is at least as large as every pruned one.
            assert mag[m].min() >= mag[~m].max()
    mid = masks_of(tech)
    tech.update_masks(step=4)
    for w in tech._weights:
        m = masks_of(tech)[w.key]
        assert int(m.sum()) == w.target
        assert not (m > mid[w.key]).any()  # nothing pruned comes back


def test_gradual_pruning_round_trips_and_resolves_its_end_from_fit(tmp_path):
    _, tech, trainer = make("gmp")
    assert isinstance(tech.policy, GradualPruning)
    x, y = data()
    trainer.fit(x, y, batch_size=16, epochs=4, verbose=0)
    # end_fraction 0.75 of 16 steps: pruned to the budget at step 12.
    assert int(keras.ops.convert_to_numpy(tech.end_step)) == 12
    assert all(
        int(m.sum()) == w.target
        for w, m in zip(tech._weights, masks_of(tech).values())
    )
    path = str(tmp_path / "gmp.keras")
    trainer.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    policy = loaded.techniques[0].policy
    assert isinstance(policy, GradualPruning)
    assert policy.get_config() == tech.policy.get_config()
    for k, m in masks_of(tech).items():
        np.testing.assert_array_equal(m, masks_of(loaded.techniques[0])[k])


def test_gradual_pruning_that_would_never_prune_is_refused_at_fit():
    # 4 steps an epoch x 2 epochs x 0.75: the end step 6 is before step 10.
    _, _, trainer = make(GradualPruning(begin_step=10))
    x, y = data()
    with pytest.raises(ValueError, match="begin_step=10.*end_step=6"):
        trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
