"""Argument checks and channel rounding shared by the zoo's builders."""

import numbers

import keras


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a channel count to the nearest multiple of `divisor`.

    This is the rounding of the MobileNetV2 paper's reference code: the result
    is at least `min_value` (default `divisor`) and never more than 10% below
    `value`.

    Args:
        value: the unrounded channel count (a positive number).
        divisor: the multiple to round to.
        min_value: the smallest allowed result (default: `divisor`).

    Returns:
        An `int`, a multiple of `divisor`.

    Example:

    >>> make_divisible(32 * 0.35)
    16
    >>> make_divisible(24 * 0.5)
    16
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def scale_channels(channels, width_multiplier):
    """`channels * width_multiplier` rounded to an integer, at least 1."""
    return max(1, int(round(channels * width_multiplier)))


def validate_input_shape(input_shape, model_name):
    """Checks an image shape `(height, width, channels)`; returns a tuple."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or not all(_is_int(d) and d > 0 for d in shape)
    ):
        raise ValueError(
            f"`{model_name}` expects `input_shape` to be a tuple of three "
            "positive integers `(height, width, channels)` (channels last). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def validate_num_classes(num_classes, model_name):
    """Checks that `num_classes` is a positive integer; returns it."""
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(
            f"`{model_name}` expects `num_classes` to be a positive integer. "
            f"Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def validate_positive(value, arg_name, model_name):
    """Checks that a float argument (a width multiplier) is > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
    ):
        raise ValueError(
            f"`{model_name}` expects `{arg_name}` to be a number > 0. "
            f"Received: {arg_name}={value!r}"
        )
    return float(value)


def validate_rate(value, arg_name, model_name):
    """Checks that a dropout rate is a number in `[0, 1)`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1
    ):
        raise ValueError(
            f"`{model_name}` expects `{arg_name}` to be a float in [0, 1). "
            f"Received: {arg_name}={value!r}"
        )
    return float(value)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def batch_norm(name):
    """The zoo's BatchNormalization: momentum 0.9, epsilon 1e-5.

    These are PyTorch's defaults, used by the reference code of every method
    keras_compact implements. Keras' default momentum (0.99) leaves the
    moving statistics far behind the weights in the short, high learning
    rate budgets of tiny-model training (a model evaluated after 150 steps
    scored near chance with it).
    """
    return keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, name=name
    )


def conv2d(filters, kernel_size, strides, name):
    """The zoo's ResNet convolution: "same" padding, no bias, He-normal."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )
