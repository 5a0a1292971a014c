"""Offline-first loading of the named datasets as numpy arrays.

The files of a dataset are looked for, in this order:

1. the `data_dir` argument;
2. the folder named by the `KERAS_COMPACT_DATA_DIR` environment variable;
3. the Keras cache, `$KERAS_HOME/datasets` (default `~/.keras/datasets`),
   where `keras.datasets.*.load_data()` leaves its downloads;
4. only if `download=True`: a download through `keras.datasets`.

A data folder (1 or 2) may be the root that holds one sub-folder per dataset
(`fashion-mnist/`, `cifar10/`) or the dataset's own folder. Recognised files:

- Fashion-MNIST: the four original IDX files,
  `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`.
- CIFAR-10: `cifar10_train.npz` (`x_train`, `y_train`, NHWC uint8) and
  `cifar10_test.npz` (`x_test`, `y_test`), or the original python batches
  (`data_batch_1` ... `data_batch_5`, `test_batch`) as extracted by
  `keras.datasets.cifar10.load_data()`.
- digits: bundled with scikit-learn, needs no files.

Decoded arrays are kept in memory (a small per-process cache), so building
several pipelines from the same dataset reads and decompresses the files once.
"""

import functools
import gzip
import os
import pickle
import struct

import numpy as np

from keras_compact.data.registry import dataset_info, validate_name

ENV_VAR = "KERAS_COMPACT_DATA_DIR"

# Sub-folder of a data root that holds each dataset (the layout of
# `keras.datasets` for Fashion-MNIST, and of the project's shared datasets).
_SUBDIRS = {"fashion_mnist": "fashion-mnist", "cifar10": "cifar10"}

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_CIFAR_NPZ = ("cifar10_train.npz", "cifar10_test.npz")
_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_FRACTION = 0.2


class DatasetNotFoundError(FileNotFoundError):
    """Raised when the files of a dataset are found in none of the places.

    Its message lists every folder that was searched and how to provide the
    files.
    """


def load_arrays(name, data_dir=None, download=False):
    """Loads a named dataset as numpy arrays.

    Images are `uint8` in NHWC layout (grey images get a trailing channel
    axis of size 1); labels are `int64` class indices. The arrays are shared
    with an in-process cache and are read-only: copy them before modifying
    them in place.

    Args:
        name: one of `"fashion_mnist"`, `"cifar10"`, `"digits"`.
        data_dir: optional folder to look in first: either the root holding
            `fashion-mnist/` and `cifar10/`, or the dataset folder itself.
            Ignored for `"digits"`, which ships with scikit-learn.
        download: whether to download the data through `keras.datasets`
            (needs internet) when it is found nowhere locally.

    Returns:
        `(x_train, y_train), (x_test, y_test)`.

    Raises:
        ValueError: if `name` is unknown, or a file has an unexpected format.
        TypeError: if `data_dir` is not a path or `download` not a bool.
        DatasetNotFoundError: (a `FileNotFoundError`) if the files are
            found nowhere and `download` is False, or the download fails.
            The message lists every place looked in.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_arrays("digits")
    >>> x_train.shape, x_train.dtype
    ((1437, 8, 8, 1), dtype('uint8'))
    """
    validate_name(name)
    data_dir = _validate_data_dir(data_dir)
    if not isinstance(download, bool):
        raise TypeError(
            f"Expected `download` to be a bool. Received: download={download!r}"
        )
    if name == "digits":
        return _load_digits()

    searched = []
    for label, folder in candidate_dirs(name, data_dir):
        fmt = _detect_format(name, folder)
        searched.append((label, folder))
        if fmt is not None:
            return _read_cached(name, fmt, folder, _mtimes(name, fmt, folder))
    if not download:
        raise DatasetNotFoundError(_not_found_message(name, searched))
    try:
        arrays = _download(name)
    except Exception as e:
        raise DatasetNotFoundError(
            _not_found_message(name, searched)
            + f"\nThe download with download=True failed: {e}"
        ) from e
    return arrays


