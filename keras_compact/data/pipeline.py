"""`tf.data` pipelines for the named datasets: split, subset, augment, batch.

`load_dataset` turns the arrays of `load_arrays` into train / validation /
test `tf.data.Dataset`s of `(float32 image in [0, 1], int32 label)` batches.
Every selection (validation split, per-class subsets) is stratified and made
after a seeded shuffle, because some sources are sorted by class (the
CIFAR-10 npz files are). The validation split always comes out of the
training set; the test set is only ever subset, never mixed in.
"""

import dataclasses
import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_compact.data.augmentation import get_augmentation
from keras_compact.data.loaders import load_arrays
from keras_compact.data.registry import DatasetInfo, dataset_info, validate_name


@dataclasses.dataclass
class DatasetSplits:
    """The datasets built by `load_dataset`.

    Args:
        train: `tf.data.Dataset` of training batches, reshuffled every epoch
            and augmented when asked. Its `e`-th iteration (epoch `e` of
            `fit`) is a fixed function of the seed and `e`: two pipelines
            with the same arguments give the same batches, in any process,
            whatever ran before; give each arm of a comparison its own.
        val: `tf.data.Dataset` of validation batches (held out of the
            training set), or None when `validation_split=0`.
        test: `tf.data.Dataset` of test batches.
        info: `DatasetInfo`; its `counts` are the sizes of these splits.
        train_images: the un-augmented training images, uint8 NHWC, in the
            (shuffled) order of the split. Used by `representative_images`.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    info: DatasetInfo
    train_images: np.ndarray = dataclasses.field(repr=False, default=None)
    train_orders: object = dataclasses.field(repr=False, default=None)

    def epoch_callback(self):
        """A Keras callback that makes epoch `e` of `fit` read epoch `e` of
        the training pipeline, also when `fit` starts at a later epoch
        (`initial_epoch`, or `keras.callbacks.BackupAndRestore` resuming an
        interrupted run): a resumed run then sees the very batches of an
        uninterrupted one. Without it, the pipeline counts its own
        iterations from 0."""
        return _EpochSync(self.train_orders)


def load_dataset(
    name,
    *,
    batch_size=128,
    validation_split=0.1,
    n_per_class=None,
    augment=True,
    seed=0,
    data_dir=None,
    download=False,
    test_n_per_class=None,
    image_size=None,
):
    """Builds train, validation and test pipelines for a named dataset.

    `name` may also be a TensorFlow Datasets image-classification dataset,
    `"tfds:NAME[/CONFIG][:VERSION]"` (e.g. `"tfds:mnist"`): see `load_tfds`
    for where it is read from and how its splits are made.

    Images come out as float32 scaled to `[0, 1]`, NHWC, and labels as int32
    class indices. The training pipeline is reshuffled every epoch and, with
    `augment=True`, augmented (CIFAR-10: pad-4 crop and horizontal flip;
    Fashion-MNIST: pad-2 crop; digits: nothing). Everything random derives
    from `seed`: two calls with the same arguments give the same batches,
    epoch by epoch (epoch `e` of seed `s` is a fixed function of `s` and
    `e`; no global random state enters it, see `epoch_permutation`).

    Per class `c` with `n_c` training examples, the validation split holds
    `v_c = round(validation_split * n_c)` examples (at least 1) and the
    training split the other `n_c - v_c`. With `n_per_class`, the training
    split holds exactly `n_per_class` examples of each class and the
    validation split keeps the same proportion,
    `v_c = round(n_per_class * validation_split / (1 - validation_split))`
    (at least 1). Both are drawn after a seeded shuffle and are disjoint.

    Args:
        name: one of `"fashion_mnist"`, `"cifar10"`, `"digits"`, or
            `"tfds:NAME[/CONFIG][:VERSION]"`.
        batch_size: positive int, the batch size of all three pipelines.
        validation_split: float in `[0, 1)`, the fraction of the training
            examples held out for validation. `0` gives `val=None`.
        n_per_class: optional positive int, the number of training examples
            of each class to keep (for fast runs and few-shot experiments).
        augment: whether to augment the training pipeline.
        seed: non-negative int seeding the split, the subsets, the
            per-epoch shuffle and the augmentation.
        data_dir: optional folder holding the dataset files; see
            `load_arrays` for the search order.
        download: whether `keras.datasets` may download missing files.
        test_n_per_class: optional positive int: evaluate on a stratified
            subset of the test set with this many examples of each class.
        image_size: TFDS datasets only: optional `(height, width)` the
            images are resized to.

    Returns:
        A `DatasetSplits` with `train`, `val`, `test` and `info`.

    Raises:
        ValueError: if `name` is unknown or an argument is out of range
            (including asking for more examples of a class than exist).
        TypeError: if `augment` or `download` is not a bool, or `data_dir`
            is not a path.
        DatasetNotFoundError: (a `FileNotFoundError`) if the files cannot
            be found; see `load_arrays`.

    Example:

    >>> splits = load_dataset("digits", batch_size=32, n_per_class=20)
    >>> splits.info.counts
    {'train': 200, 'val': 20, 'test': 360}
    >>> x, y = next(iter(splits.train))
    >>> x.shape, x.dtype, y.dtype
    (TensorShape([32, 8, 8, 1]), tf.float32, tf.int32)
    """
    from keras_compact.data.tfds import is_tfds_name, load_tfds

    if is_tfds_name(name):
        return load_tfds(
            name,
            image_size=image_size,
            batch_size=batch_size,
            validation_split=validation_split,
            n_per_class=n_per_class,
            test_n_per_class=test_n_per_class,
            augment=augment,
            seed=seed,
            data_dir=data_dir,
            download=download,
        )
    validate_name(name)
    if image_size is not None:
        raise ValueError(
            "Expected `image_size` only with a TFDS dataset (the built-in "
            f"ones have a fixed size). Received: name={name!r}, "
            f"image_size={image_size!r}"
        )
    _check_int(batch_size, "batch_size", minimum=1)
    _check_split(validation_split)
    _check_int(n_per_class, "n_per_class", minimum=1, allow_none=True)
    _check_int(test_n_per_class, "test_n_per_class", minimum=1, allow_none=True)
    _check_bool(augment, "augment")
    _check_int(seed, "seed", minimum=0)
    info = dataset_info(name)

    (x_train, y_train), (x_test, y_test) = load_arrays(
        name, data_dir=data_dir, download=download
    )
    return build_splits(
        (x_train, y_train),
        (x_test, y_test),
        info,
        batch_size=batch_size,
        validation_split=validation_split,
        n_per_class=n_per_class,
        test_n_per_class=test_n_per_class,
        augment=get_augmentation(name) if augment else None,
        seed=seed,
    )


def build_splits(
    train,
    test,
    info,
    *,
    batch_size,
    validation_split,
    n_per_class=None,
    test_n_per_class=None,
    augment=None,
    seed=0,
    val=None,
):
    """Builds the `DatasetSplits` of in-memory arrays: the one split recipe
    shared by `load_dataset`, `load_image_folder` and `load_tfds`.

    The validation split is carved out of `train` (stratified, seeded by
    `[seed, 0]`), unless `val` gives the dataset's own validation arrays;
    the test set is only ever subset (`test_n_per_class`, seeded by
    `[seed, 1]`) or put in one fixed, seeded order that mixes the classes.

    Args:
        train: `(x, y)`: uint8 NHWC images and int class indices.
        test: `(x, y)`, the test arrays.
        info: `DatasetInfo`; its `counts` are replaced by the splits' sizes.
        batch_size, validation_split, n_per_class, test_n_per_class, seed:
            as in `load_dataset` (already validated).
        augment: None, or a function `fn(image, seed) -> image` applied to
            each training image.
        val: optional `(x, y)`, a validation split provided by the dataset:
            used as is (when `validation_split > 0`) instead of a split
            carved out of `train`.

    Returns:
        A `DatasetSplits`.
    """
    x_train, y_train = train
    x_test, y_test = test
    rng = np.random.default_rng([seed, 0])
    train_idx, val_idx = _stratified_split(
        y_train,
        info.num_classes,
        validation_split if val is None else 0.0,
        n_per_class,
        rng,
    )
    if test_n_per_class is not None:
        test_rng = np.random.default_rng([seed, 1])
        test_idx, _ = _stratified_split(
            y_test,
            info.num_classes,
            0.0,
            test_n_per_class,
            test_rng,
            argument="test_n_per_class",
        )
    else:
        # One fixed, seeded order that mixes the classes: some sources are
        # sorted by class, and the first N test images (a TFLite check, a
        # quick look) must not all be of one class.
        test_idx = np.random.default_rng([seed, 1]).permutation(len(y_test))

    train_images = x_train[train_idx]
    orders = _EpochOrders(seed, len(train_idx))
    train_ds = _train_pipeline(
        train_images,
        y_train[train_idx],
        batch_size,
        augment=augment,
        seed=seed,
        orders=orders,
    )
    val_ds, n_val = None, 0
    if val is not None and validation_split:
        x_val, y_val = val
        val_ds, n_val = _eval_pipeline(x_val, y_val, batch_size), len(y_val)
    elif val_idx is not None:
        val_ds = _eval_pipeline(x_train[val_idx], y_train[val_idx], batch_size)
        n_val = len(val_idx)
    test_ds = _eval_pipeline(x_test[test_idx], y_test[test_idx], batch_size)
    counts = {"train": len(train_idx), "val": n_val, "test": len(test_idx)}
    return DatasetSplits(
        train=train_ds,
        val=val_ds,
        test=test_ds,
        info=dataclasses.replace(info, counts=counts),
        train_images=train_images,
        train_orders=orders,
    )


def hold_out_test(x, y, num_classes, test_split, seed):
    """Splits a stratified, seeded `test_split` of each class off `(x, y)`,
    for sources without a test set. Returns `(train, test)`, two `(x, y)`
    pairs; seeded by `[seed, 3]`, apart from the other splits' seeds."""
    rng = np.random.default_rng([seed, 3])
    keep, held = _stratified_split(y, num_classes, test_split, None, rng)
    return (x[keep], y[keep]), (x[held], y[held])


