"""The named datasets keras_compact knows, and what each one looks like.

Every dataset is described by a `DatasetInfo`: its number of classes, the
shape of one image (height, width, channels), the class names and the number
of examples in each split. `dataset_info(name)` returns the description of
the full dataset; `load_dataset` returns one whose `counts` are those of the
splits it actually built.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of an image classification dataset.

    Args:
        name: the dataset's name, as passed to `load_dataset`.
        num_classes: number of classes; labels are `0 .. num_classes - 1`.
        input_shape: shape of one image, `(height, width, channels)`.
        class_names: tuple of `num_classes` human-readable class names.
        counts: dict mapping a split name (`"train"`, `"val"`, `"test"`) to
            its number of examples.
    """

    name: str
    num_classes: int
    input_shape: tuple
    class_names: tuple
    counts: dict = dataclasses.field(default_factory=dict)


_FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_DATASETS = {
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        input_shape=(28, 28, 1),
        class_names=_FASHION_MNIST_CLASSES,
        counts={"train": 60000, "test": 10000},
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        input_shape=(32, 32, 3),
        class_names=_CIFAR10_CLASSES,
        counts={"train": 50000, "test": 10000},
    ),
    "digits": DatasetInfo(
        name="digits",
        num_classes=10,
        input_shape=(8, 8, 1),
        class_names=tuple(str(i) for i in range(10)),
        counts={"train": 1437, "test": 360},
    ),
}


def list_datasets():
    """Returns the names of the available datasets, sorted.

    Returns:
        A list of strings, e.g. `["cifar10", "digits", "fashion_mnist"]`.
    """
    return sorted(_DATASETS)


def dataset_info(name):
    """Returns the static description of a named dataset.

    Nothing is read from disk: this works even where the data is absent.

    Args:
        name: one of `list_datasets()`.

    Returns:
        A `DatasetInfo` with `num_classes`, `input_shape`, `class_names` and
        the sizes of the full train and test splits in `counts`.

    Raises:
        ValueError: if `name` is not a known dataset.

    Example:

    >>> info = dataset_info("cifar10")
    >>> info.input_shape
    (32, 32, 3)
    >>> info.class_names[0]
    'airplane'
    """
    info = _DATASETS[validate_name(name)]
    return dataclasses.replace(info, counts=dict(info.counts))


def validate_name(name):
    """Returns `name` if it names a known dataset, else raises ValueError."""
    if not isinstance(name, str) or name not in _DATASETS:
        raise ValueError(
            f"Unknown dataset. Expected one of {list_datasets()}, or a "
            "TFDS image-classification name 'tfds:NAME' (e.g. "
            f"'tfds:mnist'). Received: name={name!r}"
        )
    return name
