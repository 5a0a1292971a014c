"""CIFAR ResNets (He et al. 2016): ResNet-8 and ResNet-20."""

import keras

from keras_compact.models.model_utils import (
    batch_norm,
    conv2d,
    scale_channels,
    validate_input_shape,
    validate_num_classes,
    validate_positive,
)
from keras_compact.models.registry import register_model


def _basic_block(x, filters, stride, prefix):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv2d(filters, 1, stride, f"{prefix}_shortcut")(x)
        shortcut = batch_norm(name=f"{prefix}_shortcut_bn")(shortcut)
    x = conv2d(filters, 3, stride, f"{prefix}_conv1")(x)
    x = batch_norm(name=f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(name=f"{prefix}_relu1")(x)
    x = conv2d(filters, 3, 1, f"{prefix}_conv2")(x)
    x = batch_norm(name=f"{prefix}_bn2")(x)
    x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def cifar_resnet(
    depth=20,
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=1.0,
    name=None,
):
    """CIFAR ResNet of depth `6n + 2` with basic blocks.

    A 3x3 stem conv with 16 channels (`stem_conv`, `stem_bn`, `stem_relu`),
    three stages of `n` basic blocks with 16, 32 and 64 channels
    (`stage{s}_block{b}_conv1`, `_bn1`, `_relu1`, `_conv2`, `_bn2`, `_add`,
    `_out`), global average pooling and a `Dense` logits layer. The first
    block of stages 2 and 3 has stride 2. Where a block changes the shape,
    its shortcut is a 1x1 conv + BN (`stage{s}_block{b}_shortcut`,
    `_shortcut_bn`; the paper's option B), elsewhere the identity. Convs
    have no bias and He-normal initialisation.

    Args:
        depth: `6n + 2` layers: 8, 14, 20, 32, 44, 56, 110, ...
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales the 16/32/64 channels (rounded to the
            nearest integer, at least 1); must be > 0.
        name: the model's name (default `"resnet{depth}"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: if `depth` is not `6n + 2` with `n >= 1`, or for an
            invalid `input_shape`, `num_classes` or `width_multiplier`.

    Example:

    ```python
    model = cifar_resnet(depth=32, input_shape=(32, 32, 3))
    ```

    Reference:
    - [He et al., Deep Residual Learning for Image Recognition, CVPR
      2016](https://arxiv.org/abs/1512.03385), section 4.2.
    """
    if (
        not isinstance(depth, int)
        or isinstance(depth, bool)
        or depth < 8
        or (depth - 2) % 6
    ):
        raise ValueError(
            "Expected `depth` to be 6n + 2 with n >= 1 (8, 14, 20, 32, ...). "
            f"Received: depth={depth!r}"
        )
    model_name = name or f"resnet{depth}"
    input_shape = validate_input_shape(input_shape, model_name)
    num_classes = validate_num_classes(num_classes, model_name)
    width = validate_positive(width_multiplier, "width_multiplier", model_name)
    blocks = (depth - 2) // 6

    inputs = keras.Input(input_shape, name="image")
    x = conv2d(scale_channels(16, width), 3, 1, "stem_conv")(inputs)
    x = batch_norm(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, channels in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(
                x,
                scale_channels(channels, width),
                stride,
                f"stage{stage}_block{block}",
            )
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=model_name)


@register_model("resnet8")
def resnet8(
    input_shape=(32, 32, 3), num_classes=10, width_multiplier=1.0, name=None
):
    """CIFAR ResNet-8: 16/32/64 channels, 1 basic block per stage, ~78k params.

    `cifar_resnet(depth=8)`: see there for the layers and their names.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales every conv's channels; must be > 0.
        name: the model's name (default `"resnet8"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for invalid arguments, as `cifar_resnet`.

    Example:

    ```python
    model = resnet8(input_shape=(28, 28, 1))
    ```

    Reference:
    - [He et al., Deep Residual Learning for Image Recognition, CVPR
      2016](https://arxiv.org/abs/1512.03385)
    """
    return cifar_resnet(
        8, input_shape, num_classes, width_multiplier, name or "resnet8"
    )


@register_model("resnet20")
def resnet20(
    input_shape=(32, 32, 3), num_classes=10, width_multiplier=1.0, name=None
):
    """CIFAR ResNet-20: 16/32/64 channels, 3 basic blocks per stage, ~0.27M.

    `cifar_resnet(depth=20)`: see there for the layers and their names.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales every conv's channels; must be > 0.
        name: the model's name (default `"resnet20"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for invalid arguments, as `cifar_resnet`.

    Example:

    ```python
    model = resnet20(input_shape=(32, 32, 3), num_classes=100)
    ```

    Reference:
    - [He et al., Deep Residual Learning for Image Recognition, CVPR
      2016](https://arxiv.org/abs/1512.03385)
    """
    return cifar_resnet(
        20, input_shape, num_classes, width_multiplier, name or "resnet20"
    )
