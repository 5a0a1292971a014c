"""Channel groups of a functional model: which channel axes must stay equal.

Widening or reordering the channels of one layer is only valid if every
tensor tied to them changes the same way: the two inputs of a residual
`Add`, the feature map and the gate of a squeeze-excite `Multiply`, the
input and output of a depthwise convolution or of a BatchNormalization. This
module finds those ties with a union-find over *channel atoms* (the channels
created by one layer: a convolution's filters, a Dense layer's units, a model
input) and describes the channel axis of every tensor of the graph as a
*layout*: the list of groups whose channels it holds, in order. A layout has
one group except after a channel `Concatenate`, whose output holds the
channels of each of its inputs in turn.

A group is *widenable* unless something forbids it (it touches a model input
or output, a layer of an unsupported type, a grouped convolution, a `Flatten`
over spatial positions, a constant with per-channel values...); the reasons
are kept so that a technique can report what it left alone instead of
failing. Widenable groups are classified:

- `"expand"`: the middle of an inverted residual block (expand 1x1 conv ->
  depthwise conv -> projection 1x1 conv): the group holds a depthwise
  convolution's channels and every layer producing it is a 1x1 convolution.
  `projections(group)` names the 1x1 convolutions that read it back (the
  projection; the squeeze-excite branch is not one).
- `"width"`: every other widenable group (stems, stage outputs tied through
  residual adds, heads, plain convolution chains).

Layers are matched by kind (`keras_compact.graph.kinds`: a subclass of a
standard layer is of that layer's kind); a subclass that overrides `call`
may compute something else, so it is treated as unsupported.

Example:

```python
from keras_compact.graph.channels import ChannelGroups

groups = ChannelGroups(model)
print(groups.summary())
for g in groups.groups:
    print(g.index, g.size, g.kind, g.layers)
```
"""

import dataclasses
import numbers

import keras
import numpy as np

from keras_compact.graph import kinds
from keras_compact.graph.walk import ModelGraph

L = keras.layers

#: Layers whose output channels are new (a kernel maps input to output).
KERNEL_LAYERS = kinds.of("conv1d", "conv2d", "dense", "separable2d")
#: Layers that act on every channel separately, with per-channel weights.
DEPTHWISE_LAYERS = kinds.DEPTHWISE
#: Layers without weights that treat every channel alike and keep the
#: channel axis last.
PASSTHROUGH_LAYERS = kinds.CHANNEL_PRESERVING
#: Merge layers that combine same-shaped tensors elementwise.
ELEMENTWISE_MERGES = kinds.ELEMENTWISE_MERGES
#: `keras.ops` operations (used on symbolic tensors, e.g. `x + 3.0`) that act
#: elementwise, matched by class name.
ELEMENTWISE_OPS = frozenset(
    {
        "Add",
        "Subtract",
        "Multiply",
        "Divide",
        "TrueDivide",
        "Maximum",
        "Minimum",
        "Power",
        "Negative",
        "Abs",
        "Absolute",
        "Square",
        "Sqrt",
        "Exp",
        "Log",
        "Clip",
        "Tanh",
        "Relu",
        "Relu6",
        "Sigmoid",
        "HardSigmoid",
        "Silu",
        "Swish",
        "HardSilu",
        "HardSwish",
        "Gelu",
        "Elu",
        "Selu",
        "LeakyRelu",
        "Softplus",
        "Softsign",
        "Mish",
        "Cast",
    }
)
_CHANNELWISE_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


@dataclasses.dataclass
class ChannelGroup:
    """A set of channel axes that must keep one width and one order.

    Attributes:
        index: position in `ChannelGroups.groups`.
        size: number of channels in the model.
        kind: `"width"`, `"expand"` or `"fixed"` (not widenable).
        reasons: why a fixed group is fixed (empty otherwise).
        producers: names of the layers whose output channels are this group
            (convolutions, Dense layers; empty for model inputs).
        layers: names of every layer or operation that reads or writes the
            group, in graph order.
    """

    index: int
    size: int
    kind: str
    reasons: list
    producers: list
    layers: list

    @property
    def widenable(self):
        return self.kind != "fixed"


