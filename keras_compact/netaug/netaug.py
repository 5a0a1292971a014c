"""`NetAug`: network augmentation (Cai et al., ICLR 2022) as a `Technique`."""

import math
import random
import warnings

import keras
import numpy as np
from keras import ops

from keras_compact import compat
from keras_compact.api_export import keras_compact_export
from keras_compact.graph.walk import is_functional
from keras_compact.netaug import sorting
from keras_compact.netaug.supernet import OUTPUT_GUARDS, Supernet
from keras_compact.training import arguments as args
from keras_compact.training import tensorflow_step
from keras_compact.training.report import TechniqueReport
from keras_compact.training.technique import Technique
from keras_compact.training.untracked import Untracked


def _multipliers(value, name):
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        values = None
    if (
        not values
        or any(isinstance(v, bool) for v in value)
        or any(not np.isfinite(v) or v < 1.0 for v in values)
        or 1.0 not in values
    ):
        raise ValueError(
            f"Expected `{name}` to be a non-empty list of numbers >= 1 that "
            f"includes 1.0 (the tiny width). Received: {name}={value!r}"
        )
    return tuple(sorted(set(values)))


#: Augmented / compact loss ratio above which (with the augmented loss above
#: ln(num_classes)) the augmented pass is reported as unstable.
_UNSTABLE_RATIO = 1.25


