"""The algebra of exact folding, in NumPy and free of Keras.

Every function here works on float64 arrays in the channels-last Keras
kernel layouts:

- `Conv2D`: `(kh, kw, in_channels // groups, out_channels)`, output
  channels grouped contiguously (group `g` owns outputs
  `g * n .. (g + 1) * n` and reads inputs `g * m .. (g + 1) * m`);
- `DepthwiseConv2D`: `(kh, kw, channels, multiplier)`, output channel
  `c * multiplier + j`;
- `Dense`: `(in_units, units)`.
"""

import numpy as np


def batch_norm_affine(gamma, beta, mean, variance, epsilon):
    """The inference-time affine map of a batch normalization.

    `BN(z) = scale * z + shift` with `scale = gamma / sqrt(var + eps)` and
    `shift = beta - mean * scale`.

    Args:
        gamma, beta: the BN's scale and offset (`None` for a BN built with
            `scale=False` / `center=False`).
        mean, variance: its moving statistics.
        epsilon: its epsilon.

    Returns:
        `(scale, shift)`, two float64 vectors.
    """
    mean = np.asarray(mean, np.float64)
    std = np.sqrt(np.asarray(variance, np.float64) + float(epsilon))
    scale = np.ones_like(mean) if gamma is None else np.asarray(gamma, "f8")
    scale = scale / std
    shift = -mean * scale
    if beta is not None:
        shift = shift + np.asarray(beta, np.float64)
    return scale, shift


def scale_output_channels(kernel, scale, kind):
    """`kernel` with each output channel multiplied by `scale`."""
    kernel = np.asarray(kernel, np.float64)
    if kind == "depthwise":
        return kernel * np.reshape(scale, kernel.shape[2:])
    return kernel * scale


def embed(kernel, offset, size):
    """Zero-pads a small kernel into a `size = (kh, kw)` one at `offset`.

    Args:
        kernel: a `(bh, bw, ...)` kernel.
        offset: `(oh, ow)`, the kernel row and column of the full kernel
            that the small kernel's first row and column land on.
        size: `(kh, kw)` of the full kernel.

    Returns:
        The `(kh, kw, ...)` kernel, zero outside the embedded window.
    """
    kernel = np.asarray(kernel, np.float64)
    (oh, ow), (bh, bw) = offset, kernel.shape[:2]
    if oh < 0 or ow < 0 or oh + bh > size[0] or ow + bw > size[1]:
        raise ValueError(
            f"A {bh}x{bw} kernel does not fit in a {size[0]}x{size[1]} one "
            f"at offset {tuple(offset)}."
        )
    full = np.zeros(tuple(size) + kernel.shape[2:], np.float64)
    full[oh : oh + bh, ow : ow + bw] = kernel
    return full


def identity_kernel(size, offset, channels, in_per_group, kind):
    """The kernel of the identity map, one tap at `offset`.

    Args:
        size: `(kh, kw)`.
        offset: `(oh, ow)`: the tap that reads the output's own position.
        channels: the number of (input = output) channels.
        in_per_group: input channels per group (`Conv2D`: equal to the
            output channels per group, which the identity requires).
        kind: `"conv"` or `"depthwise"` (multiplier 1).

    Returns:
        A float64 kernel of the layer's layout.
    """
    if kind == "depthwise":
        kernel = np.zeros(tuple(size) + (channels, 1))
        kernel[offset[0], offset[1], np.arange(channels), 0] = 1.0
        return kernel
    kernel = np.zeros(tuple(size) + (in_per_group, channels))
    c = np.arange(channels)
    kernel[offset[0], offset[1], c % in_per_group, c] = 1.0
    return kernel


def chain_kernel(first, middle, last, groups, kind):
    """The single kernel equal to the linear chain `1x1 -> kxk -> 1x1`.

    Each factor is a grouped convolution with the same `groups` (a
    depthwise layer is the case `groups = channels`); the composition of
    bias-free convolutions, with the padding applied to the chain's input
    (zero-padding commutes with a bias-free 1x1), is one convolution whose
    kernel is the product of the factors, group by group.

    Args:
        first: `(1, 1, m, groups * a)` kernel (`m -> a` per group).
        middle: `(kh, kw, a, groups * b)` kernel (`a -> b` per group).
        last: `(1, 1, b, groups * n)` kernel (`b -> n` per group).
        groups: the number of groups.
        kind: `"conv"` (returns `(kh, kw, m, groups * n)`) or
            `"depthwise"` (`m = 1`; returns `(kh, kw, groups, n)`).

    Returns:
        The folded float64 kernel.
    """
    first = np.asarray(first, np.float64)[0, 0]
    middle = np.asarray(middle, np.float64)
    last = np.asarray(last, np.float64)[0, 0]
    a = first.shape[1] // groups
    b = middle.shape[3] // groups
    n = last.shape[1] // groups
    parts = []
    for g in range(groups):
        parts.append(
            np.einsum(
                "ia,hwab,bo->hwio",
                first[:, g * a : (g + 1) * a],
                middle[..., g * b : (g + 1) * b],
                last[:, g * n : (g + 1) * n],
            )
        )
    kernel = np.concatenate(parts, axis=-1)
    if kind == "depthwise":
        kh, kw = kernel.shape[:2]
        return kernel.reshape(kh, kw, groups, n)
    return kernel


def same_padding(size, kernel, stride):
    """TensorFlow's 'same' padding `(before, after)` along one axis.

    `size` may be None when `stride == 1` (the padding then does not depend
    on it); returns None when it is needed and unknown.
    """
    if stride == 1:
        total = kernel - 1
    elif size is None:
        return None
    else:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
