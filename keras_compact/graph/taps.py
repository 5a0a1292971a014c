"""Tap points of a functional model: where auxiliary branches attach.

A tap is an intermediate feature map (a rank-4 NHWC tensor) of the compact
model that a training-only branch reads. `find_taps` finds them from the
call graph (`ModelGraph`), per task head, or takes them by layer name.

The automatic rule works on the model's *cut tensors*: feature maps through
which every path from the inputs to a head passes (block boundaries; the
inside of a residual block is never a cut). Among the cut feature maps of a
head's trunk, a tap is:

1. the stem output: the first convolution unit (convolution followed by its
   normalisation and activation);
2. every residual block output: the output of each `Add` layer;
3. every stage entry: a cut tensor read by more than one layer (the input of
   a residual block, i.e. the output of the block before it, which is where
   resolution or width changes in residual networks);
4. every linear bottleneck output: a normalised (or convolved) cut tensor
   fed straight into the next convolution without an activation (the output
   of every MobileNetV2 block, residual or not);
5. every resolution boundary of a plain chain: the input of a pooling layer
   or of a strided (non-depthwise) convolution;
6. the trunk end: the last feature map before global pooling / flattening,
   unless it is only a pointwise head unit (1x1 convolution and/or
   normalisation, e.g. MobileNetV2's 1280-wide head convolution) on a
   feature map that is already tapped.

Every tap is taken before its final activation (after a residual `Add`, not
after the `ReLU` that follows it), as in the released auxiliary-module code
of Zhuang et al. (CVPR 2020). Layers called several times, nested models and
subclassed models are not entered; name taps explicitly (`layer_names`)
where the automatic rule does not fit.
"""

import dataclasses

import keras

from keras_compact.graph import kinds as layer_kinds
from keras_compact.graph.walk import ModelGraph

_ACTIVATIONS = layer_kinds.ACTIVATIONS + layer_kinds.of("prelu")
_PASSTHROUGH = _ACTIVATIONS + (
    keras.layers.Dropout,  # and SpatialDropout*D
    keras.layers.GaussianNoise,
    keras.layers.ZeroPadding2D,
)
_FOLLOWERS = _ACTIVATIONS + (
    layer_kinds.of("batch_norm", "layer_norm", "group_norm")
    + (keras.layers.Dropout, keras.layers.GaussianNoise)
)
_CONVS = layer_kinds.of("conv2d", "depthwise2d", "separable2d")
_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclasses.dataclass(frozen=True)
class Tap:
    """One tap point of a model.

    Attributes:
        name: name of the layer whose output is tapped (unique in a model
            whose taps are found automatically).
        tensor: the symbolic output tensor of the compact model's graph.
        shape: `(height, width, channels)` of the tapped feature map.
        stage: index of the resolution stage of the tap within its head
            (increments each time the spatial size changes).
        kind: why it was chosen: `"stem"`, `"block"` (residual add),
            `"stage"` (stage entry or resolution boundary), `"bottleneck"`,
            `"end"` (trunk end) or `"named"` (given by the user).
    """

    name: str
    tensor: object = dataclasses.field(repr=False, compare=False)
    shape: tuple
    stage: int
    kind: str


def find_taps(model, layer_names=None):
    """Finds the tap points of every task head of a functional model.

    Args:
        model: a functional `keras.Model` with NHWC feature maps.
        layer_names: optional explicit taps: a list of layer names (used for
            every head that depends on them) or a dict mapping a head name
            (the name of the layer producing that output) to a list of layer
            names. `None` (default) detects them automatically (see the
            module docstring for the rule).

    Returns:
        A dict mapping each head name (the name of the layer that produces
        each model output, in output order) to its list of `Tap`s in
        topological order.

    Raises:
        TypeError: if `model` has no call graph, or `layer_names` has the
            wrong type.
        ValueError: if a named layer does not exist, is called more than
            once, does not output a rank-4 feature map, or no head depends on
            it; or if no tap can be found for a head.

    Example:

    ```python
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(96, 96, 3), classes=10
    )
    for head, taps in find_taps(model).items():
        print(head, [t.name for t in taps])
    ```
    """
    graph = ModelGraph(model)
    heads = head_names(model, graph)
    analyses = {
        head: _HeadAnalysis(graph, out)
        for head, out in zip(heads, graph.outputs)
    }
    if layer_names is None:
        result = {head: a.auto_taps() for head, a in analyses.items()}
    else:
        result = _named_taps(graph, analyses, layer_names)
    for head, taps in result.items():
        if not taps:
            raise ValueError(
                f"No tap (rank-4 feature map on the path to the output) was "
                f"found for head {head!r} of model {model.name!r}. Name the "
                "taps explicitly with `taps=[layer names]`."
            )
    return result


