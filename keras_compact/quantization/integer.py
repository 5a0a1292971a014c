"""The integer arithmetic of TFLite's int8 kernels, on tensors.

The fake-quant model rounds each requantized tensor once, in float32. The
int8 kernels of LiteRT's reference op resolver (`BUILTIN_REF`), which
TensorFlow Lite for Microcontrollers ports, do not: a convolution
accumulates exact int32 products, then rescales with a 31-bit fixed-point
multiplier in two rounding steps (gemmlowp's
`SaturatingRoundingDoublingHighMul` then `RoundingDivideByPOT`), so a
small share of values lands one step away from the float result, and
one-step differences compound through a deep network (measured on
MobileNetV2: up to 35 steps inside, 5 at the logits).

These functions reproduce that arithmetic exactly (integers held in
float64 and int64 tensors, `keras.ops` only), so that the fake-quant
model in inference computes what the file computes:

- `quantize_multiplier(real)`: TFLite's `QuantizeMultiplier`, a real
  multiplier as `(significand, shift)`;
- `multiply_by_quantized_multiplier(x, significand, shift)`: TFLite's
  `MultiplyByQuantizedMultiplier` (double rounding);
- `quantize_input(x, value_range)`: the model input's `QUANTIZE`;
- `requantize_linear(...)`: a conv / depthwise / dense output as the int8
  kernel computes it, from the float inputs on their int8 grid;
- `requantize_mean(...)`: the int8 `MEAN` over the spatial axes
  (`GlobalAveragePooling2D`) as LiteRT's reference kernel computes it;
- `requantize_add(...)`: the int8 `ADD` of two tensors, likewise.

Ties are broken as the kernels break them (half away from zero), where
float rounding breaks them to even. LiteRT's optimized kernels and its
XNNPack delegate round some ties differently again (measured:
`benchmarks/results/qat_fidelity.md`); the microcontroller's arithmetic is
the one followed.
"""

import keras

from keras_compact.quantization import fake_quant

_TWO_30 = 2**30
_TWO_31 = 2**31


def round_half_away(x):
    """Rounds to the nearest integer, ties away from zero (`std::round`)."""
    return keras.ops.sign(x) * keras.ops.floor(keras.ops.abs(x) + 0.5)


def grid(value_range):
    """`(scale, zero point)` of an activation range as the converter
    stores them: `fake_quant.activation_scale` and the int8 zero point
    `round(-128 - min / scale)` of the nudged range (float64, an integer
    in `[-128, 127]`)."""
    lo, hi = fake_quant.effective_range(value_range)
    lo = keras.ops.cast(lo, "float64")
    exact = (keras.ops.cast(hi, "float64") - lo) / 255.0
    zero = round_half_away(-128.0 - lo / exact)
    scale = fake_quant.activation_scale(value_range)
    return scale, keras.ops.clip(zero, -128.0, 127.0)


def quantize_input(x, value_range):
    """The model input's `QUANTIZE` as the kernel computes it:
    `round(x / scale)` in float32, ties away from zero, plus the zero
    point, clamped to int8; returned dequantized (float32)."""
    scale, zero = grid(value_range)
    x = keras.ops.cast(x, "float32")
    q = round_half_away(x / scale) + keras.ops.cast(zero, "float32")
    q = keras.ops.clip(q, -128.0, 127.0)
    return (q - keras.ops.cast(zero, "float32")) * scale


def to_integers(x, scale):
    """The integer `round(x / scale)` of a tensor on (or near) a grid of
    step `scale`, in float64 (`x - zero_point` in the int8 domain)."""
    return round_half_away(
        keras.ops.cast(x, "float64") / keras.ops.cast(scale, "float64")
    )


