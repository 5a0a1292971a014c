"""TensorFlow Datasets image classification, offline once prepared.

`load_tfds("tfds:beans")` (or `load_dataset("tfds:beans")`) reads a
prepared TFDS dataset into uint8 arrays once per process and builds the
same seeded train / validation / test pipelines as the built-in datasets.

The name is `tfds:NAME`, `tfds:NAME/CONFIG`, `tfds:NAME:VERSION` or
`tfds:NAME/CONFIG:VERSION` (TFDS' own spelling after the prefix; the prefix
keeps it apart from the built-in names, so `tfds:mnist` and `fashion_mnist`
never collide). Prepared files are looked for, in this order, in:

1. the `data_dir` argument (and its `tensorflow_datasets/` sub-folder);
2. `$KERAS_COMPACT_DATA_DIR/tensorflow_datasets`;
3. `$TFDS_DATA_DIR`, else TFDS' default `~/tensorflow_datasets`.

Nothing is downloaded unless `download=True` (`--download` on the command
line): TFDS then downloads and prepares the dataset into `data_dir`, or
TFDS' default folder.

Splits: `train` is the training set; the validation split is the
dataset's own `validation` split when it also has a `test` split, else it
is carved out of `train` (stratified, as for the built-in datasets); the
test set is `test`, else `validation`, else a stratified `test_split` of
`train`. The whole dataset is held in memory: this is for small datasets
(MNIST-sized up to a few tens of thousands of small images).
"""

import difflib
import functools
import os

import numpy as np

from keras_compact.data.augmentation import shift_augmentation
from keras_compact.data.loaders import ENV_VAR, DatasetNotFoundError
from keras_compact.data.pipeline import (
    _check_bool,
    _check_int,
    _check_split,
    build_splits,
    hold_out_test,
)
from keras_compact.data.registry import DatasetInfo

PREFIX = "tfds:"
_SPLITS = ("train", "validation", "test")