def head_names(model, graph=None):
    """The names of a model's heads: the layers producing its outputs."""
    graph = graph or ModelGraph(model)
    names = [graph.producer(t).name for t in graph.outputs]
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return names


def _named_taps(graph, analyses, layer_names):
    if isinstance(layer_names, str):
        raise TypeError(
            "Expected `taps` to be a list of layer names or a dict mapping "
            f"head names to lists. Received: taps={layer_names!r}"
        )
    if isinstance(layer_names, dict):
        unknown = sorted(set(layer_names) - set(analyses))
        if unknown:
            raise ValueError(
                f"Unknown head name(s) {unknown} in `taps`. Heads: "
                f"{list(analyses)}. Received: taps={layer_names!r}"
            )
        per_head = {h: list(layer_names.get(h, [])) for h in analyses}
        strict = True
    elif isinstance(layer_names, (list, tuple)):
        per_head = {h: list(layer_names) for h in analyses}
        strict = False
    else:
        raise TypeError(
            "Expected `taps` to be a list of layer names or a dict mapping "
            f"head names to lists. Received: taps={layer_names!r}"
        )
    tensors = {}
    for name in {n for names in per_head.values() for n in names}:
        if not isinstance(name, str):
            raise TypeError(
                "Expected every tap to be a layer name (str). Received: "
                f"taps containing {name!r}"
            )
        try:
            nodes = graph.nodes_of(name)
        except ValueError:
            raise ValueError(
                f"Unknown tap layer {name!r}: model {graph.model.name!r} has "
                f"no layer of that name. Received: taps={layer_names!r}"
            ) from None
        if len(nodes) != 1:
            raise ValueError(
                f"Tap layer {name!r} is called {len(nodes)} times in the "
                "model; tap a layer that is called once. Received: "
                f"taps={layer_names!r}"
            )
        out = nodes[0].outputs
        if len(out) != 1 or len(out[0].shape) != 4:
            raise ValueError(
                f"Tap layer {name!r} must output one rank-4 (NHWC) feature "
                f"map. Received: output shapes {nodes[0].output_shapes}"
            )
        tensors[name] = out[0]
    result, used = {}, set()
    for head, names in per_head.items():
        analysis = analyses[head]
        chosen = []
        for name in names:
            t = tensors[name]
            if id(t) not in analysis.position:
                if strict:
                    raise ValueError(
                        f"Tap layer {name!r} is not on the path to head "
                        f"{head!r}. Received: taps={layer_names!r}"
                    )
                continue
            chosen.append(t)
            used.add(name)
        chosen = sorted(set(chosen), key=lambda t: analysis.position[id(t)])
        result[head] = analysis.make_taps(chosen, {}, default_kind="named")
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(
            f"Tap layer(s) {unused} feed no head of the model. Received: "
            f"taps={layer_names!r}"
        )
    return result