def quantize_multiplier(real):
    """TFLite's `QuantizeMultiplier`: `real = significand * 2**(shift - 31)`
    with an int64 `significand` in `[2**30, 2**31)` (0 for 0).

    Args:
        real: a positive float64 tensor (per channel or scalar).

    Returns:
        `(significand, shift)`, int64 tensors of `real`'s shape.
    """
    real = keras.ops.cast(real, "float64")
    safe = keras.ops.where(real > 0, real, 1.0)
    shift = keras.ops.floor(keras.ops.log2(safe)) + 1.0
    frac = safe / keras.ops.power(2.0, shift)
    # log2 can be a unit off near powers of two: bring frac into [0.5, 1).
    up = frac >= 1.0
    frac = keras.ops.where(up, frac / 2.0, frac)
    shift = keras.ops.where(up, shift + 1.0, shift)
    down = frac < 0.5
    frac = keras.ops.where(down, frac * 2.0, frac)
    shift = keras.ops.where(down, shift - 1.0, shift)
    q = round_half_away(frac * _TWO_31)
    full = q >= _TWO_31
    q = keras.ops.where(full, q / 2.0, q)
    shift = keras.ops.where(full, shift + 1.0, shift)
    q = keras.ops.where(real > 0, q, 0.0)
    shift = keras.ops.where(real > 0, shift, 0.0)
    return keras.ops.cast(q, "int64"), keras.ops.cast(shift, "int64")


def _i64(value):
    """An int64 constant (Python integers would become int32 tensors)."""
    return keras.ops.convert_to_tensor(value, "int64")


def _pow2(e):
    """`2**e` as int64 for an int64 tensor `0 <= e <= 62`."""
    return keras.ops.cast(
        keras.ops.power(2.0, keras.ops.cast(e, "float64")), "int64"
    )


def multiply_by_quantized_multiplier(x, significand, shift):
    """TFLite's `MultiplyByQuantizedMultiplier` (gemmlowp rounding):
    `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left,
    significand), right)` with `left = max(shift, 0)`, `right =
    max(-shift, 0)`.

    Args:
        x: an int64 tensor holding int32 values.
        significand, shift: from `quantize_multiplier`, broadcastable to
            `x`.

    Returns:
        An int64 tensor.
    """
    left = keras.ops.maximum(shift, 0)
    right = keras.ops.maximum(-shift, 0)
    # SaturatingRoundingDoublingHighMul: `(ab + nudge) / 2**31` truncated,
    # with the nudge +-2**30 by sign: the same as flooring `ab + 2**30`
    # (ties upward). No saturation: `significand` is below 2**31.
    ab = x * _pow2(left) * significand
    high = keras.ops.floor_divide(ab + _i64(_TWO_30), _i64(_TWO_31))
    # RoundingDivideByPOT: ties away from zero.
    divisor = _pow2(right)
    half = keras.ops.floor_divide(divisor, _i64(2))
    magnitude = keras.ops.floor_divide(keras.ops.abs(high) + half, divisor)
    return keras.ops.where(high < 0, -magnitude, magnitude)


def _output(q, out_range):
    """Int8 values `q` (int64, zero point included) on `out_range`'s grid,
    clamped to int8 and dequantized to float32."""
    scale, zero = grid(out_range)
    q = keras.ops.clip(keras.ops.cast(q, "float64"), -128.0, 127.0)
    return keras.ops.cast(q - zero, "float32") * scale