def _stratified_split(
    labels,
    num_classes,
    validation_split,
    n_per_class,
    rng,
    argument="n_per_class",
):
    """Returns shuffled `(train_indices, val_indices or None)`."""
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    train_parts, val_parts = [], []
    for c in range(num_classes):
        idx = order[shuffled == c]
        available = len(idx)
        if n_per_class is None:
            n_val = min(_n_val(validation_split, available), available - 1)
            n_val = max(n_val, 0)
            n_train = available - n_val
        else:
            n_train = n_per_class
            n_val = _n_val(
                validation_split,
                n_per_class / (1 - validation_split),
            )
            if n_train + n_val > available:
                needed = f"{n_train}"
                if n_val:
                    needed += f" (+ {n_val} for validation)"
                raise ValueError(
                    f"Expected `{argument}` to be at most the number of "
                    f"examples of each class: class {c} has {available}, "
                    f"{needed} were asked for. "
                    f"Received: {argument}={n_per_class}"
                )
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val : n_val + n_train])
    # Shuffle again so that the splits are not ordered by class.
    train_idx = rng.permutation(np.concatenate(train_parts))
    if not validation_split:
        return train_idx, None
    return train_idx, rng.permutation(np.concatenate(val_parts))


def _n_val(validation_split, total):
    if not validation_split:
        return 0
    return max(1, int(np.floor(validation_split * total + 0.5)))