@keras_compact_export
class NetAug(Technique):
    """Network augmentation: trains a tiny model inside wider ones.

    Tiny models under-fit, so instead of augmenting the data NetAug augments
    the model: the compact model is embedded, with shared weights, as the
    first channels of every layer of a wider *augmented* model. Each training
    step adds to the compact model's own loss the loss of ONE augmented
    sub-model sampled at random, on the same batch:
    `L = L(tiny) + alpha * L(augmented)`. The shipped model is the user's
    model, unchanged in architecture: zero inference overhead.

    The augmented model is built automatically from any functional model of
    standard layers (Conv1D/2D, DepthwiseConv1D/2D, SeparableConv2D, Dense,
    BatchNormalization, activations, pooling, padding, Dropout, Add,
    Concatenate, squeeze-excite Multiply, channel Reshape/Flatten and
    elementwise `keras.ops`): channels tied by residual adds, concatenations
    and squeeze-excite gates are widened together (one *width* group), and
    the middle of every inverted residual block (expand 1x1 -> depthwise ->
    project 1x1) is an *expand* group. Each group draws its multiplier
    independently and uniformly every step. Groups that touch the model's
    inputs or outputs or a layer that cannot be widened keep their width and
    are listed by `summary()`. Functional and (built) Sequential models are
    accepted.

    Output guard. The widened channels feeding the output layer (the
    classifier) make the augmented logits grow with the sampled width:
    over a 1x1 head every extra channel is one BN-standardised activation,
    and nothing in the released code prevents the blow-up
    (`benchmarks/results/netaug_logits.md`).
    `output_guard="scale"` (the default) multiplies the input of every
    output kernel (a kernel layer whose output reaches a model output with
    no other kernel in between) by `sqrt(tiny_in / active_in)` in the
    augmented pass: exactly 1 at the tiny width, so the tiny path and the
    shipped model are untouched. `"tiny"` keeps the channel groups that
    feed an output kernel at their tiny width (listed by `summary()`); None
    applies no guard (the released code's behaviour).

    Softmax outputs (a last layer that applies softmax) are scored on their
    logits: the augmented model also exposes its outputs before the softmax,
    and a compiled (sparse) categorical cross-entropy on probabilities is
    applied as the same loss `from_logits=True` to them.

    Extra channels start from the distribution of the tiny channels of the
    same layer: each extra kernel block is drawn with the layer's own
    initializer at the tiny layer's shape (its fans, not the wide layer's)
    and rescaled to the empirical standard deviation of the tiny kernel
    (which also covers an already-trained model).

    Gradient guard (`gradient_guard=True`, off by default, experimental):
    for every weight shared with the compact model, the step uses
    `g_tiny + min(1, |g_tiny| / |g_aug|) * g_aug` (norms per variable,
    `g_aug` with `alpha`), so the augmented gradient never outweighs the
    tiny one. The augmented pass reads the shared weights through zero
    "tap" variables that receive its gradient separately (one extra copy of
    the compact model's trainable weights and of their optimizer slots).

    Monitoring: the fit history has `netaug_aug_loss` (the unweighted
    augmented loss, epoch mean), `netaug_loss_ratio` (it over `task_loss`)
    and `netaug_loss` (`alpha` times it, the term added to the loss). One
    warning is issued when, after the first epoch (or 1/30 of the epochs),
    the augmented loss is above ln(num_classes) and 1.25 times the compact
    model's loss, naming the widened groups the output layers read.

    The tiny weights ARE the compact model's variables: the augmented layers
    read them as the first block of each weight and own only the extra
    channels. After `fit`, the user's model holds the trained tiny model.

    Widths are `round(size * multiplier)` of the tiny width of each group
    (integer rounding, as in the released code). An expand multiplier scales
    the block's middle width itself, independently of the width drawn for
    the block's input (the released code scales the expand ratio of the
    active input width; the set of sub-models differs slightly).

    Sampled widths are tensors (drawn in the train step with a
    `keras.random.SeedGenerator`), and weights are sliced to them
    dynamically, so the train step is traced once for every sub-model and
    its cost follows the sampled width. This relies on TensorFlow's
    dynamic shapes: like `Trainer`, NetAug trains with the TensorFlow
    backend.

    BatchNormalization: the tiny pass is the user's model in training mode
    (it updates its own moving statistics); the augmented pass normalises
    with the statistics of its batch and never writes the user's moving
    mean and variance, so no re-estimation is needed before evaluation or
    export. The paper's re-estimation is available as the
    `keras_compact.netaug.BNRecalibration` callback.

    Schedule: augmentation of the width groups stops after the fraction
    `stop_width_at` of the epochs (the expand groups stay augmented), as in
    the released code (width for 80 of 155 epochs).

    Channel sorting (`sort_channels=True`): at the start of every epoch of
    the width phase (before `stop_width_at`, as in the released code), the
    channels of every expand group are ordered by importance (sum of |W| of
    the projection conv over its output and spatial axes, over the largest
    augmented model), and every weight along them (and the optimizer's slot
    variables) is permuted accordingly. This is exact for the largest
    augmented model, whose function is unchanged by the permutation. It
    CHANGES the tiny model whenever an extra channel ranks among the tiny
    ones: that channel (trained as an augmented channel) replaces a weaker
    tiny channel, which is the purpose of sorting. The moving statistics of
    a channel that enters the tiny slice are those the augmented passes
    estimated for it (kept only when sorting is on), which the tiny passes
    then refine; add `BNRecalibration` for exact statistics.

    Measured results (gains and losses against plain training, by model
    and stride, and the effect of `exclude` and of the guards) are in the
    README and `benchmarks/results/netaug_*.md`: compare with a plain run
    on your own model and budget before relying on NetAug.

    Args:
        width_multipliers: multipliers (>= 1, including 1.0) of the width
            groups (stem, stage outputs, head). Defaults to
            `(1.0, 1.8, 2.6)`, the released MobileNetV2 setting.
        expand_multipliers: multipliers of the expand groups (the middle of
            inverted residual blocks). Defaults to `(1.0, 1.6, 2.2, 2.8)`.
        alpha: weight of the augmented loss, a float >= 0. Defaults to 1.0.
        label_smoothing: None (the augmented loss is the compiled loss) or a
            float in [0, 1): the augmented loss is then a categorical
            cross-entropy with this label smoothing (integer or one-hot
            labels). For the paper's setting (0.1 on both terms) also compile
            the trainer with a label-smoothed loss.
        from_logits: whether the model outputs logits (only used with
            `label_smoothing`, for outputs not detected as softmax ones,
            which are always scored on their logits). Defaults to True
            (the zoo's models).
        stop_width_at: fraction of the epochs of `fit` (its `epochs`
            argument, so `initial_epoch` resumes correctly) after which
            only the expand groups are augmented, in (0, 1]; 1.0 never
            stops. The default,
            "auto", is 0.5 for models with expand groups and 1.0 otherwise
            (stopping would leave nothing to augment).
        sort_channels: whether to sort the expand groups' channels by
            importance at every epoch start of the width phase. Defaults
            to False.
        exclude: names of layers whose output channels (and every channel
            tied to them) keep their tiny width, e.g. `["head_conv"]` for
            the zoo MobileNetV2's 1280-channel head (see
            `benchmarks/results/netaug_ablation*.md`). Checked against the
            model when the technique is attached. Defaults to none.
        output_guard: `"scale"` (default), `"tiny"` or None: how the
            augmented logits are kept at the tiny model's scale (see
            above).
        gradient_guard: whether to bound each shared weight's augmented
            gradient by its tiny gradient (see above). Defaults to False.
        seed: seed of the width sampler and of the extra channels'
            initial draws (int or None).
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an invalid argument value (naming it and its
            value); at attach time, for a model that is not functional.

    Example:

    ```python
    model = keras_compact.models.get_model("mobilenet_v2", alpha=0.35)
    trainer = keras_compact.Trainer(model, techniques=[NetAug()])
    trainer.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer.fit(train_ds, epochs=10)
    trainer.techniques[0].summary()
    compact = trainer.strip()  # `model` itself, trained
    ```

    Reference:
        Cai, Gan, Lin, Han. "Network Augmentation for Tiny Deep Learning",
        ICLR 2022, arXiv:2110.08890.
    """

    term_names = ("netaug_loss",)
    # `loss_terms` runs the augmented model: one forward pass more per step.
    extra_forward_passes = 1

    def __init__(
        self,
        width_multipliers=(1.0, 1.8, 2.6),
        expand_multipliers=(1.0, 1.6, 2.2, 2.8),
        alpha=1.0,
        label_smoothing=None,
        from_logits=True,
        stop_width_at="auto",
        sort_channels=False,
        exclude=None,
        output_guard="scale",
        gradient_guard=False,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "netaug")
        super().__init__(**kwargs)
        self.width_multipliers = _multipliers(
            width_multipliers, "width_multipliers"
        )
        self.expand_multipliers = _multipliers(
            expand_multipliers, "expand_multipliers"
        )
        args.check_float(alpha, "alpha", low=0)
        args.check_float(
            label_smoothing,
            "label_smoothing",
            low=0.0,
            high=1.0,
            high_open=True,
            allow_none=True,
        )
        if stop_width_at != "auto":
            args.check_float(
                stop_width_at, "stop_width_at", 0.0, 1.0, low_open=True
            )
        args.check_bool(sort_channels, "sort_channels")
        exclude = args.check_names(
            () if exclude is None else exclude, "exclude"
        )
        args.check_choice(output_guard, OUTPUT_GUARDS, "output_guard")
        args.check_bool(gradient_guard, "gradient_guard")
        args.check_seed(seed)
        self.alpha = float(alpha)
        self.label_smoothing = (
            None if label_smoothing is None else float(label_smoothing)
        )
        self.from_logits = bool(from_logits)
        self.stop_width_at = (
            stop_width_at if stop_width_at == "auto" else float(stop_width_at)
        )
        self.sort_channels = sort_channels
        self.exclude = tuple(exclude)
        self.output_guard = output_guard
        self.gradient_guard = gradient_guard
        self.seed = seed
        # The sampler's draws are a pure function of this seed and the
        # optimizer step, so a resumed run samples the widths that an
        # uninterrupted one would have. Held in a weight: a checkpoint
        # restores it even when `seed` is None (drawn here once).
        self.sampler_seed = self.add_weight(
            name="sampler_seed",
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(
                seed if seed is not None else random.randrange(2**31 - 1)
            ),
            trainable=False,
        )
        self._eager_draws = 0
        self.width_enabled = self.add_weight(
            name="width_enabled",
            shape=(),
            dtype="int32",
            initializer="ones",
            trainable=False,
        )
        self._supernet = None
        # Held untracked: logged by `_Monitor` into the epoch logs, not as
        # Keras metrics (which would also appear, as zeros, in `val_` logs).
        self._monitor = None
        self._warned = False
        self._loss_fns = None

    # ------------------------------------------------------------------
    # Technique hooks
    # ------------------------------------------------------------------
    def attach(self, trainer):
        model = trainer.compact_model
        if not (is_functional(model) or isinstance(model, keras.Sequential)):
            raise ValueError(
                "NetAug builds its augmented model from the compact model's "
                "call graph, so the model must be functional or Sequential "
                "(a subclassed model has no graph to walk). Received: "
                f"model={model.name!r} of type {type(model).__name__}"
            )
        if self._supernet is not None:
            raise ValueError(
                f"This NetAug technique ({self.name!r}) is already attached "
                "to a trainer; create one per trainer."
            )
        net = Supernet(
            model,
            self.width_multipliers,
            self.expand_multipliers,
            track_extra_statistics=self.sort_channels,
            exclude=self.exclude,
            output_guard=self.output_guard,
            gradient_taps=self.gradient_guard,
            seed=self.seed,
        )
        self._supernet = net
        self._monitor = Untracked(
            aug_loss=keras.metrics.Mean(name="netaug_aug_loss")
        )
        # Tracked: their extra weights are trained, saved and restored.
        self.elastic_layers = list(net.elastic_layers)
        self.statistics_norms = list(net._batch_norms.values())
        self._taps = net.taps()
        groups = net.augmented
        k = self._max_choices()
        self._choices = np.array(
            [c + [c[-1]] * (k - len(c)) for c in net.choices], dtype="int32"
        ).reshape(len(groups), k)
        self._num_choices = np.array(
            [len(c) for c in net.choices], dtype="int32"
        )
        self._is_width = np.array(
            [g.kind == "width" for g in groups], dtype=bool
        )
        if not groups:
            warnings.warn(
                f"NetAug found nothing to augment in model {model.name!r}; "
                "the augmented loss will be zero.\n" + str(self._report()),
                stacklevel=2,
            )

    def _max_choices(self):
        return max([len(c) for c in self._supernet.choices] or [1])

    def validate(self, trainer):
        if compat.compiled_loss(trainer) is None and (
            self.label_smoothing is None
        ):
            raise ValueError(
                "NetAug scores the augmented model with the compiled loss: "
                "pass `loss=` to `trainer.compile()`."
            )

    def callbacks(self, trainer):
        cbs = [_Monitor(self)]
        if self.effective_stop_width_at < 1.0:
            cbs.append(_WidthSchedule(self))
        else:
            self.width_enabled.assign(1)
        if self.sort_channels:
            cbs.append(_ChannelSorting(self))
        return cbs

    def loss_terms(self, ctx):
        # The augmented model's forward pass (declared: extra_forward_passes).
        if not self._supernet.num_groups:
            return {"netaug_loss": ops.zeros((), dtype="float32")}
        widths = self.sample_widths(ctx.step)
        loss = self.augmented_loss(
            ctx.trainer, ctx.x, ctx.y, widths, ctx.sample_weight
        )
        self._monitor.aug_loss.update_state(loss)
        return {"netaug_loss": ops.multiply(self.alpha, loss)}

    def augmented_loss(self, trainer, x, y, widths, sample_weight=None):
        """The (unweighted) loss of the augmented sub-model of `widths`.

        Outputs that the model passes through a softmax are scored on
        their logits: with `label_smoothing`, or when the compiled loss is
        a Keras (sparse) categorical cross-entropy on probabilities (then
        the same loss with `from_logits=True`); any other compiled loss
        gets the probabilities, as the compact model's output.
        """
        net = self._supernet
        softmax = any(net.softmax_outputs)
        if self.label_smoothing is not None:
            y_aug = net(x, widths, training=True, logits=softmax)
            return self._smoothed_loss(
                y, y_aug, sample_weight, self.from_logits or softmax
            )
        logits_loss = self._logits_loss(trainer) if softmax else None
        if logits_loss is not None:
            y_aug = net(x, widths, training=True, logits=True)
            # A Keras loss: the replica batch's own value (as `task_loss`).
            return tensorflow_step.unscale_loss(
                logits_loss(y, y_aug, sample_weight=sample_weight)
            )
        y_aug = net(x, widths, training=True)
        return trainer.task_loss(y, y_aug, sample_weight)

    def _logits_loss(self, trainer):
        """The compiled loss as a loss on logits, for a single softmax
        output compiled with a Keras (sparse) categorical cross-entropy
        and no loss weights; else None."""
        loss = getattr(trainer, "loss", None)
        key = id(loss)
        if self._loss_fns is not None and self._loss_fns[0] == key:
            return self._loss_fns[1]
        fn = None
        single = len(self._supernet.softmax_outputs) == 1
        weights = getattr(trainer, "loss_weights", None)
        if single and weights is None:
            fn = _logits_cross_entropy(loss)
        self._loss_fns = (key, fn)
        return fn

    def transform_gradients(self, ctx, grads):
        """With `gradient_guard`, the shared weights' gradient becomes
        `g_tiny + min(1, |g_tiny| / |g_aug|) * g_aug` (norms per variable;
        `g_aug` includes `alpha`), read from the taps, whose own gradient
        is then zeroed."""
        if not self._taps:
            return grads
        grads = list(grads)
        index = {id(v): i for i, v in enumerate(ctx.variables)}
        for var, tap in self._taps:
            i, j = index.get(id(var)), index.get(id(tap))
            if j is None or grads[j] is None:
                continue
            g_aug = ops.convert_to_tensor(grads[j])
            grads[j] = ops.zeros_like(g_aug)
            if i is None:
                continue
            g_tiny = grads[i]
            if g_tiny is None:
                g_tiny = ops.zeros_like(g_aug)
            g_tiny = ops.convert_to_tensor(g_tiny)
            n_tiny = ops.sqrt(ops.sum(ops.square(g_tiny)))
            n_aug = ops.sqrt(ops.sum(ops.square(g_aug)))
            factor = ops.minimum(
                ops.ones_like(n_aug),
                ops.divide(n_tiny, ops.maximum(n_aug, 1e-12)),
            )
            grads[i] = ops.add(g_tiny, ops.multiply(factor, g_aug))
        return grads

    def strip(self, trainer, model):
        # The compact model was never modified: the augmented model only
        # reads its variables. Nothing to remove.
        return model

    # ------------------------------------------------------------------
    # Sampling and inspection
    # ------------------------------------------------------------------
    def sample_widths(self, step=None):
        """Draws one augmented sub-model: an int32 tensor of active widths,
        one per augmented group (each uniform over its choices; the width
        groups stay at their tiny width once the schedule stops them).

        Args:
            step: the optimizer step (an integer scalar): the draw is a
                pure function of `sampler_seed` and the step. None (eager
                inspection): a new draw at every call.
        """
        if step is None:
            step = self._eager_draws
            self._eager_draws += 1
        n = ops.convert_to_tensor(self._num_choices)
        stopped = ops.logical_and(
            ops.convert_to_tensor(self._is_width),
            ops.equal(self.width_enabled, 0),
        )
        n = ops.where(stopped, ops.ones_like(n), n)
        u = tensorflow_step.stateless_uniform(
            (self._supernet.num_groups,), self.sampler_seed, step
        )
        idx = ops.cast(ops.floor(u * ops.cast(n, u.dtype)), "int32")
        idx = ops.minimum(idx, n - 1)
        table = ops.convert_to_tensor(self._choices)
        return ops.take_along_axis(table, idx[:, None], axis=1)[:, 0]

    @property
    def supernet(self):
        """The `Supernet` (augmented model and channel groups); None before
        the technique is attached to a trainer."""
        return self._supernet

    @property
    def augmented_model(self):
        """The functional augmented model, `([*inputs, widths]) -> outputs`."""
        return None if self._supernet is None else self._supernet.model

    def min_widths(self):
        """The widths of the tiny model (the augmented model's min path)."""
        return self._supernet.min_widths()

    def max_widths(self):
        """The widths of the largest augmented model."""
        return self._supernet.max_widths()

    @property
    def effective_stop_width_at(self):
        if self.stop_width_at != "auto":
            return self.stop_width_at
        has_expand = self._supernet is not None and any(
            g.kind == "expand" for g in self._supernet.augmented
        )
        return 0.5 if has_expand else 1.0

    def expected_macs(self, width_phase=True, samples=20000, seed=0):
        """Mean MACs of the sampled augmented sub-models, and the tiny MACs.

        Args:
            width_phase: True for the phase in which the width groups are
                augmented, False for the expand-only phase.
            samples: number of Monte Carlo draws.
            seed: numpy seed of the draws.

        Returns:
            `(expected_augmented_macs, tiny_macs)`, floats. The arithmetic
            cost of a training step relative to plain training is at least
            `1 + expected_augmented_macs / tiny_macs`.
        """
        net = self._supernet
        tiny = net.macs(net.min_widths())
        if not net.num_groups:
            return tiny, tiny
        rng = np.random.default_rng(seed)
        n = self._num_choices.copy()
        if not width_phase:
            n[self._is_width] = 1
        idx = np.minimum(
            (rng.random((samples, len(n))) * n).astype("int32"), n - 1
        )
        widths = np.take_along_axis(self._choices, idx.T, axis=1).T
        return float(np.mean(net.macs(widths))), tiny

    def _report(self):
        """What was augmented (applied: one row per channel group with its
        tiny width and the widths it is trained at), kept at its width by
        `output_guard="tiny"` or `exclude` (kept), and left alone (skipped,
        with the reasons)."""
        net = self._supernet
        report = TechniqueReport(type(self).__name__)
        if net is None:
            report.title = f"{self.name} is not attached to a trainer yet."
            return report
        report.title = (
            f"{net.num_groups} augmented channel groups of {net.compact.name!r}"
        )

        def item(g):
            more = ", ..." if len(g.layers) > 3 else ""
            return f"{', '.join(g.layers[:3])}{more}"

        for g, c in zip(net.augmented, net.choices):
            report.add(item(g), "applied", g.kind, size=g.size, widths=list(c))
        groups = net.channel_groups.groups
        left = (
            [
                (gi, "kept", f"output_guard='tiny' (read by {name!r})")
                for gi, name in net.guarded
            ]
            + [
                (gi, "kept", f"`exclude` (output of {name!r})")
                for gi, name in net.excluded
            ]
            + [
                (gi, "skipped", "; ".join(reasons))
                for gi, reasons in net.channel_groups.skipped
            ]
        )
        for gi, status, reason in left:
            g = groups[gi]
            report.add(item(g), status, reason, size=g.size)
        if net.scaled_outputs:
            report.note(
                "Output guard 'scale': the input of "
                f"{', '.join(net.scaled_outputs)} is scaled by "
                "sqrt(tiny / active channels) in the augmented pass."
            )
        if any(net.softmax_outputs):
            report.note(
                "Softmax output: the augmented loss is computed on logits."
            )
        if self.gradient_guard:
            report.note(
                f"Gradient guard on {len(self._taps)} shared variables"
                + (
                    f"; {len(net.untapped())} read by reused layers are "
                    "not guarded."
                    if net.untapped()
                    else "."
                )
            )
        if not report.kept and not report.skipped:
            report.note(
                "Every channel group is augmented except the model's inputs "
                "and outputs."
            )
        return report

    # ------------------------------------------------------------------
    # Monitoring
    # ------------------------------------------------------------------
    def _num_classes(self):
        outputs = self._supernet.channel_groups.graph.outputs
        if len(outputs) != 1 or len(outputs[0].shape) < 2:
            return None
        return outputs[0].shape[-1]

    def widened_output_inputs(self):
        """`{output layer name: [first layer of each augmented group of its
        input]}`: the widened channels the output layers read."""
        net = self._supernet
        cg = net.channel_groups
        out = {}
        for node in net.output_kernels:
            names = [
                cg.groups[gi].layers[0]
                for gi in cg.layout(node.inputs[0])
                if gi in net.plan
            ]
            if names:
                out[node.name] = names
        return out

    def _check_stability(self, epoch, epochs, aug, task):
        """Warns once when, after the warm-up (the first epoch, or the
        first 1/30 of the epochs), the epoch's augmented loss is above
        ln(num_classes), the loss of a uniform guess, and more than 1.25
        times the compact model's (so a task the compact model does not
        learn either is not blamed on NetAug)."""
        classes = self._num_classes()
        if self._warned or epoch < max(1, epochs // 30) or not classes:
            return
        if classes < 2 or not aug > math.log(classes):
            return
        if task is not None and not aug > _UNSTABLE_RATIO * float(task):
            return
        self._warned = True
        widened = self.widened_output_inputs()
        where = (
            "; ".join(f"{k} reads {', '.join(v)}" for k, v in widened.items())
            or "none is widened"
        )
        task = "?" if task is None else f"{float(task):.3g}"
        warnings.warn(
            f"NetAug ({self.name!r}): after warm-up (epoch {epoch + 1}) the "
            f"augmented sub-models' mean loss {aug:.3g} is above "
            f"ln({classes}) = {math.log(classes):.3g}, the loss of a "
            f"uniform guess (compact model: {task}). The augmented pass is "
            "likely unstable: its logits grow with the width of the "
            f"channels feeding the output layers (widened groups: {where}), "
            "typically a head conv over a 1x1 feature map, and its large "
            "gradient disturbs the shared weights. Try output_guard="
            f"'scale' (now {self.output_guard!r}) or 'tiny', `exclude`, "
            "gradient_guard=True, or a smaller `alpha` or learning rate.",
            stacklevel=2,
        )

    # ------------------------------------------------------------------
    def _smoothed_loss(self, y, y_aug, sample_weight, from_logits):
        y = ops.convert_to_tensor(y)
        classes = y_aug.shape[-1]
        if len(y.shape) == len(y_aug.shape) and y.shape[-1] == classes:
            target = ops.cast(y, y_aug.dtype)
        else:
            target = ops.one_hot(
                ops.reshape(ops.cast(y, "int32"), (-1,)),
                classes,
                dtype=y_aug.dtype,
            )
        per_example = keras.losses.categorical_crossentropy(
            target,
            y_aug,
            from_logits=from_logits,
            label_smoothing=self.label_smoothing,
        )
        if sample_weight is not None:
            sw = ops.reshape(ops.cast(sample_weight, per_example.dtype), (-1,))
            return ops.sum(per_example * sw) / ops.maximum(ops.sum(sw), 1e-7)
        return ops.mean(per_example)

    def get_config(self):
        return {
            **super().get_config(),
            "width_multipliers": list(self.width_multipliers),
            "expand_multipliers": list(self.expand_multipliers),
            "alpha": self.alpha,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
            "stop_width_at": self.stop_width_at,
            "sort_channels": self.sort_channels,
            "exclude": list(self.exclude),
            "output_guard": self.output_guard,
            "gradient_guard": self.gradient_guard,
            "seed": self.seed,
        }


class _WidthSchedule(keras.callbacks.Callback):
    """Turns width augmentation off after `stop_width_at` of the epochs."""

    def __init__(self, netaug):
        super().__init__()
        self.netaug = netaug

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs") or 1
        stop = self.netaug.effective_stop_width_at
        self.netaug.width_enabled.assign(int(epoch < stop * epochs))


class _ChannelSorting(keras.callbacks.Callback):
    """Sorts the expand groups' channels by importance at the start of
    every epoch of the width phase (after `_WidthSchedule` has set it), as
    the released code does."""

    def __init__(self, netaug):
        super().__init__()
        self.netaug = netaug
        self.sorted_epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        if not int(self.netaug.width_enabled.numpy()):
            return
        self.sorted_epochs.append(epoch)
        sorting.sort_expand_channels(
            self.netaug.supernet, getattr(self.model, "optimizer", None)
        )


class _Monitor(keras.callbacks.Callback):
    """Adds `netaug_aug_loss` (the unweighted augmented loss, mean over the
    epoch) and `netaug_loss_ratio` (it over `task_loss`) to the epoch logs,
    and warns once when the augmented loss stays above chance level."""

    def __init__(self, netaug):
        super().__init__()
        self.netaug = netaug

    def on_epoch_begin(self, epoch, logs=None):
        self.netaug._monitor.aug_loss.reset_state()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.netaug.supernet.num_groups:
            return
        aug = float(self.netaug._monitor.aug_loss.result())
        logs["netaug_aug_loss"] = aug
        task = logs.get("task_loss")
        if task:
            logs["netaug_loss_ratio"] = aug / float(task)
        epochs = (self.params or {}).get("epochs") or 1
        self.netaug._check_stability(epoch, epochs, aug, task)


_CROSS_ENTROPIES = {
    keras.losses.sparse_categorical_crossentropy: (
        keras.losses.SparseCategoricalCrossentropy
    ),
    keras.losses.categorical_crossentropy: keras.losses.CategoricalCrossentropy,
}


def _logits_cross_entropy(loss):
    """`loss` (a compiled loss argument) as the same cross-entropy on
    logits, or None if it is not a Keras (sparse) categorical
    cross-entropy."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return None
    if callable(loss) and loss in _CROSS_ENTROPIES:
        return _CROSS_ENTROPIES[loss](from_logits=True)
    for cls in _CROSS_ENTROPIES.values():
        if type(loss) is cls:
            return cls.from_config({**loss.get_config(), "from_logits": True})
    return None
