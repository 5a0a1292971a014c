"""Parameter and multiply-accumulate (MAC) counts of functional models.

MACs are counted for ONE example (batch dimension excluded) from the output
shapes that `ModelGraph` records for every call of every layer, so a layer
called twice is counted twice. Only the layers whose cost is
multiply-accumulates are counted:

- `Conv1D` / `Conv2D` / `Conv3D`: `prod(kernel_size) * c_in / groups`
  per output element, e.g. `k_h * k_w * c_in / groups * c_out * H_out *
  W_out` for `Conv2D`;
- `DepthwiseConv1D` / `DepthwiseConv2D`: `prod(kernel_size)` per output
  element (`k_h * k_w * c_in * depth_multiplier * H_out * W_out`);
- `SeparableConv1D` / `SeparableConv2D`: the depthwise part as above plus
  the pointwise part `c_in * depth_multiplier * c_out * H_out * W_out`;
- `Conv1DTranspose` / `Conv2DTranspose` / `Conv3DTranspose`: every input
  position is multiplied by the whole kernel,
  `prod(kernel_size) * c_in * c_out * H_in * W_in`;
- `Dense`: `in_features * units` per output vector (times any leading
  non-batch dimensions).

Everything else counts zero: bias additions, BatchNormalization (folded into
the preceding conv at export), activations, pooling, `Add`, reshapes and
any other layer (including `EinsumDense` and attention layers). Nested
functional or Sequential models are counted through their own graphs;
layers inside subclassed layers are not seen.
"""

import math

import keras

from keras_compact.graph import kinds
from keras_compact.graph.walk import ModelGraph, is_functional

_CONV = kinds.CONVS
_DEPTHWISE = kinds.DEPTHWISE
_SEPARABLE = kinds.SEPARABLE
_TRANSPOSE = kinds.TRANSPOSED


def count_params(model):
    """Counts the trainable, non-trainable and total parameters of a model.

    Every weight is counted once even when shared by several layers. The
    total equals `model.count_params()`.

    Args:
        model: a built `keras.Model` (or layer).

    Returns:
        A dict with integer values under `"trainable"`, `"non_trainable"`
        and `"total"`.

    Raises:
        ValueError: if the model is not built.

    Example:

    ```python
    counts = count_params(model)
    print(counts["total"], counts["trainable"])
    ```
    """
    if not model.built:
        raise ValueError(
            "The model must be built to count its parameters. Received: "
            f"model={getattr(model, 'name', model)!r}"
        )
    trainable = _size(model.trainable_weights)
    non_trainable = _size(model.non_trainable_weights)
    return {
        "trainable": trainable,
        "non_trainable": non_trainable,
        "total": trainable + non_trainable,
    }


def count_macs(model):
    """Counts the multiply-accumulates of one forward pass on ONE example.

    See the module docstring for which layers count and how. The spatial
    shapes must be fully known (build the model on a fixed-size `Input`).

    Args:
        model: a functional or Sequential `keras.Model`.

    Returns:
        The number of MACs, an `int` (FLOPs are about twice this).

    Raises:
        TypeError: if `model` has no call graph (a subclassed model).
        ValueError: if a counted layer has an unknown non-batch dimension.

    Example:

    ```python
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, x)
    count_macs(model)  # 3*3*3 * 4 * 8*8 = 6912
    ```
    """
    return sum(row["macs"] for row in _node_rows(model))


