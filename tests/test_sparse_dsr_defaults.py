"""Issue 17 (sparse): DSR's defaults on small models, H within the weights'
range, update spacing, and the fraction of regrown weights pruned again."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_sparse_algorithms import _dsr_round, _Holder

from keras_compact.models import get_model
from keras_compact.sparse import (
    DSR,
    SET,
    PeriodSchedule,
    RigL,
    SparseTraining,
    Static,
    algorithms,
)
from keras_compact.sparse.monitor import MIN_UPDATE_SPACING
from keras_compact.training import Trainer

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RESNET8_BUDGET = 7436  # non-zeros of the zoo resnet8 at 90% (uniform)


def _report(technique):
    """The technique's `TechniqueReport`, without printing it."""
    return technique.summary(print_fn=lambda line: None)


def resnet8(seed=0):
    keras.utils.set_random_seed(seed)
    # 16x16 images: the kernels (hence the budget) do not depend on it.
    return get_model("resnet8", input_shape=(16, 16, 3), num_classes=10)


def masks_of(tech):
    return {
        k: keras.ops.convert_to_numpy(m).astype(bool)
        for k, _, m in tech.sparse_weights
    }


def kernels_of(tech):
    return {
        k: keras.ops.convert_to_numpy(v).copy()
        for k, v, _ in tech.sparse_weights
    }


class RoundCheck(keras.callbacks.Callback):
    """After every step: budget; after every update: H, survivors."""

    def __init__(self, tech):
        super().__init__()
        self.tech = tech
        self.before = masks_of(tech)
        self.updates = 0
        self.totals = set()
        self.thresholds = []
        self.max_w = []
        self.survivor_fractions = []  # min over layers, per round
        self.min_active = []

    def on_train_batch_end(self, batch, logs=None):
        t = self.tech
        after = masks_of(t)
        self.totals.add(sum(int(m.sum()) for m in after.values()))
        self.min_active.append(min(int(m.sum()) for m in after.values()))
        n = int(keras.ops.convert_to_numpy(t.update_count))
        if n != self.updates:
            self.updates = n
            top = max(float(np.abs(k).max()) for k in kernels_of(t).values())
            self.thresholds.append(t.threshold_value())
            self.max_w.append(top)
            self.survivor_fractions.append(
                min(
                    (after[k] & self.before[k]).sum() / self.before[k].sum()
                    for k in after
                )
            )
        self.before = after


@pytest.mark.filterwarnings("ignore:.*were pruned again:UserWarning")
def test_default_dsr_on_zoo_resnet8_keeps_budget_and_threshold_for_30_rounds():
    # SparseTraining(0.9)'s policy is DSR with its defaults; only the
    # period is shortened so that 30 rounds happen in 64 steps.
    assert isinstance(SparseTraining(0.9).policy, DSR)
    policy = DSR(period=PeriodSchedule((), (2,)))
    assert policy.target_prunes == pytest.approx(0.138)
    tech = SparseTraining(0.9, policy=policy, seed=0)
    trainer = Trainer(resnet8(), techniques=[tech])
    assert _report(tech).applied[-1].item == "logits"  # sparse too
    budget = sum(r.values["nonzeros"] for r in _report(tech).applied)
    assert budget == RESNET8_BUDGET
    assert policy.num_prunes == round(0.138 * RESNET8_BUDGET)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=SCE
    )
    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    check = RoundCheck(tech)
    with pytest.warns(UserWarning, match="every 2 iterations"):
        hist = trainer.fit(
            x, y, batch_size=8, epochs=8, verbose=0, callbacks=[check]
        )
    assert check.updates >= 30
    assert check.totals == {RESNET8_BUDGET}  # at the budget after each step
    # H stays within the weights' range, and never runs away (the old
    # default doubled it every round, 0.002 -> 4.1 in 12 rounds).
    for h, top in zip(check.thresholds, check.max_w):
        assert DSR.MIN_THRESHOLD <= h <= top
    assert max(check.thresholds) < 0.5
    # No layer is emptied: every round keeps most of every layer (the old
    # default kept one weight per layer from round 10 on).
    assert min(check.min_active) >= 10
    assert min(check.survivor_fractions) >= 0.1, check.survivor_fractions
    dropped = [r["sparse/dropped"] for r in tech.history]
    assert max(dropped) <= 0.5 * RESNET8_BUDGET
    # The regrown-then-pruned fraction is logged at every epoch end.
    fractions = hist.history["sparse/regrown_pruned"]
    assert len(fractions) == 8
    assert all(0.0 <= f <= 1.0 for f in fractions)
    overall = tech.regrown_pruned_fraction()
    assert 0.0 <= overall <= 1.0


