"""Elastic-width twins of standard layers, for NetAug's augmented model.

An elastic layer never owns the tiny model's weights: it holds a reference
to the user's layer and reads that layer's variables (kernel, bias, gamma,
beta, moving statistics) as the first block of each of its weights; it owns
only the extra blocks of the wider augmented model. Every call receives the
active width of every augmentable channel group (`widths`, an int32 vector,
a tensor) and slices the extra blocks to it, so one traced function serves
every sampled sub-model and the cost of a step follows the sampled width.

Channel axes follow the *tiny-first* order: the tiny channels of every
segment of a layout come first, in layout order, then the extra channels of
each segment in the same order. With one segment this is `[tiny, extra]`, and
in every case `x[..., :tiny]` of an augmented tensor is the tiny model's.

Extra kernel blocks (`extra_init="wide"`, `NetAug`'s default) are cut
from one draw of the layer's initializer at the LARGEST augmented layer's
shape (its fans: smaller weights for a variance-scaling initializer), the
released code's distribution for the extra channels. With
`extra_init="tiny"` they are drawn with the user's layer's own initializer
at the TINY layer's shape (so with the tiny layer's fans; a wide weight is
tiled from independent tiny-shaped draws), then rescaled to the empirical
standard deviation of the tiny kernel: every channel of an augmented layer
starts from the distribution of its tiny channels, also for a model that is
already trained (`NetAug`'s default from 2026-12-03 to 2026-12-05; behind
"wide" on 6 of 8 paired runs). Vector extras (bias,
BatchNormalization parameters and statistics) use the layer's initializer.

With `gradient_taps`, every trainable tiny weight is read by the augmented
pass as `stop_gradient(weight) + tap`, where `tap` is a zero variable of
the same shape: the augmented pass's gradient for the shared weight lands
on the tap, apart from the tiny pass's, so that `NetAug(gradient_guard=
True)` can bound it before the two are summed. The value read is exactly the
weight's.

These layers are training-only parts built by `NetAug`; they are not part of
the public API and are never saved on their own (their extra weights are
saved with the `NetAug` technique that tracks them).
"""

import collections

import keras
import numpy as np
from keras import ops

from keras_compact.graph.batch_norm import batch_statistics_norm
from keras_compact.training.untracked import Untracked

# How extra kernel blocks start (see the module docstring).
EXTRA_INITS = ("tiny", "wide")
DEFAULT_EXTRA_INIT = "wide"  # `ElasticLayer`, `Supernet` and `NetAug`

#: One segment of a channel axis: `size` tiny channels of channel group
#: `group`; `widx` is the group's index in the `widths` vector (None when the
#: group is not augmented), `extra` its largest number of extra channels and
#: `offset` where its extra channels start in the layer's extra block.
Segment = collections.namedtuple(
    "Segment", ["size", "group", "widx", "extra", "offset"]
)


def make_segments(layout, sizes, plan):
    """Segments of a layout (a tuple of group indices), given each group's
    tiny size `sizes[g]` and `plan[g] = (widx, extra)` for the augmented
    groups."""
    segs, offset = [], 0
    for g in layout:
        size = sizes[g]
        widx, extra = plan.get(g, (None, 0))
        segs.append(Segment(size, g, widx, extra, offset))
        offset += extra
    return tuple(segs)


def _tiny(segments):
    return sum(s.size for s in segments)


def _extra(segments):
    return sum(s.extra for s in segments)


def _take(x, axis, start, stop):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