def model_profile(model):
    """Parameters, MACs and a per-call breakdown of a functional model.

    Args:
        model: a functional or Sequential `keras.Model`.

    Returns:
        A dict with `"name"`, `"params"` (total), `"trainable_params"`,
        `"non_trainable_params"`, `"macs"` (one example) and `"layers"`: a
        list, in topological order, of one dict per layer call with
        `"name"`, `"type"` (class name), `"output_shape"` (of the first
        output), `"params"` (counted at the layer's first call only, so
        that they add up) and `"macs"`. Layers of nested models appear under
        `"outer/inner"` names.

    Raises:
        TypeError: if `model` has no call graph (a subclassed model).
        ValueError: if a counted layer has an unknown non-batch dimension.

    Example:

    ```python
    profile = model_profile(model)
    heavy = max(profile["layers"], key=lambda row: row["macs"])
    print(profile["macs"], heavy["name"])
    ```
    """
    params = count_params(model)
    rows = _node_rows(model)
    return {
        "name": model.name,
        "params": params["total"],
        "trainable_params": params["trainable"],
        "non_trainable_params": params["non_trainable"],
        "macs": sum(row["macs"] for row in rows),
        "layers": rows,
    }


def _node_rows(model, prefix="", seen=None):
    graph = ModelGraph(model)
    seen = set() if seen is None else seen
    rows = []
    for node in graph.nodes:
        if node.is_input:
            continue
        op = node.operation
        name = prefix + node.name
        if isinstance(op, keras.Model) and is_functional(op):
            rows.extend(_node_rows(op, prefix=f"{name}/", seen=seen))
            continue
        params = 0
        if isinstance(op, keras.layers.Layer) and id(op) not in seen:
            seen.add(id(op))
            params = _size(op.weights)
        out_shapes = node.output_shapes
        rows.append(
            {
                "name": name,
                "type": type(op).__name__,
                "output_shape": out_shapes[0] if out_shapes else None,
                "params": params,
                "macs": _node_macs(op, node.input_shapes, out_shapes, name),
            }
        )
    return rows


def layer_macs(op, positions, c_in, c_out):
    """Multiply-accumulates of one layer at given channel counts.

    The one MAC formula of keras_compact: `count_macs` applies it at the
    model's own widths, NetAug at every sampled width of its augmented
    sub-models.

    Args:
        op: the layer.
        positions: number of spatial positions of the layer's output (of
            its input for a transposed convolution); 1 for a vector.
        c_in: input channels (a number or a numpy array of them).
        c_out: output channels (same kind as `c_in`).

    Returns:
        The MACs (same kind as `c_in`); 0 for a layer without any.
    """
    if isinstance(op, _TRANSPOSE):
        return positions * math.prod(op.kernel_size) * c_in * c_out
    if isinstance(op, _SEPARABLE):
        mult = op.depth_multiplier
        k = math.prod(op.kernel_size)
        return positions * (k * c_in * mult + c_in * mult * c_out)
    if isinstance(op, _DEPTHWISE):
        return positions * math.prod(op.kernel_size) * c_out
    if isinstance(op, _CONV):
        groups = getattr(op, "groups", 1) or 1
        return positions * math.prod(op.kernel_size) * c_in // groups * c_out
    if isinstance(op, keras.layers.Dense):
        return positions * c_in * c_out
    return 0


def _node_macs(op, input_shapes, output_shapes, name):
    if not isinstance(
        op, _TRANSPOSE + _SEPARABLE + _DEPTHWISE + _CONV + (keras.layers.Dense,)
    ):
        return 0
    shape = input_shapes[0] if isinstance(op, _TRANSPOSE) else output_shapes[0]
    c_in = _channels(op, input_shapes[0])
    c_out = _channels(op, output_shapes[0])
    positions = _elements(shape, name) // _channels(op, shape)
    return int(layer_macs(op, positions, c_in, c_out))


def _channels(op, shape):
    axis = 1 if getattr(op, "data_format", None) == "channels_first" else -1
    return shape[axis]


def _elements(shape, name):
    dims = shape[1:]
    if any(d is None for d in dims):
        raise ValueError(
            "Cannot count the MACs of a layer whose output shape has unknown "
            "non-batch dimensions; build the model on a fixed-size Input. "
            f"Received: layer={name!r} with shape={shape}"
        )
    return math.prod(dims)


def _size(weights):
    return int(sum(math.prod(w.shape) for w in weights))
