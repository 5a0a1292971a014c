"""The fake-quant views of a compact model: where TFLite quantizes.

`QuantizationPlan(model)` walks the model's call graph once and decides, for
every node, what the int8 TFLite file will do there:

- a `Conv2D`, `DepthwiseConv2D` or `Dense` followed (as its only consumer)
  by a `BatchNormalization` and then a ReLU / ReLU6 is one fused op: the
  kernel is folded with the BN statistics and fake-quantized per output
  channel, and the activations are quantized once, after the activation
  (never between the conv and its BN);
- a `BatchNormalization` that follows no foldable layer (pre-activation
  blocks) is a per-channel scale and shift, exported as a 1x1 depthwise
  convolution with its activation fused;
- `Add` (with a following ReLU fused), `Concatenate`, global pooling and
  any other computing layer requantize: their outputs are quantized;
- reshapes, max and average pooling, dropout and padding keep the scale of
  their input: nothing is inserted.

`plan.build(context, baked=False)` replays the graph with these rules on the
user's own layers and variables (the training view); `baked=True` gives a
model of constants (the folded, fake-quantized kernels and the trained
ranges) that the TFLite converter turns into int8 ops, as it converts the
fake-quant graphs of quantization-aware training.
"""

import keras
import numpy as np

from keras_compact.graph import kinds
from keras_compact.graph.walk import ModelGraph, as_functional
from keras_compact.quantization import fake_quant, integer
from keras_compact.training import tensorflow_step
from keras_compact.training.untracked import Untracked

# Layers whose int8 TFLite op keeps the input's scale: no quantization point.
PASSTHROUGH = kinds.of(
    "flatten", "reshape", "dropout", "identity", "padding", "pooling"
)

#: Layer kind -> how its kernel is quantized per channel (and absorbs a BN).
FOLDABLE = {"depthwise2d": "depthwise", "conv2d": "conv", "dense": "dense"}

# What `summary()` says about each node kind.
FUSED, BN_ONLY, REQUANT, INPUT = "fused", "batch_norm", "requantize", "input"


def activation_name(fn):
    """`"linear"`, `"relu"`, `"relu6"` for a fusable activation function,
    else None."""
    if fn is None or fn is keras.activations.linear:
        return "linear"
    if fn is keras.activations.relu:
        return "relu"
    if fn is keras.activations.relu6:
        return "relu6"
    return None


def layer_activation(layer):
    """The fusable activation a layer applies on its own (`ReLU`,
    `Activation`), else None."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) or float(layer.threshold):
            return None
        if layer.max_value is None:
            return "relu"
        if float(layer.max_value) == 6.0:
            return "relu6"
        return None
    if isinstance(layer, keras.layers.Activation):
        name = activation_name(layer.activation)
        return None if name == "linear" else name
    return None


def apply_activation(x, name):
    if name == "relu":
        return keras.ops.relu(x)
    if name == "relu6":
        return keras.ops.relu6(x)
    return x


def foldable_kind(layer):
    """`"conv"`, `"depthwise"`, `"dense"` for a layer whose kernel is
    quantized per channel (and can absorb a BN), else None."""
    kind = FOLDABLE.get(kinds.kind_of(layer))
    if kind is None or not kinds.computes_as_keras(layer):
        return None
    if kind == "conv" and (
        getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last"
    ):
        return None
    if kind == "depthwise" and layer.data_format != "channels_last":
        return None
    return kind


def _compute(kind, x, kernel, refs):
    """The layer's linear op with a given kernel (no bias)."""
    if kind == "dense":
        return keras.ops.matmul(x, kernel)
    if kind == "bn":
        return keras.ops.multiply(x, kernel)
    layer = refs.layer
    if kind == "depthwise":
        return keras.ops.depthwise_conv(
            x,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
        )
    return keras.ops.conv(
        x,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
    )


