"""One test of the promises every technique makes, shared by all of them.

A technique adds training-only parts around the user's compact model and
strips them exactly. `run_technique_test` checks that promise on one model,
the way keras-hub's `TestCase.run_*_test` methods check every model of that
library with one body of code:

- `strip()` returns a model whose outputs equal the trainer's inference
  outputs (<= `atol`), with the user's parameter count and layer configs;
- the trainer round-trips through a `.keras` file with no
  `custom_objects`, and so does the stripped model;
- a run interrupted after its first epoch and resumed by
  `keras.callbacks.BackupAndRestore` ends with the weights (and technique
  state) of an uninterrupted run;
- the float32 `.tflite` of the stripped model equals Keras (<= 1e-4);
- a batch with a NaN stops training with `NonFiniteTrainingError`, weights
  and technique state untouched.

`run_distributed_test` checks one more promise: trained under
`tf.distribute.MirroredStrategy` with two replicas, a technique ends with
the weights and technique state of a one-device run on the same data and
global batch, and the replicas stay identical.

Every technique runs `run_technique_test` on a zoo model, a Sequential
model and a model with a softmax output, and
`keras.applications.MobileNetV2(weights=None)` runs it once with the
cheapest settings (tests/test_techniques.py); every technique runs
`run_distributed_test` on the zoo model (tests/test_techniques.py,
tests/test_distributed.py).
"""

import os
import tempfile

import keras
import numpy as np

from keras_compact.graph.outputs import softmax_outputs
from keras_compact.training.trainer import NonFiniteTrainingError, Trainer


class _Interrupt(keras.callbacks.Callback):
    """Stops `fit` at the end of an epoch (after BackupAndRestore saved)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"test interruption after epoch {epoch}")


class _Snapshot(keras.callbacks.Callback):
    """Takes the trainer's state just before the first batch."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer
        self.state = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.state is None:
            self.state = _state(self.trainer)


def _data(model, n, num_classes, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    x = rng.uniform(0, 1, size=(n,) + shape).astype("float32")
    y = rng.integers(0, num_classes, size=(n,)).astype("int32")
    return x, y


def _num_classes(model):
    return int(model.outputs[0].shape[-1])


def _layer_configs(model):
    return [
        (type(layer).__name__, layer.get_config()) for layer in model.layers
    ]


def _state(trainer):
    """Every variable of the trainer (model and techniques), in order, by
    position (automatic layer names differ between two builds)."""
    return {
        f"{i}:{v.path}": np.asarray(v.numpy())
        for i, v in enumerate(trainer.variables)
    }


def _make(model_factory, technique_factory, seed):
    keras.utils.set_random_seed(seed)
    model = model_factory()
    techniques = technique_factory()
    if not isinstance(techniques, (list, tuple)):
        techniques = [techniques]
    trainer = Trainer(model, techniques=list(techniques))
    probabilities = softmax_outputs(model)[0]
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=not probabilities
        ),
        metrics=["accuracy"],
    )
    return model, trainer


def _fit(trainer, x, y, epochs, batch_size, callbacks=()):
    trainer.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def _assert_close(a, b, atol, what):
    a = keras.tree.flatten(a)
    b = keras.tree.flatten(b)
    if len(a) != len(b):
        raise AssertionError(f"{what}: {len(a)} outputs against {len(b)}")
    for u, v in zip(a, b):
        diff = float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
        if not diff <= atol:
            raise AssertionError(f"{what}: max |difference| {diff} > {atol}")