class _HeadAnalysis:
    """Cut tensors and tap rules for one output of a model graph."""

    def __init__(self, graph, output):
        self.graph = graph
        self.output = output
        target = graph.producer(output)
        # Ancestors of the head (the sub-graph it depends on).
        keep, stack = set(), [target]
        while stack:
            node = stack.pop()
            if id(node) in keep:
                continue
            keep.add(id(node))
            stack.extend(node.parents)
        self.nodes = [n for n in graph.nodes if id(n) in keep]
        self.position = {}
        last_use = {}
        for p, node in enumerate(self.nodes):
            for t in node.outputs:
                self.position[id(t)] = p
            for t in node.inputs:
                last_use[id(t)] = p
        last_use[id(output)] = len(self.nodes)
        self.consumers = {}
        for node in self.nodes:
            for t in node.inputs:
                self.consumers.setdefault(id(t), []).append(node)
        # A tensor is a cut when it is the only live tensor right after its
        # producer, in topological order (every path crosses it).
        self.cuts = []
        live = {}
        for p, node in enumerate(self.nodes):
            for t in node.outputs:
                if last_use.get(id(t), -1) > p:
                    live[id(t)] = t
            for t in node.inputs:
                if last_use.get(id(t)) == p:
                    live.pop(id(t), None)
            if len(live) == 1 and not node.is_input:
                (t,) = live.values()
                if self.position[id(t)] == p and len(t.shape) == 4:
                    self.cuts.append(t)
        self.cut_ids = {id(t) for t in self.cuts}

    # -- helpers -----------------------------------------------------------
    def producer_op(self, t):
        return self.graph.producer(t).operation

    def before(self, t, kinds):
        """Walks back through single-consumer `kinds` layers on cuts."""
        while True:
            node = self.graph.producer(t)
            if node.is_input or not isinstance(node.operation, kinds):
                return t
            if len(node.inputs) != 1:
                return t
            src = node.inputs[0]
            if id(src) not in self.cut_ids:
                return t
            if len(self.consumers.get(id(src), [])) != 1:
                return t
            t = src

    def is_input(self, t):
        return self.graph.producer(t).is_input

    # -- the rule ------------------------------------------------------------
    def auto_taps(self):
        if not self.cuts:
            return []
        kinds = {}

        def add(t, kind):
            t = self.before(t, _ACTIVATIONS)
            if self.is_input(t) or id(t) not in self.cut_ids:
                return
            kinds.setdefault(id(t), (t, kind))

        # 1. stem: first unit after the first weighted layer.
        for t in self.cuts:
            if self.is_input(t):
                continue
            if self.producer_op(t).weights:
                stem = t
                while True:
                    nxt = self.consumers.get(id(stem), [])
                    if (
                        len(nxt) == 1
                        and isinstance(nxt[0].operation, _FOLLOWERS)
                        and id(nxt[0].outputs[0]) in self.cut_ids
                    ):
                        stem = nxt[0].outputs[0]
                    else:
                        break
                add(stem, "stem")
                break
        for t in self.cuts:
            op = self.producer_op(t)
            consumers = self.consumers.get(id(t), [])
            # 2. residual block outputs.
            if isinstance(op, keras.layers.Add):
                add(t, "block")
            # 3. stage entries (forks).
            elif len(consumers) > 1:
                add(t, "stage")
            # 4. linear bottleneck outputs.
            elif (
                isinstance(op, (keras.layers.BatchNormalization,) + _CONVS)
                and consumers
                and all(isinstance(c.operation, _CONVS) for c in consumers)
            ):
                add(t, "bottleneck")
            # 5. resolution boundaries of plain chains.
            for c in consumers:
                cop = c.operation
                strided = isinstance(cop, keras.layers.Conv2D) and (
                    max(getattr(cop, "strides", (1,))) > 1
                )
                if isinstance(cop, _POOLS) or strided:
                    add(self.before(t, _PASSTHROUGH), "stage")
        # 6. trunk end, unless it is a pointwise head unit (a 1x1
        # convolution and/or normalisation) on a feature map already tapped.
        if not self._is_pointwise_head(self.cuts[-1], kinds):
            add(self.cuts[-1], "end")
        chosen = sorted(
            (t for t, _ in kinds.values()),
            key=lambda t: self.position[id(t)],
        )
        return self.make_taps(chosen, {k: v[1] for k, v in kinds.items()})

    def _is_pointwise_head(self, t, kinds):
        def tapped(u):
            return id(self.before(u, _PASSTHROUGH)) in kinds or id(u) in kinds

        u = t
        while True:
            node = self.graph.producer(u)
            if node.is_input or len(node.inputs) != 1:
                return False
            op = node.operation
            src = node.inputs[0]
            if isinstance(op, _FOLLOWERS):
                if tapped(src):
                    return True
                u = src
                continue
            pointwise = isinstance(
                op, keras.layers.Conv2D
            ) and layer_kinds.is_pointwise_conv(op, unit_strides=True)
            return pointwise and tapped(src)

    def make_taps(self, tensors, kinds, default_kind="named"):
        taps, stage, prev = [], 0, None
        for t in tensors:
            hw = tuple(t.shape[1:3])
            if prev is not None and hw != prev:
                stage += 1
            prev = hw
            taps.append(
                Tap(
                    name=self.graph.producer(t).name,
                    tensor=t,
                    shape=tuple(t.shape[1:]),
                    stage=stage,
                    kind=kinds.get(id(t), default_kind),
                )
            )
        return taps
