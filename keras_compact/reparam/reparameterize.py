"""`Reparameterize`: structural re-parameterisation as a `Technique`."""

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.graph import kinds
from keras_compact.graph.walk import ModelGraph, check_layer_names
from keras_compact.reparam.branches import Geometry, ReparamBranches
from keras_compact.training import arguments as args
from keras_compact.training.report import TechniqueReport
from keras_compact.training.technique import Technique
from keras_compact.training.untracked import Untracked

FAMILIES = ("repvgg", "acnet", "expandnets", "dbb")
# Layer kinds whose kernel the branches are fused into.
_GEOMETRY_KINDS = {
    "conv2d": "conv",
    "depthwise2d": "depthwise",
    "dense": "dense",
}
# The zoo's normalization when no user BN gives the branch BNs theirs.
_DEFAULT_NORM = {"momentum": 0.9, "epsilon": 1e-5}


@keras_compact_export
class Reparameterize(Technique):
    """Trains with linear branches that fold exactly into the user's layers.

    Structural re-parameterisation: during training each selected conv (or
    dense) layer of the compact model computes
    `activation(conv(x) + bias + sum(branches(x)))`, where `conv` is the
    user's own layer and kernel (the main branch) and every branch is
    linear up to its own batch normalization. Whatever follows the layer
    (the user's BatchNormalization, an activation, an Add) sees the sum.
    `strip()` folds every branch, its normalization taken with its moving
    statistics, into the user's own kernel and bias and returns the user's
    model object with its own architecture: same layers, same configs, same
    parameter count, and the same inference outputs as the training view
    (to float32 rounding, about 1e-6).

    Families (`family=`):

    - `"repvgg"` (Ding et al. 2021): a 1x1 branch and, where the shapes
      allow (stride 1, 'same' padding, as many outputs as inputs, and for
      depthwise layers multiplier 1), the identity branch, each with its own
      BatchNormalization. For kxk kernels with k > 1.
    - `"acnet"` (Ding et al. 2019): asymmetric 1xk and kx1 branches with
      their own BatchNormalization, folded into the centre row and column.
      For kernels with both sides > 1.
    - `"expandnets"` (Guo et al. 2020): a linear chain
      `1x1 (m -> r*m) -> kxk (r*m -> r*n) -> 1x1 (r*n -> n)` per group,
      no non-linearity and no bias (so padding the chain's input pads the
      expanded features with zeros and the fold is exact), folded as the
      product of its kernels; 1x1 convs only with `include_pointwise`.
      Dense layers get the matrix chain `m -> h -> h -> n` with
      `h = r * min(m, n)` ([design]: bounded for wide features feeding few
      classes). The chain is applied as the product of its kernels,
      built in the graph at every step: the same function and the same
      gradient for every factor as running the three layers, for the
      cost of one convolution. [design] The user's kernel stays in parallel
      with the chain (the paper replaces the layer by the chain), so the
      user's variables remain the main branch and training starts from the
      user's initial function plus the chain.
    - `"dbb"` (Ding et al. 2021, Diverse Branch Block): a 1x1 branch,
      a `1x1 -> BN -> kxk` branch (internal width: the input's, its 1x1
      initialised to the identity; twice the input's for depthwise-like
      layers) and a `1x1 -> BN -> average pooling` branch (average pooling
      alone for depthwise layers with multiplier 1, which get no 1x1
      branch), each ending in its own BN. As in DBB's released code the
      inner BN's output is padded with that BN's own zero-input value
      (`beta - mean * gamma / sqrt(var + eps)`, moving statistics, no
      gradient), which makes the fold exact at the borders. For kxk
      kernels with k > 1.

    Branch offsets: a branch smaller than the kernel is placed at the
    kernel's centre tap (`(k - 1) // 2` along each axis, the tap that
    reads the output's own position for stride 1). Each branch is computed
    on the input padded exactly as TensorFlow pads it for the user's layer
    ('same' padding is asymmetric for even kernels and for strides > 1)
    and cut at the branch's offset, so the fold is exact for every stride,
    kernel size, padding and group count.

    Constants: branch normalizations add a per-channel constant. It folds
    into the user's bias; if the layer has no bias and a
    BatchNormalization follows it, into that BatchNormalization's moving
    mean; if neither, the branches get no normalization and no bias (the
    identity branch then has a learnable per-channel scale), so they never
    add a constant.

    Eligible layers: `Conv2D` (groups included), `DepthwiseConv2D` and, for
    ExpandNets, `Dense`, of a functional or Sequential model, channels-last,
    dilation 1, called once, not quantized and without LoRA. Everything
    else is listed in `summary()` with its reason.

    Evaluation: the compact model holds the folded weights outside of
    training. `fit` unfolds them when it starts, folds them for each
    validation pass (so validation metrics measure the model that ships)
    and when it ends, so `trainer.evaluate`, `trainer.predict` and the
    user's model after `fit` all compute the trained function. The
    originals are kept in non-trainable weights of this technique, saved
    in `.keras` files, so a reloaded trainer resumes training correctly.
    Do not edit the compact model's weights between two `fit` calls. If
    `fit` stops with an error (e.g. `NonFiniteTrainingError`), the weights
    stay unfolded (Keras calls no callback then): call `fold()` or
    `trainer.strip()` before evaluating. `Trainer.strip()` always folds.

    Composition: `Distillation` and `AuxiliaryModule` work (the auxiliary
    taps are read, by layer name, from the branch graph in the same
    forward pass; tapping a replaced convolution itself is refused at
    `Trainer` construction); `SparseTraining` masks the user's main kernels, and
    because sparsity of the branches does not survive folding, list it
    BEFORE this technique (`[SparseTraining(...), Reparameterize(...)]`):
    `Trainer.strip` then folds first and SparseTraining re-applies its
    masks to the folded kernels (exactly sparse, but the pruned taps lose
    their branch contributions: fine-tune, or better, train with
    `Reparameterize`, strip, then run `SparseTraining` on the folded
    model). For quantization-aware training, strip (fold) first and
    quantize the folded model. `NetAug` is refused: its augmented
    super-network shares the user's layers but not the branches.

    Args:
        family: `"repvgg"`, `"acnet"`, `"expandnets"` or `"dbb"`.
            Defaults to `"repvgg"`.
        expansion: ExpandNets' expansion rate `r`, an int >= 1. Defaults
            to 4 (the paper's).
        layers: which layers get branches: `None` (every eligible layer),
            a list of layer names, or a predicate
            `callable(layer) -> bool`. Named layers that are not eligible
            are skipped with a reason.
        include_dense: whether ExpandNets also expands `Dense` layers.
            Defaults to True.
        include_pointwise: whether ExpandNets also expands 1x1 convs
            (the paper expands kxk convs with k > 1 and FC layers; a
            pointwise expansion of a wide layer costs `r**2` times its
            parameters while training). Defaults to False.
        identity: whether RepVGG adds the identity branch where the shapes
            allow. Defaults to True.
        seed: int seed of the branch kernels' initializers, or None.
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an unknown family, an out-of-range value, unknown
            layer names, a model without any eligible layer, or when
            combined with `NetAug`.

    Example:

    ```python
    model = keras_compact.models.get_model("resnet8")
    rep = keras_compact.Reparameterize("repvgg")
    trainer = keras_compact.Trainer(model, techniques=[rep])
    trainer.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer.fit(train_ds, epochs=5)
    rep.summary()
    compact = trainer.strip()  # `model` itself, branches folded in
    ```

    Reference:
        Ding, Zhang, Ma, Han, Ding, Sun. "RepVGG: Making VGG-style ConvNets
        Great Again", CVPR 2021.
        Ding, Guo, Ding, Han. "ACNet: Strengthening the Kernel Skeletons
        for Powerful CNN via Asymmetric Convolution Blocks", ICCV 2019.
        Guo, Alvarez, Salzmann. "ExpandNets: Linear Over-parameterization
        to Train Compact Convolutional Networks", NeurIPS 2020.
        Ding, Zhang, Han, Ding. "Diverse Branch Block: Building a
        Convolution as an Inception-like Unit", CVPR 2021.
    """

    def __init__(
        self,
        family="repvgg",
        expansion=4,
        layers=None,
        include_dense=True,
        include_pointwise=False,
        identity=True,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "reparameterize")
        super().__init__(**kwargs)
        args.check_choice(family, FAMILIES, "family")
        args.check_int(expansion, "expansion", minimum=1)
        if layers is not None and not callable(layers):
            layers = args.check_names(layers, "layers", allow_empty=False)
        args.check_bool(include_dense, "include_dense")
        args.check_bool(include_pointwise, "include_pointwise")
        args.check_bool(identity, "identity")
        args.check_seed(seed)
        self.family = family
        self.expansion = int(expansion)
        self.layers_arg = layers
        self.include_dense = include_dense
        self.include_pointwise = include_pointwise
        self.identity = identity
        self.seed = None if seed is None else int(seed)
        # The training view shares the user's layers (saved with the user's
        # model): Keras must not track it.
        self._private = Untracked(view=None, graph=None)
        self._attached = False
        self._applied = []
        self._skipped = []

    # ------------------------------------------------------------------
    # Technique hooks
    # ------------------------------------------------------------------
    def attach(self, trainer):
        if self._attached:
            raise ValueError(
                f"Technique {self.name!r} is already attached to a trainer; "
                "create one Reparameterize per trainer."
            )
        for t in trainer.techniques:
            if type(t).__name__ == "NetAug":
                raise ValueError(
                    "Reparameterize cannot be combined with NetAug: NetAug's "
                    "augmented super-network shares the user's layers but "
                    "not the training branches, so the two would train "
                    "different functions. Train with one, then fine-tune "
                    "with the other. Received: techniques="
                    f"{[x.name for x in trainer.techniques]}"
                )
        model = trainer.compact_model
        if not model.built:
            raise ValueError(
                "The model must be built before re-parameterisation (give it "
                f"an Input). Received: model={model.name!r} (not built)"
            )
        graph = ModelGraph(model)  # TypeError for a subclassed model
        self._private.graph = graph
        known = {layer.name for layer in graph.layers}
        if isinstance(self.layers_arg, list):
            check_layer_names(
                "layers",
                self.layers_arg,
                known,
                f"layers of model {model.name!r}",
            )
        calls = {}
        for node in graph.nodes:
            if not node.is_input:
                calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        blocks, by_layer, seen = [], {}, set()
        for node in graph.nodes:
            layer = node.operation
            if node.is_input or id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                self._skip(layer, "nested model: its layers are not walked")
                continue
            if not isinstance(layer, kinds.KERNEL):
                continue
            if not self._selected(layer):
                continue
            reason = None
            if calls[id(layer)] != 1:
                reason = f"called {calls[id(layer)]} times (shared layer)"
            geometry = None
            if reason is None:
                geometry, reason = self._geometry(layer, node)
            if reason is None:
                reason = self._family_reason(geometry)
            if reason is not None:
                self._skip(layer, reason)
                continue
            shift, bn = self._constant_target(graph, node, layer)
            norm = _DEFAULT_NORM
            if bn is not None:
                norm = {"momentum": bn.momentum, "epsilon": bn.epsilon}
            seed = None if self.seed is None else self.seed + len(blocks)
            block = ReparamBranches(
                layer,
                geometry,
                self.family,
                expansion=self.expansion,
                identity=self.identity,
                constant=shift is not None,
                norm_kwargs=norm,
                seed=seed,
                name=f"{self.name}_{layer.name}",
            )
            block._ref.shift = shift
            block._ref.bn = bn
            blocks.append(block)
            by_layer[id(layer)] = block
            self._applied.append(
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
                f"family={self.family!r} with layers={self.layers_arg!r}. "
                f"Skipped: {[(s['layer'], s['reason']) for s in self._skipped]}"
            )
        self.blocks = blocks
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
        self._private.view = keras.Model(
            inputs, outputs, name=f"{model.name}_reparam"
        )
        self.folded_state = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="folded",
        )
        self._attached = True

    def validate(self, trainer):
        # Training continues from the unfolded weights.
        self.unfold()

    def callbacks(self, trainer):
        return [_FoldForEvaluation(self)]

    def training_graph(self, trainer, model):
        # The branch view: each selected layer replaced by its branches.
        return self._private.view

    def strip(self, trainer, model):
        self.fold()
        return model

    # ------------------------------------------------------------------
    # Selection
    # ------------------------------------------------------------------
    def _selected(self, layer):
        if self.layers_arg is None:
            return True
        if callable(self.layers_arg):
            return bool(self.layers_arg(layer))
        return layer.name in self.layers_arg

    def _skip(self, layer, reason):
        self._skipped.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "reason": reason,
            }
        )

    def _geometry(self, layer, node):
        """`(Geometry, None)` or `(None, reason)`."""
        kind = _GEOMETRY_KINDS.get(kinds.kind_of(layer))
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

    def _family_reason(self, g):
        if g.kind == "dense":
            if self.family != "expandnets":
                return f"family {self.family!r} has no dense form"
            if not self.include_dense:
                return "include_dense=False"
            return None
        kh, kw = g.kernel_size
        if self.family in ("repvgg", "dbb") and (kh, kw) == (1, 1):
            return f"1x1 kernel: {self.family}'s branches would add nothing"
        if (
            self.family == "expandnets"
            and (kh, kw) == (1, 1)
            and not self.include_pointwise
        ):
            return "1x1 kernel (include_pointwise=False)"
        if self.family == "acnet" and (kh == 1 or kw == 1):
            return f"{kh}x{kw} kernel: ACNet needs both sides > 1"
        return None

    @staticmethod
    def _constant_target(graph, node, layer):
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

    # ------------------------------------------------------------------
    # Folding
    # ------------------------------------------------------------------
    @property
    def is_folded(self):
        """Whether the user's weights currently hold the folded values."""
        self._require_attached("is_folded")
        return bool(keras.ops.convert_to_numpy(self.folded_state))

    def fold(self):
        """Writes the folded kernels (and constants) into the user's layers.

        The user's current main-branch values are kept in this technique's
        non-trainable weights for `unfold()`. Does nothing when already
        folded. Eager only (not inside a compiled function).
        """
        if self.is_folded:
            return
        for block in self.blocks:
            layer, shift = block.layer, block._ref.shift
            kernel, constant = block.folded()
            block.backup_kernel.assign(layer.kernel)
            layer.kernel.assign(kernel.astype(layer.kernel.dtype))
            if shift == "bias":
                block.backup_shift.assign(layer.bias)
                bias = keras.ops.convert_to_numpy(layer.bias) + constant
                layer.bias.assign(bias.astype(layer.bias.dtype))
            elif shift == "batch_norm":
                mean = block._ref.bn.moving_mean
                block.backup_shift.assign(mean)
                value = keras.ops.convert_to_numpy(mean) - constant
                mean.assign(value.astype(mean.dtype))
        self.folded_state.assign(1)

    def unfold(self):
        """Restores the main-branch values saved by `fold()` (training
        continues from them). Does nothing when not folded."""
        if not self.is_folded:
            return
        for block in self.blocks:
            layer, shift = block.layer, block._ref.shift
            layer.kernel.assign(block.backup_kernel)
            if shift == "bias":
                layer.bias.assign(block.backup_shift)
            elif shift == "batch_norm":
                block._ref.bn.moving_mean.assign(block.backup_shift)
        self.folded_state.assign(0)

    @property
    def training_model(self):
        """The training view: the user's graph with the branches, sharing
        the user's layers. Its outputs are the trained function only while
        the weights are unfolded (`is_folded` False)."""
        self._require_attached("training_model")
        return self._private.view

    def _require_attached(self, what):
        if not self._attached:
            raise ValueError(
                f"`{what}` needs the technique attached to a Trainer: pass "
                "it to `keras_compact.Trainer(model, techniques=[...])`."
            )

    # ------------------------------------------------------------------
    # Report
    # ------------------------------------------------------------------
    def _report(self):
        """What was re-parameterised (applied: one row per layer with its
        type, branches, where the constant folds (`"bias"`,
        `"batch_norm"` or `"none"`) and its extra training-only
        parameters) and what was skipped (with the reason); totals:
        `extra_params`."""
        self._require_attached("summary()")
        report = TechniqueReport(type(self).__name__, self.family)
        for a in self._applied:
            report.add(
                a["layer"],
                "applied",
                " + ".join(["main"] + a["branches"]),
                **{k: v for k, v in a.items() if k != "layer"},
            )
        for s in self._skipped:
            report.add(s["layer"], "skipped", f"{s['type']}: {s['reason']}")
        report.totals["extra_params"] = sum(
            a["extra_params"] for a in self._applied
        )
        return report

    # ------------------------------------------------------------------
    # Serialization
    # ------------------------------------------------------------------
    def get_config(self):
        layers = self.layers_arg
        if self._attached:
            layers = [a["layer"] for a in self._applied]
        elif callable(layers):
            raise ValueError(
                "A callable `layers` can be serialized only once the "
                "technique is attached to a Trainer (it is then saved as the "
                f"list of names it selected). Received: layers={layers!r}"
            )
        return {
            **super().get_config(),
            "family": self.family,
            "expansion": self.expansion,
            "layers": layers,
            "include_dense": self.include_dense,
            "include_pointwise": self.include_pointwise,
            "identity": self.identity,
            "seed": self.seed,
        }


class _FoldForEvaluation(keras.callbacks.Callback):
    """Folds the branches for every validation pass of `fit` and at its
    end, so that what is evaluated is the model that ships."""

    def __init__(self, technique):
        super().__init__()
        self.technique = technique
        self._in_fit = False

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self.technique.unfold()

    def on_test_begin(self, logs=None):
        self.technique.fold()

    def on_test_end(self, logs=None):
        if self._in_fit:
            self.technique.unfold()

    def on_train_end(self, logs=None):
        self._in_fit = False
        self.technique.fold()