class _Slot:
    """One logical weight: the user's variable plus this layer's extras.

    `kind` is "vector" (one channel axis, the last) or "kernel" (input
    channels on axis -2 and output channels on axis -1).
    """

    def __init__(self, name, kind, get_tiny, extras, in_segs, out_segs=None):
        self.name = name
        self.kind = kind
        self.get_tiny = get_tiny
        # Variables or None: vector [extra], kernel [cols, rows].
        self.extras = extras
        self.in_segs = in_segs
        self.out_segs = out_segs
        # A zero variable through which the augmented pass's gradient for
        # the tiny weight flows (`gradient_taps`), or None.
        self.tap = None

    def variables(self):
        return [self.get_tiny()] + [e for e in self.extras if e is not None]

    def axes(self):
        """`{axis: segments}` of the full (largest) weight."""
        if self.kind == "vector":
            return {-1: self.in_segs}
        out = {-2: self.in_segs}
        if self.out_segs is not None:
            out[-1] = self.out_segs
        return out

    def assemble(self, arrays):
        """The full (largest) weight from `[tiny, extras...]` arrays."""
        tiny, rest = arrays[0], list(arrays[1:])
        if self.kind == "vector":
            return np.concatenate([tiny] + rest, axis=-1) if rest else tiny
        cols = rest.pop(0) if self.extras[0] is not None else None
        rows = rest.pop(0) if self.extras[1] is not None else None
        top = tiny if cols is None else np.concatenate([tiny, cols], -1)
        return top if rows is None else np.concatenate([top, rows], -2)

    def split(self, full):
        """Inverse of `assemble`."""
        t_in = _tiny(self.in_segs)
        if self.kind == "vector":
            parts = [full[..., :t_in]]
            if self.extras[0] is not None:
                parts.append(full[..., t_in:])
            return parts
        t_out = _tiny(self.out_segs) if self.out_segs else full.shape[-1]
        parts = [full[..., :t_in, :t_out]]
        if self.extras[0] is not None:
            parts.append(full[..., :t_in, t_out:])
        if self.extras[1] is not None:
            parts.append(full[..., t_in:, :])
        return parts


def _seeded_copies(initializer, rng):
    """A function returning independent draws of `initializer`: a fresh
    copy with a new seed for each call when the initializer is seeded (a
    Keras random initializer with a fixed seed repeats its draws)."""
    config = None
    if isinstance(initializer, keras.initializers.Initializer):
        try:
            config = initializer.get_config()
        except NotImplementedError:
            config = None
    if not config or "seed" not in config:
        return initializer

    def draw(shape, dtype=None):
        seed = int(rng.integers(0, 2**31 - 1))
        fresh = type(initializer).from_config({**config, "seed": seed})
        return fresh(shape, dtype=dtype)

    return draw