class FusedLayer(keras.layers.Layer):
    """A conv / depthwise / dense layer with its BN folded, fake-quantized.

    Reads the user's variables at every call (nothing is copied). In
    training, before the BN statistics are frozen, the BN is folded with
    the batch statistics and the moving ones are updated (Jacob et al.,
    2018, section 3.2: the kernel folded with the moving variance is
    quantized and the output rescaled by `sigma_moving / sigma_batch`);
    once frozen, and in inference, it is folded with the moving statistics,
    as the converter folds it. Returns the pre-activation output.
    """

    def __init__(
        self,
        context,
        kind,
        layer,
        bn,
        input_key=None,
        output_key=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kind = kind
        # The range of the tensor this layer reads (None: unknown), whose
        # scale sets the int32 grid of the bias.
        self.input_key = input_key
        # The range its output is quantized on (None: not known here).
        self.output_key = output_key
        self.refs = Untracked(context=context, layer=layer, bn=bn)

    def _kernel_bias(self):
        layer, kind = self.refs.layer, self.kind
        if kind == "bn":
            return None, None
        kernel = layer.kernel
        bias = layer.bias if getattr(layer, "use_bias", False) else None
        return kernel, bias

    def folded(self, round_bias=True):
        """`(quantized folded kernel, folded bias)`, moving statistics.

        With `round_bias` the bias lies on the int32 grid the file stores
        it on, as in inference and export; training leaves it exact (the
        rounding moves it by under half an accumulator step, and keeping it
        out of the gradient path keeps training continuous in the ranges).
        """
        kernel, bias = self._kernel_bias()
        bn = self.refs.bn
        if self.kind == "bn":
            kernel, bias = fake_quant.batch_norm_scale(bn)
        elif bn is not None:
            kernel, bias = fake_quant.fold_batch_norm(
                kernel, bias, bn, self.kind
            )
        if round_bias and bias is not None and self.input_key is not None:
            value_range = self.refs.context.range_variable(self.input_key)
            bias = fake_quant.quantize_bias(
                bias,
                fake_quant.activation_scale(value_range),
                fake_quant.weight_scales(kernel, self.kind),
            )
        return fake_quant.quantize_weights(kernel, self.kind), bias

    def _frozen_call(self, x, round_bias=True):
        kernel, bias = self.folded(round_bias)
        y = _compute(self.kind, x, kernel, self.refs)
        return y if bias is None else keras.ops.add(y, bias)

    def _integer_call(self, x):
        """Inference as the int8 kernel computes it (`integer`): exact
        int32 accumulation, fixed-point requantization onto the output
        range."""
        kernel, bias = self.folded()
        context = self.refs.context
        return integer.requantize_linear(
            lambda a, k: _compute(self.kind, a, k, self.refs),
            x,
            kernel,
            bias,
            context.range_variable(self.input_key),
            fake_quant.weight_scales(kernel, self.kind),
            context.range_variable(self.output_key),
            lambda v: fake_quant.per_channel(v, kernel, self.kind),
        )

    def _integer_exact(self, x):
        """Whether inference can follow the int8 kernel: both ranges
        known, and a convolution or dense layer (a lone BN on a 4D tensor
        is a 1x1 depthwise convolution in the file; elsewhere a MUL)."""
        if self.input_key is None or self.output_key is None:
            return False
        if not self.refs.context.technique.integer_inference:
            return False
        return self.kind != "bn" or len(x.shape) == 4

    def _batch_statistics(self, x):
        """`(mean, variance)` of the batch at the BN's input (synchronized
        as the user's BatchNormalization is, and always under a strategy
        of several replicas)."""
        bn = self.refs.bn
        if self.kind == "bn":
            y0 = x
        else:
            kernel, bias = self._kernel_bias()
            y0 = _compute(self.kind, x, kernel, self.refs)
            if bias is not None:
                y0 = keras.ops.add(y0, bias)
        axes = list(range(len(y0.shape) - 1))
        mean, var = keras.ops.moments(
            y0,
            axes=axes,
            synchronized=bn.synchronized or tensorflow_step.synchronized(),
        )
        return mean, var

    def _batch_call(self, x, statistics=None):
        bn = self.refs.bn
        if self.kind == "bn" and statistics is None:
            return bn(x, training=True)
        mean, var = statistics or self._batch_statistics(x)
        m = bn.momentum
        bn.moving_mean.assign(bn.moving_mean * m + mean * (1.0 - m))
        bn.moving_variance.assign(bn.moving_variance * m + var * (1.0 - m))
        batch_scale, batch_shift = fake_quant.batch_norm_scale(bn, mean, var)
        if self.kind == "bn":
            return keras.ops.add(
                keras.ops.multiply(x, batch_scale), batch_shift
            )
        kernel, bias = self._kernel_bias()
        moving_scale, _ = fake_quant.batch_norm_scale(bn)
        folded = keras.ops.multiply(
            kernel, fake_quant.per_channel(moving_scale, kernel, self.kind)
        )
        folded = fake_quant.quantize_weights(folded, self.kind)
        y = _compute(self.kind, x, folded, self.refs)
        y = keras.ops.multiply(y, batch_scale / moving_scale)
        if bias is not None:
            batch_shift = batch_shift + bias * batch_scale
        return keras.ops.add(y, batch_shift)

    def call(self, x, training=None):
        if training and self.refs.bn is not None:
            frozen = self.refs.context.bn_frozen()
            statistics = None
            if tensorflow_step.synchronized():
                # A cross-replica reduction cannot run inside a branch of
                # the cond: the batch statistics are taken before it.
                statistics = self._batch_statistics(x)
            return keras.ops.cond(
                frozen,
                lambda: self._frozen_call(x, round_bias=False),
                lambda: self._batch_call(x, statistics),
            )
        if not training and self._integer_exact(x):
            return self._integer_call(x)
        return self._frozen_call(x, round_bias=not training)

    def baked(self):
        """A constant copy: the current folded, quantized kernel and bias."""
        kernel, bias = self.folded()
        return BakedLayer(
            self.kind,
            keras.ops.convert_to_numpy(kernel),
            None if bias is None else keras.ops.convert_to_numpy(bias),
            self.refs.layer,
            as_conv=self.refs.context.technique.dense_as_conv,
            name=self.name,
        )


class BakedLayer(keras.layers.Layer):
    """The frozen form of a `FusedLayer`: constants only (for export)."""

    def __init__(self, kind, kernel, bias, layer, as_conv=False, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.as_conv = as_conv
        self.kernel_value = np.asarray(kernel, np.float32)
        self.bias_value = None if bias is None else np.asarray(bias, np.float32)
        self.refs = Untracked(layer=layer)

    def call(self, x):
        kernel = keras.ops.convert_to_tensor(self.kernel_value)
        if self.kind == "bn":
            # A per-channel scale: a 1x1 depthwise convolution in TFLite.
            if len(x.shape) != 4:
                y = keras.ops.multiply(x, kernel)
            else:
                k = keras.ops.reshape(kernel, (1, 1, -1, 1))
                y = keras.ops.depthwise_conv(x, k, strides=1, padding="valid")
        elif self.kind == "dense" and len(x.shape) == 2 and self.as_conv:
            # A 1x1 CONV_2D between RESHAPEs instead of FULLY_CONNECTED.
            k = keras.ops.reshape(kernel, (1, 1) + tuple(kernel.shape))
            y = keras.ops.reshape(x, (-1, 1, 1, x.shape[-1]))
            y = keras.ops.reshape(keras.ops.conv(y, k), (-1, kernel.shape[-1]))
        else:
            y = _compute(self.kind, x, kernel, self.refs)
        if self.bias_value is not None:
            y = keras.ops.add(y, keras.ops.convert_to_tensor(self.bias_value))
        return y


class ActivationQuantizer(keras.layers.Layer):
    """Applies a fused activation, then fake-quantizes per tensor on a
    moving-average range (a non-trainable weight of the technique, updated
    in training)."""

    def __init__(self, context, key, activation="linear", **kwargs):
        super().__init__(**kwargs)
        self.key = key
        self.activation = activation
        self.refs = Untracked(context=context)

    def call(self, x, training=None):
        x = apply_activation(x, self.activation)
        context = self.refs.context
        variable = context.range_variable(self.key)
        if training:
            value = context.update_range(variable, x)
        else:
            value = variable
            if self.key == "input" and context.technique.integer_inference:
                # The file's QUANTIZE rounds x / scale, ties away.
                return integer.quantize_input(x, value)
        return fake_quant.quantize_activations(x, value)

    def baked(self):
        variable = self.refs.context.range_variable(self.key)
        return BakedQuantizer(
            keras.ops.convert_to_numpy(variable),
            self.activation,
            name=self.name,
        )


class BakedQuantizer(keras.layers.Layer):
    """The frozen form of an `ActivationQuantizer` (a constant range)."""

    def __init__(self, value_range, activation="linear", **kwargs):
        super().__init__(**kwargs)
        self.value_range = np.asarray(value_range, np.float32)
        self.activation = activation

    def call(self, x):
        x = apply_activation(x, self.activation)
        value = keras.ops.convert_to_tensor(self.value_range)
        return fake_quant.quantize_activations(x, value)


def integer_mean(op, keys):
    """Whether `op` is a global average pooling the file computes with
    its int8 `MEAN` kernel (4D, channels last, no kept dims) on a known
    input range."""
    return (
        isinstance(op, keras.layers.GlobalAveragePooling2D)
        and not op.keepdims
        and op.data_format == "channels_last"
        and len(keys) == 1
        and keys[0] is not None
    )


def integer_add(op, keys):
    """Whether `op` is an `Add` of two tensors on known ranges (the file's
    int8 `ADD`)."""
    return (
        isinstance(op, keras.layers.Add) and len(keys) == 2 and None not in keys
    )


def _integer_mean(inputs, ranges, out_range):
    return integer.requantize_mean(inputs, ranges[0], out_range)


def _integer_add(inputs, ranges, out_range):
    return integer.requantize_add(*inputs, *ranges, out_range)


class IntegerOp(keras.layers.Layer):
    """A requantizing layer (global average pooling, `Add`) that, in
    inference, computes its int8 kernel's result on the output range with
    `kernel(inputs, input ranges, output range)` (`integer.requantize_*`);
    in training, the user's layer."""

    def __init__(self, context, layer, kernel, input_keys, output_key, **kw):
        super().__init__(**kw)
        self.kernel = kernel
        self.input_keys = list(input_keys)
        self.output_key = output_key
        self.refs = Untracked(context=context, layer=layer)

    def call(self, inputs, training=None):
        context = self.refs.context
        if training or not context.technique.integer_inference:
            return self.refs.layer(inputs)
        return self.kernel(
            inputs,
            [context.range_variable(k) for k in self.input_keys],
            context.range_variable(self.output_key),
        )


def _identity(*args, **kwargs):
    return args[0]


class QuantizationPlan:
    """Where the int8 file quantizes, for one functional model.

    Args:
        model: a built functional or Sequential `keras.Model`.

    Attributes:
        keys: names of the activation ranges, in graph order (`"input"`
            first).
        entries: one dict per quantization point or fused op, for
            `summary()`.
        tensors: `{key: tensor}`, the float model's tensor each range
            quantizes (the input, each fused op's activation output, each
            requantizing op's output).
        skipped: `(layer name, reason)` of layers left to the converter.
    """

    def __init__(self, model):
        self.model = as_functional(model)
        self.graph = ModelGraph(self.model)
        outputs = {id(t) for t in self.graph.outputs}
        calls = {}
        for node in self.graph.nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        self.actions = {}
        self.keys = ["input"]
        # The float model's tensor each range quantizes (`calibrate`).
        self.tensors = {"input": self.graph.inputs[0]}
        self.entries = [{"kind": INPUT, "layers": ["input"], "range": "input"}]
        self.skipped = []
        used = set()

        def only_child(node):
            if len(node.children) != 1 or any(
                id(t) in outputs for t in node.outputs
            ):
                return None
            child = node.children[0]
            if calls[id(child.operation)] != 1 or len(child.inputs) != 1:
                return None
            return child

        def fuse_activation(node):
            child = only_child(node)
            if child is not None and id(child) not in used:
                act = layer_activation(child.operation)
                if act is not None:
                    used.add(id(child))
                    self.actions[id(child)] = ("identity",)
                    return act, child
            return "linear", node

        def new_key(name):
            key, i = name, 1
            while key in self.keys:
                i += 1
                key = f"{name}_{i}"
            self.keys.append(key)
            return key

        for node in self.graph.nodes:
            op = node.operation
            if node.is_input or id(node) in used:
                continue
            single = calls[id(op)] == 1
            kind = foldable_kind(op)
            if isinstance(op, keras.layers.BatchNormalization):
                if op.axis not in (-1, len(node.inputs[0].shape) - 1) or (
                    len(node.inputs[0].shape) != 4 or not single
                ):
                    self._requant(node, new_key, "linear")
                    continue
                act, last = fuse_activation(node)
                key = new_key(last.name)
                self.tensors[key] = last.outputs[0]
                self.actions[id(node)] = (
                    "fused", "bn", None, op, act, op.name, key
                )  # fmt: skip
                self.entries.append(
                    {
                        "kind": BN_ONLY,
                        "layers": [op.name] + ([last.name] * (last != node)),
                        "range": key,
                    }
                )
                continue
            if kind is not None and single:
                own = activation_name(op.activation)
                if own is None:
                    self.skipped.append(
                        (op.name, "its activation cannot be fused")
                    )
                    self._requant(node, new_key, "linear")
                    continue
                bn = None
                names = [op.name]
                last = node
                child = only_child(node) if own == "linear" else None
                if child is not None and isinstance(
                    child.operation, keras.layers.BatchNormalization
                ):
                    bn_op = child.operation
                    if bn_op.axis in (-1, len(child.inputs[0].shape) - 1):
                        bn = bn_op
                        used.add(id(child))
                        self.actions[id(child)] = ("identity",)
                        names.append(bn_op.name)
                        last = child
                act = own
                if own == "linear":
                    act, tail = fuse_activation(last)
                    if tail is not last:
                        names.append(tail.name)
                        last = tail
                key = new_key(last.name)
                self.tensors[key] = last.outputs[0]
                # The fused layer computes the BN's output (the conv's
                # without a BN) before the activation: it takes that
                # layer's name, so a tap declared on it reads the same
                # value in the fake-quant graph (`Trainer` maps by name).
                tap = bn.name if bn else (op.name if own == "linear" else None)
                self.actions[id(node)] = ("fused", kind, op, bn, act, tap, key)
                self.entries.append(
                    {"kind": FUSED, "layers": names, "range": key}
                )
                continue
            if isinstance(op, PASSTHROUGH):
                continue
            act = "linear"
            tail = node
            if isinstance(op, keras.layers.Add):
                act, tail = fuse_activation(node)
            if len(node.outputs) != 1:
                self.skipped.append((op.name, "several outputs"))
                continue
            self._requant(node, new_key, act, tail)

    def input_key(self, node):
        """The range key of the tensor a node reads: that of the
        quantization point that produced it, through fused tails and
        pass-through ops; None when it is not quantized."""
        return self.tensor_key(node.inputs[0])

    def tensor_key(self, tensor):
        """The range key of a tensor (see `input_key`)."""
        while True:
            if any(tensor is t for t in self.graph.inputs[:1]):
                return "input"
            try:
                producer = self.graph.producer(tensor)
            except ValueError:
                return None
            action = self.actions.get(id(producer))
            if action is not None and action[0] != "identity":
                return action[-1]
            passthrough = isinstance(producer.operation, PASSTHROUGH)
            if (action is None and not passthrough) or not producer.inputs:
                return None
            tensor = producer.inputs[0]

    def _requant(self, node, new_key, act, tail=None):
        tail = tail or node
        key = new_key(tail.name)
        self.tensors[key] = tail.outputs[0]
        self.actions[id(node)] = ("requant", act, key)
        names = [node.name] + ([tail.name] * (tail is not node))
        self.entries.append({"kind": REQUANT, "layers": names, "range": key})

    def build(self, context, baked=False, name=None):
        """Replays the model with fake quantization.

        Args:
            context: the technique's `QuantizationContext` (ranges, BN
                freezing).
            baked: False for the training view (the user's variables, read
                at every call); True for a model of constants (export).
            name: the new model's name.

        Returns:
            A functional `keras.Model` with the model's inputs and outputs.
        """

        def quantizer(key, act):
            q = ActivationQuantizer(context, key, act, name=f"fq_{key}")
            return q.baked() if baked else q

        def layer_fn(node):
            action = self.actions.get(id(node))
            if action is None:
                return None
            if action[0] == "identity":
                return _identity
            if action[0] == "fused":
                _, kind, op, bn, act, tap, key = action
                fused = FusedLayer(
                    context,
                    kind,
                    op,
                    bn,
                    input_key=self.input_key(node),
                    output_key=key,
                    name=tap or f"fused_{key}",
                )
                fused = fused.baked() if baked else fused
                q = quantizer(key, act)
                return lambda x, *a, **k: q(fused(x))
            _, act, key = action
            q = quantizer(key, act)
            op = node.operation
            keys = [self.tensor_key(t) for t in node.inputs]
            kernel = None
            if integer_mean(op, keys):
                kernel = _integer_mean
            elif integer_add(op, keys):
                kernel = _integer_add
            if kernel is not None and not baked:
                op = IntegerOp(context, op, kernel, keys, key, name=op.name)
            return lambda *a, **k: q(op(*a, **k))

        inputs = [
            keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name)
            for t in self.graph.inputs
        ]
        first = quantizer("input", "linear")
        mapping = self.graph.rebuild(
            inputs=[first(inputs[0])] + inputs[1:], layer_fn=layer_fn
        )
        outputs = [mapping[id(t)] for t in self.graph.outputs]
        structure = self.model.output
        if len(outputs) == 1 and not isinstance(structure, dict):
            outputs = outputs[0]
        else:
            # Several outputs keep the model's structure (a dict's keys),
            # so that losses and metrics given per output still match.
            outputs = keras.tree.pack_sequence_as(structure, outputs)
        return keras.Model(
            inputs if len(inputs) > 1 else inputs[0],
            outputs,
            name=name or f"{self.model.name}_fake_quant",
        )
