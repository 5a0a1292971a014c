"""A folder of images in class sub-folders, as the project's `DatasetSplits`.

`load_image_folder` reads every image once (through
`keras.utils.image_dataset_from_directory`) into uint8 arrays, then builds
the same stratified, seeded train / validation / test pipelines as the
named datasets: epoch `e` of seed `s` is the same batches in any process,
and `DatasetSplits.epoch_callback()` keeps a resumed run on them.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_compact.data.augmentation import shift_augmentation
from keras_compact.data.pipeline import (
    _check_bool,
    _check_int,
    _check_split,
    build_splits,
    hold_out_test,
)
from keras_compact.data.registry import DatasetInfo

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
COLOR_MODES = ("auto", "grayscale", "rgb", "rgba")


def is_image_folder(path):
    """Whether `path` is a folder with at least one class sub-folder.

    Args:
        path: a path (str or os.PathLike).

    Returns:
        True when `path` is a directory holding a sub-directory.
    """
    try:
        path = os.fspath(path)
    except TypeError:
        return False
    if not os.path.isdir(path):
        return False
    return any(e.is_dir() for e in os.scandir(path))


def load_image_folder(
    directory,
    *,
    image_size=None,
    color_mode="auto",
    batch_size=128,
    validation_split=0.1,
    test_split=0.1,
    n_per_class=None,
    augment=True,
    seed=0,
):
    """Builds train, validation and test pipelines from a folder of images.

    The folder holds one sub-folder per class (`directory/<class>/*.png`),
    the layout of `keras.utils.image_dataset_from_directory`; class indices
    follow the sorted sub-folder names. When the folder instead holds
    `train/` and `test/` sub-folders, each laid out that way, they are the
    training and test sets; otherwise a stratified `test_split` of each
    class is held out for testing. The validation split always comes out
    of the training images. Images come out as float32 in `[0, 1]` and
    labels as int32, as with `load_dataset`; with `augment=True` training
    images are randomly shifted (pad-and-crop by 1/14 of their size, no
    flips: a flip is not label-preserving for every task).

    Args:
        directory: the folder (str or os.PathLike).
        image_size: `(height, width)` the images are resized to; `None`
            takes the size of the first image.
        color_mode: `"auto"` (the first image's mode: grayscale or RGB),
            `"grayscale"`, `"rgb"` or `"rgba"`.
        batch_size: positive int, the batch size of all three pipelines.
        validation_split: float in `[0, 1)`, the fraction of the training
            images held out for validation.
        test_split: float in `(0, 1)`, the fraction of each class held out
            for testing when there is no `test/` sub-folder.
        n_per_class: optional positive int: training images kept per class.
        augment: whether to augment the training pipeline.
        seed: non-negative int seeding the splits, the per-epoch shuffle
            and the augmentation.

    Returns:
        A `DatasetSplits`; its `info.name` is the folder's name.

    Raises:
        FileNotFoundError: if `directory` does not exist.
        ValueError: if it holds no class sub-folder with images, fewer than
            two classes, or an argument is out of range.

    Example:

    ```python
    splits = load_image_folder("flowers/", image_size=(64, 64))
    model.fit(splits.train, validation_data=splits.val, epochs=5)
    ```
    """
    path = os.fspath(directory)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            "Expected `directory` to be a folder of images in class "
            f"sub-folders. Received: directory={path!r} (not found)"
        )
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"Expected `color_mode` to be one of {COLOR_MODES}. "
            f"Received: color_mode={color_mode!r}"
        )
    _check_int(batch_size, "batch_size", minimum=1)
    _check_split(validation_split)
    _check_int(n_per_class, "n_per_class", minimum=1, allow_none=True)
    _check_bool(augment, "augment")
    _check_int(seed, "seed", minimum=0)
    if not 0 < test_split < 1:
        raise ValueError(
            "Expected `test_split` to be a float in (0, 1). "
            f"Received: test_split={test_split!r}"
        )

    train_dir, test_dir = (
        os.path.join(path, "train"),
        os.path.join(path, "test"),
    )
    has_test = is_image_folder(train_dir) and is_image_folder(test_dir)
    source = train_dir if has_test else path
    first = _first_image(source)
    if image_size is None or color_mode == "auto":
        from PIL import Image  # what keras.utils.load_img reads with

        with Image.open(first) as img:
            if image_size is None:
                image_size = (img.height, img.width)
            if color_mode == "auto":
                grey = img.mode in ("L", "1", "I", "I;16", "LA")
                color_mode = "grayscale" if grey else "rgb"
    image_size = tuple(int(s) for s in image_size)

    x, y, class_names = _read(source, image_size, color_mode)
    if has_test:
        x_test, y_test, test_names = _read(
            test_dir, image_size, color_mode, class_names
        )
        if tuple(test_names) != tuple(class_names):
            raise ValueError(
                "Expected `train/` and `test/` to hold the same class "
                f"sub-folders. Received: train={class_names}, "
                f"test={test_names}"
            )
    else:
        (x, y), (x_test, y_test) = hold_out_test(
            x, y, len(class_names), test_split, seed
        )
    info = DatasetInfo(
        name=os.path.basename(os.path.normpath(path)),
        num_classes=len(class_names),
        input_shape=tuple(x.shape[1:]),
        class_names=tuple(class_names),
    )
    return build_splits(
        (x, y),
        (x_test, y_test),
        info,
        batch_size=batch_size,
        validation_split=validation_split,
        n_per_class=n_per_class,
        augment=shift_augmentation(image_size) if augment else None,
        seed=seed,
    )


def _first_image(path):
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        for root, _, files in os.walk(entry.path):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    return os.path.join(root, f)
    raise ValueError(
        "Expected a folder with one sub-folder of images (.png, .jpg, "
        f".bmp, .gif) per class. Received: directory={path!r} (no image in "
        "any sub-folder)"
    )


def _read(path, image_size, color_mode, class_names=None):
    ds = keras.utils.image_dataset_from_directory(
        path,
        labels="inferred",
        label_mode="int",
        class_names=class_names,
        color_mode=color_mode,
        batch_size=None,
        image_size=image_size,
        shuffle=False,
        verbose=False,
    )
    names = list(ds.class_names)
    if len(names) < 2:
        raise ValueError(
            "Expected at least two class sub-folders. "
            f"Received: directory={path!r} with classes {names}"
        )
    ds = ds.batch(1024).map(
        lambda im, lab: (tf.cast(tf.round(im), tf.uint8), lab)
    )
    xs, ys = [], []
    for im, lab in ds:
        xs.append(im.numpy())
        ys.append(lab.numpy())
    if not xs:
        raise ValueError(
            f"Expected images in the class sub-folders. Received: "
            f"directory={path!r} (none found)"
        )
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64), names