def tiled_draw(initializer, tile_shape, full_shape, dtype, rng):
    """A `full_shape` array of independent `tile_shape` draws of
    `initializer` (numpy), so that every block has the distribution the
    initializer gives a weight of `tile_shape` (its fans)."""
    draw = _seeded_copies(initializer, rng)
    reps = [-(-f // t) for f, t in zip(full_shape, tile_shape)]
    tiles = np.empty(reps, dtype=object)
    for index in np.ndindex(*reps):
        tiles[index] = np.asarray(draw(tuple(tile_shape), dtype=dtype))
    full = np.block(tiles.tolist()) if tiles.size > 1 else tiles.flat[0]
    return full[tuple(slice(0, f) for f in full_shape)]


class ElasticLayer(keras.layers.Layer):
    """Base class: a wider twin of `layer` that shares its weights.

    Args:
        layer: the user's layer (its variables are the tiny block).
        in_segments: `Segment`s of the input channel axis.
        out_segments: `Segment`s of the output channel axis (layers that
            create channels) or None (they are the input's).
        track_extra_statistics: whether BatchNormalization keeps moving
            statistics of its extra channels (needed by channel sorting).
        gradient_taps: whether the augmented pass reads each trainable tiny
            weight through a zero tap variable (see the module docstring).
        rng: a `numpy.random.Generator` that seeds the extra weights'
            initial draws (None: a fresh unseeded one).
        extra_init: `"tiny"` or `"wide"`: how extra kernel blocks are drawn
            (see the module docstring).
    """

    def __init__(
        self,
        layer,
        in_segments,
        out_segments=None,
        track_extra_statistics=False,
        gradient_taps=False,
        rng=None,
        extra_init=DEFAULT_EXTRA_INIT,
        **kwargs,
    ):
        kwargs.setdefault("name", f"{layer.name}_netaug")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.extra_init = extra_init  # validated by `NetAug` / `Supernet`
        self._ref = Untracked(layer=layer)
        self.in_segments = tuple(in_segments)
        self.out_segments = (
            None if out_segments is None else tuple(out_segments)
        )
        self.track_extra_statistics = bool(track_extra_statistics)
        self.gradient_taps = bool(gradient_taps)
        self._rng = Untracked(
            generator=np.random.default_rng() if rng is None else rng
        )
        self.slots = []
        self._create_extras()
        self.built = True

    @property
    def layer(self):
        return self._ref.layer

    # -- weight helpers ------------------------------------------------
    def _kernel_init(self, initializer, tiny, full_shape, block):
        """An initializer for one extra kernel block: tiled tiny-shaped
        draws of the layer's own initializer, rescaled to the empirical
        standard deviation of the tiny kernel, then the block (with
        `extra_init="wide"`: the block of one draw at `full_shape`)."""
        initializer = keras.initializers.get(initializer)
        rng = self._rng.generator

        def init(shape, dtype=None):
            if self.extra_init == "wide":
                draw = _seeded_copies(initializer, rng)
                full = np.asarray(draw(tuple(full_shape), dtype=dtype))
                return full[block]
            full = tiled_draw(
                initializer, tuple(tiny.shape), full_shape, dtype, rng
            )
            target = float(np.std(np.asarray(tiny.numpy(), "float64")))
            drawn = float(np.std(full.astype("float64")))
            if target > 0 and drawn > 0:
                full = full * (target / drawn)
            return full[block].astype(full.dtype)

        return init

    def _add_tap(self, slot, name):
        tiny = slot.get_tiny()
        if self.gradient_taps and tiny.trainable:
            slot.tap = self.add_weight(
                name=f"{name}_tap",
                shape=tuple(tiny.shape),
                initializer="zeros",
                dtype=tiny.dtype,
            )

    def _read(self, slot):
        """The tiny weight as the augmented pass reads it (through its tap,
        with `gradient_taps`: the same value)."""
        tiny = slot.get_tiny()
        if slot.tap is None:
            return tiny
        return ops.add(ops.stop_gradient(tiny), slot.tap)

    def taps(self):
        """`[(tiny variable, tap variable)]` of this layer's slots."""
        return [(s.get_tiny(), s.tap) for s in self.slots if s.tap is not None]

    def _vector_slot(self, name, get_tiny, initializer, trainable=True):
        tiny = get_tiny()
        if tiny is None:
            return None
        extra = _extra(self.in_segments)
        var = None
        if extra:
            var = self.add_weight(
                name=f"{name}_extra",
                shape=(extra,),
                initializer=initializer,
                trainable=trainable,
                dtype=tiny.dtype,
            )
        slot = _Slot(name, "vector", get_tiny, [var], self.in_segments)
        self._add_tap(slot, name)
        self.slots.append(slot)
        return slot

    def _kernel_slot(self, name, get_tiny, initializer, out_segments):
        tiny = get_tiny()
        lead = tuple(tiny.shape[:-2])
        t_in, t_out = tiny.shape[-2], tiny.shape[-1]
        e_in = _extra(self.in_segments)
        e_out = _extra(out_segments) if out_segments else 0
        full = lead + (t_in + e_in, t_out + e_out)
        pre = (slice(None),) * len(lead)
        cols = rows = None
        if e_out:
            cols = self.add_weight(
                name=f"{name}_extra_cols",
                shape=lead + (t_in, e_out),
                initializer=self._kernel_init(
                    initializer,
                    tiny,
                    full,
                    pre + (slice(0, t_in), slice(t_out, None)),
                ),
                dtype=tiny.dtype,
            )
        if e_in:
            rows = self.add_weight(
                name=f"{name}_extra_rows",
                shape=lead + (e_in, t_out + e_out),
                initializer=self._kernel_init(
                    initializer,
                    tiny,
                    full,
                    pre + (slice(t_in, None), slice(None)),
                ),
                dtype=tiny.dtype,
            )
        slot = _Slot(
            name,
            "kernel",
            get_tiny,
            [cols, rows],
            self.in_segments,
            out_segments,
        )
        self._add_tap(slot, name)
        self.slots.append(slot)
        return slot

    # -- active slices ---------------------------------------------------
    @staticmethod
    def _n(widths, seg):
        """Active extra channels of a segment (a scalar tensor or 0)."""
        if seg.widx is None or not seg.extra:
            return 0
        return widths[seg.widx] - seg.size

    def _active_vector(self, slot, widths):
        tiny = self._read(slot)
        var = slot.extras[0]
        if var is None:
            return tiny
        parts = [tiny]
        for seg in slot.in_segs:
            if seg.widx is not None and seg.extra:
                n = self._n(widths, seg)
                parts.append(var[seg.offset : seg.offset + n])
        return ops.concatenate(parts, axis=0)

    def _active_kernel(self, slot, widths):
        tiny = self._read(slot)
        cols, rows = slot.extras
        t_out = tiny.shape[-1]
        n_out = self._n(widths, slot.out_segs[0]) if slot.out_segs else 0
        top = tiny
        if cols is not None:
            top = ops.concatenate([tiny, cols[..., :n_out]], axis=-1)
        if rows is None:
            return top
        parts = [top]
        for seg in slot.in_segs:
            if seg.widx is not None and seg.extra:
                n = self._n(widths, seg)
                block = rows[..., seg.offset : seg.offset + n, :]
                parts.append(block[..., : t_out + n_out])
        return ops.concatenate(parts, axis=-2)

    def _create_extras(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `_create_extras()`: the "
            "slots of its weights and their extra blocks."
        )


class ElasticKernel(ElasticLayer):
    """Twin of `Conv1D`, `Conv2D` or `Dense`: input rows and output columns
    of the kernel grow with their groups.

    Attributes (set by `Supernet`):
        input_scale: multiply the input by `sqrt(tiny_in / active_in)`
            (NetAug's `output_guard="scale"` on a layer that produces a
            model output): exactly 1 at the tiny width.
        skip_activation: return the pre-activation output (the logits of
            a layer with a softmax activation).
    """

    input_scale = False
    skip_activation = False

    def _scaled(self, inputs, widths):
        if not self.input_scale:
            return inputs
        tiny = _tiny(self.in_segments)
        active = tiny
        for seg in self.in_segments:
            if seg.widx is not None and seg.extra:
                active = active + self._n(widths, seg)
        if isinstance(active, int):
            return inputs
        dtype = inputs.dtype
        ratio = ops.divide(
            ops.cast(tiny, "float32"), ops.cast(active, "float32")
        )
        return ops.multiply(inputs, ops.cast(ops.sqrt(ratio), dtype))

    def _activate(self, outputs):
        activation = self.layer.activation
        if activation is None or self.skip_activation:
            return outputs
        return activation(outputs)

    def _create_extras(self):
        layer = self.layer
        self.kernel_slot = self._kernel_slot(
            "kernel",
            lambda: self.layer.kernel,
            layer.kernel_initializer,
            self.out_segments,
        )
        self.bias_slot = None
        if layer.use_bias:
            self.bias_slot = self._out_vector_slot(
                "bias", lambda: self.layer.bias, layer.bias_initializer
            )

    def _out_vector_slot(self, name, get_tiny, initializer):
        saved = self.in_segments
        self.in_segments = self.out_segments
        try:
            return self._vector_slot(name, get_tiny, initializer)
        finally:
            self.in_segments = saved

    def call(self, inputs, widths, training=None, mask=None):
        layer = self.layer
        inputs = self._scaled(inputs, widths)
        kernel = self._active_kernel(self.kernel_slot, widths)
        if isinstance(layer, keras.layers.Dense):
            outputs = ops.matmul(inputs, kernel)
        else:
            outputs = ops.conv(
                inputs,
                kernel,
                strides=list(layer.strides),
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
        if self.bias_slot is not None:
            outputs = ops.add(
                outputs, self._active_vector(self.bias_slot, widths)
            )
        return self._activate(outputs)


class ElasticDepthwise(ElasticLayer):
    """Twin of `DepthwiseConv1D` / `DepthwiseConv2D` (depth multiplier 1)."""

    def _create_extras(self):
        layer = self.layer
        self.kernel_slot = self._depthwise_slot(
            "kernel",
            lambda: self.layer.kernel,
            layer.depthwise_initializer,
        )
        self.bias_slot = None
        if layer.use_bias:
            self.bias_slot = self._vector_slot(
                "bias", lambda: self.layer.bias, layer.bias_initializer
            )

    def _depthwise_slot(self, name, get_tiny, initializer):
        # kernel (*k, C, 1): a per-channel weight on axis -2; stored as a
        # kernel slot with no output growth.
        return self._kernel_slot(name, get_tiny, initializer, None)

    def _depthwise(self, inputs, widths, layer, slot):
        kernel = self._active_kernel(slot, widths)
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    def call(self, inputs, widths, training=None, mask=None):
        layer = self.layer
        outputs = self._depthwise(inputs, widths, layer, self.kernel_slot)
        if self.bias_slot is not None:
            outputs = ops.add(
                outputs, self._active_vector(self.bias_slot, widths)
            )
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs


class ElasticSeparable(ElasticDepthwise, ElasticKernel):
    """Twin of `SeparableConv2D` (depth multiplier 1): depthwise then
    pointwise, each sliced to the active widths."""

    def _create_extras(self):
        layer = self.layer
        self.depthwise_slot = self._depthwise_slot(
            "depthwise_kernel",
            lambda: self.layer.depthwise_kernel,
            layer.depthwise_initializer,
        )
        self.pointwise_slot = self._kernel_slot(
            "pointwise_kernel",
            lambda: self.layer.pointwise_kernel,
            layer.pointwise_initializer,
            self.out_segments,
        )
        self.bias_slot = None
        if layer.use_bias:
            self.bias_slot = self._out_vector_slot(
                "bias", lambda: self.layer.bias, layer.bias_initializer
            )

    def call(self, inputs, widths, training=None, mask=None):
        layer = self.layer
        inputs = self._scaled(inputs, widths)
        x = self._depthwise(inputs, widths, layer, self.depthwise_slot)
        kernel = self._active_kernel(self.pointwise_slot, widths)
        outputs = ops.conv(
            x,
            kernel,
            strides=1,
            padding="valid",
            data_format=layer.data_format,
        )
        if self.bias_slot is not None:
            outputs = ops.add(
                outputs, self._active_vector(self.bias_slot, widths)
            )
        return self._activate(outputs)


class BatchStatisticsNorm(keras.layers.Layer):
    """The user's `BatchNormalization` as the augmented pass runs it when its
    channel group is not augmented: in training it normalises with the
    statistics of the batch and, unlike the layer itself, never writes the
    moving mean and variance (the augmented pass's activations differ from
    the tiny model's wherever extra channels feed them); in inference it is
    the user's layer."""

    def __init__(self, layer, gradient_taps=False, **kwargs):
        kwargs.setdefault("name", f"{layer.name}_netaug")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self._ref = Untracked(layer=layer)
        self._taps = {}
        for attr in ("gamma", "beta"):
            var = getattr(layer, attr, None)
            if gradient_taps and var is not None and var.trainable:
                self._taps[attr] = self.add_weight(
                    name=f"{attr}_tap",
                    shape=tuple(var.shape),
                    initializer="zeros",
                    dtype=var.dtype,
                )
        self.built = True

    def taps(self):
        """`[(tiny variable, tap variable)]` (see `ElasticLayer`)."""
        layer = self._ref.layer
        return [(getattr(layer, a), t) for a, t in self._taps.items()]

    def _read(self, attr):
        var = getattr(self._ref.layer, attr)
        tap = self._taps.get(attr)
        if var is None or tap is None:
            return var
        return ops.add(ops.stop_gradient(var), tap)

    def call(self, inputs, training=None, mask=None):
        layer = self._ref.layer
        if not (training and layer.trainable):
            return layer(inputs, training=False)
        outputs, _, _ = batch_statistics_norm(
            inputs,
            axis=layer.axis,
            epsilon=layer.epsilon,
            gamma=self._read("gamma"),
            beta=self._read("beta"),
            synchronized=layer.synchronized,
        )
        return ops.cast(outputs, self.compute_dtype)


class ElasticBatchNorm(ElasticLayer):
    """Twin of `BatchNormalization` over the last axis.

    In training it normalises with the statistics of the batch (all active
    channels) and never writes the user's moving mean and variance: the
    tiny model's statistics come from the tiny pass alone. The moving
    statistics of the extra channels are kept (and updated here) only when
    `track_extra_statistics` is set, for channel sorting. In inference it
    uses the moving statistics (the user's for the tiny channels).
    """

    def _create_extras(self):
        layer = self.layer
        self.gamma_slot = self._vector_slot(
            "gamma", lambda: self.layer.gamma, layer.gamma_initializer
        )
        self.beta_slot = self._vector_slot(
            "beta", lambda: self.layer.beta, layer.beta_initializer
        )
        self.mean_slot = self._vector_slot(
            "moving_mean",
            lambda: self.layer.moving_mean,
            layer.moving_mean_initializer,
            trainable=False,
        )
        self.var_slot = self._vector_slot(
            "moving_variance",
            lambda: self.layer.moving_variance,
            layer.moving_variance_initializer,
            trainable=False,
        )

    def call(self, inputs, widths, training=None, mask=None):
        layer = self.layer
        gamma = beta = None
        if self.gamma_slot is not None:
            gamma = self._active_vector(self.gamma_slot, widths)
        if self.beta_slot is not None:
            beta = self._active_vector(self.beta_slot, widths)
        if training and layer.trainable:
            outputs, mean, variance = batch_statistics_norm(
                inputs,
                -1,
                layer.epsilon,
                gamma,
                beta,
                synchronized=layer.synchronized,
            )
            if self.track_extra_statistics:
                self._update_extra_statistics(mean, variance, widths)
            return ops.cast(outputs, self.compute_dtype)
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        if gamma is not None:
            gamma = ops.cast(gamma, x.dtype)
        if beta is not None:
            beta = ops.cast(beta, x.dtype)
        mean = ops.cast(self._active_vector(self.mean_slot, widths), x.dtype)
        variance = ops.cast(self._active_vector(self.var_slot, widths), x.dtype)
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=-1,
            offset=beta,
            scale=gamma,
            epsilon=layer.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _update_extra_statistics(self, mean, variance, widths):
        m = self.layer.momentum
        start = _tiny(self.in_segments)
        for slot, stat in ((self.mean_slot, mean), (self.var_slot, variance)):
            var = slot.extras[0]
            if var is None:
                continue
            pos = start
            value = var.value
            for seg in self.in_segments:
                if seg.widx is None or not seg.extra:
                    continue
                n = self._n(widths, seg)
                batch = ops.cast(stat[pos : pos + n], value.dtype)
                old = value[seg.offset : seg.offset + n]
                new = old * m + batch * (1.0 - m)
                value = ops.concatenate(
                    [
                        value[: seg.offset],
                        new,
                        value[seg.offset + n :],
                    ],
                    axis=0,
                )
                pos = pos + n
            var.assign(value)


class ElasticConcatenate(keras.layers.Layer):
    """Channel `Concatenate` in tiny-first order: the tiny channels of every
    input, then the extra channels of every input."""

    def __init__(self, tiny_sizes, **kwargs):
        super().__init__(**kwargs)
        self.tiny_sizes = tuple(int(t) for t in tiny_sizes)
        self.built = True

    def call(self, inputs, widths=None):
        heads = [x[..., :t] for x, t in zip(inputs, self.tiny_sizes)]
        tails = [x[..., t:] for x, t in zip(inputs, self.tiny_sizes)]
        return ops.concatenate(heads + tails, axis=-1)


class ElasticReshape(keras.layers.Layer):
    """`Flatten` / `Reshape` of a tensor whose only non-unit axis (besides
    the batch) is the channel axis, with a dynamic channel count."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        self.built = True

    def call(self, inputs, widths=None):
        shape = ops.shape(inputs)
        return ops.reshape(
            inputs, (shape[0],) + self.target_shape + (shape[-1],)
        )
