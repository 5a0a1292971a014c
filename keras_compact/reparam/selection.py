"""Which layers `Reparameterize` gives branches, and why it skips others.

Plain functions of the model's call graph and of the technique's options
(no reference to the technique object):

- `is_selected(layer, layers)`: the user's `layers=` choice;
- `layer_geometry(layer, node)`: the layer's `Geometry`, or why it is not
  eligible (unsupported type, quantized, LoRA, dilation, data format...);
- `family_reason(geometry, ...)`: why a family adds nothing to a layer;
- `constant_target(graph, node, layer)`: where the branches' per-channel
  constant folds (the layer's bias, the following BatchNormalization's
  moving mean, or nowhere);
- `build_branches(graph, ...)`: the `ReparamBranches` of every eligible
  layer, with the rows of the report (applied and skipped layers);
- `branch_view(model, graph, blocks)`: the training view, the model's graph
  replayed with each selected layer replaced by its branches.
"""

import keras

from keras_compact.graph import kinds
from keras_compact.graph.walk import check_layer_names
from keras_compact.reparam.branches import Geometry, ReparamBranches

# Layer kinds whose kernel the branches are fused into.
GEOMETRY_KINDS = {
    "conv2d": "conv",
    "depthwise2d": "depthwise",
    "dense": "dense",
}
# The zoo's normalization when no user BN gives the branch BNs theirs.
DEFAULT_NORM = {"momentum": 0.9, "epsilon": 1e-5}


def is_selected(layer, layers):
    """Whether `layers` (None, a list of names or a predicate) selects
    `layer`."""
    if layers is None:
        return True
    if callable(layers):
        return bool(layers(layer))
    return layer.name in layers


def skipped_row(layer, reason):
    """The report row of a layer left as it is."""
    return {"layer": layer.name, "type": type(layer).__name__, "reason": reason}


def layer_geometry(layer, node):
    """`(Geometry, None)` for an eligible layer, else `(None, reason)`.

    Args:
        layer: a kernel layer of the graph.
        node: its (only) `GraphNode`.
    """
    kind = GEOMETRY_KINDS.get(kinds.kind_of(layer))
    if kind is None:
        return None, (
            f"{type(layer).__name__} is not supported (Conv2D, "
            "DepthwiseConv2D and Dense are)"
        )
    if not kinds.computes_as_keras(layer):
        return None, f"{type(layer).__name__} overrides call"
    if getattr(layer, "quantization_mode", None) is not None:
        return None, "quantized layer"
    if getattr(layer, "lora_enabled", False):
        return None, "LoRA is enabled"
    shape = node.input_shapes[0]
    if kind == "dense":
        if len(shape) != 2:
            return None, f"Dense on rank-{len(shape)} inputs"
        return Geometry(
            "dense",
            (1, 1),
            (1, 1),
            "valid",
            1,
            shape[-1],
            layer.units,
            (None, None),
        ), None
    if layer.data_format != "channels_last":
        return None, "channels_first data format"
    if tuple(layer.dilation_rate) != (1, 1):
        return None, f"dilation_rate={tuple(layer.dilation_rate)}"
    padding = layer.padding.lower()
    if padding not in ("same", "valid"):
        return None, f"padding={layer.padding!r}"
    in_channels = shape[-1]
    if kind == "depthwise":
        groups = in_channels
        out_channels = in_channels * layer.depth_multiplier
    else:
        groups = layer.groups
        out_channels = layer.filters
    return Geometry(
        kind,
        tuple(layer.kernel_size),
        tuple(layer.strides),
        padding,
        int(groups),
        int(in_channels),
        int(out_channels),
        tuple(shape[1:3]),
    ), None


def family_reason(g, family, include_dense, include_pointwise):
    """Why `family` adds no branch to a layer of geometry `g`, or None."""
    if g.kind == "dense":
        if family != "expandnets":
            return f"family {family!r} has no dense form"
        if not include_dense:
            return "include_dense=False"
        return None
    kh, kw = g.kernel_size
    if family in ("repvgg", "dbb") and (kh, kw) == (1, 1):
        return f"1x1 kernel: {family}'s branches would add nothing"
    if family == "expandnets" and (kh, kw) == (1, 1) and not include_pointwise:
        return "1x1 kernel (include_pointwise=False)"
    if family == "acnet" and (kh == 1 or kw == 1):
        return f"{kh}x{kw} kernel: ACNet needs both sides > 1"
    return None