def run_technique_test(
    technique_factory,
    model_factory,
    num_examples=32,
    batch_size=8,
    epochs=2,
    atol=1e-5,
    tflite_atol=1e-4,
    check_resume=True,
    check_tflite=True,
    seed=0,
):
    """Checks the promises every technique makes, on one model.

    Args:
        technique_factory: callable returning a `Technique` (or a list of
            them) for a fresh trainer; called once per trainer built.
        model_factory: callable returning a fresh, built Keras model (same
            weights for the same global seed).
        num_examples: random training examples (uniform in [0, 1)).
        batch_size: training batch size.
        epochs: epochs of the reference run (>= 2: the resumed run is
            interrupted after the first).
        atol: tolerance of strip equality, the `.keras` round trip and
            resume equality.
        tflite_atol: tolerance of the float32 `.tflite` against Keras.
        check_resume: run the interrupted-and-resumed comparison.
        check_tflite: run the float32 `.tflite` comparison.
        seed: the global seed of every trainer built.

    Raises:
        AssertionError: naming the first promise that does not hold.
    """
    if epochs < 2:
        raise ValueError(
            f"Expected epochs >= 2 (the resume check interrupts after the "
            f"first). Received: epochs={epochs}"
        )
    model, trainer = _make(model_factory, technique_factory, seed)
    params = model.count_params()
    configs = _layer_configs(model)
    x, y = _data(model, num_examples, _num_classes(model), seed)
    _fit(trainer, x, y, epochs, batch_size)

    # strip() equals the trainer's inference, with the user's architecture.
    stripped = trainer.strip()
    reference = trainer.predict(x, batch_size=batch_size, verbose=0)
    _assert_close(
        stripped.predict(x, batch_size=batch_size, verbose=0),
        reference,
        atol,
        "strip() against the trainer's inference",
    )
    if stripped.count_params() != params:
        raise AssertionError(
            f"strip() changed the parameter count: {params} -> "
            f"{stripped.count_params()}"
        )
    if _layer_configs(stripped) != configs:
        raise AssertionError("strip() changed the layer configs")

    with tempfile.TemporaryDirectory() as tmp:
        # .keras round trips, with no custom_objects.
        path = os.path.join(tmp, "trainer.keras")
        trainer.save(path)
        loaded = keras.saving.load_model(path)
        _assert_close(
            loaded.predict(x, batch_size=batch_size, verbose=0),
            reference,
            atol,
            "the trainer loaded from .keras",
        )
        _assert_close(
            loaded.strip().predict(x, batch_size=batch_size, verbose=0),
            reference,
            atol,
            "the stripped model of the loaded trainer",
        )
        path = os.path.join(tmp, "compact.keras")
        stripped.save(path)
        _assert_close(
            keras.saving.load_model(path).predict(
                x, batch_size=batch_size, verbose=0
            ),
            reference,
            atol,
            "the stripped model loaded from .keras",
        )

        if check_tflite:
            from keras_compact.export import export_tflite, run_tflite

            path = os.path.join(tmp, "compact.tflite")
            export_tflite(stripped, path, quantization="float32")
            _assert_close(
                run_tflite(path, x[:8]),
                stripped.predict(x[:8], verbose=0),
                tflite_atol,
                "the float32 .tflite against Keras",
            )

        if check_resume:
            # Interrupted after epoch 0, resumed: the uninterrupted run's
            # weights and technique state.
            want = _state(trainer)
            backup = os.path.join(tmp, "backup")
            _, first = _make(model_factory, technique_factory, seed)
            try:
                _fit(
                    first,
                    x,
                    y,
                    epochs,
                    batch_size,
                    [
                        keras.callbacks.BackupAndRestore(backup),
                        _Interrupt(0),
                    ],
                )
            except KeyboardInterrupt:
                pass
            else:
                raise AssertionError("the interruption did not happen")
            _, resumed = _make(model_factory, technique_factory, seed)
            _fit(
                resumed,
                x,
                y,
                epochs,
                batch_size,
                [keras.callbacks.BackupAndRestore(backup)],
            )
            got = list(_state(resumed).values())
            if len(got) != len(want):
                raise AssertionError(
                    f"the resumed trainer has {len(got)} variables, the "
                    f"uninterrupted one {len(want)}"
                )
            for (name, a), b in zip(want.items(), got):
                if a.shape != b.shape:
                    ok = False
                elif a.dtype.kind == "f":
                    diff = float(np.max(np.abs(a - b), initial=0))
                    ok = diff <= max(atol, 1e-4)
                else:
                    ok = np.array_equal(a, b)
                if not ok:
                    raise AssertionError(
                        f"resumed run differs from the uninterrupted one in "
                        f"{name}"
                    )

    # A NaN in the data stops training before anything of the step is
    # written (state set by epoch-begin callbacks is taken just before).
    snapshot = _Snapshot(trainer)
    bad = x[:batch_size].copy()
    bad[0].flat[0] = np.nan
    try:
        trainer.fit(
            bad,
            y[:batch_size],
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[snapshot],
        )
    except NonFiniteTrainingError:
        pass
    else:
        raise AssertionError("a NaN input did not stop training")
    # `after_fit` ran when fit raised (it may put the model in its
    # deployable state, e.g. folded branches); `validate` returns it to the
    # state that the next fit trains from, which is what must be unchanged.
    for t in trainer.techniques:
        t.validate(trainer)
    after = _state(trainer)
    changed = [
        k
        for k in snapshot.state
        if not np.array_equal(snapshot.state[k], after[k], equal_nan=True)
    ]
    if changed:
        raise AssertionError(
            f"the non-finite step wrote to {changed[:5]} before stopping"
        )


