"""Builds NetAug's augmented model around a functional compact model.

`Supernet(model, width_multipliers, expand_multipliers)` finds the channel
groups (`keras_compact.graph.channels`), chooses the widths each augmentable
group may take, creates one elastic twin per layer that touches an augmented
group (sharing the user's weights) and replays the model's graph
(`ModelGraph.rebuild`) into a functional `keras.Model` that takes the
model's inputs plus an int32 vector `widths` (one active width per augmented
group) and returns the augmented sub-model's outputs.

A `keras.Sequential` model is walked through an equivalent functional model
over the same layers (same variables).

Output guard: the kernel layers whose output reaches a model output without
another kernel in between (the classifier) are the *output kernels*.
`output_guard="scale"` multiplies an output kernel's input by
`sqrt(tiny_in / active_in)` in the augmented pass (1 at the tiny width, so
the tiny path is exact); `output_guard="tiny"` keeps the channel groups
feeding the output kernels at their tiny width. Without a guard (the
released code) the augmented logits grow with the width of the channels
feeding the classifier (`benchmarks/results/netaug_logits.md`).

BatchNormalization: the tiny pass is the user's model in training mode (it
updates its own moving statistics); the augmented pass normalises with the
statistics of its batch and never writes the user's moving mean and
variance, so no re-estimation is needed before evaluation or export (the
paper's re-estimation is `keras_compact.netaug.BNRecalibration`).

Softmax outputs: an output produced by a `Softmax` layer, a softmax
`Activation` or a kernel layer with a softmax activation is also available
before the softmax (`logits_model`), so that NetAug scores the augmented
model on logits, not on (clipped) probabilities.
"""

import math

import keras
import numpy as np

from keras_compact.graph import kinds
from keras_compact.graph.channels import (
    DEPTHWISE_LAYERS,
    KERNEL_LAYERS,
    ChannelGroups,
)
from keras_compact.graph.outputs import is_softmax
from keras_compact.graph.stats import layer_macs
from keras_compact.graph.walk import as_functional, check_layer_names
from keras_compact.netaug import elastic
from keras_compact.training import arguments

L = keras.layers


OUTPUT_GUARDS = ("scale", "tiny", None)


