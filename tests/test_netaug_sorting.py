"""NetAug channel permutation / sorting and BatchNorm re-estimation."""

import keras
import numpy as np
import tensorflow as tf
from netaug_models import concat_model, se_model

from keras_compact.netaug import (
    BNRecalibration,
    NetAug,
    permute_group,
    recalibrate_batch_norm,
    sort_expand_channels,
)
from keras_compact.training import Trainer


def _setup(model_fn, **kwargs):
    model = model_fn()
    netaug = NetAug(seed=0, **kwargs)
    trainer = Trainer(model, techniques=[netaug])
    x = np.random.default_rng(0).random((4, 16, 16, 3)).astype("float32")
    return model, netaug, trainer, x


def _wide(netaug, x, training=False):
    return np.asarray(
        netaug.augmented_model([x, netaug.max_widths()], training=training)
    )


def _perturb_extras(netaug):
    # Give every extra weight (incl. moving statistics) distinct values, so
    # that a wrong permutation cannot go unnoticed.
    rng = np.random.default_rng(1)
    for layer in netaug.elastic_layers:
        for v in layer.weights:
            value = rng.normal(0.0, 0.3, v.shape).astype(v.dtype)
            if "variance" in v.name:
                value = np.abs(value) + 0.5
            v.assign(value)


def test_permutation_inside_tiny_and_inside_extra_keeps_both_functions():
    for model_fn in (se_model, concat_model):
        model, netaug, _, x = _setup(model_fn, sort_channels=True)
        _perturb_extras(netaug)
        tiny, wide = np.asarray(model(x)), _wide(netaug, x)
        rng = np.random.default_rng(2)
        for g in netaug.supernet.augmented:
            extra = netaug.supernet.plan[g.index][1]
            perm = np.concatenate(
                [rng.permutation(g.size), g.size + rng.permutation(extra)]
            )
            permute_group(netaug.supernet, g.index, perm)
        np.testing.assert_allclose(model(x), tiny, atol=1e-5)
        np.testing.assert_allclose(_wide(netaug, x), wide, atol=1e-5)
        np.testing.assert_allclose(
            _wide(netaug, x, True), _wide(netaug, x, True), atol=1e-6
        )


def test_sorting_moves_important_channels_into_the_tiny_slice():
    model, netaug, _, x = _setup(se_model, sort_channels=True)
    _perturb_extras(netaug)
    # (Training mode updates the extras' moving statistics: run it first.)
    wide_train = _wide(netaug, x, True)
    wide = _wide(netaug, x)
    tiny = np.asarray(model(x))
    moved = sort_expand_channels(netaug.supernet)
    assert moved > 0
    # Largest augmented model: same function (inference and batch stats).
    np.testing.assert_allclose(_wide(netaug, x), wide, atol=1e-5)
    np.testing.assert_allclose(_wide(netaug, x, True), wide_train, atol=1e-5)
    # The tiny model changed: channels trained as extras entered it.
    assert not np.allclose(model(x), tiny, atol=1e-5)
    # Sorted: importance is now non-increasing, so sorting again is a no-op.
    assert sort_expand_channels(netaug.supernet) == 0
    # The min-width path is still exactly the (new) compact model.
    np.testing.assert_allclose(
        netaug.augmented_model([x, netaug.min_widths()]), model(x), atol=1e-5
    )


def test_permutation_carries_optimizer_slots_and_fit_sorts_in_width_phase(
    monkeypatch,
):
    from keras_compact.netaug import sorting

    calls = []
    real = sorting.sort_expand_channels

    def spy(supernet, optimizer=None):
        calls.append(optimizer)
        return real(supernet, optimizer)

    monkeypatch.setattr(sorting, "sort_expand_channels", spy)
    model, netaug, trainer, x = _setup(se_model, sort_channels=True)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    y = np.array([0, 1, 2, 0])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    trainer.fit(ds, epochs=2, verbose=0)
    opt = trainer.optimizer
    # Sorted at the start of the width phase's epochs only: "auto" stops
    # width augmentation after half of the 2 epochs.
    assert len(calls) == 1 and calls[-1] is opt
    g = next(g for g in netaug.supernet.augmented if g.kind == "expand")
    expand = next(
        layer for layer in netaug.elastic_layers if layer.layer.name == "expand"
    )
    slot = expand.kernel_slot
    momentum = {
        v.path: m for v, m in zip(opt._trainable_variables, opt.momentums)
    }

    def full(source):
        return slot.assemble([source(v) for v in slot.variables()])

    before_w = full(lambda v: v.numpy())
    before_m = full(lambda v: momentum[v.path].numpy())
    perm = np.random.default_rng(3).permutation(before_w.shape[-1])
    permute_group(netaug.supernet, g.index, perm, opt)
    np.testing.assert_array_equal(
        full(lambda v: v.numpy()), before_w[..., perm]
    )
    np.testing.assert_array_equal(
        full(lambda v: momentum[v.path].numpy()), before_m[..., perm]
    )


def test_recalibration_sets_mean_batch_statistics():
    model = se_model()
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
    used = recalibrate_batch_norm(model, ds, num_images=8)
    assert used == 8
    # The first BN's input does not depend on other BN layers.
    stem = model.get_layer("stem")
    means = [
        np.asarray(stem(x[i : i + 4])).mean(axis=(0, 1, 2)) for i in (0, 4)
    ]
    np.testing.assert_allclose(
        model.get_layer("stem_bn").moving_mean.numpy(),
        np.mean(means, axis=0),
        atol=1e-5,
    )


def test_recalibration_callback_runs_before_validation_and_at_the_end():
    model, netaug, trainer, x = _setup(se_model)
    trainer.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    y = np.array([0, 1, 2, 0])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    cb = BNRecalibration(ds.map(lambda a, b: a), num_images=4)
    trainer.fit(ds, validation_data=ds, epochs=2, callbacks=[cb], verbose=0)
    assert cb.calls == 3  # two validations + train end