def requantize_linear(
    compute,
    x,
    kernel,
    bias,
    in_range,
    weight_scales,
    out_range,
    channels,
):
    """A conv / depthwise / dense layer as its int8 kernel computes it.

    Args:
        compute: `compute(x, kernel)`, the layer's linear op (no bias).
        x: the float input, on the grid of `in_range`.
        kernel: the fake-quantized (folded) kernel, on the grid of
            `weight_scales`.
        bias: the folded bias (on its int32 grid), or None.
        in_range, out_range: `[min, max]` of the input and output.
        weight_scales: the per-output-channel weight scales.
        channels: `channels(values)`, a per-output-channel vector reshaped
            to broadcast against `kernel`.

    Returns:
        The output before its activation, on `out_range`'s grid (float32),
        clamped to int8: `activation` then `fake_quant` on it change
        nothing beyond the activation's own clamp.
    """
    in_scale = keras.ops.cast(grid(in_range)[0], "float64")
    w_scale = keras.ops.cast(weight_scales, "float64")
    out_scale, out_zero = grid(out_range)
    # Integers in float64: the sums are exact.
    acc = compute(
        to_integers(x, in_scale),
        round_half_away(keras.ops.cast(kernel, "float64") / channels(w_scale)),
    )
    if bias is not None:
        acc = acc + round_half_away(
            keras.ops.cast(bias, "float64") / (in_scale * w_scale)
        )
    significand, shift = quantize_multiplier(
        in_scale * w_scale / keras.ops.cast(out_scale, "float64")
    )
    q = multiply_by_quantized_multiplier(
        keras.ops.cast(acc, "int64"), significand, shift
    )
    return _output(q + keras.ops.cast(out_zero, "int64"), out_range)


def requantize_mean(x, in_range, out_range):
    """`MEAN` over axes 1 and 2 of a 4D int8 tensor (keepdims False), as
    LiteRT's reference kernel (`QuantizedMeanOrSum`) computes it: the sum,
    rescaled by `in_scale / out_scale` with `1 / count` folded into the
    fixed-point multiplier.

    Args:
        x: float `(batch, h, w, c)` on the grid of `in_range`.
        in_range, out_range: `[min, max]` of the input and output.

    Returns:
        float32 `(batch, c)` on `out_range`'s grid.
    """
    in_scale, _ = grid(in_range)
    out_scale, out_zero = grid(out_range)
    count = int(x.shape[1]) * int(x.shape[2])
    # The kernel sums `q - zero_point`: that is `x / scale`.
    total = keras.ops.sum(to_integers(x, in_scale), axis=(1, 2))
    significand, shift = quantize_multiplier(
        keras.ops.cast(in_scale, "float64")
        / keras.ops.cast(out_scale, "float64")
    )
    # floor(log2(count)), capped as the kernel caps it.
    extra = keras.ops.minimum(_i64(min(count.bit_length() - 1, 32)), 31 + shift)
    significand = keras.ops.floor_divide(
        significand * _pow2(extra), _i64(count)
    )
    q = multiply_by_quantized_multiplier(
        keras.ops.cast(total, "int64"), significand, shift - extra
    )
    return _output(q + keras.ops.cast(out_zero, "int64"), out_range)


# The int8 ADD kernel shifts its inputs left by 20 bits before rescaling.
_ADD_LEFT_SHIFT = 20


def requantize_add(x1, x2, range1, range2, out_range):
    """`ADD` of two int8 tensors as the reference kernel computes it: each
    input (shifted left by 20 bits) rescaled to twice the larger input
    scale, the sum rescaled to the output, each rescale a fixed-point
    multiplication.

    Args:
        x1, x2: float tensors on the grids of `range1` and `range2`.
        range1, range2, out_range: `[min, max]` of the inputs and output.

    Returns:
        float32 on `out_range`'s grid (before any fused activation).
    """
    s1 = keras.ops.cast(grid(range1)[0], "float64")
    s2 = keras.ops.cast(grid(range2)[0], "float64")
    out_scale, out_zero = grid(out_range)
    twice = 2.0 * keras.ops.maximum(s1, s2)
    shifted = _i64(2**_ADD_LEFT_SHIFT)

    def rescaled(x, scale):
        significand, shift = quantize_multiplier(scale / twice)
        q = keras.ops.cast(to_integers(x, scale), "int64") * shifted
        return multiply_by_quantized_multiplier(q, significand, shift)

    total = rescaled(x1, s1) + rescaled(x2, s2)
    significand, shift = quantize_multiplier(
        twice / (2.0**_ADD_LEFT_SHIFT * keras.ops.cast(out_scale, "float64"))
    )
    q = multiply_by_quantized_multiplier(total, significand, shift)
    return _output(q + keras.ops.cast(out_zero, "int64"), out_range)
