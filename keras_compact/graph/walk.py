"""The graph-walking core shared by every keras_compact technique.

Two views of a Keras model are offered here, and no technique walks a model
any other way:

- `iter_layers(model)`: every layer reachable from a model, depth first,
  through nested models and through layers held as attributes of subclassed
  models and layers (what sparse masking needs).
- `ModelGraph(model)`: the call graph of a functional (or Sequential) model:
  its nodes in topological order, who produces and who consumes each tensor,
  and each node's input and output shapes (what NetAug's channel groups and
  the auxiliary taps need).

`ModelGraph.rebuild` replays the graph on new inputs, optionally with layers
swapped, which is how training-only models are built around the user's
compact model while sharing its layers (and therefore its weights).
"""

import keras

from keras_compact import compat


def is_functional(model):
    """True for functional and built Sequential models (models with a call
    graph)."""
    if isinstance(model, keras.Sequential):
        return bool(model.built and getattr(model, "inputs", None))
    return compat.has_call_graph(model)


def as_functional(model):
    """`model` itself, or for a built `keras.Sequential` a functional model
    over the very same layers and variables (its call graph).

    Raises:
        ValueError: for a Sequential model that is not built.
    """
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                "Expected a built Sequential model (give it a `keras.Input` "
                "or call `build(input_shape)`). Received: "
                f"model={model.name!r}, built={model.built}"
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


# The techniques that train a model without walking its call graph: what
# a subclassed model can use.
GRAPHLESS_TECHNIQUES = ("Distillation", "SparseTraining")


def require_call_graph(model, technique, purpose):
    """Raises a TypeError naming `technique` and the alternatives when
    `model` has no call graph (a subclassed model).

    Args:
        model: the user's compact model.
        technique: the name of the technique that needs the graph.
        purpose: what the graph is needed for, completing "`technique`
            needs the compact model's call graph to ...".

    Returns:
        `as_functional(model)`: the model's call graph as a functional
        model (the model itself unless it is Sequential).
    """
    if not isinstance(model, keras.Sequential) and not is_functional(model):
        others = " and ".join(t for t in GRAPHLESS_TECHNIQUES if t != technique)
        raise TypeError(
            f"{technique} needs the compact model's call graph to {purpose}, "
            "so the model must be functional or Sequential; a subclassed "
            "model has no graph to walk. Rebuild it with the functional API "
            "(`keras.Model(inputs, outputs)`) or `keras.Sequential`, or use "
            f"{others}, which train subclassed models. Received: "
            f"model={getattr(model, 'name', model)!r} of type "
            f"{type(model).__name__}"
        )
    return as_functional(model)


