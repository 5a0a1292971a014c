"""`Reparameterize`: structural re-parameterisation as a `Technique`."""

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.graph.walk import ModelGraph, require_call_graph
from keras_compact.reparam import selection, weights
from keras_compact.reparam.callbacks import FoldForEvaluation
from keras_compact.reparam.report import reparam_report
from keras_compact.training import arguments as args
from keras_compact.training.technique import Technique
from keras_compact.training.untracked import Untracked

FAMILIES = ("repvgg", "acnet", "expandnets", "dbb")


@keras_compact_export
class Reparameterize(Technique):
    """Trains with linear branches that fold exactly into the user's layers.

    Structural re-parameterisation: while training, each selected conv (or
    dense) layer computes `activation(conv(x) + bias + sum(branches(x)))`:
    `conv` is the user's own layer and kernel (the main branch), every
    branch is linear up to its own batch normalization. `strip()` folds the
    branches (BNs with their moving statistics) into the user's kernel and
    bias and returns the user's model object: same layers, configs and
    parameter count, the training view's inference outputs.

    Families (`family=`; details in `keras_compact.reparam.branches`):

    - `"repvgg"` (Ding et al. 2021): a 1x1 branch and, where the shapes
      allow, the identity branch, each with its own BN (kxk, k > 1).
    - `"acnet"` (Ding et al. 2019): 1xk and kx1 branches with their own BN
      (both kernel sides > 1).
    - `"expandnets"` (Guo et al. 2020): a bias-free linear chain
      `1x1 (m -> r*m) -> kxk (r*m -> r*n) -> 1x1 (r*n -> n)` applied as the
      product of its kernels; `Dense`: `m -> h -> h -> n`,
      `h = r * min(m, n)`, first two factors orthogonal and the last zero
      at the start. [design] The user's kernel stays in parallel.
    - `"dbb"` (Ding et al. 2021): 1x1, `1x1 -> BN -> kxk` and
      `1x1 -> BN -> average pooling` branches, each ending in a BN.

    The fold is exact for every stride, kernel size, padding and group
    count. The branches' constant folds into the user's bias, else into a
    following BatchNormalization, else the branches get no BN and no bias.
    Eligible: `Conv2D`, `DepthwiseConv2D` and (ExpandNets) `Dense` layers
    of a functional or Sequential model, channels-last, dilation 1, called
    once, not quantized, without LoRA; `summary()` lists the others with
    the reason. Multi-output models work: every output is computed through
    the branches, and folding keeps each of them.

    Evaluation: outside of training the compact model holds the folded
    weights. `fit` unfolds them when it starts, folds them for each
    validation pass and at its end (trained values are kept in saved,
    non-trainable weights). If `fit` raises, the weights stay unfolded:
    call `fold()` or `trainer.strip()`.

    Composition: `Distillation` and `AuxiliaryModule` work (taps are read
    from the branch graph). List `SparseTraining` BEFORE this technique
    (`strip` folds, then re-applies the masks). For QAT, strip first and
    quantize the folded model. `NetAug` is refused.

    Args:
        family: `"repvgg"`, `"acnet"`, `"expandnets"` or `"dbb"`.
            Defaults to `"repvgg"`.
        expansion: ExpandNets' expansion rate `r`, an int >= 1. Defaults
            to 4 (the paper's).
        layers: which layers get branches: `None` (every eligible layer),
            a list of layer names, or a predicate `callable(layer) -> bool`.
            Named layers that are not eligible are skipped with a reason.
        include_dense: whether ExpandNets expands `Dense` layers. Defaults
            to True.
        include_pointwise: whether ExpandNets expands 1x1 convs (costs
            `r**2` times their parameters while training). Defaults to
            False.
        identity: whether RepVGG adds the identity branch where the shapes
            allow. Defaults to True.
        main_norm: whether the main branch (the user's kernel) gets its own
            training-time BN, folded like the branches' (RepVGG, ACNet and
            DBB, as in their papers, where every branch ends in a BN: without
            it the unit-variance branches drown the main kernel at
            initialisation). Defaults to True.
        seed: int seed of the branch kernels' initializers, or None.
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: for an argument of the wrong type, or (at `Trainer`
            construction) a subclassed model.
        ValueError: for an unknown family, an out-of-range value, unknown
            layer names, a model without any eligible layer, or when
            combined with `NetAug`.

    Example:

    ```python
    model = keras_compact.models.get_model("resnet8")
    rep = keras_compact.Reparameterize("repvgg")
    trainer = keras_compact.Trainer(model, techniques=[rep])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer.compile(optimizer="adam", loss=loss)
    trainer.fit(train_ds, epochs=5)
    rep.summary()
    compact = trainer.strip()  # `model` itself, branches folded in
    ```

    Measured: `benchmarks/results/reparam_cifar10_resnet8.md` (real
    CIFAR-10, 2 seeds). ExpandNets' `Dense` chain adds to logits that no
    normalization follows: it starts with its last factor at zero (no
    change to the logits) and its first two orthogonal, so that a step on
    the chain moves the classifier as much as a step on the plain layer in
    the chain's subspace. With glorot factors the chain on MobileNetV2's
    1,280-feature classifier stopped on a non-finite loss within 14 steps
    at lr 0.1 (and at step 21 of the scoreboard's recipe at lr 0.05, with
    distillation); orthogonal, it trains there, and stops at lr 0.2, where
    plain training and the chain without the Dense layer
    (`include_dense=False`, the paper's setting for MobileNetV2) still
    train (`reparam_dense_init.md`). At high learning rates on a wide
    classifier input, pass `include_dense=False`.

    Reference:
        Ding et al. "RepVGG: Making VGG-style ConvNets Great Again", CVPR
        2021. Ding et al. "ACNet: Strengthening the Kernel Skeletons for
        Powerful CNN via Asymmetric Convolution Blocks", ICCV 2019. Guo et
        al. "ExpandNets: Linear Over-parameterization to Train Compact
        Convolutional Networks", NeurIPS 2020. Ding et al. "Diverse Branch
        Block: Building a Convolution as an Inception-like Unit", CVPR 2021.
    """

    def __init__(
        self,
        family="repvgg",
        expansion=4,
        layers=None,
        include_dense=True,
        include_pointwise=False,
        identity=True,
        main_norm=True,
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
        args.check_bool(main_norm, "main_norm")
        args.check_seed(seed)
        self.family = family
        self.expansion = int(expansion)
        self.layers_arg = layers
        self.include_dense = include_dense
        self.include_pointwise = include_pointwise
        self.identity = identity
        self.main_norm = main_norm
        self.seed = None if seed is None else int(seed)
        # The training view shares the user's layers (saved with the user's
        # model): Keras must not track it.
        self._private = Untracked(view=None, graph=None)
        self._attached = False
        self._applied = []
        self._skipped = []

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
        purpose = "find its convolutions and build the branch graph"
        require_call_graph(model, "Reparameterize", purpose)
        graph = self._private.graph = ModelGraph(model)
        self.blocks, self._applied, self._skipped = selection.build_branches(
            graph,
            self.family,
            self.layers_arg,
            expansion=self.expansion,
            identity=self.identity,
            include_dense=self.include_dense,
            include_pointwise=self.include_pointwise,
            main_norm=self.main_norm,
            seed=self.seed,
            name=self.name,
        )
        self._private.view = selection.branch_view(model, graph, self.blocks)
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
        return [FoldForEvaluation(self)]

    def after_fit(self, trainer):
        # Also after an exception or an interruption: the user's layers
        # then hold the function that ships, not the main branch alone.
        self.fold()

    def training_graph(self, trainer, model):
        # The branch view: each selected layer replaced by its branches.
        return self._private.view

    def strip(self, trainer, model):
        self.fold()
        return model

    @property
    def is_folded(self):
        """Whether the user's weights currently hold the folded values."""
        self._require_attached("is_folded")
        return bool(keras.ops.convert_to_numpy(self.folded_state))

    def fold(self):
        """Writes the folded kernels (and constants) into the user's layers,
        keeping the trained values for `unfold()`. Eager only; does
        nothing when already folded."""
        if not self.is_folded:
            weights.fold_blocks(self.blocks)
            self.folded_state.assign(1)

    def unfold(self):
        """Restores the trained values saved by `fold()` (training
        continues from them). Does nothing when not folded."""
        if self.is_folded:
            weights.unfold_blocks(self.blocks)
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

    def _report(self):
        """Applied layers (type, branches, where the constant folds, extra
        training-only parameters), skipped ones with the reason; totals:
        `extra_params`."""
        self._require_attached("summary()")
        return reparam_report(
            type(self).__name__, self.family, self._applied, self._skipped
        )

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
            "main_norm": self.main_norm,
            "seed": self.seed,
        }