class _Atom:
    __slots__ = ("size", "reasons", "producers", "layers", "depthwise")

    def __init__(self, size):
        self.size = size
        self.reasons = []
        self.producers = []
        self.layers = []
        self.depthwise = False


class ChannelGroups:
    """The channel groups of a functional model and each tensor's layout.

    Args:
        model: a functional or Sequential `keras.Model`, or a `ModelGraph`
            of one.

    Attributes:
        graph: the `ModelGraph` analysed.
        groups: the `ChannelGroup`s, in order of first appearance.

    Raises:
        TypeError: if `model` has no call graph (see `ModelGraph`).

    Example:

    ```python
    groups = ChannelGroups(model)
    add = groups.graph.nodes_of("block2_add")[0]
    (layout,) = groups.output_layouts(add)  # e.g. (3,): one group
    assert groups.groups[layout[0]].kind == "width"
    ```
    """

    def __init__(self, model):
        self.graph = (
            model if isinstance(model, ModelGraph) else ModelGraph(model)
        )
        self._atoms = []
        self._parent = []
        self._layouts = {}  # id(KerasTensor) -> list of atoms
        self._layer_out_atom = {}  # id(layer) -> atom (shared layers)
        self._layer_in_layout = {}  # id(layer) -> first input layout
        for node in self.graph.nodes:
            self._visit(node)
        for t in self.graph.outputs:
            for a in self._layouts.get(id(t), ()):
                self._fix(a, "model output")
        self._finalize()

    # ------------------------------------------------------------------
    # Union-find
    # ------------------------------------------------------------------
    def _new_atom(self, size, reason=None):
        self._atoms.append(_Atom(int(size)))
        self._parent.append(len(self._parent))
        a = len(self._atoms) - 1
        if reason:
            self._fix(a, reason)
        return a

    def _find(self, a):
        while self._parent[a] != a:
            self._parent[a] = self._parent[self._parent[a]]
            a = self._parent[a]
        return a

    def _union(self, a, b):
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra
        self._parent[rb] = ra
        A, B = self._atoms[ra], self._atoms[rb]
        for r in B.reasons:
            if r not in A.reasons:
                A.reasons.append(r)
        A.producers += [p for p in B.producers if p not in A.producers]
        A.layers += [x for x in B.layers if x not in A.layers]
        A.depthwise = A.depthwise or B.depthwise

    def _fix(self, a, reason):
        atom = self._atoms[self._find(a)]
        if reason not in atom.reasons:
            atom.reasons.append(reason)

    def _touch(self, layout, name):
        for a in layout:
            atom = self._atoms[self._find(a)]
            if name not in atom.layers:
                atom.layers.append(name)

    def _unify(self, layouts, name):
        """Ties several layouts channel by channel; fixes them if they differ
        in structure. Returns the unified layout."""
        first = layouts[0]
        for other in layouts[1:]:
            same = len(other) == len(first) and all(
                self._atoms[a].size == self._atoms[b].size
                for a, b in zip(first, other)
            )
            if same:
                for a, b in zip(first, other):
                    self._union(a, b)
            else:
                for a in list(first) + list(other):
                    self._fix(
                        a,
                        f"{name}: ties tensors whose channels are "
                        "concatenated differently",
                    )
        return list(first)

    # ------------------------------------------------------------------
    # Per-node rules
    # ------------------------------------------------------------------
    def _in(self, t):
        lay = self._layouts.get(id(t))
        if lay is None:
            shape = tuple(t.shape)
            size = shape[-1] if shape else 1
            lay = [self._new_atom(size or 0, "tensor of unknown origin")]
            self._layouts[id(t)] = lay
        return lay

    def _set_out(self, node, layouts):
        for t, lay in zip(node.outputs, layouts):
            self._layouts[id(t)] = list(lay)

    def _fixed_node(self, node, reason):
        for t in node.inputs:
            for a in self._in(t):
                self._fix(a, reason)
        outs = []
        for t in node.outputs:
            size = t.shape[-1] if len(t.shape) else 1
            outs.append([self._new_atom(size or 0, reason)])
        self._set_out(node, outs)
        for lay in outs:
            self._touch(lay, node.name)

    def _visit(self, node):
        op = node.operation
        name = node.name
        if node.is_input:
            for t in node.outputs:
                size = t.shape[-1] if len(t.shape) else 1
                self._layouts[id(t)] = [self._new_atom(size, "model input")]
            return
        ins = [self._in(t) for t in node.inputs]
        for lay in ins:
            self._touch(lay, name)
        kind = type(op)
        if not isinstance(op, keras.layers.Layer):
            return self._visit_op(node, ins)
        if isinstance(op, keras.Model):
            return self._fixed_node(node, f"{name}: nested model")
        if kinds.kind_of(op) is not None and not kinds.computes_as_keras(op):
            return self._fixed_node(
                node, f"{name}: {kind.__name__} overrides call"
            )
        if len(node.inputs) != 1 and not isinstance(op, kinds.MERGES):
            return self._fixed_node(
                node, f"{name}: {kind.__name__} with several inputs"
            )
        if isinstance(op, KERNEL_LAYERS):
            return self._visit_kernel(node, ins[0])
        if isinstance(op, DEPTHWISE_LAYERS):
            if op.depth_multiplier != 1 or op.data_format != "channels_last":
                return self._fixed_node(
                    node,
                    f"{name}: depthwise conv with depth_multiplier "
                    f"{op.depth_multiplier} / {op.data_format}",
                )
            if len(ins[0]) == 1:  # not concatenated channels
                self._atoms[self._find(ins[0][0])].depthwise = True
            return self._set_out(node, [ins[0]])
        if isinstance(op, L.BatchNormalization):
            rank = len(node.inputs[0].shape)
            if op.axis not in (-1, rank - 1) or op.renorm:
                return self._fixed_node(
                    node,
                    f"{name}: BatchNormalization not over the last axis"
                    " or with renorm",
                )
            return self._set_out(node, [ins[0]])
        if isinstance(op, PASSTHROUGH_LAYERS):
            fmt = getattr(op, "data_format", "channels_last")
            act = getattr(op, "activation", None)
            act_name = getattr(act, "__name__", "")
            if fmt != "channels_last":
                return self._fixed_node(node, f"{name}: channels_first")
            if (
                isinstance(op, L.Activation)
                and act_name in _CHANNELWISE_ACTIVATIONS
            ):
                for a in ins[0]:
                    self._fix(a, f"{name}: {act_name} mixes channels")
            if len(node.outputs[0].shape) < 2:
                return self._fixed_node(node, f"{name}: output without axes")
            return self._set_out(node, [ins[0]])
        if isinstance(op, L.Rescaling):
            if np.size(op.scale) == 1 and np.size(op.offset) == 1:
                return self._set_out(node, [ins[0]])
            return self._fixed_node(node, f"{name}: per-channel Rescaling")
        if isinstance(op, ELEMENTWISE_MERGES):
            return self._visit_elementwise(node, ins, node.inputs)
        if isinstance(op, L.Concatenate):
            return self._visit_concat(node, ins)
        if isinstance(op, L.Flatten):
            shape = tuple(node.inputs[0].shape)[1:-1]
            if all(d == 1 for d in shape):
                return self._set_out(node, [ins[0]])
            return self._fixed_node(
                node, f"{name}: Flatten over spatial positions {shape}"
            )
        if isinstance(op, L.Reshape):
            src = tuple(node.inputs[0].shape)
            dst = tuple(node.outputs[0].shape)
            if (
                src[-1] == dst[-1]
                and all(d == 1 for d in src[1:-1])
                and all(d == 1 for d in dst[1:-1])
            ):
                return self._set_out(node, [ins[0]])
            return self._fixed_node(
                node, f"{name}: Reshape {src} -> {dst} moves channels"
            )
        return self._fixed_node(
            node, f"{name}: unsupported layer type {kind.__name__}"
        )

    def _visit_kernel(self, node, in_layout):
        op = node.operation
        name = node.name
        reason = None
        if getattr(op, "data_format", "channels_last") != "channels_last":
            reason = f"{name}: channels_first"
        elif getattr(op, "groups", 1) != 1:
            reason = f"{name}: grouped convolution (groups={op.groups})"
        elif getattr(op, "depth_multiplier", 1) != 1:
            reason = f"{name}: depth_multiplier {op.depth_multiplier}"
        elif getattr(op, "quantization_mode", None):
            reason = f"{name}: quantized layer"
        elif getattr(op, "lora_enabled", False):
            reason = f"{name}: LoRA-enabled layer"
        if reason:
            return self._fixed_node(node, reason)
        # A shared layer: every call reads the same kernel rows.
        first_in = self._layer_in_layout.setdefault(id(op), in_layout)
        if first_in is not in_layout:
            self._unify([first_in, in_layout], name)
        out = self._layer_out_atom.get(id(op))
        if out is None:
            out = self._new_atom(node.outputs[0].shape[-1])
            self._atoms[out].producers.append(name)
            self._layer_out_atom[id(op)] = out
        self._touch([out], name)
        self._set_out(node, [[out]])

    def _visit_elementwise(self, node, ins, tensors):
        out_c = node.outputs[0].shape[-1] if len(node.outputs[0].shape) else 1
        tied = [
            lay
            for lay, t in zip(ins, tensors)
            if len(t.shape) and t.shape[-1] == out_c
        ]
        for lay, t in zip(ins, tensors):
            if not len(t.shape) or t.shape[-1] != out_c:
                # Broadcast along channels (a one-channel gate): its own
                # channels are not tied to the output's.
                if len(t.shape) and t.shape[-1] not in (1, None):
                    for a in lay:
                        self._fix(a, f"{node.name}: broadcast on channels")
        if not tied:
            return self._fixed_node(node, f"{node.name}: nothing to tie")
        out = self._unify(tied, node.name)
        self._set_out(node, [out])

    def _visit_concat(self, node, ins):
        op = node.operation
        rank = len(node.outputs[0].shape)
        if op.axis in (-1, rank - 1):
            out = [a for lay in ins for a in lay]
            return self._set_out(node, [out])
        return self._set_out(node, [self._unify(ins, node.name)])

    def _visit_op(self, node, ins):
        op = node.operation
        name = node.name
        if type(op).__name__ not in ELEMENTWISE_OPS or len(node.outputs) != 1:
            return self._fixed_node(
                node, f"{name}: unsupported operation {type(op).__name__}"
            )
        args = keras.tree.flatten(node.arguments)
        for v in args:
            if isinstance(v, keras.KerasTensor):
                continue
            if isinstance(v, (numbers.Number, str, type(None))):
                continue
            if np.size(v) != 1:
                return self._fixed_node(
                    node, f"{name}: constant with per-channel values"
                )
        return self._visit_elementwise(node, ins, node.inputs)

    # ------------------------------------------------------------------
    # Results
    # ------------------------------------------------------------------
    def _finalize(self):
        roots = []
        index = {}
        for a in range(len(self._atoms)):
            r = self._find(a)
            if r not in index:
                index[r] = len(roots)
                roots.append(r)
        self._root_index = index
        self.groups = []
        for i, r in enumerate(roots):
            atom = self._atoms[r]
            producers = list(atom.producers)
            if atom.reasons or atom.size <= 0:
                kind = "fixed"
            elif (
                atom.depthwise
                and producers
                and all(self._is_pointwise(p) for p in producers)
            ):
                kind = "expand"
            else:
                kind = "width"
            self.groups.append(
                ChannelGroup(
                    index=i,
                    size=atom.size,
                    kind=kind,
                    reasons=list(atom.reasons),
                    producers=producers,
                    layers=list(atom.layers),
                )
            )

    def _is_pointwise(self, layer_name):
        layer = self.graph.nodes_of(layer_name)[0].operation
        return kinds.is_pointwise_conv(layer)

    def layout(self, tensor):
        """The group indices of a symbolic tensor's channels, in order.

        Args:
            tensor: a `KerasTensor` of the analysed graph.

        Returns:
            A tuple of `ChannelGroup.index` values, one per concatenated
            segment of the channel (last) axis.
        """
        try:
            atoms = self._layouts[id(tensor)]
        except KeyError:
            raise ValueError(
                f"The tensor {tensor!r} is not part of model "
                f"{self.graph.model.name!r}."
            ) from None
        return tuple(self._root_index[self._find(a)] for a in atoms)

    def input_layouts(self, node):
        """The layouts of a `GraphNode`'s input tensors."""
        return [self.layout(t) for t in node.inputs]

    def output_layouts(self, node):
        """The layouts of a `GraphNode`'s output tensors."""
        return [self.layout(t) for t in node.outputs]

    def groups_of(self, kind):
        """The groups of one kind (`"width"`, `"expand"` or `"fixed"`)."""
        return [g for g in self.groups if g.kind == kind]

    def projections(self, group):
        """The 1x1 convolutions that read an expand group back (projection).

        The pointwise convolutions (or Dense layers) whose input holds the
        group and is a spatial feature map, not the output of a global
        pooling (that is a squeeze-excite squeeze, which is left out).

        Args:
            group: a `ChannelGroup` or its index.

        Returns:
            A list of layer names.
        """
        gi = group.index if isinstance(group, ChannelGroup) else int(group)
        out = []
        for node in self.graph.nodes:
            op = node.operation
            if node.is_input or not isinstance(op, KERNEL_LAYERS):
                continue
            if gi not in self.layout(node.inputs[0]):
                continue
            if not isinstance(op, L.Dense) and not self._is_pointwise(
                node.name
            ):
                continue
            if self._after_global_pooling(node) or node.name in out:
                continue
            out.append(node.name)
        return out

    def _after_global_pooling(self, node):
        pools = kinds.GLOBAL_POOLING
        walk = node
        while walk.parents:
            parent = self.graph.producer(walk.inputs[0])
            if isinstance(parent.operation, pools):
                return True
            if parent.is_input or len(parent.inputs) != 1:
                return False
            if isinstance(parent.operation, KERNEL_LAYERS + DEPTHWISE_LAYERS):
                return False
            walk = parent
        return False

    @property
    def skipped(self):
        """`(group index, reasons)` for every group that cannot be widened,
        leaving out groups that touch a model input or output (fixed by
        design)."""
        design = {"model input", "model output"}
        return [
            (g.index, g.reasons)
            for g in self.groups
            if g.kind == "fixed" and not design & set(g.reasons)
        ]

    def summary(self):
        """A readable table of the groups (one line each)."""
        lines = [f"Channel groups of {self.graph.model.name!r}:"]
        for g in self.groups:
            what = ", ".join(g.layers[:4]) + (
                f", ... ({len(g.layers)} layers)" if len(g.layers) > 4 else ""
            )
            line = f"  [{g.index}] {g.kind:6s} {g.size:5d} ch: {what}"
            if g.reasons:
                line += f"  (fixed: {'; '.join(g.reasons)})"
            lines.append(line)
        return "\n".join(lines)