def synchronized_batch_norm(model_factory):
    """Wraps a model factory so that every `BatchNormalization` of the
    model it returns is `synchronized=True` (same weights otherwise).

    A replica normalises with its own half of the global batch unless its
    batch normalization is synchronized; only then can a mirrored run equal
    a one-device run. The layers keep their class, so every technique sees
    the model it would see otherwise.
    """

    def make():
        model = model_factory()
        if not any(
            type(layer) is keras.layers.BatchNormalization
            for layer in model.layers
        ):
            return model

        def clone(layer):
            config = layer.get_config()
            if type(layer) is keras.layers.BatchNormalization:
                config["synchronized"] = True
            return type(layer).from_config(config)

        synced = keras.models.clone_model(model, clone_function=clone)
        synced.set_weights(model.get_weights())
        return synced

    return make


def _logical_cpus(count):
    import tensorflow as tf

    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < count:
        raise RuntimeError(
            f"Expected at least {count} logical CPU devices for the "
            f"MirroredStrategy check. Received: {len(devices)} "
            "(configure them before TensorFlow initialises, with "
            "`tf.config.set_logical_device_configuration(cpu, "
            f"[tf.config.LogicalDeviceConfiguration()] * {count})`; "
            "tests/conftest.py does it for the test session)"
        )
    return [d.name for d in devices[:count]]


_STRATEGIES = {}


def _mirrored_strategy(devices):
    """One `MirroredStrategy` per device set for the whole process: a second
    strategy over the same devices restarts the collective instance keys,
    and its all-reduces then collide with the first one's ("Shape mismatch
    in the collective instance")."""
    import tensorflow as tf

    key = tuple(devices)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = tf.distribute.MirroredStrategy(list(devices))
    return _STRATEGIES[key]


def _replica_values(variable):
    """The per-replica copies of a (Keras) variable: one array per replica
    for a mirrored variable, a single array otherwise."""
    value = getattr(variable, "value", variable)
    copies = getattr(value, "values", None)
    if copies is None:
        return [np.asarray(variable.numpy())]
    return [np.asarray(c.numpy()) for c in copies]


