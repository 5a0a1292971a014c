"""A three-layer CNN for 28x28 grey images (Fashion-MNIST, MNIST)."""

import keras

from keras_compact.models.model_utils import (
    batch_norm,
    scale_channels,
    validate_input_shape,
    validate_num_classes,
    validate_positive,
)
from keras_compact.models.registry import register_model


@register_model("tiny_cnn")
def tiny_cnn(
    input_shape=(28, 28, 1), num_classes=10, width_multiplier=1.0, name=None
):
    """Tiny CNN: three conv-BN-ReLU layers (16/32/64), about 24k params.

    The network is `conv1 -> pool1 -> conv2 -> pool2 -> conv3 -> gap ->
    logits`, each conv a 3x3 `Conv2D` (no bias) followed by
    `BatchNormalization` and `ReLU`, each pool a 2x2 `MaxPooling2D` with
    "same" padding, so any input of at least 1x1 works. At 28x28x1 with 10
    classes it has 24,282 parameters and 1,919,872 MACs.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of output logits.
        width_multiplier: scales the 16/32/64 channels (rounded to the
            nearest integer, at least 1); must be > 0.
        name: the model's name (default `"tiny_cnn"`).

    Returns:
        A functional `keras.Model` that outputs logits.

    Raises:
        ValueError: for an invalid `input_shape`, `num_classes` or
            `width_multiplier`.

    Example:

    ```python
    model = tiny_cnn(width_multiplier=0.5)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    ```
    """
    input_shape = validate_input_shape(input_shape, "tiny_cnn")
    num_classes = validate_num_classes(num_classes, "tiny_cnn")
    width = validate_positive(width_multiplier, "width_multiplier", "tiny_cnn")

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, channels in enumerate((16, 32, 64), start=1):
        if i > 1:
            x = keras.layers.MaxPooling2D(
                2, padding="same", name=f"pool{i - 1}"
            )(x)
        x = keras.layers.Conv2D(
            scale_channels(channels, width),
            3,
            padding="same",
            use_bias=False,
            name=f"conv{i}",
        )(x)
        x = batch_norm(name=f"conv{i}_bn")(x)
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "tiny_cnn")
