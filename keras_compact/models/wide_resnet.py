"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-16-2 and WRN-28-2."""

import keras

from keras_compact.models.model_utils import (
    batch_norm,
    conv2d,
    scale_channels,
    validate_input_shape,
    validate_num_classes,
    validate_positive,
    validate_rate,
)
from keras_compact.models.registry import register_model


def _preact_block(x, filters, stride, dropout_rate, prefix):
    """BN -> ReLU -> conv3x3 -> BN -> ReLU -> (dropout) -> conv3x3, + x.

    When the block changes the shape, the pre-activation is shared by both
    paths and the shortcut is a 1x1 conv of it (as in the authors' code).
    """
    pre = batch_norm(name=f"{prefix}_preact_bn")(x)
    pre = keras.layers.ReLU(name=f"{prefix}_preact_relu")(pre)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv2d(filters, 1, stride, f"{prefix}_shortcut")(pre)
    else:
        shortcut = x
    y = conv2d(filters, 3, stride, f"{prefix}_conv1")(pre)
    y = batch_norm(name=f"{prefix}_bn2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    if dropout_rate > 0:
        y = keras.layers.Dropout(dropout_rate, name=f"{prefix}_dropout")(y)
    y = conv2d(filters, 3, 1, f"{prefix}_conv2")(y)
    return keras.layers.Add(name=f"{prefix}_add")([shortcut, y])


def wide_resnet(
    depth=16,
    widen_factor=2,
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=1.0,
    dropout_rate=0.0,
    name=None,
):
    """Wide ResNet WRN-`depth`-`widen_factor` with pre-activation blocks.

    A 3x3 stem conv with 16 channels (`stem_conv`), three stages of
    `(depth - 4) / 6` pre-activation blocks with `16k`, `32k` and `64k`
    channels (`stage{s}_block{b}_preact_bn`, `_preact_relu`, `_conv1`,
    `_bn2`, `_relu2`, `_dropout` when `dropout_rate > 0`, `_conv2`, `_add`),
    a final BN + ReLU (`head_bn`, `head_relu`), global average pooling and
    a `Dense` logits layer. Stages 2 and 3 start with stride 2. Where a
    block changes the shape, its shortcut is a 1x1 conv
    (`stage{s}_block{b}_shortcut`) of the block's pre-activation. Convs have
    no bias and He-normal initialisation.

    Args:
        depth: `6n + 4`: 10, 16, 22, 28, 40, ...
        widen_factor: the paper's `k`, a positive integer.
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales every conv's channels on top of `k`
            (rounded to the nearest integer, at least 1); must be > 0.
        dropout_rate: dropout between the two convs of each block, in
            `[0, 1)`; 0 (default) adds no `Dropout` layer.
        name: the model's name (default `"wrn{depth}_{widen_factor}"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: if `depth` is not `6n + 4` with `n >= 1`, if
            `widen_factor` is not a positive integer, or for an invalid
            `input_shape`, `num_classes`, `width_multiplier` or
            `dropout_rate`.

    Example:

    ```python
    model = wide_resnet(depth=40, widen_factor=4, dropout_rate=0.3)
    ```

    Reference:
    - [Zagoruyko & Komodakis, Wide Residual Networks, BMVC
      2016](https://arxiv.org/abs/1605.07146)
    """
    if (
        not isinstance(depth, int)
        or isinstance(depth, bool)
        or depth < 10
        or (depth - 4) % 6
    ):
        raise ValueError(
            "Expected `depth` to be 6n + 4 with n >= 1 (10, 16, 22, 28, ...). "
            f"Received: depth={depth!r}"
        )
    if (
        not isinstance(widen_factor, int)
        or isinstance(widen_factor, bool)
        or widen_factor < 1
    ):
        raise ValueError(
            "Expected `widen_factor` to be a positive integer. "
            f"Received: widen_factor={widen_factor!r}"
        )
    model_name = name or f"wrn{depth}_{widen_factor}"
    input_shape = validate_input_shape(input_shape, model_name)
    num_classes = validate_num_classes(num_classes, model_name)
    width = validate_positive(width_multiplier, "width_multiplier", model_name)
    dropout_rate = validate_rate(dropout_rate, "dropout_rate", model_name)
    blocks = (depth - 4) // 6

    inputs = keras.Input(input_shape, name="image")
    x = conv2d(scale_channels(16, width), 3, 1, "stem_conv")(inputs)
    for stage, channels in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _preact_block(
                x,
                scale_channels(channels * widen_factor, width),
                stride,
                dropout_rate,
                f"stage{stage}_block{block}",
            )
    x = batch_norm(name="head_bn")(x)
    x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=model_name)


@register_model("wrn16_2")
def wrn16_2(
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=1.0,
    dropout_rate=0.0,
    name=None,
):
    """Wide ResNet-16-2: pre-activation, 32/64/128 channels, ~0.69M params.

    `wide_resnet(depth=16, widen_factor=2)`: 2 blocks per stage.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales every conv's channels; must be > 0.
        dropout_rate: dropout inside each block, in `[0, 1)`.
        name: the model's name (default `"wrn16_2"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for invalid arguments, as `wide_resnet`.

    Example:

    ```python
    model = wrn16_2(input_shape=(28, 28, 1))
    ```

    Reference:
    - [Zagoruyko & Komodakis, Wide Residual Networks, BMVC
      2016](https://arxiv.org/abs/1605.07146)
    """
    return wide_resnet(
        16, 2, input_shape, num_classes, width_multiplier, dropout_rate, name
    )


@register_model("wrn28_2")
def wrn28_2(
    input_shape=(32, 32, 3),
    num_classes=10,
    width_multiplier=1.0,
    dropout_rate=0.0,
    name=None,
):
    """Wide ResNet-28-2: pre-activation, 32/64/128 channels, ~1.47M params.

    `wide_resnet(depth=28, widen_factor=2)`: 4 blocks per stage; the model
    of the RigL / DSR CIFAR-10 sparse-training results.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales every conv's channels; must be > 0.
        dropout_rate: dropout inside each block, in `[0, 1)`.
        name: the model's name (default `"wrn28_2"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for invalid arguments, as `wide_resnet`.

    Example:

    ```python
    model = wrn28_2(num_classes=100)
    ```

    Reference:
    - [Zagoruyko & Komodakis, Wide Residual Networks, BMVC
      2016](https://arxiv.org/abs/1605.07146)
    """
    return wide_resnet(
        28, 2, input_shape, num_classes, width_multiplier, dropout_rate, name
    )