def _compare_states(want, got, rtol, atol, what):
    """Float arrays equal to `atol + rtol * max|want|` (per variable), other
    arrays exactly; `want` and `got` are `_state` dicts (by position)."""
    if len(want) != len(got):
        raise AssertionError(
            f"{what}: {len(got)} variables against {len(want)}"
        )
    for (name, a), (other, b) in zip(want.items(), got.items()):
        if a.shape != b.shape:
            raise AssertionError(
                f"{what}: {name} has shape {b.shape} (in {other}) instead of "
                f"{a.shape}"
            )
        if a.dtype.kind == "f":
            scale = float(np.max(np.abs(a), initial=0.0))
            diff = float(np.max(np.abs(a - b), initial=0.0))
            ok = diff <= atol + rtol * scale
            detail = f"max |difference| {diff:.3g}, max |value| {scale:.3g}"
        else:
            ok = np.array_equal(a, b)
            detail = f"{int(np.sum(a != b))} of {a.size} entries differ"
        if not ok:
            raise AssertionError(f"{what}: {name} differs ({detail})")


def run_distributed_test(
    technique_factory,
    model_factory,
    num_examples=16,
    batch_size=8,
    epochs=2,
    rtol=1e-5,
    atol=1e-6,
    synchronized=True,
    seed=0,
):
    """Checks that a technique trains the same on two replicas as on one.

    Two trainers are built from the same seed and trained on the same data
    with the same global batch: one on the default (single-device)
    strategy, one under `tf.distribute.MirroredStrategy` over two logical
    CPU devices (each replica gets half of every batch). The check passes
    when every variable of the trainer (the model's weights and moving
    statistics, every technique's state: masks, thresholds, counters,
    ranges) agrees between the two runs, and the two copies of every
    mirrored variable are identical.

    Float variables agree when `max|one - two| <= atol + rtol * max|one|`
    (summation order differs between one and two replicas); integer and
    boolean variables must be equal.

    The logical devices must exist before TensorFlow initialises
    (tests/conftest.py configures two for the test session).

    Args:
        technique_factory: callable returning a `Technique` (or a list of
            them) for a fresh trainer; called once per trainer built.
        model_factory: callable returning a fresh, built Keras model (same
            weights for the same global seed).
        num_examples: random training examples (uniform in [0, 1)).
        batch_size: the global batch size (even: two replicas).
        epochs: training epochs of both runs.
        rtol: tolerance relative to the largest magnitude of each variable.
        atol: absolute tolerance.
        synchronized: make the model's `BatchNormalization` layers
            `synchronized=True` (see `synchronized_batch_norm`); without it
            each replica normalises with its own half batch and the runs
            differ by design.
        seed: the global seed of both trainers.

    Returns:
        `(one_device_trainer, mirrored_trainer)`, both trained, for checks
        of a technique's own (e.g. sparse kernels stay zero on every
        replica).

    Raises:
        AssertionError: naming the first variable that differs.
        RuntimeError: if fewer than two logical CPU devices exist.
    """
    if batch_size % 2 or batch_size < 2:
        raise ValueError(
            "Expected an even `batch_size` (two replicas). Received: "
            f"batch_size={batch_size}"
        )
    if num_examples % batch_size:
        raise ValueError(
            "Expected `num_examples` to be a multiple of `batch_size` (no "
            "partial batch). Received: "
            f"num_examples={num_examples}, batch_size={batch_size}"
        )
    devices = _logical_cpus(2)
    if synchronized:
        model_factory = synchronized_batch_norm(model_factory)

    model, one = _make(model_factory, technique_factory, seed)
    x, y = _data(model, num_examples, _num_classes(model), seed)
    _fit(one, x, y, epochs, batch_size)

    with _mirrored_strategy(devices).scope():
        _, two = _make(model_factory, technique_factory, seed)
    _fit(two, x, y, epochs, batch_size)

    mirrored = 0
    for i, v in enumerate(two.variables):
        copies = _replica_values(v)
        mirrored += len(copies) > 1
        if not all(np.array_equal(copies[0], c) for c in copies[1:]):
            raise AssertionError(
                f"the replicas of {i}:{v.path} differ after mirrored training"
            )
    if not mirrored:
        raise AssertionError("no variable was mirrored over the two devices")
    _compare_states(
        _state(one),
        _state(two),
        rtol,
        atol,
        "MirroredStrategy (2 replicas) against one device",
    )
    return one, two
