"""Tests for keras_compact.data: loading, resolution order, pipelines."""

import gzip
import hashlib
import os
import pickle
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import data
from keras_compact.data import loaders

# Helpers ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _never_download(monkeypatch):
    """Any call to a keras.datasets loader fails the test (no internet)."""

    def _fail():
        pytest.fail("keras.datasets download attempted")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", _fail)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", _fail)


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """No env var, an empty Keras home: nothing can be found anywhere."""
    monkeypatch.delenv("KERAS_COMPACT_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def _write_idx(path, array, magic):
    header = struct.pack(">II", magic, len(array))
    if array.ndim == 3:
        header += struct.pack(">II", *array.shape[1:])
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _make_fashion(folder, train_per_class, test_per_class=2):
    """Writes fake Fashion-MNIST IDX files, sorted by class.

    Each image carries a unique id in pixels (0, 0) and (0, 1) and its label
    in pixel (0, 2); test ids start at 5000.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, per_class, first_id in (
        ("train", train_per_class, 0),
        ("t10k", test_per_class, 5000),
    ):
        labels = np.repeat(np.arange(10), per_class)
        ids = first_id + np.arange(len(labels))
        images = np.zeros((len(labels), 28, 28), np.uint8)
        images[:, 0, 0] = ids // 256
        images[:, 0, 1] = ids % 256
        images[:, 0, 2] = labels
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return folder


def _ids(x):
    """Decodes the ids written by `_make_fashion` from [0, 1] images."""
    pixels = np.round(x[:, 0, :2, 0] * 255).astype(np.int64)
    return pixels[:, 0] * 256 + pixels[:, 1]


def _class_counts(y, num_classes=10):
    return np.bincount(y, minlength=num_classes).tolist()


def _is_shift_of(augmented, original, pad, flips):
    """Whether `augmented` is `original` shifted by at most `pad` pixels."""
    h, w = original.shape[:2]
    candidates = [original, original[:, ::-1]] if flips else [original]
    for image in candidates:
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if np.array_equal(padded[dy : dy + h, dx : dx + w], augmented):
                    return True
    return False


def _to_uint8(x):
    return np.round(x * 255).astype(np.uint8)


# Registry --------------------------------------------------------------------


def test_dataset_info_and_list():
    assert data.list_datasets() == ["cifar10", "digits", "fashion_mnist"]
    shapes = {
        "fashion_mnist": (28, 28, 1),
        "cifar10": (32, 32, 3),
        "digits": (8, 8, 1),
    }
    for name, shape in shapes.items():
        info = data.dataset_info(name)
        assert info.num_classes == 10
        assert info.input_shape == shape
        assert len(info.class_names) == 10
    assert data.dataset_info("cifar10").class_names[0] == "airplane"
    assert data.dataset_info("fashion_mnist").class_names[-1] == "Ankle boot"
    assert data.dataset_info("fashion_mnist").counts == {
        "train": 60000,
        "test": 10000,
    }


@pytest.mark.parametrize(
    "fn", [data.dataset_info, data.load_arrays, data.load_dataset]
)
def test_unknown_name(fn):
    with pytest.raises(ValueError) as err:
        fn("mnist")
    message = str(err.value)
    assert "name='mnist'" in message
    for known in ("fashion_mnist", "cifar10", "digits"):
        assert known in message


def test_public_api():
    for public in data.__all__:
        assert getattr(data, public).__doc__
    assert issubclass(data.DatasetNotFoundError, FileNotFoundError)


# Real datasets ---------------------------------------------------------------


def test_load_arrays_fashion_mnist(data_dir):
    (x_train, y_train), (x_test, y_test) = data.load_arrays(
        "fashion_mnist", data_dir=data_dir
    )
    assert x_train.shape == (60000, 28, 28, 1)
    assert x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert _class_counts(y_train) == [6000] * 10
    assert _class_counts(y_test) == [1000] * 10
    assert x_train.max() == 255 and x_train.min() == 0
    # The dataset folder itself works as well as the root holding it.
    (x2, _), _ = data.load_arrays(
        "fashion_mnist", data_dir=os.path.join(data_dir, "fashion-mnist")
    )
    np.testing.assert_array_equal(x2[:5], x_train[:5])


def test_load_arrays_cifar10(data_dir):
    (x_train, y_train), (x_test, y_test) = data.load_arrays(
        "cifar10", data_dir=data_dir
    )
    assert x_train.shape == (50000, 32, 32, 3)
    assert x_test.shape == (10000, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_test.dtype == np.int64
    assert _class_counts(y_train) == [5000] * 10
    assert _class_counts(y_test) == [1000] * 10
    # Shared read-only cache: writing in place must fail loudly.
    with pytest.raises(ValueError):
        x_train[0, 0, 0, 0] = 1


@pytest.mark.parametrize(
    "name, shape", [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_load_dataset_real(data_dir, name, shape):
    splits = data.load_dataset(
        name,
        batch_size=64,
        n_per_class=20,
        test_n_per_class=5,
        validation_split=0.1,
    )
    assert splits.info.input_shape == shape
    assert splits.info.counts == {"train": 200, "val": 20, "test": 50}
    x, y = next(iter(splits.train))
    assert x.shape == (64,) + shape
    assert x.dtype == tf.float32 and y.dtype == tf.int32
    x_train, y_train = data.as_numpy(splits.train)
    x_val, y_val = data.as_numpy(splits.val)
    x_test, y_test = data.as_numpy(splits.test)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert x_train.max() > 0.5
    # Stratified, even though CIFAR-10's arrays are sorted by class.
    assert _class_counts(y_train) == [20] * 10
    assert _class_counts(y_val) == [2] * 10
    assert _class_counts(y_test) == [5] * 10
    # Not ordered by class.
    assert len(set(y_train[:20].tolist())) > 3
    # Validation images are neither training nor test images.
    train = {img.tobytes() for img in _to_uint8(x_train)}
    val = {img.tobytes() for img in _to_uint8(x_val)}
    test = {img.tobytes() for img in _to_uint8(x_test)}
    assert not val & train and not val & test


def test_augmentation_shifts_real_images(data_dir):
    for name, pad, flips in (("fashion_mnist", 2, False), ("cifar10", 4, True)):
        kwargs = dict(batch_size=32, n_per_class=3, seed=3)
        plain = data.load_dataset(name, augment=False, **kwargs)
        aug = data.load_dataset(name, augment=True, **kwargs)
        x0, y0 = data.as_numpy(plain.train)
        x1, y1 = data.as_numpy(aug.train)
        np.testing.assert_array_equal(y0, y1)  # same seeded order
        assert x1.shape == x0.shape and x1.dtype == np.float32
        assert 0.0 <= x1.min() and x1.max() <= 1.0
        x0, x1 = _to_uint8(x0), _to_uint8(x1)
        changed = [not np.array_equal(a, b) for a, b in zip(x0, x1)]
        assert sum(changed) >= len(changed) // 2
        for a, b in zip(x0, x1):
            assert _is_shift_of(b, a, pad, flips)
        # Validation and test are never augmented.
        np.testing.assert_array_equal(
            data.as_numpy(plain.val)[0], data.as_numpy(aug.val)[0]
        )


def test_seeded_determinism_and_reshuffle(data_dir):
    kwargs = dict(batch_size=50, n_per_class=10, test_n_per_class=3)
    a = data.load_dataset("fashion_mnist", seed=7, **kwargs)
    b = data.load_dataset("fashion_mnist", seed=7, **kwargs)
    c = data.load_dataset("fashion_mnist", seed=8, **kwargs)
    xa, ya = data.as_numpy(a.train)
    xb, yb = data.as_numpy(b.train)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    for split in ("val", "test"):
        np.testing.assert_array_equal(
            data.as_numpy(getattr(a, split))[0],
            data.as_numpy(getattr(b, split))[0],
        )
    # Another seed picks other examples.
    assert not np.array_equal(a.train_images, c.train_images)
    # A second epoch is reshuffled and augmented afresh.
    xa2, ya2 = data.as_numpy(a.train)
    assert not np.array_equal(ya, ya2) or not np.array_equal(xa, xa2)
    assert sorted(ya.tolist()) == sorted(ya2.tolist())


def _epoch_hashes(dataset, epochs=3):
    """One hash per epoch of everything a pipeline yields, in order."""
    hashes = []
    for _ in range(epochs):
        h = hashlib.sha256()
        for x, y in dataset:
            h.update(x.numpy().tobytes())
            h.update(y.numpy().tobytes())
        hashes.append(h.hexdigest())
    return hashes


@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_same_seed_same_epochs_whatever_ran_before(name, request):
    if name == "cifar10":
        request.getfixturevalue("data_dir")
    kwargs = dict(batch_size=32, n_per_class=8, seed=3)
    first = _epoch_hashes(data.load_dataset(name, **kwargs).train)
    # Global random state that used to leak into the order: another
    # pipeline iterated, the global seeds set (as the training recipe
    # does), random ops drawn.
    other = data.load_dataset(name, batch_size=16, n_per_class=4, seed=3)
    for _ in other.train:
        pass
    keras.utils.set_random_seed(0)
    tf.random.uniform([5])
    np.random.rand(5)
    second = _epoch_hashes(data.load_dataset(name, **kwargs).train)
    assert first == second
    # Each epoch is a new order (and augmentation), not a repeat.
    assert len(set(first)) == 3
    # Another seed gives other batches.
    kwargs["seed"] = 4
    assert _epoch_hashes(data.load_dataset(name, **kwargs).train, 1)[0] not in (
        first
    )


def test_epoch_callback_resumes_at_the_right_epoch():
    """`fit(initial_epoch=1)` (a resumed run) with the callback reads the
    data of epochs 1 and 2, as an uninterrupted run does."""
    kwargs = dict(batch_size=64, n_per_class=6, seed=2)
    expected = _epoch_hashes(data.load_dataset("digits", **kwargs).train)
    splits = data.load_dataset("digits", **kwargs)
    hashes = {}

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

        def train_step(self, batch):
            x, y = batch
            h = hashes.setdefault(self.epoch, hashlib.sha256())
            h.update(x.numpy().tobytes())
            h.update(y.numpy().tobytes())
            return {"loss": 0.0}

    class Epoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.epoch = epoch

    model = Recorder()
    model.compile(run_eagerly=True)
    model.fit(
        splits.train,
        initial_epoch=1,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[Epoch(), splits.epoch_callback()],
    )
    assert [hashes[e].hexdigest() for e in (1, 2)] == expected[1:]


def test_epoch_permutation_is_a_fixed_function():
    a = data.epoch_permutation(5, 2, 100)
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    keras.utils.set_random_seed(123)
    np.testing.assert_array_equal(a, data.epoch_permutation(5, 2, 100))
    assert not np.array_equal(a, data.epoch_permutation(5, 3, 100))
    assert not np.array_equal(a, data.epoch_permutation(6, 2, 100))


def test_representative_images(data_dir):
    kwargs = dict(batch_size=16, n_per_class=4, seed=1)
    aug = data.load_dataset("cifar10", augment=True, **kwargs)
    plain = data.load_dataset("cifar10", augment=False, **kwargs)
    reps = data.representative_images(aug, n=25)
    assert reps.shape == (25, 32, 32, 3) and reps.dtype == np.float32
    assert 0.0 <= reps.min() and reps.max() <= 1.0
    # Un-augmented, the same whether or not training is augmented.
    np.testing.assert_array_equal(reps, data.representative_images(plain, n=25))
    # Capped at what exists (40 training images).
    assert len(data.representative_images(aug, n=200)) == 40
    # From a dataset: its images, as they come.
    from_ds = data.representative_images(aug.test, n=10)
    np.testing.assert_array_equal(from_ds, data.as_numpy(aug.test, limit=10)[0])


# Digits (no files needed) ----------------------------------------------------


def test_digits_without_any_data_dir(no_data):
    (x_train, y_train), (x_test, y_test) = data.load_arrays("digits")
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert len(x_train) + len(x_test) == 1797
    # Stratified: every class has 20% (+-1) of its images in the test split.
    total = np.bincount(np.concatenate([y_train, y_test]))
    assert np.all(np.abs(np.bincount(y_test) - 0.2 * total) <= 1)
    # Deterministic split.
    (x2, _), _ = data.load_arrays("digits")
    np.testing.assert_array_equal(x_train, x2)


def test_digits_dataset_default_split(no_data):
    splits = data.load_dataset("digits", batch_size=1000)
    counts = splits.info.counts
    assert counts["train"] + counts["val"] == 1437 and counts["test"] == 360
    # Finite, known cardinality (Keras uses it for steps per epoch).
    assert int(splits.train.cardinality()) == -(-counts["train"] // 1000)
    x_train, y_train = data.as_numpy(splits.train)
    _, y_val = data.as_numpy(splits.val)
    totals = np.bincount(np.concatenate([y_train, y_val]))
    expected = np.floor(0.1 * totals + 0.5).astype(int)
    assert _class_counts(y_val) == expected.tolist()
    # No augmentation for digits: augment=True changes nothing.
    plain = data.load_dataset("digits", batch_size=1000, augment=False)
    np.testing.assert_array_equal(x_train, data.as_numpy(plain.train)[0])


def test_no_validation_split(no_data):
    splits = data.load_dataset("digits", validation_split=0, n_per_class=5)
    assert splits.val is None
    assert splits.info.counts == {"train": 50, "val": 0, "test": 360}


# Argument validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, received",
    [
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"batch_size": 1.5}, ValueError, "batch_size=1.5"),
        ({"batch_size": True}, ValueError, "batch_size=True"),
        ({"batch_size": "32"}, ValueError, "batch_size='32'"),
        ({"validation_split": 1.0}, ValueError, "validation_split=1.0"),
        ({"validation_split": -0.1}, ValueError, "validation_split=-0.1"),
        ({"validation_split": "0.1"}, ValueError, "validation_split='0.1'"),
        ({"n_per_class": 0}, ValueError, "n_per_class=0"),
        ({"n_per_class": 2.5}, ValueError, "n_per_class=2.5"),
        ({"n_per_class": 1000}, ValueError, "n_per_class=1000"),
        ({"n_per_class": 140}, ValueError, "n_per_class=140"),
        ({"test_n_per_class": -3}, ValueError, "test_n_per_class=-3"),
        ({"test_n_per_class": 500}, ValueError, "test_n_per_class=500"),
        ({"seed": -1}, ValueError, "seed=-1"),
        ({"seed": None}, ValueError, "seed=None"),
        ({"augment": "yes"}, TypeError, "augment='yes'"),
        ({"download": 1}, TypeError, "download=1"),
        ({"data_dir": 123}, TypeError, "data_dir=123"),
    ],
)
def test_bad_arguments(no_data, kwargs, error, received):
    with pytest.raises(error) as err:
        data.load_dataset("digits", **kwargs)
    assert f"Received: {received}" in str(err.value)


def test_as_numpy():
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    for dataset in (ds, ds.batch(3)):
        xs, ys = data.as_numpy(dataset)
        np.testing.assert_array_equal(xs, x)
        np.testing.assert_array_equal(ys, y)
        xs, ys = data.as_numpy(dataset, limit=4)
        np.testing.assert_array_equal(ys, y[:4])
    xs, ys = data.as_numpy(tf.data.Dataset.from_tensor_slices(x).batch(4))
    assert ys is None and xs.shape == (10, 2)
    xs, ys = data.as_numpy(ds.batch(3).take(0))
    assert xs.shape == (0, 2) and ys.shape == (0,)
    with pytest.raises(TypeError, match="Received: dataset="):
        data.as_numpy(x)
    with pytest.raises(ValueError, match="Received: limit=0"):
        data.as_numpy(ds, limit=0)
    with pytest.raises(ValueError, match="Received: n=0"):
        data.representative_images(ds, n=0)
    with pytest.raises(TypeError, match="Received: splits_or_dataset="):
        data.representative_images(x)


# Resolution order (fake files, no real data needed) -------------------------


def test_splits_are_stratified_and_disjoint(no_data, tmp_path):
    root = tmp_path / "root"
    _make_fashion(root / "fashion-mnist", train_per_class=30)
    splits = data.load_dataset(
        "fashion_mnist",
        data_dir=root,
        validation_split=0.2,
        augment=False,
        batch_size=16,
    )
    x_train, y_train = data.as_numpy(splits.train)
    x_val, y_val = data.as_numpy(splits.val)
    x_test, _ = data.as_numpy(splits.test)
    assert _class_counts(y_train) == [24] * 10
    assert _class_counts(y_val) == [6] * 10
    train, val, test = set(_ids(x_train)), set(_ids(x_val)), set(_ids(x_test))
    assert len(train) == 240 and len(val) == 60
    assert train | val == set(range(300))  # all from the training files
    assert not train & val and not (train | val) & test
    # Labels travel with their images (pixel (0, 2) holds the label).
    np.testing.assert_array_equal(
        np.round(x_train[:, 0, 2, 0] * 255).astype(int), y_train
    )


def test_data_dir_argument_beats_env_var(monkeypatch, tmp_path):
    env_root = tmp_path / "env"
    arg_root = tmp_path / "arg"
    _make_fashion(env_root / "fashion-mnist", train_per_class=1)
    _make_fashion(arg_root / "fashion-mnist", train_per_class=3)
    monkeypatch.setenv("KERAS_COMPACT_DATA_DIR", str(env_root))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    (x, _), _ = data.load_arrays("fashion_mnist", data_dir=arg_root)
    assert len(x) == 30
    (x, _), _ = data.load_arrays("fashion_mnist")
    assert len(x) == 10
    # A data_dir without the files falls through to the env var.
    (tmp_path / "empty").mkdir()
    (x, _), _ = data.load_arrays("fashion_mnist", data_dir=tmp_path / "empty")
    assert len(x) == 10


def test_keras_cache_is_searched_last(monkeypatch, tmp_path):
    keras_home = tmp_path / "keras_home"
    _make_fashion(keras_home / "datasets" / "fashion-mnist", 2)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.delenv("KERAS_COMPACT_DATA_DIR", raising=False)
    (x, y), (x_test, _) = data.load_arrays("fashion_mnist")
    assert x.shape == (20, 28, 28, 1) and x_test.shape == (20, 28, 28, 1)
    assert _class_counts(y) == [2] * 10
    # The env var comes before the cache.
    _make_fashion(tmp_path / "env" / "fashion-mnist", 4)
    monkeypatch.setenv("KERAS_COMPACT_DATA_DIR", str(tmp_path / "env"))
    (x, _), _ = data.load_arrays("fashion_mnist")
    assert len(x) == 40


def _write_cifar_batch(path, images_nhwc, labels):
    batch = {
        b"data": images_nhwc.transpose(0, 3, 1, 2).reshape(len(labels), -1),
        b"labels": [int(v) for v in labels],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=4)


def test_keras_cache_cifar10_python_batches(no_data, tmp_path, monkeypatch):
    keras_home = tmp_path / "kh"
    folder = (
        keras_home / "datasets" / "cifar-10-batches-py-target"
    ) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 10
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", images, labels)
    _write_cifar_batch(folder / "test_batch", images[:4], labels[:4])
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    (x, y), (x_test, y_test) = data.load_arrays("cifar10")
    assert x.shape == (60, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(x[:12], images)  # NHWC restored
    np.testing.assert_array_equal(y_test, labels[:4])


def test_cifar10_batch_refuses_arbitrary_pickles(no_data, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        data.load_arrays("cifar10", data_dir=tmp_path)


def test_missing_data_lists_every_place(monkeypatch, tmp_path):
    empty = tmp_path / "empty_env"
    empty.mkdir()
    missing = tmp_path / "not_there"
    keras_home = tmp_path / "kh"
    monkeypatch.setenv("KERAS_COMPACT_DATA_DIR", str(empty))
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    for name, sub in (
        ("fashion_mnist", "fashion-mnist"),
        ("cifar10", "cifar10"),
    ):
        with pytest.raises(data.DatasetNotFoundError) as err:
            data.load_arrays(name, data_dir=missing)
        assert isinstance(err.value, FileNotFoundError)
        message = str(err.value)
        for place in (missing, empty, keras_home / "datasets"):
            assert str(place) in message
        assert "data_dir argument" in message
        assert "KERAS_COMPACT_DATA_DIR" in message
        assert "download=True" in message
        assert sub in message
    # Also through load_dataset, with the env var unset.
    monkeypatch.delenv("KERAS_COMPACT_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="KERAS_COMPACT_DATA_DIR"):
        data.load_dataset("cifar10")


def test_download_only_when_asked_and_missing(no_data, monkeypatch, tmp_path):
    calls = []

    def fake_cifar():
        calls.append(1)
        x = np.zeros((10, 3, 32, 32), np.uint8)  # channels_first
        x[:, 0] = 7
        y = np.arange(10).reshape(10, 1)
        return (x, y), (x[:2], y[:2])

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake_cifar)
    with pytest.raises(data.DatasetNotFoundError):
        data.load_arrays("cifar10")
    assert not calls
    (x, y), (x_test, y_test) = data.load_arrays("cifar10", download=True)
    assert calls == [1]
    assert x.shape == (10, 32, 32, 3) and np.all(x[..., 0] == 7)
    assert y.shape == (10,) and y_test.shape == (2,)
    # Files found locally: no download even with download=True.
    _make_fashion(tmp_path / "fashion-mnist", 1)
    (x, _), _ = data.load_arrays(
        "fashion_mnist", data_dir=tmp_path, download=True
    )
    assert len(x) == 10

    def failing():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", failing)
    with pytest.raises(data.DatasetNotFoundError, match="no network"):
        data.load_arrays("cifar10", download=True)


def test_corrupt_idx_file(no_data, tmp_path):
    folder = _make_fashion(tmp_path / "fashion-mnist", 1)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 1234, 10) + bytes(10))
    with pytest.raises(ValueError, match="magic=1234"):
        loaders.read_idx(folder / "train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match="magic=1234"):
        data.load_arrays("fashion_mnist", data_dir=tmp_path)


def test_test_split_mixes_classes_in_a_fixed_order(data_dir):
    # CIFAR-10's test arrays are sorted by class: the first images of the
    # test pipeline must still cover every class, identically per seed.
    splits = data.load_dataset("cifar10", n_per_class=1, data_dir=data_dir)
    _, y = data.as_numpy(splits.test, limit=500)
    assert len(np.unique(y)) == 10
    again = data.load_dataset("cifar10", n_per_class=1, data_dir=data_dir)
    np.testing.assert_array_equal(data.as_numpy(again.test, limit=500)[1], y)
    assert splits.info.counts["test"] == 10000


def test_image_size_only_for_tfds_and_tfds_names_are_routed():
    with pytest.raises(ValueError, match="image_size` only with a TFDS"):
        data.load_dataset("digits", image_size=(4, 4))
    with pytest.raises(ValueError, match="tfds:NAME"):
        data.load_dataset("mnist")  # a TFDS name needs its prefix
    assert data.is_tfds_name("tfds:mnist")
    assert not data.is_tfds_name("fashion_mnist")
