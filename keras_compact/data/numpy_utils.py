"""Getting numpy arrays back out of datasets.

`as_numpy` collects the `(x, y)` examples of any `tf.data.Dataset`;
`representative_images` picks un-augmented training images, the calibration
set that full-integer (int8) TFLite conversion asks for.
"""

import numbers

import numpy as np
import tensorflow as tf

from keras_compact.data.pipeline import DatasetSplits


def as_numpy(dataset, limit=None):
    """Collects the examples of a dataset into numpy arrays.

    Works on batched datasets (elements with a leading batch dimension of
    unknown size, as `Dataset.batch` makes) and on unbatched ones. Elements
    may be `(x, y)`, `(x, y, sample_weight)` (the weights are dropped) or a
    bare `x`.

    Args:
        dataset: a `tf.data.Dataset`. Beware of infinite (repeated) datasets:
            pass `limit`.
        limit: optional positive int, the maximum number of examples to
            collect; iteration stops as soon as it is reached.

    Returns:
        `(x, y)` numpy arrays; `y` is None when the elements carry no labels.

    Raises:
        TypeError: if `dataset` is not a `tf.data.Dataset`.
        ValueError: if `limit` is not a positive int or None.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     (np.zeros((10, 2)), np.arange(10))).batch(4)
    >>> x, y = as_numpy(ds, limit=6)
    >>> x.shape, y.tolist()
    ((6, 2), [0, 1, 2, 3, 4, 5])
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "Expected `dataset` to be a tf.data.Dataset. "
            f"Received: dataset={dataset!r} of type {type(dataset).__name__}"
        )
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, numbers.Integral)
        or limit < 1
    ):
        raise ValueError(
            f"Expected `limit` to be a positive int or None. "
            f"Received: limit={limit!r}"
        )
    spec = dataset.element_spec
    labelled = isinstance(spec, tuple) and len(spec) >= 2
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    batched = x_spec.shape.rank and x_spec.shape[0] is None
    xs, ys, count = [], [], 0
    for element in dataset.as_numpy_iterator():
        x = element[0] if isinstance(element, tuple) else element
        y = element[1] if labelled else None
        if not batched:
            x = x[np.newaxis]
            y = None if y is None else np.asarray(y)[np.newaxis]
        xs.append(x)
        ys.append(y)
        count += len(x)
        if limit is not None and count >= limit:
            break
    if not xs:
        x_shape = [0] + [d or 0 for d in x_spec.shape[int(bool(batched)) :]]
        x = np.zeros(x_shape, x_spec.dtype.as_numpy_dtype)
        y = np.zeros([0], spec[1].dtype.as_numpy_dtype) if labelled else None
        return x, y
    x = np.concatenate(xs)[:limit]
    y = np.concatenate(ys)[:limit] if labelled else None
    return x, y


def representative_images(splits_or_dataset, n=200):
    """Returns up to `n` un-augmented images for int8 calibration.

    Args:
        splits_or_dataset: a `DatasetSplits` from `load_dataset`, whose
            un-augmented training images are used (in the split's shuffled,
            class-mixed order); or a `tf.data.Dataset`, whose images are
            taken as they come (do not pass an augmented one). Integer
            images are scaled to `[0, 1]`.
        n: positive int, the number of images wanted. Fewer are returned
            when fewer exist.

    Returns:
        A float32 numpy array of shape `(min(n, available), h, w, c)`.

    Raises:
        TypeError: if `splits_or_dataset` is neither accepted type.
        ValueError: if `n` is not a positive int.

    Example:

    >>> splits = load_dataset("digits", n_per_class=5)
    >>> representative_images(splits, n=8).shape
    (8, 8, 8, 1)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(
            f"Expected `n` to be a positive int. Received: n={n!r}"
        )
    if isinstance(splits_or_dataset, DatasetSplits):
        images = splits_or_dataset.train_images
        if images is None:
            raise ValueError(
                "Expected a DatasetSplits from `load_dataset`, which keeps "
                "its training images. Received: "
                "splits_or_dataset.train_images=None"
            )
        images = images[:n]
    elif isinstance(splits_or_dataset, tf.data.Dataset):
        images, _ = as_numpy(splits_or_dataset, limit=n)
    else:
        raise TypeError(
            "Expected `splits_or_dataset` to be a DatasetSplits or a "
            "tf.data.Dataset. Received: "
            f"splits_or_dataset={splits_or_dataset!r} of type "
            f"{type(splits_or_dataset).__name__}"
        )
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)
