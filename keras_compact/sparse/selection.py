"""Which layers of a model are made sparse, which stay dense, and why.

Layers are found with the project's one graph walker (`iter_layers`), so
nested and subclassed models are covered. The paper defaults for layers that
stay dense (Mostafa and Wang 2019, as released): the first layer (the stem
conv; the first Dense of an MLP), 1x1 shortcut / downsample convolutions
and all normalization layers (which have no prunable weights anyway).

The classifier (the last Dense) stays sparse, as in the references: DSR's
WRN-28-2 counts 1,452,800 sparse weights, exactly its 3x3 block convs plus
the final linear kernel (this rule gives the same count on the zoo's
`wrn28_2`); RigL's CIFAR-10 WRN keeps only the first layer dense
(`prune_first_layer=False`, `prune_last_layer=True`); SET's MLPs are sparse
throughout. List it in `dense_layers` to keep it dense.
"""

import keras

from keras_compact.graph import kinds
from keras_compact.graph.walk import ModelGraph, is_functional, iter_layers
from keras_compact.sparse.registry import UnsupportedLayer, prunable_weights


def scan(model):
    """Every layer of `model` with its prunable weights or why it has none.

    Returns:
        `(prunable, skipped)`: `prunable` is a list of
        `(layer, [(label, variable), ...])` in walk order; `skipped` a list
        of `(layer, reason)` for layers with weights that cannot be pruned.
    """
    prunable, skipped = [], []
    for layer in iter_layers(model):
        if isinstance(layer, keras.Model) and not getattr(
            layer, "prunable_weights", None
        ):
            continue
        try:
            pairs = prunable_weights(layer)
        except UnsupportedLayer as e:
            skipped.append((layer, str(e)))
            continue
        if pairs:
            prunable.append((layer, pairs))
    return prunable, skipped


def _functional_models(model):
    models = [model] + [
        m for m in iter_layers(model) if isinstance(m, keras.Model)
    ]
    out = []
    for m in models:
        inner = getattr(m, "_functional", None)  # Sequential
        m = inner if inner is not None and not is_functional(m) else m
        if is_functional(m):
            out.append(m)
    return out


def shortcut_convs(model):
    """Names of 1x1 convolutions on a residual shortcut.

    A 1x1 conv is a shortcut when its input tensor also feeds another layer
    (the block's main branch) and its output reaches an `Add` directly or
    through BatchNormalization only. The 1x1 expand/project convs of
    inverted-residual blocks do not match (their output goes on through an
    activation, or their input has a single consumer). Needs a call graph:
    subclassed models yield nothing.
    """
    names = set()
    for m in _functional_models(model):
        try:
            graph = ModelGraph(m)
        except (TypeError, ValueError):
            continue
        for node in graph.nodes:
            op = node.operation
            if (
                node.is_input
                or not kinds.is_pointwise_conv(op)
                or not node.inputs
            ):
                continue
            if len(graph.consumers(node.inputs[0])) < 2:
                continue
            t = node.outputs[0]
            for _ in range(4):
                consumers = graph.consumers(t)
                if len(consumers) != 1:
                    break
                nxt = consumers[0].operation
                if isinstance(nxt, keras.layers.Add):
                    names.add(op.name)
                    break
                if not isinstance(nxt, keras.layers.BatchNormalization):
                    break
                t = consumers[0].outputs[0]
    return names


def default_dense_layers(model):
    """The paper's always-dense layers of `model`, with the reason for each.

    Args:
        model: a Keras model (functional, Sequential or subclassed).

    Returns:
        A dict `{layer_name: reason}`: the first prunable layer ("first
        layer") and every 1x1 shortcut convolution ("1x1 shortcut conv").
        Normalization layers have no prunable weights and are not listed.
        The classifier is not listed: it stays sparse, as in DSR's and
        RigL's CIFAR-10 WRNs (see the module docstring).

    Example:

    ```python
    dense = list(default_dense_layers(model)) + ["logits"]
    SparseTraining(sparsity=0.9, dense_layers=dense)
    ```
    """
    prunable, _ = scan(model)
    out = {}
    if prunable:
        out[prunable[0][0].name] = "first layer"
    for name in sorted(shortcut_convs(model)):
        out.setdefault(name, "1x1 shortcut conv")
    return out