def constant_target(graph, node, layer):
    """Where the branches' constant goes: `("bias", None)`,
    `("batch_norm", bn)` or `(None, None)`."""
    if layer.use_bias:
        return "bias", None
    if getattr(layer.activation, "__name__", None) != "linear":
        return None, None
    out = node.outputs[0]
    if any(out is t for t in graph.outputs):
        return None, None
    consumers = graph.consumers(out)
    if len(consumers) != 1:
        return None, None
    bn = consumers[0].operation
    if not isinstance(bn, keras.layers.BatchNormalization):
        return None, None
    if len(graph.nodes_of(bn)) != 1 or bn.axis not in (-1, 3):
        return None, None
    return "batch_norm", bn


def build_branches(
    graph,
    family,
    layers,
    expansion,
    identity,
    include_dense,
    include_pointwise,
    seed,
    name,
    main_norm=True,
):
    """The branches of every eligible layer of `graph`, in graph order.

    Args:
        graph: the compact model's `ModelGraph`.
        family, expansion, identity, include_dense, include_pointwise,
        main_norm: the technique's options.
        layers: None, a list of layer names or a predicate.
        seed: int seed of the first block's initializers (the next blocks
            get `seed + 1`, `seed + 2`...), or None.
        name: the technique's name (prefix of the blocks' names).

    Returns:
        `(blocks, applied, skipped)`: the `ReparamBranches` (each with
        `_ref.shift` and `_ref.bn` set) and the report rows.

    Raises:
        ValueError: for unknown layer names or when no layer is eligible.
    """
    model = graph.model
    if isinstance(layers, list):
        check_layer_names(
            "layers",
            layers,
            {layer.name for layer in graph.layers},
            f"layers of model {model.name!r}",
        )
    calls = {}
    for node in graph.nodes:
        if not node.is_input:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    blocks, applied, skipped, seen = [], [], [], set()
    for node in graph.nodes:
        layer = node.operation
        if node.is_input or id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            skipped.append(
                skipped_row(layer, "nested model: its layers are not walked")
            )
            continue
        if not isinstance(layer, kinds.KERNEL) or not is_selected(
            layer, layers
        ):
            continue
        reason = None
        if calls[id(layer)] != 1:
            reason = f"called {calls[id(layer)]} times (shared layer)"
        geometry = None
        if reason is None:
            geometry, reason = layer_geometry(layer, node)
        if reason is None:
            reason = family_reason(
                geometry, family, include_dense, include_pointwise
            )
        if reason is not None:
            skipped.append(skipped_row(layer, reason))
            continue
        shift, bn = constant_target(graph, node, layer)
        norm = DEFAULT_NORM
        if bn is not None:
            norm = {"momentum": bn.momentum, "epsilon": bn.epsilon}
        block = ReparamBranches(
            layer,
            geometry,
            family,
            expansion=expansion,
            identity=identity,
            main_norm=main_norm,
            constant=shift is not None,
            norm_kwargs=norm,
            seed=None if seed is None else seed + len(blocks),
            name=f"{name}_{layer.name}",
        )
        block._ref.shift = shift
        block._ref.bn = bn
        blocks.append(block)
        applied.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "branches": block.branch_names,
                "constant_into": shift or "none",
                "extra_params": block.extra_params(),
            }
        )
    if not blocks:
        raise ValueError(
            f"No layer of model {model.name!r} is eligible for "
            f"family={family!r} with layers={layers!r}. "
            f"Skipped: {[(s['layer'], s['reason']) for s in skipped]}"
        )
    return blocks, applied, skipped


def branch_view(model, graph, blocks):
    """The model's graph replayed with each block's layer replaced by the
    block (sharing every other layer), with the model's input and output
    structure.

    Args:
        model: the compact model.
        graph: its `ModelGraph`.
        blocks: the `ReparamBranches` of `build_branches`.

    Returns:
        A functional `keras.Model` named `"<model name>_reparam"`.
    """
    by_layer = {id(block.layer): block for block in blocks}
    mapping = graph.rebuild(
        layer_fn=lambda node: by_layer.get(id(node.operation))
    )
    outputs = [mapping[id(t)] for t in graph.outputs]
    inputs = graph.inputs
    if isinstance(model, keras.Sequential):
        inputs, outputs = inputs[0], outputs[0]
    else:
        outputs = keras.tree.pack_sequence_as(model.output, outputs)
        inputs = keras.tree.pack_sequence_as(model.input, inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_reparam")
