"""Fake quantization and batch-norm folding, as the TFLite converter does.

Pure functions on tensors (`keras.ops` and `keras.quantizers`), free of any
model or layer:

- `quantize_weights(kernel, kind)`: symmetric int8 (`[-127, 127]`, scale
  `max|w| / 127`) per output channel on TFLite's channel axis: the last
  axis of a `Conv2D` or `Dense` kernel, `in * multiplier` for a
  `DepthwiseConv2D` kernel `(kh, kw, in, multiplier)`.
- `quantize_activations(x, value_range)`: asymmetric int8 per tensor on a
  range `[min, max]` that holds 0 (the converter's nudging).
- `fold_batch_norm(kernel, bias, bn, kind)`: the kernel and bias of a
  convolution followed by batch normalization in inference mode.

Gradients are straight-through: `keras.quantizers.fake_quant_with_min_max_vars`
lowers to `tf.quantization.fake_quant_with_min_max_vars(_per_channel)`, whose
gradient is the identity inside the range.
"""

import keras

KINDS = ("conv", "depthwise", "dense", "bn")

# Smallest width of an activation range: a range of zero width (a tensor
# that was always 0, a dead ReLU) has no scale.
MIN_RANGE = 1e-4
# Smallest weight magnitude taken as a channel's range (all-zero channels).
MIN_WEIGHT = 1e-8


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"Expected `kind` in {KINDS}. Received: kind={kind!r}")


def output_channels(kernel, kind):
    """Number of output channels of a kernel of the given kind."""
    _check_kind(kind)
    shape = tuple(kernel.shape)
    if kind == "depthwise":
        return int(shape[-2] * shape[-1])
    return int(shape[-1])


def per_channel(values, kernel, kind):
    """Reshapes a per-output-channel vector to broadcast against `kernel`."""
    if kind == "depthwise":
        shape = tuple(kernel.shape)
        return keras.ops.reshape(values, (shape[-2], shape[-1]))
    return values


def quantize_weights(kernel, kind):
    """Fake-quantizes a kernel: symmetric int8, per output channel.

    Each output channel `c` is rounded to the grid `k * s_c`,
    `k in [-127, 127]`, `s_c = max|w_c| / 127` (narrow range): what the
    TFLite converter (TF 2.21) stores for `CONV_2D`, `DEPTHWISE_CONV_2D`
    (channel axis 3 of its `(1, kh, kw, in * multiplier)` kernel) and
    `FULLY_CONNECTED` (per output unit).
    The range follows the weights (no gradient flows into it); the weights
    get straight-through gradients.

    Args:
        kernel: a float tensor: `(..., out)` for `"conv"` and `"dense"`,
            `(kh, kw, in, multiplier)` for `"depthwise"`, `(channels,)` for
            `"bn"` (a per-channel scale).
        kind: one of `"conv"`, `"depthwise"`, `"dense"`, `"bn"`.

    Returns:
        A tensor of the kernel's shape and dtype.
    """
    flat, bound = _per_channel_bound(kernel, kind)
    out = keras.quantizers.fake_quant_with_min_max_vars(
        flat, -bound, bound, num_bits=8, narrow_range=True, axis=-1
    )
    return keras.ops.reshape(out, tuple(kernel.shape))


def _per_channel_bound(kernel, kind):
    """`(kernel as (taps, out), max |w| per output channel)`, no gradient
    into the bound."""
    _check_kind(kind)
    shape = tuple(kernel.shape)
    if kind == "depthwise":
        flat = keras.ops.reshape(kernel, (-1, shape[-2] * shape[-1]))
    elif len(shape) > 1:
        flat = keras.ops.reshape(kernel, (-1, shape[-1]))
    else:
        flat = keras.ops.reshape(kernel, (1, -1))
    bound = keras.ops.max(keras.ops.abs(keras.ops.stop_gradient(flat)), axis=0)
    return flat, keras.ops.maximum(bound, MIN_WEIGHT)