def _scale(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def epoch_permutation(seed, epoch, n):
    """The order of the training examples in one epoch.

    A pure function of `(seed, epoch, n)`: no global random state (not
    `tf.random.set_seed`, not `keras.utils.set_random_seed`, not how many
    random ops ran before) enters it, so every process and every arm of a
    benchmark sees the same order for the same seed and epoch.

    Args:
        seed: non-negative int, the pipeline's seed.
        epoch: non-negative int, the 0-based epoch.
        n: number of training examples.

    Returns:
        An int64 numpy array, a permutation of `range(n)`.
    """
    return np.random.default_rng([seed, 2, epoch]).permutation(n)


class _EpochOrders:
    """Yields one epoch's permutation per iteration of the dataset.

    `tf.data` calls this generator's `__call__` once per iterator, that is
    once per epoch of `fit`; the counter lives in this object, so a fresh
    pipeline always starts at epoch 0 and epoch `e` depends only on the
    seed and `e`. (`Dataset.shuffle(seed=...)` would not do: TF combines an
    op seed with the global seed when the dataset is built, so the order
    would change with whatever seeded TF before.)
    """

    def __init__(self, seed, n):
        self.seed = seed
        self.n = n
        self.epoch = 0

    def __call__(self):
        epoch = self.epoch
        self.epoch += 1
        yield epoch, epoch_permutation(self.seed, epoch, self.n)


class _EpochSync(keras.callbacks.Callback):
    """Sets the pipeline's epoch counter to `fit`'s epoch (see
    `DatasetSplits.epoch_callback`). `fit` calls `on_epoch_begin` before it
    starts iterating the dataset for that epoch."""

    def __init__(self, orders):
        super().__init__()
        self.orders = orders

    def on_epoch_begin(self, epoch, logs=None):
        self.orders.epoch = int(epoch)


def _train_pipeline(x, y, batch_size, augment, seed, orders=None):
    n = len(y)
    images = tf.constant(x)
    labels = tf.constant(y.astype(np.int32))
    orders = tf.data.Dataset.from_generator(
        orders or _EpochOrders(seed, n),
        output_signature=(
            tf.TensorSpec((), tf.int64),
            tf.TensorSpec((n,), tf.int64),
        ),
    )
    seed_t = tf.constant(seed, tf.int64)
    n_t = tf.constant(n, tf.int64)

    def _examples(epoch, order):
        epochs = tf.fill([n], epoch)
        return tf.data.Dataset.from_tensor_slices((epochs, order))

    def _gather(epoch, index):
        image, label = tf.gather(images, index), tf.gather(labels, index)
        if augment is not None:
            # Example `index` of epoch `epoch` gets the stateless seed
            # (seed, epoch * n + index): reproducible, and fresh every epoch.
            image = augment(image, tf.stack([seed_t, epoch * n_t + index]))
        return image, label

    ds = orders.flat_map(_examples)
    ds = ds.map(
        _gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    ds = ds.batch(batch_size).map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
    # `from_generator` hides the length; Keras needs it for steps per epoch.
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


def _eval_pipeline(x, y, batch_size):
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.batch(batch_size).map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_int(value, argument, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        if allow_none:
            kind += " or None"
        raise ValueError(
            f"Expected `{argument}` to be {kind}. "
            f"Received: {argument}={value!r}"
        )


def _check_split(value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1
    ):
        raise ValueError(
            "Expected `validation_split` to be a float in [0, 1). "
            f"Received: validation_split={value!r}"
        )


def _check_bool(value, argument):
    if not isinstance(value, bool):
        raise TypeError(
            f"Expected `{argument}` to be a bool. "
            f"Received: {argument}={value!r}"
        )