def _twinnable(op):
    """Whether an elastic twin computes exactly what the layer computes
    (checked before making a twin of a layer that is not augmented)."""
    if not isinstance(op, KERNEL_LAYERS + DEPTHWISE_LAYERS):
        return False
    if not kinds.computes_as_keras(op):
        return False
    if getattr(op, "data_format", "channels_last") != "channels_last":
        return False
    if getattr(op, "groups", 1) != 1 or getattr(op, "depth_multiplier", 1) != 1:
        return False
    if getattr(op, "padding", "valid") not in ("valid", "same"):
        return False
    if getattr(op, "quantization_mode", None):
        return False
    return not getattr(op, "lora_enabled", False)


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
        output_guard: `"scale"`, `"tiny"` or None (see the module
            docstring).
        gradient_taps: whether the augmented pass reads every trainable
            tiny weight through a zero tap variable (`ElasticLayer`); every
            kernel, depthwise and BatchNormalization layer then gets a
            twin, augmented or not.
        min_resolution: None or an int: the groups on a feature map
            smaller than this on a side keep their tiny width.
        seed: seed of the extra weights' initial draws (int or None).
        extra_init: `"tiny"` or `"wide"`, how extra kernel blocks are
            drawn (`keras_compact.netaug.elastic`).

    Attributes:
        channel_groups: the `ChannelGroups` analysis.
        augmented: the augmented `ChannelGroup`s, in `widths` order.
        choices: list of the allowed widths of each augmented group.
        excluded: `(group_index, layer_name)` of the groups `exclude` kept
            at their tiny width.
        small_maps: `(group_index, layer_name)` of the groups
            `min_resolution` kept at their tiny width (the first layer
            with a smaller map named).
        guarded: `(group_index, output_layer_name)` of the groups
            `output_guard="tiny"` kept at their tiny width.
        output_kernels: the `GraphNode`s of the output kernels.
        scaled_outputs: names of the output kernels whose input the
            `"scale"` guard rescales.
        softmax_outputs: one bool per model output: whether
            `logits_model` returns it before its softmax.
        elastic_layers: the elastic twins (their extras are trainable).
        model: the functional augmented model, called as
            `model([*inputs, widths], training=True)`; at the tiny widths
            it computes exactly what the compact model computes.
        logits_model: the same with softmax outputs returned before their
            softmax (`model` itself when there are none).
    """

    def __init__(
        self,
        model,
        width_multipliers,
        expand_multipliers,
        track_extra_statistics=False,
        exclude=(),
        output_guard=None,
        gradient_taps=False,
        min_resolution=None,
        seed=None,
        extra_init=elastic.DEFAULT_EXTRA_INIT,
    ):
        if output_guard not in OUTPUT_GUARDS:
            raise ValueError(
                f"Expected `output_guard` to be one of {OUTPUT_GUARDS}. "
                f"Received: output_guard={output_guard!r}"
            )
        arguments.check_choice(extra_init, elastic.EXTRA_INITS, "extra_init")
        self.compact = model
        self.output_guard = output_guard
        self.extra_init = extra_init
        self.gradient_taps = bool(gradient_taps)
        if seed is None:
            # Follows `keras.utils.set_random_seed` (which seeds numpy).
            seed = int(np.random.randint(0, 2**31 - 1))
        self._rng = np.random.default_rng(seed)
        self.channel_groups = cg = ChannelGroups(as_functional(model))
        self.output_kernels = self._output_kernels()
        self.excluded = self._excluded_groups(exclude)
        self.min_resolution = min_resolution
        self.small_maps = self._small_map_groups(
            min_resolution, {gi for gi, _ in self.excluded}
        )
        excluded = {gi for gi, _ in self.excluded + self.small_maps}
        self.guarded = []
        if output_guard == "tiny":
            seen = set(excluded)
            for node in self.output_kernels:
                for gi in cg.layout(node.inputs[0]):
                    g = cg.groups[gi]
                    if g.kind != "fixed" and gi not in seen:
                        seen.add(gi)
                        self.guarded.append((gi, node.name))
        guarded = {gi for gi, _ in self.guarded}
        self.augmented = []
        self.choices = []
        plan = {}
        for g in cg.groups:
            if g.kind == "fixed" or g.index in excluded | guarded:
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
        self.scaled_outputs = []  # output kernels scaled by the guard
        self._build()

    def _output_kernels(self):
        """The kernel-layer nodes whose output reaches a model output
        without another kernel (or depthwise) layer in between."""
        graph = self.channel_groups.graph
        stack = [graph.producer(t) for t in graph.outputs]
        found, seen = [], set()
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen or node.is_input:
                continue
            seen.add(id(node))
            if isinstance(node.operation, KERNEL_LAYERS):
                found.append(node)
            elif not isinstance(node.operation, DEPTHWISE_LAYERS):
                stack.extend(node.parents)
        return found

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

    def _small_map_groups(self, min_resolution, skip):
        """`(group_index, layer_name)` of the groups that appear on a
        feature map smaller than `min_resolution` on a side (the first
        such layer named), except those in `skip`. Tensors after a global
        pooling, Flatten, Reshape or Dense (a squeeze-excite gate, a
        classifier) carry no feature map: their 1x1 is not a resolution."""
        if not min_resolution:
            return []
        cg = self.channel_groups
        out, seen = [], set(skip)
        for node, t in _feature_maps(cg.graph):
            spatial = [d for d in t.shape[1:-1] if d is not None]
            if not spatial or min(spatial) >= min_resolution:
                continue
            for gi in cg.layout(t):
                if gi not in seen and cg.groups[gi].kind != "fixed":
                    seen.add(gi)
                    out.append((gi, node.operation.name))
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

    def _elastic_for(self, node, force=False):
        """The elastic twin of a node's layer (made once per layer), or
        None when the layer touches no augmented group (unless `force`:
        then a twin without extras, if it computes exactly the layer)."""
        op = node.operation
        if id(op) in self._by_layer:
            return self._by_layer[id(op)]
        cg = self.channel_groups
        in_lay = cg.layout(node.inputs[0])
        out_lay = cg.layout(node.outputs[0])
        if not self._augments([in_lay, out_lay]) and not (
            force and _twinnable(op)
        ):
            return None
        in_segs = self.segments(in_lay)
        common = {
            "gradient_taps": self.gradient_taps,
            "rng": self._rng,
            "extra_init": self.extra_init,
        }
        if isinstance(op, kinds.of("conv1d", "conv2d", "dense")):
            layer = elastic.ElasticKernel(
                op, in_segs, self.segments(out_lay), **common
            )
        elif isinstance(op, L.SeparableConv2D):
            layer = elastic.ElasticSeparable(
                op, in_segs, self.segments(out_lay), **common
            )
        elif isinstance(op, DEPTHWISE_LAYERS):
            layer = elastic.ElasticDepthwise(op, in_segs, **common)
        elif isinstance(op, L.BatchNormalization):
            layer = elastic.ElasticBatchNorm(
                op,
                in_segs,
                track_extra_statistics=self.track_extra_statistics,
                **common,
            )
        else:
            return None
        self._by_layer[id(op)] = layer
        self.elastic_layers.append(layer)
        return layer

    def taps(self):
        """`[(tiny variable, tap variable)]` of every twin (empty unless
        `gradient_taps`)."""
        out = []
        for layer in self.elastic_layers + list(self._batch_norms.values()):
            out.extend(layer.taps())
        return out

    def untapped(self):
        """The compact model's trainable variables that the augmented pass
        reads directly (layers it reuses as they are): with
        `gradient_taps`, their augmented gradient cannot be told apart from
        the tiny one."""
        tapped = {id(v) for v, _ in self.taps()}
        return [
            v
            for v in self.compact.trainable_weights
            if id(v) not in tapped and id(v) in self._read_directly
        ]

    def _batch_statistics_norm(self, op):
        if id(op) not in self._batch_norms:
            self._batch_norms[id(op)] = elastic.BatchStatisticsNorm(
                op, gradient_taps=self.gradient_taps
            )
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
        output_ids = {id(t) for t in graph.outputs}
        output_kernels = {id(n) for n in self.output_kernels}
        self._logits = {}  # id(output tensor) -> its logits in the rebuild
        self._read_directly = set()  # ids of variables of reused layers

        def twin_fn(node):
            op = node.operation
            out_id = id(node.outputs[0])
            softmax_kernel = (
                out_id in output_ids
                and isinstance(op, KERNEL_LAYERS)
                and is_softmax(getattr(op, "activation", None))
            )
            layer = self._elastic_for(
                node, force=self.gradient_taps or softmax_kernel
            )
            if layer is None and isinstance(op, L.BatchNormalization):
                # Not augmented, but fed by augmented channels: it must
                # still leave the tiny model's moving statistics alone.
                return self._batch_statistics_norm(op)
            if layer is None:
                return None
            if (
                id(node) in output_kernels
                and self.output_guard == "scale"
                and any(s.widx is not None for s in layer.in_segments)
            ):
                layer.input_scale = True
                if op.name not in self.scaled_outputs:
                    self.scaled_outputs.append(op.name)
            if softmax_kernel:
                layer.skip_activation = True
                softmax = L.Activation(
                    op.activation, name=f"{op.name}_netaug_softmax"
                )

                def call_softmax(*args, **kwargs):
                    logits = layer(*args, widths=widths, **kwargs)
                    self._logits[out_id] = logits
                    return softmax(logits)

                return call_softmax

            def call(*args, **kwargs):
                return layer(*args, widths=widths, **kwargs)

            return call

        def softmax_fn(node):
            op = node.operation
            out_id = id(node.outputs[0])

            def call(x, *args, **kwargs):
                self._logits[out_id] = x
                return op(x, *args, **kwargs)

            return call

        def layer_fn(node):
            op = node.operation
            if node.is_input:
                return None
            ins = cg.input_layouts(node)
            if isinstance(
                op, KERNEL_LAYERS + DEPTHWISE_LAYERS + (L.BatchNormalization,)
            ):
                return twin_fn(node)
            rank = len(node.outputs[0].shape)
            if id(node.outputs[0]) in output_ids and (
                (isinstance(op, L.Softmax) and op.axis in (-1, rank - 1))
                or (isinstance(op, L.Activation) and is_softmax(op.activation))
            ):
                return softmax_fn(node)
            if not self._augments(ins):
                return None
            if isinstance(op, L.Concatenate) and len(ins) > 1:
                tiny = [sum(self.sizes[g] for g in lay) for lay in ins]
                rank = len(node.outputs[0].shape)
                if op.axis in (-1, rank - 1):
                    return elastic.ElasticConcatenate(
                        tiny, name=f"{op.name}_netaug"
                    )
            if isinstance(op, (L.Flatten, L.Reshape)):
                target = tuple(node.outputs[0].shape)[1:-1]
                return elastic.ElasticReshape(target, name=f"{op.name}_netaug")
            return None

        def recorded_fn(node):
            fn = layer_fn(node)
            op = node.operation
            if fn is None and isinstance(op, keras.layers.Layer):
                self._read_directly.update(id(v) for v in op.trainable_weights)
            return fn

        mapping = graph.rebuild(inputs, recorded_fn)
        outputs = [mapping[id(t)] for t in graph.outputs]
        logits = [
            self._logits.get(id(t), o) for t, o in zip(graph.outputs, outputs)
        ]
        self.softmax_outputs = [id(t) in self._logits for t in graph.outputs]
        struct = getattr(graph.model, "_outputs_struct", None)

        def pack(flat):
            if struct is not None:
                return keras.tree.pack_sequence_as(struct, flat)
            return flat[0] if len(flat) == 1 else flat

        self.model = keras.Model(
            inputs + [widths], pack(outputs), name=f"{graph.model.name}_netaug"
        )
        self.logits_model = self.model
        if any(self.softmax_outputs):
            self.logits_model = keras.Model(
                inputs + [widths],
                pack(logits),
                name=f"{graph.model.name}_netaug_logits",
            )

    def __call__(self, x, widths, training=True, logits=False):
        """Runs the augmented sub-model of `widths` on inputs `x` (the
        structure the compact model accepts); with `logits`, outputs that
        the model passes through a softmax are returned before it."""
        if isinstance(x, dict):
            names = [t.name for t in self.compact.inputs]
            flat = [x[n] for n in names]
        else:
            flat = list(x) if isinstance(x, (list, tuple)) else [x]
        model = self.logits_model if logits else self.model
        return model(flat + [widths], training=training)

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
            if node.is_input or not isinstance(
                op, KERNEL_LAYERS + DEPTHWISE_LAYERS
            ):
                continue
            out_shape = tuple(node.outputs[0].shape)
            positions = math.prod(d for d in out_shape[1:-1])
            c_in = channels(cg.layout(node.inputs[0]))
            c_out = channels(cg.layout(node.outputs[0]))
            total += layer_macs(op, positions, c_in, c_out)
        return float(total[0]) if np.ndim(widths) == 1 else total


_FLATTENING = (
    kinds.GLOBAL_POOLING
    + kinds.DENSE
    + (
        keras.layers.Flatten,
        keras.layers.Reshape,
    )
)


def _feature_maps(graph):
    """`(node, tensor)` for each rank >= 4 output tensor of the graph that
    is a feature map: not computed from global poolings, Flatten, Reshape
    or Dense outputs alone (nor by an operation that reduces a larger map
    to 1x1 other than a kernel or pooling layer: `keras.ops.mean`)."""
    flat = set()  # ids of the tensors that are no feature map
    for node in graph.nodes:
        op = node.operation
        ins = [t for t in node.inputs if len(getattr(t, "shape", ())) >= 3]
        if isinstance(op, _FLATTENING):
            derived = True
        elif ins and all(id(t) in flat for t in ins):
            derived = True
        else:
            derived = not isinstance(op, kinds.KERNEL + kinds.POOLING) and any(
                _collapses(t, o) for t in ins for o in node.outputs
            )
        for t in node.outputs:
            if derived:
                flat.add(id(t))
            elif len(getattr(t, "shape", ())) >= 4:
                yield node, t


def _collapses(x, y):
    """Whether tensor `y` is 1x1 (all spatial dims 1) while `x` is not."""
    sx, sy = tuple(x.shape[1:-1]), tuple(getattr(y, "shape", ())[1:-1])
    return (
        len(sx) == len(sy) > 0
        and all(d == 1 for d in sy)
        and any(d != 1 for d in sx)
    )
