"""MobileNetV2 for small images, with CIFAR-style strides below 96x96."""

import keras

from keras_compact.models.model_utils import (
    batch_norm,
    make_divisible,
    validate_input_shape,
    validate_num_classes,
    validate_positive,
)
from keras_compact.models.registry import register_model

# (expand_ratio t, output channels c, repeats n, first stride s): Table 2 of
# the paper.
_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# Inputs smaller than this (the smallest size of Keras' ImageNet MobileNetV2
# weights) use CIFAR-style strides when `cifar_stem=None`.
_CIFAR_BELOW = 96


def _inverted_residual(x, index, expand_ratio, filters, stride):
    """expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 -> BN -> ReLU6 ->
    project 1x1 -> BN (+ Add when the shapes allow)."""
    prefix = f"block{index}"
    in_channels = x.shape[-1]
    inputs = x
    if expand_ratio != 1:
        x = keras.layers.Conv2D(
            in_channels * expand_ratio,
            1,
            use_bias=False,
            name=f"{prefix}_expand",
        )(x)
        x = batch_norm(name=f"{prefix}_expand_bn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dw"
    )(x)
    x = batch_norm(name=f"{prefix}_dw_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_dw_relu")(x)
    x = keras.layers.Conv2D(
        filters, 1, use_bias=False, name=f"{prefix}_project"
    )(x)
    x = batch_norm(name=f"{prefix}_project_bn")(x)
    if stride == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


@register_model("mobilenet_v2")
def mobilenet_v2(
    input_shape=(32, 32, 3),
    num_classes=10,
    alpha=None,
    width_multiplier=None,
    cifar_stem=None,
    name=None,
):
    """MobileNetV2 (inverted residuals, ReLU6), CIFAR strides below 96x96.

    The architecture of the paper's Table 2: a 3x3 stem conv with
    `make_divisible(32 * alpha, 8)` channels, 17 inverted residual blocks
    (`block1` .. `block17`; expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 -> BN
    -> ReLU6 -> project 1x1 -> BN, plus an `Add` when the stride is 1 and the
    channels match; expand-ratio-1 blocks have no expand conv), a 1x1 head
    conv with 1280 channels (`make_divisible(1280 * alpha, 8)` when
    `alpha > 1`), global average pooling and a `Dense` logits layer. Block
    channels are `make_divisible(c * alpha, 8)`.

    ImageNet strides reduce the input 32 times (224 -> 7). For small inputs
    `cifar_stem=True` sets the stem and the first stride-2 stage (24
    channels) to stride 1, as CIFAR MobileNetV2 implementations do, so the
    input is reduced 8 times (32x32 -> 4x4, 28x28 -> 4x4). Every strided
    layer uses "same" padding.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        alpha: the paper's width multiplier, > 0 (default 1.0).
        width_multiplier: alias of `alpha`, the zoo-wide name (give one of
            the two, or equal values).
        cifar_stem: `True` for CIFAR strides, `False` for ImageNet strides,
            `None` (default) for CIFAR strides when the input's height or
            width is below 96.
        name: the model's name (default `"mobilenet_v2"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for an invalid `input_shape`, `num_classes`, `alpha` or
            `width_multiplier`, or when `alpha` and `width_multiplier`
            disagree.

    Example:

    ```python
    model = mobilenet_v2(input_shape=(32, 32, 3), alpha=0.5)
    imagenet = mobilenet_v2((224, 224, 3), num_classes=1000)  # ~300M MACs
    ```

    Reference:
    - [Sandler et al., MobileNetV2: Inverted Residuals and Linear
      Bottlenecks, CVPR 2018](https://arxiv.org/abs/1801.04381)
    """
    model_name = name or "mobilenet_v2"
    input_shape = validate_input_shape(input_shape, model_name)
    num_classes = validate_num_classes(num_classes, model_name)
    if alpha is not None:
        alpha = validate_positive(alpha, "alpha", model_name)
    if width_multiplier is not None:
        width = validate_positive(
            width_multiplier, "width_multiplier", model_name
        )
        if alpha is not None and alpha != width:
            raise ValueError(
                f"`{model_name}`: `width_multiplier` is an alias of `alpha`; "
                "give one of them. Received: "
                f"alpha={alpha!r}, width_multiplier={width_multiplier!r}"
            )
        alpha = width
    if alpha is None:
        alpha = 1.0
    if cifar_stem is None:
        cifar_stem = min(input_shape[:2]) < _CIFAR_BELOW
    if not isinstance(cifar_stem, bool):
        raise ValueError(
            f"`{model_name}` expects `cifar_stem` to be True, False or None. "
            f"Received: cifar_stem={cifar_stem!r}"
        )

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(
        make_divisible(32 * alpha, 8),
        3,
        strides=1 if cifar_stem else 2,
        padding="same",
        use_bias=False,
        name="stem_conv",
    )(inputs)
    x = batch_norm(name="stem_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="stem_relu")(x)

    index = 0
    for stage, (t, c, n, s) in enumerate(_BLOCKS):
        if cifar_stem and stage == 1:
            s = 1
        filters = make_divisible(c * alpha, 8)
        for repeat in range(n):
            index += 1
            x = _inverted_residual(
                x, index, t, filters, s if repeat == 0 else 1
            )

    head = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = keras.layers.Conv2D(head, 1, use_bias=False, name="head_conv")(x)
    x = batch_norm(name="head_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=model_name)


@register_model("mobilenet_v2_tiny")
def mobilenet_v2_tiny(
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=0.35,
    cifar_stem=None,
    name=None,
):
    """MobileNetV2 with alpha=0.35 for 32x32 images, about 0.4M params.

    `mobilenet_v2(alpha=0.35)` under its own name. At 32x32x3 with 10 classes
    it has about 0.41M parameters, 0.16M of them in the 1280-channel head
    conv and the logits layer that it feeds.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: MobileNetV2's `alpha` (default 0.35); must be > 0.
        cifar_stem: as in `mobilenet_v2`.
        name: the model's name (default `"mobilenet_v2_tiny"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for invalid arguments, as `mobilenet_v2`.

    Example:

    ```python
    model = mobilenet_v2_tiny(input_shape=(28, 28, 1))
    ```

    Reference:
    - [Sandler et al., MobileNetV2: Inverted Residuals and Linear
      Bottlenecks, CVPR 2018](https://arxiv.org/abs/1801.04381)
    """
    return mobilenet_v2(
        input_shape=input_shape,
        num_classes=num_classes,
        width_multiplier=width_multiplier,
        cifar_stem=cifar_stem,
        name=name or "mobilenet_v2_tiny",
    )