def test_explicit_target_prunes_too_large_for_the_budget_is_a_clear_error():
    model = resnet8()
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="target_prunes") as err:
        Trainer(
            model,
            techniques=[SparseTraining(0.9, policy=DSR(target_prunes=20000))],
        )
    message = str(err.value)
    assert message.startswith("Expected")
    assert "Received: target_prunes=20000" in message
    assert f"budget={RESNET8_BUDGET}" in message
    # The failed attach left the model untouched (no mask applied).
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)
    # The boundary is (1 - delta) * budget = 6692.4: 6692 is accepted.
    limit = int(0.9 * RESNET8_BUDGET)
    Trainer(
        resnet8(),
        techniques=[SparseTraining(0.9, policy=DSR(target_prunes=limit))],
    )
    with pytest.raises(ValueError, match=f"target_prunes={limit + 1}"):
        Trainer(
            resnet8(),
            techniques=[
                SparseTraining(0.9, policy=DSR(target_prunes=limit + 1))
            ],
        )
    # A fraction that no budget can sustain fails at construction, and a
    # wrong type is a TypeError.
    with pytest.raises(ValueError, match="Received: target_prunes=0.95"):
        DSR(target_prunes=0.95)
    with pytest.raises(ValueError, match="target_prunes=0.5, delta=0.6"):
        DSR(target_prunes=0.5, delta=0.6)
    with pytest.raises(TypeError, match="Received: target_prunes='1000'"):
        DSR(target_prunes="1000")
    assert DSR(target_prunes=np.int64(10)).target_prunes == 10


def test_threshold_is_clipped_to_the_weights_range():
    masks = [np.zeros((20, 20), bool), np.zeros((10, 30), bool)]
    masks[0][:5] = True
    masks[1][:4] = True
    budget = int(sum(m.sum() for m in masks))
    # All active weights have |w| = 0.25: no round ever prunes any, so the
    # threshold doubles; it must stop at max |w|.
    policy = DSR(target_prunes=0.2, initial_threshold=0.05)
    policy.build(_Holder(), budget)
    for step in range(1, 9):
        kernels = [np.where(m, 0.25, 0.0).astype("float32") for m in masks]
        masks = _dsr_round(policy, kernels, masks, step)[0]
        assert float(policy.threshold.numpy()) <= 0.25
    assert float(policy.threshold.numpy()) == pytest.approx(0.25)
    # All weights zero: every round prunes all it may (more than N_p), so
    # the threshold halves; it must stop at the floor, where it can still
    # double again.
    policy = DSR(target_prunes=0.2, initial_threshold=1e-3)
    policy.build(_Holder(), budget)
    for step in range(1, 41):
        kernels = [np.zeros(m.shape, "float32") for m in masks]
        masks = _dsr_round(policy, kernels, masks, step)[0]
    assert float(policy.threshold.numpy()) == pytest.approx(DSR.MIN_THRESHOLD)


def test_regrown_pruned_counts_on_a_hand_built_case():
    regrown = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1], bool)
    active = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0], bool)
    kept = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0], bool)
    judged, pruned = algorithms.regrown_pruned_counts(
        tf.constant(regrown), tf.constant(active), tf.constant(kept)
    )
    # Regrown and still active: positions 0-3 (8 is not active); of these
    # 1 and 2 are not kept.
    assert (int(judged), int(pruned)) == (4, 2)


def make_tiny(policy, sparsity=0.8, seed=3):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out)
    tech = SparseTraining(sparsity, policy=policy, seed=seed)
    trainer = Trainer(model, techniques=[tech])
    trainer.compile(optimizer=keras.optimizers.SGD(0.05), loss=SCE)
    return tech, trainer


def test_regrown_pruned_fraction_on_a_constructed_case():
    tech, _ = make_tiny(SET(update_interval=100, drop_fraction=0.3))
    assert tech.regrown_pruned_fraction() is None
    start = masks_of(tech)
    tech.update_masks(None, step=100)
    first = masks_of(tech)
    assert tech.regrown_pruned_fraction() is None  # nothing judged yet
    # Of the weights grown by the first update (all zero), give the first
    # half of each layer a magnitude above every other weight.
    expected_judged = expected_pruned = 0
    bigs = {}
    for key, v, _ in tech.sparse_weights:
        grown = first[key] & ~start[key]
        idx = np.flatnonzero(grown)
        big = bigs[key] = idx[: len(idx) // 2]
        value = keras.ops.convert_to_numpy(v).copy().reshape(-1)
        value[big] = 10.0
        v.assign(value.reshape(v.shape))
        # SET drops floor(0.3 * n_active) = len(idx) weights with the
        # smallest |w|: first the zero-valued regrown ones, never the big.
        expected_judged += len(idx)
        expected_pruned += len(idx) - len(big)
    assert expected_judged > 0 and 0 < expected_pruned < expected_judged
    tech.update_masks(None, step=200)
    assert tech.regrown_pruned_counts(last=True) == (
        expected_pruned,
        expected_judged,
    )
    # After two updates, the run's value is the second update's.
    assert tech.regrown_pruned_counts() == (expected_pruned, expected_judged)
    assert tech.regrown_pruned_fraction(last=True) == pytest.approx(
        expected_pruned / expected_judged
    )
    second = masks_of(tech)
    for key in second:
        # The big regrown weights survived, the zero-valued ones did not.
        grown = first[key] & ~start[key]
        assert second[key].reshape(-1)[bigs[key]].all()
        # The zero-valued ones were all dropped; the random regrowth may
        # pick a few of the just-dropped positions again (SET), so the
        # mask shows at most that many gone.
        pruned_again = grown & ~second[key]
        assert int(pruned_again.sum()) <= int(grown.sum()) - len(bigs[key])
    # The third update judges the second one's (zero) regrowth: all of it
    # is pruned, the cumulative fraction counts both.
    second_grown = sum(int((second[k] & ~first[k]).sum()) for k in second)
    tech.update_masks(None, step=300)
    pruned, judged = tech.regrown_pruned_counts(last=True)
    assert judged == second_grown and pruned == judged
    assert tech.regrown_pruned_counts() == (
        expected_pruned + pruned,
        expected_judged + judged,
    )
    rep = _report(tech).totals
    assert rep["regrown_pruned_last"] == 1.0
    assert rep["regrown_pruned_overall"] == pytest.approx(
        (expected_pruned + pruned) / (expected_judged + judged)
    )


def test_short_spacing_and_dying_regrowth_are_warned_once():
    tech, trainer = make_tiny(
        SET(update_interval=2, drop_fraction=0.3, end_step=100)
    )
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 3), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = trainer.fit(
            x, y, batch_size=16, epochs=3, verbose=0, steps_per_epoch=4
        )
    messages = [str(w.message) for w in caught]
    spacing = [m for m in messages if "every 2 iterations" in m]
    dying = [m for m in messages if "were pruned again" in m]
    assert len(spacing) == 1 and "0.5 of an epoch of 4 steps" in spacing[0]
    assert len(dying) == 1
    # The logged value is the epoch's fraction: counts are consistent.
    logged = hist.history["sparse/regrown_pruned"]
    assert len(logged) == 3 and all(f > 0.5 for f in logged)
    assert tech.history[-1]["sparse/regrown_pruned"] == logged[-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    again = [str(w.message) for w in caught]
    assert not [m for m in again if "iterations" in m or "pruned again" in m]


@pytest.mark.parametrize(
    "policy, spacing",
    [
        (DSR(), 100),
        (DSR(stop_epoch=None), 100),
        (DSR(period=PeriodSchedule((2,), (5, 50))), 5),
        (SET(), 100),
        (RigL(), 100),
        (DSR(period=PeriodSchedule((2,), (50, 5)), stop_epoch=2), 50),
        (Static(), None),
    ],
)
def test_default_spacing_follows_the_references(policy, spacing):
    # DSR's spacing is the smallest period of the epochs that run.
    assert policy.update_spacing(epochs=30) == spacing
    if spacing is not None:
        assert (spacing >= MIN_UPDATE_SPACING) == (spacing == 100)
