"""Builds NetAug's augmented model around a functional compact model.

`Supernet(model, width_multipliers, expand_multipliers)` finds the channel
groups (`keras_compact.graph.channels`), chooses the widths each augmentable
group may take, creates one elastic twin per layer that touches an augmented
group (sharing the user's weights) and replays the model's graph
(`ModelGraph.rebuild`) into a functional `keras.Model` that takes the
model's inputs plus an int32 vector `widths` (one active width per augmented
group) and returns the augmented sub-model's outputs.
"""

import math

import keras
import numpy as np

from keras_compact.graph.channels import (
    DEPTHWISE_LAYERS,
    KERNEL_LAYERS,
    ChannelGroups,
)
from keras_compact.graph.walk import check_layer_names
from keras_compact.netaug import elastic

L = keras.layers


def widths_for(size, multipliers):
    """The channel counts `size * m` (rounded half up, divisor 1), sorted,
    without repeats; the first is `size` itself."""
    return sorted({max(size, int(size * m + 0.5)) for m in multipliers})


class Supernet:
    """The augmented model of a compact model, with shared weights.

    Args:
        model: the functional compact `keras.Model`.
        width_multipliers: multipliers (>= 1, including 1.0) of the `"width"`
            groups.
        expand_multipliers: multipliers of the `"expand"` groups.
        track_extra_statistics: see `ElasticBatchNorm`.
        exclude: names of layers whose output channels keep their tiny
            width (with every channel tied to them). Each must be a layer
            of `model`.

    Attributes:
        channel_groups: the `ChannelGroups` analysis.
        augmented: the augmented `ChannelGroup`s, in `widths` order.
        choices: list of the allowed widths of each augmented group.
        excluded: `(group_index, layer_name)` of the groups `exclude` kept
            at their tiny width.
        elastic_layers: the elastic twins (their extras are trainable).
        model: the functional augmented model, called as
            `model([*inputs, widths], training=True)`.
    """

    def __init__(
        self,
        model,
        width_multipliers,
        expand_multipliers,
        track_extra_statistics=False,
        exclude=(),
    ):
        self.compact = model
        self.channel_groups = cg = ChannelGroups(model)
        self.excluded = self._excluded_groups(exclude)
        excluded = {gi for gi, _ in self.excluded}
        self.augmented = []
        self.choices = []
        plan = {}
        for g in cg.groups:
            if g.kind == "fixed" or g.index in excluded:
                continue
            mults = (
                expand_multipliers if g.kind == "expand" else width_multipliers
            )
            options = widths_for(g.size, mults)
            if len(options) < 2:
                continue
            plan[g.index] = (len(self.augmented), options[-1] - g.size)
            self.augmented.append(g)
            self.choices.append(options)
        self.plan = plan
        self.sizes = {g.index: g.size for g in cg.groups}
        self.track_extra_statistics = track_extra_statistics
        self.elastic_layers = []
        self._by_layer = {}
        self._batch_norms = {}  # non-augmented BN layers, by id
        self._build()

    def _excluded_groups(self, exclude):
        cg = self.channel_groups
        check_layer_names(
            "exclude",
            list(exclude),
            {node.operation.name for node in cg.graph.nodes},
            f"layers of model {self.compact.name!r}",
        )
        out, seen = [], set()
        for name in exclude:
            for node in cg.graph.nodes_of(name):
                for gi in cg.layout(node.outputs[0]):
                    if gi not in seen:
                        seen.add(gi)
                        out.append((gi, name))
        return out

    # ------------------------------------------------------------------
    @property
    def num_groups(self):
        return len(self.augmented)

    def min_widths(self):
        return np.array([c[0] for c in self.choices], dtype="int32")

    def max_widths(self):
        return np.array([c[-1] for c in self.choices], dtype="int32")

    def segments(self, layout):
        return elastic.make_segments(layout, self.sizes, self.plan)

    def _augments(self, layouts):
        return any(g in self.plan for lay in layouts for g in lay)

    def _elastic_for(self, node):
        op = node.operation
        if id(op) in self._by_layer:
            return self._by_layer[id(op)]
        cg = self.channel_groups
        in_lay = cg.layout(node.inputs[0])
        out_lay = cg.layout(node.outputs[0])
        if not self._augments([in_lay, out_lay]):
            return None
        kind = type(op)
        in_segs = self.segments(in_lay)
        track = self.track_extra_statistics
        if kind in (L.Conv1D, L.Conv2D, L.Dense):
            layer = elastic.ElasticKernel(op, in_segs, self.segments(out_lay))
        elif kind is L.SeparableConv2D:
            layer = elastic.ElasticSeparable(
                op, in_segs, self.segments(out_lay)
            )
        elif kind in DEPTHWISE_LAYERS:
            layer = elastic.ElasticDepthwise(op, in_segs)
        elif kind is L.BatchNormalization:
            layer = elastic.ElasticBatchNorm(
                op, in_segs, track_extra_statistics=track
            )
        else:
            return None
        self._by_layer[id(op)] = layer
        self.elastic_layers.append(layer)
        return layer

    def _batch_statistics_norm(self, op):
        if id(op) not in self._batch_norms:
            self._batch_norms[id(op)] = elastic.BatchStatisticsNorm(op)
        return self._batch_norms[id(op)]

    def _build(self):
        cg = self.channel_groups
        graph = cg.graph
        inputs = [
            keras.Input(
                batch_shape=tuple(t.shape),
                dtype=t.dtype,
                name=f"{graph.model.name}_netaug_input_{i}",
            )
            for i, t in enumerate(graph.inputs)
        ]
        widths = keras.Input(
            batch_shape=(self.num_groups,), dtype="int32", name="netaug_widths"
        )
        self._replaced = {}

        def layer_fn(node):
            op = node.operation
            kind = type(op)
            if node.is_input:
                return None
            ins = cg.input_layouts(node)
            if kind in KERNEL_LAYERS + DEPTHWISE_LAYERS or (
                kind is L.BatchNormalization
            ):
                layer = self._elastic_for(node)
                if layer is None and kind is L.BatchNormalization:
                    # Not augmented, but fed by augmented channels: it must
                    # still leave the tiny model's moving statistics alone.
                    return self._batch_statistics_norm(op)
                if layer is None:
                    return None

                def call(*args, **kwargs):
                    return layer(*args, widths=widths, **kwargs)

                return call
            if not self._augments(ins):
                return None
            if kind is L.Concatenate and len(ins) > 1:
                tiny = [sum(self.sizes[g] for g in lay) for lay in ins]
                rank = len(node.outputs[0].shape)
                if op.axis in (-1, rank - 1):
                    return elastic.ElasticConcatenate(
                        tiny, name=f"{op.name}_netaug"
                    )
            if kind in (L.Flatten, L.Reshape):
                target = tuple(node.outputs[0].shape)[1:-1]
                return elastic.ElasticReshape(target, name=f"{op.name}_netaug")
            return None

        mapping = graph.rebuild(inputs, layer_fn)
        outputs = [mapping[id(t)] for t in graph.outputs]
        struct = getattr(self.compact, "_outputs_struct", None)
        if struct is not None:
            outputs = keras.tree.pack_sequence_as(struct, outputs)
        elif len(outputs) == 1:
            outputs = outputs[0]
        self.model = keras.Model(
            inputs + [widths], outputs, name=f"{graph.model.name}_netaug"
        )

    def __call__(self, x, widths, training=True):
        """Runs the augmented sub-model of `widths` on inputs `x` (the
        structure the compact model accepts)."""
        if isinstance(x, dict):
            names = [t.name for t in self.compact.inputs]
            flat = [x[n] for n in names]
        else:
            flat = list(x) if isinstance(x, (list, tuple)) else [x]
        return self.model(flat + [widths], training=training)

    # ------------------------------------------------------------------
    # Arithmetic cost
    # ------------------------------------------------------------------
    def macs(self, widths):
        """Multiply-accumulates of one forward pass of each sub-model.

        Args:
            widths: an int array `(num_groups,)` or `(samples, num_groups)`.

        Returns:
            A float, or an array of one value per row of `widths`.
        """
        w = np.atleast_2d(np.asarray(widths, dtype="float64"))
        total = np.zeros(w.shape[0])
        cg = self.channel_groups

        def channels(layout):
            c = np.zeros(w.shape[0])
            for g in layout:
                if g in self.plan:
                    c = c + w[:, self.plan[g][0]]
                else:
                    c = c + self.sizes[g]
            return c

        for node in cg.graph.nodes:
            op = node.operation
            kind = type(op)
            if node.is_input or not (
                kind in KERNEL_LAYERS or kind in DEPTHWISE_LAYERS
            ):
                continue
            out_shape = tuple(node.outputs[0].shape)
            positions = math.prod(d for d in out_shape[1:-1])
            c_in = channels(cg.layout(node.inputs[0]))
            c_out = channels(cg.layout(node.outputs[0]))
            if kind in DEPTHWISE_LAYERS:
                total += positions * math.prod(op.kernel_size) * c_out
            elif kind is L.SeparableConv2D:
                total += positions * (
                    math.prod(op.kernel_size) * c_in + c_in * c_out
                )
            elif kind is L.Dense:
                total += positions * c_in * c_out
            else:
                total += positions * math.prod(op.kernel_size) * c_in * c_out
        return float(total[0]) if np.ndim(widths) == 1 else total