def check_layer_names(argument, names, known, what):
    """Raises a ValueError naming `argument` and the names in `names` that
    are not in `known` (described as `what`, e.g. "layers of model 'm'")."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Expected `{argument}` to name {what}. Received: "
            f"{argument}={names!r} (unknown: {unknown!r})"
        )


def iter_layers(model, include_self=False):
    """Yields every layer reachable from `model`, each once, depth first.

    Nested models are entered, and so are layers held as attributes of
    subclassed models or layers (Keras tracks them in `_layers`). Order is the
    order in which Keras tracks them, which for functional models is the
    topological order of the graph.

    Args:
        model: a `keras.layers.Layer` (a `keras.Model` is one).
        include_self: whether to yield `model` itself first.

    Yields:
        `keras.layers.Layer` instances.

    Raises:
        TypeError: if `model` is not a Keras layer or model.
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Expected a Keras model or layer. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    seen = set()

    def _walk(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        yield layer
        for child in _children(layer):
            yield from _walk(child)

    walker = _walk(model)
    first = next(walker)
    if include_self:
        yield first
    yield from walker


def _children(layer):
    if isinstance(layer, keras.Sequential):
        return list(layer.layers)
    if is_functional(layer):
        return [
            op for op in layer.operations if isinstance(op, keras.layers.Layer)
        ]
    return list(getattr(layer, "_layers", []))


class GraphNode:
    """One call of one operation inside a functional model.

    Attributes:
        operation: the `keras.Operation` (usually a layer) that was called.
        inputs: the symbolic input tensors of the call, flattened.
        outputs: the symbolic output tensors of the call, flattened.
        parents: the `GraphNode`s that produced `inputs` (graph order).
        children: the `GraphNode`s that consume any of `outputs`.
    """

    def __init__(self, node):
        self._node = node
        self.operation = node.operation
        self.inputs = list(node.input_tensors)
        self.outputs = list(node.output_tensors)
        self.parents = []
        self.children = []

    @property
    def name(self):
        return self.operation.name

    @property
    def is_input(self):
        return self._node.is_input

    @property
    def arguments(self):
        """`(args, kwargs)` with which the operation was called."""
        return compat.node_arguments(self._node)

    @property
    def input_shapes(self):
        return [tuple(t.shape) for t in self.inputs]

    @property
    def output_shapes(self):
        return [tuple(t.shape) for t in self.outputs]

    def __repr__(self):
        return (
            f"<GraphNode {self.name} ({type(self.operation).__name__}) "
            f"in={self.input_shapes} out={self.output_shapes}>"
        )


class ModelGraph:
    """The call graph of a functional or Sequential Keras model.

    Args:
        model: a functional `keras.Model` or a `keras.Sequential` (built).

    Raises:
        TypeError: if `model` has no call graph (a subclassed model), naming
            the model, so that the technique can report it instead of
            guessing.

    Example:

    ```python
    graph = ModelGraph(model)
    for node in graph.nodes:
        print(node.name, node.output_shapes)
    ```
    """

    def __init__(self, model):
        graph_model = as_functional(model)  # a clear error if unbuilt
        if not is_functional(graph_model):
            raise TypeError(
                "Expected a functional or Sequential Keras model (one with a "
                "call graph). Subclassed models have no graph to walk. "
                f"Received: model={getattr(model, 'name', model)!r} of type "
                f"{type(model).__name__}"
            )
        self.model = model
        wrapped = {}
        by_depth = compat.nodes_by_depth(graph_model)
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                wrapped[id(node)] = GraphNode(node)
        self.nodes = list(wrapped.values())
        self._producer = {}
        for gnode in self.nodes:
            for t in gnode.outputs:
                self._producer[id(t)] = gnode
        for gnode in self.nodes:
            for parent in gnode._node.parent_nodes:
                p = wrapped.get(id(parent))
                if p is not None and p not in gnode.parents:
                    gnode.parents.append(p)
                    p.children.append(gnode)
        self._by_name = {}
        for gnode in self.nodes:
            self._by_name.setdefault(gnode.name, []).append(gnode)

    @property
    def inputs(self):
        return list(self.model.inputs)

    @property
    def outputs(self):
        return list(self.model.outputs)

    @property
    def layers(self):
        """The layers of the graph, each once, in topological order."""
        seen, out = set(), []
        for gnode in self.nodes:
            op = gnode.operation
            if isinstance(op, keras.layers.Layer) and id(op) not in seen:
                seen.add(id(op))
                out.append(op)
        return out

    def producer(self, tensor):
        """The `GraphNode` that produced a symbolic tensor of this graph."""
        try:
            return self._producer[id(tensor)]
        except KeyError:
            raise ValueError(
                f"The tensor {tensor!r} is not produced inside model "
                f"{self.model.name!r}."
            ) from None

    def consumers(self, tensor):
        """The `GraphNode`s that take a symbolic tensor as an input."""
        return [n for n in self.nodes if any(t is tensor for t in n.inputs)]

    def nodes_of(self, layer_or_name):
        """Every call (`GraphNode`) of a layer, given the layer or its name."""
        name = (
            layer_or_name
            if isinstance(layer_or_name, str)
            else layer_or_name.name
        )
        if name not in self._by_name:
            raise ValueError(
                f"No layer named {name!r} in model {self.model.name!r}. "
                f"Layers: {sorted(self._by_name)}"
            )
        return list(self._by_name[name])

    def rebuild(self, inputs=None, layer_fn=None):
        """Replays the graph on new symbolic inputs.

        Every node is called again in topological order. `layer_fn(node)` may
        return a replacement callable for a node (for example a wider layer);
        returning `None` keeps the original operation, which shares its
        weights with the user's model.

        Args:
            inputs: new input tensors, one per model input (default: the
                model's own inputs, so the result shares the whole graph).
            layer_fn: optional `callable(GraphNode) -> callable or None`.

        Returns:
            A dict mapping `id(original_tensor)` to the new tensor, for every
            tensor of the graph. Index it with `tensor_map(...)`.
        """
        inputs = self.inputs if inputs is None else list(inputs)
        if len(inputs) != len(self.model.inputs):
            raise ValueError(
                f"Expected {len(self.model.inputs)} inputs for model "
                f"{self.model.name!r}. Received: {len(inputs)} inputs"
            )
        mapping = {id(o): n for o, n in zip(self.model.inputs, inputs)}
        for gnode in self.nodes:
            if gnode.is_input:
                continue
            fn = layer_fn(gnode) if layer_fn is not None else None
            fn = gnode.operation if fn is None else fn
            args, kwargs = _replace_tensors(gnode.arguments, mapping)
            result = fn(*args, **kwargs)
            flat = keras.tree.flatten(result)
            for old, new in zip(gnode.outputs, flat):
                mapping[id(old)] = new
        return mapping


def _replace_tensors(arguments, mapping):
    def swap(x):
        if isinstance(x, keras.KerasTensor):
            return mapping[id(x)]
        return x

    args, kwargs = arguments
    args = keras.tree.map_structure(swap, list(args))
    kwargs = keras.tree.map_structure(swap, dict(kwargs))
    return args, kwargs