def weight_scales(kernel, kind):
    """The int8 weight scale of each output channel, `max|w_c| / 127`,
    as the converter stores it (computed in float64, stored as float32)."""
    bound = _per_channel_bound(kernel, kind)[1]
    return _stored_scale(bound, 127.0)


def activation_scale(value_range):
    """The int8 scale of an activation range, `(max - min) / 255`, as the
    converter stores it (the nudging moves the range, not its scale)."""
    lo, hi = effective_range(value_range)
    return _stored_scale(
        keras.ops.cast(hi, "float64") - keras.ops.cast(lo, "float64"), 255.0
    )


def _stored_scale(width, levels):
    """`width / levels` computed in float64 and stored as float32, as the
    converter computes a scale (a float32 division in a traced graph may be
    rewritten as a multiplication by the reciprocal, an ulp away)."""
    return keras.ops.cast(keras.ops.cast(width, "float64") / levels, "float32")


def quantize_bias(bias, input_scale, weight_scales):
    """Rounds a bias to the int32 grid the file stores it on, step
    `input_scale * weight_scale` per output channel, as the converter does;
    the gradient passes straight through.

    Without it the fake-quant model adds the exact bias where the file adds
    the rounded one, and the two drift apart layer after layer in deep
    models (measured on MobileNetV2: mean logit error 0.80 output steps
    against 0.23 with the file's biases).
    """
    step = keras.ops.stop_gradient(input_scale * weight_scales)
    rounded = keras.ops.round(bias / step) * step
    return bias + keras.ops.stop_gradient(rounded - bias)


def effective_range(value_range):
    """The `(min, max)` used to quantize: 0 inside, width >= MIN_RANGE."""
    lo = keras.ops.minimum(value_range[0], 0.0)
    hi = keras.ops.maximum(value_range[1], 0.0)
    hi = keras.ops.maximum(hi, lo + MIN_RANGE)
    return lo, hi


def quantize_activations(x, value_range):
    """Fake-quantizes activations: asymmetric int8 per tensor.

    Args:
        x: a float tensor.
        value_range: a tensor `[min, max]`.

    Returns:
        `x` rounded to the 256-level grid of the (nudged) range, clipped to
        it; gradients pass straight through inside the range.
    """
    lo, hi = effective_range(value_range)
    return keras.quantizers.fake_quant_with_min_max_vars(
        x, lo, hi, num_bits=8, narrow_range=False
    )


def batch_norm_scale(bn, mean=None, variance=None):
    """`(scale, shift)` of a `BatchNormalization` layer in inference mode,
    `bn(x) = x * scale + shift`, from its moving statistics (or the given
    ones)."""
    mean = bn.moving_mean if mean is None else mean
    variance = bn.moving_variance if variance is None else variance
    inv = keras.ops.rsqrt(keras.ops.add(variance, bn.epsilon))
    scale = inv if bn.gamma is None else keras.ops.multiply(bn.gamma, inv)
    shift = keras.ops.negative(keras.ops.multiply(mean, scale))
    if bn.beta is not None:
        shift = keras.ops.add(shift, bn.beta)
    return scale, shift


def fold_batch_norm(kernel, bias, bn, kind):
    """Folds an inference-mode `BatchNormalization` into the layer before it.

    `bn(conv(x, kernel) + bias) == conv(x, kernel') + bias'` with
    `kernel' = kernel * gamma / sqrt(var + eps)` per output channel and
    `bias' = beta + (bias - mean) * gamma / sqrt(var + eps)`, as the TFLite
    converter folds it.

    Args:
        kernel: the kernel of a `"conv"`, `"depthwise"` or `"dense"` layer.
        bias: its bias, or None.
        bn: the `keras.layers.BatchNormalization` that follows it (on the
            channel axis, the last one).
        kind: `"conv"`, `"depthwise"` or `"dense"`.

    Returns:
        A tuple `(kernel', bias')`.
    """
    _check_kind(kind)
    scale, shift = batch_norm_scale(bn)
    folded = keras.ops.multiply(kernel, per_channel(scale, kernel, kind))
    if bias is not None:
        shift = keras.ops.add(shift, keras.ops.multiply(bias, scale))
    return folded, shift