def candidate_dirs(name, data_dir=None):
    """Returns the folders searched for a dataset's files, in order.

    Args:
        name: a dataset name other than `"digits"`.
        data_dir: the optional `data_dir` argument of `load_arrays`.

    Returns:
        A list of `(label, folder)` pairs, `label` saying where the folder
        comes from (argument, environment variable or Keras cache).
    """
    sub = _SUBDIRS[name]
    dirs = []
    roots = []
    if data_dir is not None:
        roots.append(("data_dir argument", os.fspath(data_dir)))
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append((f"${ENV_VAR}", env))
    for label, root in roots:
        root = os.path.expanduser(root)
        dirs.append((label, os.path.join(root, sub)))
        dirs.append((label, root))
    cache = os.path.join(keras_cache_dir(), "datasets")
    dirs.append(("Keras cache", os.path.join(cache, sub)))
    if name == "cifar10":
        # Where `keras.datasets.cifar10.load_data()` extracts the archive
        # (Keras 3), and where tf.keras 2 did.
        dirs.append(
            (
                "Keras cache",
                os.path.join(
                    cache, "cifar-10-batches-py-target", "cifar-10-batches-py"
                ),
            )
        )
        dirs.append(("Keras cache", os.path.join(cache, "cifar-10-batches-py")))
    return dirs


def keras_cache_dir():
    """Returns the Keras home folder, following Keras' own rule.

    `$KERAS_HOME` when set; otherwise `~/.keras`, or `/tmp/.keras` when the
    home folder is not writable. Read at call time, so that changing
    `KERAS_HOME` after importing Keras is honoured.
    """
    if "KERAS_HOME" in os.environ:
        return os.path.expanduser(os.environ["KERAS_HOME"])
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def _validate_data_dir(data_dir):
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            "Expected `data_dir` to be a path (str or os.PathLike) or None. "
            f"Received: data_dir={data_dir!r}"
        )
    return os.fspath(data_dir)


def _detect_format(name, folder):
    """Returns the file format found in `folder`, or None."""
    if not os.path.isdir(folder):
        return None

    def _all(files):
        return all(os.path.isfile(os.path.join(folder, f)) for f in files)

    if name == "fashion_mnist":
        return "idx" if _all(_FASHION_FILES.values()) else None
    if _all(_CIFAR_NPZ):
        return "npz"
    if _all(_CIFAR_BATCHES):
        return "batches"
    return None


def _files(fmt):
    if fmt == "idx":
        return tuple(_FASHION_FILES.values())
    if fmt == "npz":
        return _CIFAR_NPZ
    return _CIFAR_BATCHES


def _mtimes(name, fmt, folder):
    return tuple(os.path.getmtime(os.path.join(folder, f)) for f in _files(fmt))


@functools.lru_cache(maxsize=4)
def _read_cached(name, fmt, folder, mtimes):
    # `mtimes` is only part of the cache key: a rewritten file is re-read.
    del mtimes
    if fmt == "idx":
        arrays = _read_fashion_mnist(folder)
    elif fmt == "npz":
        arrays = _read_cifar_npz(folder)
    else:
        arrays = _read_cifar_batches(folder)
    return _finalize(name, arrays, source=folder)


def _finalize(name, arrays, source):
    """Checks shapes, adds the channel axis, casts, makes read-only."""
    info = dataset_info(name)
    out = []
    for split, (x, y) in zip(("train", "test"), arrays):
        x = np.asarray(x, dtype=np.uint8)
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if x.ndim == 3:
            x = x[..., np.newaxis]
        if x.shape[1:] != info.input_shape or len(x) != len(y):
            raise ValueError(
                f"Unexpected {split} arrays for dataset '{name}' read from "
                f"{source}: expected images of shape (n, "
                f"{', '.join(map(str, info.input_shape))}) and n labels. "
                f"Received: x.shape={x.shape}, y.shape={y.shape}"
            )
        if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
            raise ValueError(
                f"Unexpected {split} labels for dataset '{name}' read from "
                f"{source}: expected integers in [0, {info.num_classes}). "
                f"Received: min={y.min()}, max={y.max()}"
            )
        x.flags.writeable = False
        y.flags.writeable = False
        out.append((x, y))
    return tuple(out)