def is_tfds_name(name):
    """Whether `name` asks for a TFDS dataset (`"tfds:..."`)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def load_tfds(
    name,
    *,
    image_size=None,
    batch_size=128,
    validation_split=0.1,
    test_split=0.1,
    n_per_class=None,
    test_n_per_class=None,
    augment=True,
    seed=0,
    data_dir=None,
    download=False,
):
    """Builds train, validation and test pipelines of a TFDS dataset.

    The dataset must be image classification: one `tfds.features.Image`
    feature and one `tfds.features.ClassLabel` label (its
    `supervised_keys`, when it declares them). Images come out as float32
    in `[0, 1]`, labels as int32, as with `load_dataset`; with
    `augment=True` training images are randomly shifted (see
    `shift_augmentation`; no flips).

    Args:
        name: `"tfds:NAME[/CONFIG][:VERSION]"`, e.g. `"tfds:mnist"`,
            `"tfds:beans"`, `"tfds:cifar100:3.0.2"`.
        image_size: optional `(height, width)` the images are resized to;
            needed when the dataset's images have no fixed size, unless the
            first image's size will do (the default then).
        batch_size: positive int, the batch size of all three pipelines.
        validation_split: float in `[0, 1)`: the fraction of the training
            images held out for validation when the dataset has no own
            validation split; `0` gives `val=None` in every case.
        test_split: float in `(0, 1)`, the fraction of each class held out
            for testing when the dataset has no `test` nor `validation`
            split.
        n_per_class: optional positive int: training images kept per class.
        test_n_per_class: optional positive int: a stratified subset of the
            test set with this many images of each class.
        augment: whether to augment the training pipeline.
        seed: non-negative int seeding the splits, the per-epoch shuffle
            and the augmentation.
        data_dir: optional TFDS data folder to look in first (and to
            download into).
        download: whether TFDS may download and prepare the dataset when it
            is prepared nowhere (needs internet).

    Returns:
        A `DatasetSplits`; its `info.name` is `name`.

    Raises:
        ValueError: if `name` is not a TFDS name, names no TFDS dataset (the
            message lists close matches), is not image classification (the
            message names its features), or an argument is out of range.
        TypeError: if `augment` or `download` is not a bool, or `data_dir`
            is not a path.
        DatasetNotFoundError: (a `FileNotFoundError`) if the dataset is
            prepared in none of the folders and `download=False`; the
            message lists them and the command that prepares it.

    Example:

    ```python
    splits = load_tfds("tfds:beans", image_size=(64, 64), download=True)
    model.fit(splits.train, validation_data=splits.val, epochs=5)
    ```
    """
    _check_int(batch_size, "batch_size", minimum=1)
    _check_split(validation_split)
    _check_int(n_per_class, "n_per_class", minimum=1, allow_none=True)
    _check_int(test_n_per_class, "test_n_per_class", minimum=1, allow_none=True)
    _check_bool(augment, "augment")
    _check_bool(download, "download")
    _check_int(seed, "seed", minimum=0)
    if not 0 < test_split < 1:
        raise ValueError(
            "Expected `test_split` to be a float in (0, 1). "
            f"Received: test_split={test_split!r}"
        )
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            "Expected `data_dir` to be a path (str or os.PathLike) or None. "
            f"Received: data_dir={data_dir!r}"
        )
    image_size = _check_image_size(image_size)
    spec = _spec(name)
    builder = _prepared_builder(spec, data_dir, download)
    if "train" not in builder.info.splits:
        raise ValueError(
            f"Expected TFDS dataset {name!r} to have a 'train' split. "
            f"Received: splits {sorted(builder.info.splits)}"
        )
    folder = os.fspath(builder.data_dir)
    arrays, class_names = _read_cached(spec, folder, image_size)
    splits = dict(arrays)
    val = None
    train = splits["train"]
    if "test" in splits:
        test = splits["test"]
        val = splits.get("validation")
    elif "validation" in splits:
        test = splits["validation"]
    else:
        train, test = hold_out_test(
            train[0], train[1], len(class_names), test_split, seed
        )
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        input_shape=tuple(train[0].shape[1:]),
        class_names=tuple(class_names),
    )
    return build_splits(
        train,
        test,
        info,
        batch_size=batch_size,
        validation_split=validation_split,
        n_per_class=n_per_class,
        test_n_per_class=test_n_per_class,
        augment=shift_augmentation(info.input_shape) if augment else None,
        seed=seed,
        val=val,
    )


def _check_image_size(image_size):
    if image_size is None:
        return None
    try:
        size = tuple(int(s) for s in image_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            "Expected `image_size` to be a pair of positive ints "
            f"(height, width) or None. Received: image_size={image_size!r}"
        )
    return size


def _spec(name):
    if not is_tfds_name(name) or not name[len(PREFIX) :]:
        raise ValueError(
            f"Expected a TFDS dataset name '{PREFIX}NAME[/CONFIG]"
            f"[:VERSION]', e.g. '{PREFIX}mnist'. Received: name={name!r}"
        )
    return name[len(PREFIX) :]


def default_data_dir():
    """TFDS' own data folder: `$TFDS_DATA_DIR`, else
    `~/tensorflow_datasets` (read at call time)."""
    return os.path.expanduser(
        os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    )


def candidate_dirs(data_dir=None):
    """The TFDS data folders searched, in order, as `(label, folder)`."""
    dirs = []
    if data_dir is not None:
        root = os.path.expanduser(os.fspath(data_dir))
        dirs.append(("data_dir argument", root))
        dirs.append(
            ("data_dir argument", os.path.join(root, "tensorflow_datasets"))
        )
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(
            (
                f"${ENV_VAR}",
                os.path.join(os.path.expanduser(env), "tensorflow_datasets"),
            )
        )
    label = (
        "$TFDS_DATA_DIR"
        if os.environ.get("TFDS_DATA_DIR")
        else ("TFDS default")
    )
    dirs.append((label, default_data_dir()))
    seen, unique = set(), []
    for label, folder in dirs:
        key = os.path.normpath(folder)
        if key not in seen:
            seen.add(key)
            unique.append((label, folder))
    return unique


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "Reading a 'tfds:' dataset needs TensorFlow Datasets: "
            "`pip install tensorflow-datasets`."
        ) from e
    return tfds


def _prepared_builder(spec, data_dir, download):
    """The builder of a prepared dataset (preparing it when allowed)."""
    tfds = _import_tfds()
    searched, builder, unknown = [], None, None
    checked = False
    for label, folder in candidate_dirs(data_dir):
        try:
            candidate = tfds.builder(spec, data_dir=folder)
        except Exception as e:  # unknown name, config or version
            unknown = unknown or e
            searched.append((label, folder))
            continue
        if not checked:
            _image_and_label(candidate, spec)
            checked = True
        searched.append((label, folder))
        if candidate.is_prepared():
            return candidate
        builder = builder or candidate
    if builder is None:
        raise ValueError(_unknown_message(tfds, spec, unknown))
    if not download:
        raise DatasetNotFoundError(_not_prepared_message(spec, searched))
    target = data_dir if data_dir is not None else default_data_dir()
    builder = tfds.builder(spec, data_dir=os.fspath(target))
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise DatasetNotFoundError(
            _not_prepared_message(spec, searched)
            + f"\nThe download with download=True failed: "
            f"{type(e).__name__}: {e}"
        ) from e
    return builder


def _unknown_message(tfds, spec, error):
    base = spec.split(":")[0].split("/")[0]
    names = tfds.list_builders(with_community_datasets=False)
    if base in names:  # a known dataset: the config or version is wrong
        first = str(error).strip().splitlines()[0] if error else ""
        return (
            f"Unknown config or version of TFDS dataset '{base}'. "
            f"Received: name='{PREFIX}{spec}' ({first})"
        )
    close = difflib.get_close_matches(base, names, n=5, cutoff=0.6)
    hint = (
        "Close matches: " + ", ".join(f"{PREFIX}{c}" for c in close) + ". "
        if close
        else ""
    )
    return (
        f"Unknown TFDS dataset. {hint}Expected a name from "
        "`tfds.list_builders()` (https://www.tensorflow.org/datasets/"
        f"catalog/overview). Received: name='{PREFIX}{spec}'"
    )


def _not_prepared_message(spec, searched):
    lines = [
        f"TFDS dataset '{spec}' is not prepared. Looked in, in order:",
    ]
    labels = {label for label, _ in searched}
    if "data_dir argument" not in labels:
        lines.append("  - data_dir argument (--data-dir): not given")
    if f"${ENV_VAR}" not in labels:
        lines.append(f"  - ${ENV_VAR}/tensorflow_datasets: not set")
    for label, folder in searched:
        state = "" if os.path.isdir(folder) else " (no such folder)"
        lines.append(f"  - {label}: {folder}{state}")
    lines += [
        "To prepare it once (needs internet), either rerun with "
        "--download (`download=True`), or run:",
        f"  tfds build {spec.split(':')[0]} --data_dir {default_data_dir()}",
        f"or copy a prepared '{spec.split('/')[0].split(':')[0]}/' folder "
        "into one of the folders above.",
    ]
    return "\n".join(lines)


def _image_and_label(builder, spec):
    """Returns the `(image key, label key)` of an image-classification
    builder, else raises ValueError naming its features."""
    tfds = _import_tfds()
    features = builder.info.features
    items = dict(features.items()) if hasattr(features, "items") else {}
    keys = builder.info.supervised_keys
    if (
        isinstance(keys, tuple)
        and len(keys) == 2
        and all(isinstance(k, str) for k in keys)
        and isinstance(items.get(keys[0]), tfds.features.Image)
        and isinstance(items.get(keys[1]), tfds.features.ClassLabel)
    ):
        return keys
    images = [k for k, f in items.items() if isinstance(f, tfds.features.Image)]
    labels = [
        k for k, f in items.items() if isinstance(f, tfds.features.ClassLabel)
    ]
    if len(images) == 1 and len(labels) == 1:
        return images[0], labels[0]
    described = {k: type(f).__name__ for k, f in items.items()} or repr(
        features
    )
    raise ValueError(
        "Expected a TFDS image-classification dataset: one Image feature "
        f"and one ClassLabel label. Received: name='{PREFIX}{spec}' with "
        f"features {described}"
    )


@functools.lru_cache(maxsize=4)
def _read_cached(spec, folder, image_size):
    """Reads the train / validation / test splits of a prepared dataset
    into read-only uint8 arrays.

    Returns `(((split, (x, y)), ...), class_names)`; cached per process
    (the key holds the prepared folder, so another copy is read anew).
    """
    import tensorflow as tf

    tfds = _import_tfds()
    builder = tfds.builder_from_directory(folder)
    image_key, label_key = _image_and_label(builder, spec)
    image_feature = builder.info.features[image_key]
    class_names = list(builder.info.features[label_key].names)
    shape = tuple(image_feature.shape)
    channels = shape[-1] if len(shape) == 3 and shape[-1] else None
    fixed = tuple(shape[:2]) if len(shape) == 3 and all(shape[:2]) else None
    # Only the splits used (not e.g. SVHN's 531k-image `extra`).
    splits = [s for s in _SPLITS if s in builder.info.splits]

    def _examples(split):
        ds = builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(lambda e: (e[image_key], e[label_key]))

    size = image_size
    if size is None and fixed is None:
        # Images of varying sizes: all resized to the first one's.
        image, _ = next(iter(_examples("train").take(1)))
        size = tuple(int(d) for d in image.shape[:2])
    if size == fixed:
        size = None
    out = []
    for split in splits:
        ds = _examples(split)
        if size is not None:

            def _resize(image, label, size=size):
                image = tf.image.resize(image, size)
                image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
                return tf.cast(image, tf.uint8), label

            ds = ds.map(_resize, num_parallel_calls=tf.data.AUTOTUNE)
        xs, ys = [], []
        for x, y in ds.batch(1024).as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        if not xs:
            continue
        x = np.concatenate(xs).astype(np.uint8)
        if x.ndim == 3:
            x = x[..., np.newaxis]
        if channels is not None and x.shape[-1] != channels:
            raise ValueError(
                f"Unexpected images in TFDS dataset '{spec}': expected "
                f"{channels} channels. Received: shape {x.shape[1:]}"
            )
        y = np.concatenate(ys).astype(np.int64)
        x.flags.writeable = False
        y.flags.writeable = False
        out.append((split, (x, y)))
    return tuple(out), class_names
