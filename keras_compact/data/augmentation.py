"""Light, seeded training-time augmentation for the named datasets.

Each augmentation is a function `fn(image, seed) -> image` of one uint8 HWC
image and a stateless seed (an int64 tensor of shape `(2,)`), written with
`tf.image` stateless ops so that a pipeline is reproducible from its seed:

- CIFAR-10: zero-pad 4 pixels on each side, random 32x32 crop, random
  horizontal flip (the standard ResNet recipe).
- Fashion-MNIST: zero-pad 2 pixels, random 28x28 crop. No flip: it would
  turn some classes into unusual views (shoes point left in the data).
- digits: none (8x8 images have no room for shifts).
"""

import tensorflow as tf


def pad_and_crop(image, seed, padding):
    """Zero-pads `padding` pixels around `image`, then crops it back.

    Args:
        image: a `(height, width, channels)` tensor.
        seed: stateless seed, an int tensor of shape `(2,)`.
        padding: number of pixels added on each side.

    Returns:
        A tensor of the same shape and dtype as `image`, shifted by up to
        `padding` pixels in each direction.
    """
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def shift_augmentation(image_size):
    """The augmentation of images of unknown content (a folder of images, a
    TFDS dataset): a random shift by up to 1/14 of the smaller side (at
    least 1 pixel), zero-padded. No flip: a flip is not label-preserving for
    every task (text, digits, oriented objects).

    Args:
        image_size: `(height, width)` of the images.

    Returns:
        A function `fn(image, seed) -> image`.
    """
    padding = max(1, round(min(image_size[:2]) / 14))

    def shift_augment(image, seed):
        return pad_and_crop(image, seed, padding=padding)

    return shift_augment


def cifar10_augment(image, seed):
    """Pad-4 random crop and random horizontal flip of a CIFAR-10 image."""
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    image = pad_and_crop(image, crop_seed, padding=4)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def fashion_mnist_augment(image, seed):
    """Pad-2 random crop of a Fashion-MNIST image."""
    return pad_and_crop(image, seed, padding=2)


_AUGMENTATIONS = {
    "cifar10": cifar10_augment,
    "fashion_mnist": fashion_mnist_augment,
    "digits": None,
}


def get_augmentation(name):
    """Returns the augmentation function of a dataset, or None if it has none.

    Args:
        name: a dataset name.

    Returns:
        A function `fn(image, seed) -> image`, or None.
    """
    return _AUGMENTATIONS[name]