def read_idx(path):
    """Reads a gzipped IDX file (the MNIST format) into a uint8 array.

    Image files (magic 2051) have a 16-byte header: magic, count, rows and
    columns as big-endian uint32. Label files (magic 2049) have an 8-byte
    header: magic and count.

    Args:
        path: path of a `.gz` IDX file.

    Returns:
        A uint8 array of shape `(count, rows, cols)` or `(count,)`.

    Raises:
        ValueError: if the header is not a known IDX header or the size of
            the payload disagrees with it.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"Not an IDX file (too short). Received: path={path}")
    magic, count = struct.unpack(">II", data[:8])
    if magic == _IDX_IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == _IDX_LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise ValueError(
            f"Not an IDX file: expected magic number {_IDX_IMAGES_MAGIC} "
            f"(images) or {_IDX_LABELS_MAGIC} (labels). Received: "
            f"magic={magic} in path={path}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"Truncated or corrupt IDX file: header says shape {shape}, "
            f"payload has {array.size} bytes. Received: path={path}"
        )
    return array.reshape(shape)


def _read_fashion_mnist(folder):
    arrays = {
        key: read_idx(os.path.join(folder, fname))
        for key, fname in _FASHION_FILES.items()
    }
    return (
        (arrays["x_train"], arrays["y_train"]),
        (arrays["x_test"], arrays["y_test"]),
    )


def _read_cifar_npz(folder):
    out = []
    for fname, split in zip(_CIFAR_NPZ, ("train", "test")):
        path = os.path.join(folder, fname)
        with np.load(path, allow_pickle=False) as npz:
            keys = (f"x_{split}", f"y_{split}")
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ValueError(
                    f"Expected arrays {list(keys)} in {path}. "
                    f"Received: files={npz.files}"
                )
            out.append((npz[keys[0]], npz[keys[1]]))
    return tuple(out)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtins, refuses every other global."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        }
    )

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            module = module.replace("numpy.core.", "numpy._core.")
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to unpickle `{module}.{name}` from a CIFAR-10 batch "
            "file; only numpy arrays are allowed."
        )


def _read_cifar_batch(path):
    with open(path, "rb") as f:
        batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    batch = {
        (k.decode("utf8") if isinstance(k, bytes) else k): v
        for k, v in batch.items()
    }
    x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(batch["labels"])
    return x.transpose(0, 2, 3, 1), y


def _read_cifar_batches(folder):
    train = [_read_cifar_batch(os.path.join(folder, f)) for f in _CIFAR_BATCHES]
    test = train.pop()
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), test


@functools.lru_cache(maxsize=1)
def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; stretch them to the uint8 range 0..255.
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x,
        y,
        test_size=_DIGITS_TEST_FRACTION,
        stratify=y,
        random_state=_DIGITS_SPLIT_SEED,
    )
    return _finalize(
        "digits", ((x_train, y_train), (x_test, y_test)), "scikit-learn"
    )


def _download(name):
    import keras

    loader = {
        "fashion_mnist": keras.datasets.fashion_mnist.load_data,
        "cifar10": keras.datasets.cifar10.load_data,
    }[name]
    (x_train, y_train), (x_test, y_test) = loader()
    if x_train.ndim == 4 and x_train.shape[1] == 3 and x_train.shape[-1] != 3:
        # `image_data_format() == "channels_first"`: back to NHWC.
        x_train = x_train.transpose(0, 2, 3, 1)
        x_test = x_test.transpose(0, 2, 3, 1)
    return _finalize(
        name, ((x_train, y_train), (x_test, y_test)), "keras.datasets"
    )


def _not_found_message(name, searched):
    if name == "fashion_mnist":
        expected = ", ".join(_FASHION_FILES.values())
    else:
        expected = (
            f"{_CIFAR_NPZ[0]} (x_train, y_train) and {_CIFAR_NPZ[1]} "
            "(x_test, y_test), or the original python batches "
            "data_batch_1 ... data_batch_5 and test_batch"
        )
    lines = [
        f"Could not find the files of dataset '{name}'. Looked in, in order:"
    ]
    labels = {label for label, _ in searched}
    if "data_dir argument" not in labels:
        lines.append("  - data_dir argument: not given")
    if f"${ENV_VAR}" not in labels:
        lines.append(f"  - ${ENV_VAR}: not set")
    for label, folder in searched:
        state = "" if os.path.isdir(folder) else " (no such folder)"
        lines.append(f"  - {label}: {folder}{state}")
    lines += [
        f"Expected in one of those folders: {expected}.",
        "To provide the files, either pass `data_dir=` a folder holding "
        f"'{_SUBDIRS[name]}/' (or the dataset folder itself), or set the "
        f"environment variable {ENV_VAR} to such a folder, or pass "
        f"`download=True` to download them with "
        f"`keras.datasets.{name}.load_data()` (needs internet).",
    ]
    return "\n".join(lines)
