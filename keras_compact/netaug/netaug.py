"""`NetAug`: network augmentation (Cai et al., ICLR 2022) as a `Technique`.

The class holds the hooks; the algorithm lives beside it: `supernet` (the
augmented model, output guard), `sampling` (widths, schedule, cost),
`augmented_loss` (the loss and the gradient guard), `sorting`, `monitoring`
(report, stability warning) and `callbacks`.
"""

import random

import keras
import numpy as np
from keras import ops
from keras.initializers import Constant

from keras_compact.api_export import keras_compact_export
from keras_compact.graph.walk import require_call_graph
from keras_compact.netaug import monitoring, sampling
from keras_compact.netaug.augmented_loss import (
    AugmentedLoss,
    check_trainer,
    guard_gradients,
)
from keras_compact.netaug.callbacks import (
    ChannelSorting,
    Monitor,
    PhaseSchedule,
)
from keras_compact.netaug.elastic import DEFAULT_EXTRA_INIT, EXTRA_INITS
from keras_compact.netaug.supernet import OUTPUT_GUARDS, Supernet
from keras_compact.training import arguments as args
from keras_compact.training import tensorflow_step
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


def _check_window(start_at, stop_at, auto=""):
    if start_at >= stop_at:
        raise ValueError(
            f"Expected `start_at` < `stop_at`{auto}. Received: "
            f"start_at={start_at}, stop_at={stop_at}"
        )


def _zero():
    return ops.zeros((), dtype="float32")


@keras_compact_export
class NetAug(Technique):
    """Network augmentation: trains a tiny model inside wider ones.

    The compact model is embedded, with shared weights, as the first
    channels of every layer of a wider *augmented* model; each training step
    adds to its loss the loss of one augmented sub-model sampled at random,
    on the same batch: `L = L(tiny) + alpha * L(augmented)`. The shipped
    model is the user's model, trained: zero inference overhead.

    The augmented model (`keras_compact.netaug.Supernet`) is built from a
    functional or built Sequential model: channels tied by adds, concats
    and squeeze-excite gates form a *width* group, the middle of an inverted
    residual block an *expand* group; each group draws its multiplier every
    step (`keras_compact.netaug.sampling`); what is kept at its width is
    listed by `summary()`. The augmented pass never writes the user's
    BatchNorm statistics (see `BNRecalibration`). TensorFlow backend.

    Outputs: softmax outputs are scored on their logits. With several
    outputs, the augmented model has the same outputs, all scored by the
    compiled loss (each output's loss and loss weight); `label_smoothing`
    needs a single output (ValueError at `fit`).

    Guards: `output_guard="scale"` multiplies the input of the output
    kernels by `sqrt(tiny_in / active_in)` (1 at the tiny width), `"tiny"`
    keeps the groups feeding them at their tiny width, None (the released
    code) does neither. `gradient_guard=True` (experimental) bounds each
    shared weight's augmented gradient by its tiny one
    (`keras_compact.netaug.augmented_loss`). The history gets
    `netaug_loss`, `netaug_aug_loss` and `netaug_loss_ratio`; a warning
    flags an unstable augmented pass (`keras_compact.netaug.monitoring`).
    Measured: docs/techniques.md and `benchmarks/results/netaug_*.md`.

    Args:
        width_multipliers: multipliers (>= 1, with 1.0) of the width groups.
        expand_multipliers: multipliers of the expand groups.
        alpha: weight of the augmented loss, a float >= 0.
        label_smoothing: None (the compiled loss) or a float in [0, 1): a
            categorical cross-entropy with this smoothing instead.
        from_logits: whether non-softmax outputs are logits (with
            `label_smoothing`).
        stop_width_at: fraction of `fit`'s `epochs` after which only the
            expand groups are augmented, in (0, 1]; "auto": 0.5 with
            expand groups, else 1.0 (never stops).
        start_at: fraction of `fit`'s `epochs` before which there is no
            augmented pass (the tiny model trains alone, at a plain step's
            cost), in [0, 1); "auto" (the default): 0.5 when
            `min_resolution` keeps some groups at their tiny width (feature
            maps smaller than the paper's, such as a head at 1x1), else 0.
            On the ImageNet-stride MobileNetV2-w0.35 at 32x32, 0.5 gave
            +0.32 / +0.88 / +0.85 / +0.56 / -0.51 / +1.34 points over plain
            on seeds 0-5 where 0 gave +1.15 / +0.17 / -4.11 / -5.99 / -9.56
            (seeds 0-4); on models without such maps 0 gains more
            (`keras_compact.netaug.sampling`). A `fit` too short to reach
            the augmented pass warns.
        stop_at: fraction of the epochs from which the augmented pass
            stops, in (0, 1], above `start_at`; 1.0 never stops.
        sort_channels: whether to sort the expand groups' channels by
            importance at each epoch start of the width phase
            (`keras_compact.netaug.sorting`).
        exclude: names of layers whose output channels (and every channel
            tied to them) keep their tiny width, e.g. `["head_conv"]`.
        output_guard: `"scale"`, `"tiny"` or None.
        gradient_guard: bool, the gradient guard.
        min_resolution: None, or an int >= 1: the channel groups that
            appear on a feature map smaller than this on a side keep their
            tiny width (listed by `summary()`; squeeze-excite gates and
            pooled heads are no feature maps). Default 4: the paper's
            models never go below 5x5, and augmenting the 2x2 and 1x1
            stages of an ImageNet-stride MobileNetV2 at 32x32 cost it
            3.9 / 7.3 points (`netaug_min_resolution_imagenet_s*.md`).
            None augments every group.
        extra_init: how the extra channels' kernels start: `"wide"` (the
            default) cuts them from one draw of the user's initializer at
            the largest augmented layer's shape (smaller weights for
            variance-scaling initializers), the released code's
            distribution for the extra channels; `"tiny"` draws them like
            the tiny channels of their layer (the user's initializer at the
            tiny layer's shape, rescaled to the tiny kernel's standard
            deviation). Paired on the same seeds, "wide" was ahead on 6 of
            8 runs (resnet8 +3.86 / +3.70 against +0.09 / +2.65, the
            CIFAR-stride MobileNetV2 +2.16 against -2.15; see
            `docs/techniques.md`).
        seed: seed of the width draws and extra channels (int or None).
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: for an argument of the wrong type; at attach, for a
            subclassed model (no call graph).
        ValueError: for an invalid argument value (naming it and its value).

    Example:

    ```python
    model = keras_compact.models.get_model("mobilenet_v2", alpha=0.35)
    trainer = keras_compact.Trainer(model, techniques=[NetAug()])
    trainer.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    trainer.fit(train_ds, epochs=10)
    compact = trainer.strip()  # `model` itself, trained
    ```

    Reference:
        Cai, Gan, Lin, Han. "Network Augmentation for Tiny Deep Learning",
        ICLR 2022, arXiv:2110.08890.
    """

    term_names = ("netaug_loss",)
    extra_forward_passes = 1  # `loss_terms` runs the augmented model.

    def __init__(
        self,
        width_multipliers=(1.0, 1.8, 2.6),
        expand_multipliers=(1.0, 1.6, 2.2, 2.8),
        alpha=1.0,
        label_smoothing=None,
        from_logits=True,
        stop_width_at="auto",
        start_at="auto",
        stop_at=1.0,
        sort_channels=False,
        exclude=None,
        output_guard="scale",
        gradient_guard=False,
        min_resolution=4,
        extra_init=DEFAULT_EXTRA_INIT,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "netaug")
        super().__init__(**kwargs)
        w, e = "width_multipliers", "expand_multipliers"
        self.width_multipliers = _multipliers(width_multipliers, w)
        self.expand_multipliers = _multipliers(expand_multipliers, e)
        args.check_float(alpha, "alpha", low=0)
        ls, stop = label_smoothing, stop_width_at
        args.check_float(
            ls, "label_smoothing", 0.0, 1.0, high_open=True, allow_none=True
        )
        if stop != "auto":
            args.check_float(stop, "stop_width_at", 0.0, 1.0, low_open=True)
        args.check_float(stop_at, "stop_at", 0.0, 1.0, low_open=True)
        if start_at != "auto":
            args.check_float(start_at, "start_at", 0.0, 1.0, high_open=True)
            _check_window(start_at, stop_at)
        args.check_bool(sort_channels, "sort_channels")
        exclude = args.check_names(
            () if exclude is None else exclude, "exclude"
        )
        args.check_choice(output_guard, OUTPUT_GUARDS, "output_guard")
        args.check_bool(gradient_guard, "gradient_guard")
        args.check_int(
            min_resolution, "min_resolution", minimum=1, allow_none=True
        )
        args.check_choice(extra_init, EXTRA_INITS, "extra_init")
        args.check_seed(seed)
        self.alpha = float(alpha)
        self.label_smoothing = None if ls is None else float(ls)
        self.from_logits = bool(from_logits)
        self.stop_width_at = stop if stop == "auto" else float(stop)
        self.start_at = start_at if start_at == "auto" else float(start_at)
        self.stop_at = float(stop_at)
        self.sort_channels = sort_channels
        self.exclude = tuple(exclude)
        self.output_guard = output_guard
        self.gradient_guard = gradient_guard
        self.min_resolution = min_resolution
        self.extra_init = extra_init
        self.seed = seed
        # The draws' seed: a weight, so a checkpoint restores it (even
        # when `seed` is None) and a resumed run draws the same widths.
        seed = seed if seed is not None else random.randrange(2**31 - 1)
        scalar = dict(shape=(), dtype="int32", trainable=False)
        self.sampler_seed = self.add_weight(
            name="sampler_seed", initializer=Constant(seed), **scalar
        )
        self._eager_draws = 0
        self.width_enabled = self.add_weight(
            name="width_enabled", initializer="ones", **scalar
        )
        # Set at every epoch start (`start_at` / `stop_at`): not saved.
        self._phase = Untracked(
            augment=keras.Variable(
                1, dtype="int32", trainable=False, name="augment_enabled"
            )
        )
        self._supernet = self._monitor = None

    def attach(self, trainer):
        model = trainer.compact_model
        require_call_graph(model, "NetAug", "build its augmented super-network")
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
            min_resolution=self.min_resolution,
            seed=self.seed,
            extra_init=self.extra_init,
        )
        if self.start_at == "auto":
            start = sampling.start_at("auto", net)
            auto = (
                f" (`start_at='auto'` is {start} for {model.name!r}: it has "
                "feature maps below `min_resolution`; pass `start_at`)"
            )
            _check_window(start, self.stop_at, auto)
        self._supernet = net
        # Untracked: not Keras metrics (they would appear in `val_` logs).
        self._monitor = Untracked(
            aug_loss=keras.metrics.Mean(name="netaug_aug_loss"),
            check=monitoring.StabilityCheck(net, self.name, self.output_guard),
            loss=AugmentedLoss(net, self.label_smoothing, self.from_logits),
        )
        # Tracked: their extra weights are trained, saved and restored.
        self.elastic_layers = list(net.elastic_layers)
        self.statistics_norms = list(net._batch_norms.values())
        self._taps = net.taps()
        self._sampler = sampling.WidthSampler(net)
        if not net.augmented:
            monitoring.warn_nothing_augmented(model.name, self._report())

    def validate(self, trainer):
        check_trainer(trainer, self._supernet, self.label_smoothing)

    def callbacks(self, trainer):
        m = self._monitor
        window = (self.effective_start_at, self.stop_at)
        auto = self.start_at == "auto" and window[0] > 0

        def idle(epochs):
            monitoring.warn_no_augmented_epoch(self.name, *window, auto, epochs)

        groups = self._supernet.num_groups
        cbs = [Monitor(m.aug_loss, groups, m.check, idle=idle)]
        phases = (
            (self.width_enabled, 0.0, self.effective_stop_width_at),
            (self._phase.augment, *window),
        )
        for enabled, start, stop in phases:
            if (start, stop) == (0.0, 1.0):
                enabled.assign(1)  # On throughout (also after another fit).
            else:
                cbs.append(PhaseSchedule(enabled, stop, start))
        if self.sort_channels:
            cbs.append(ChannelSorting(self._supernet, self.width_enabled))
        return cbs

    def loss_terms(self, ctx):
        # The augmented model's forward pass (declared: extra_forward_passes).
        if not self._supernet.num_groups:
            return {"netaug_loss": _zero()}

        def augmented(weight=None):
            widths = self.sample_widths(ctx.step)
            loss = self.augmented_loss(
                ctx.trainer, ctx.x, ctx.y, widths, ctx.sample_weight
            )
            self._monitor.aug_loss.update_state(loss, sample_weight=weight)
            return ops.multiply(self.alpha, loss)

        if (self.effective_start_at, self.stop_at) == (0.0, 1.0):
            return {"netaug_loss": augmented()}
        # Outside `[start_at, stop_at)` the step skips the augmented pass.
        on = ops.greater(self._phase.augment, 0)
        if tensorflow_step.replicas() > 1:
            # No cond around the augmented pass's cross-replica reductions
            # (synchronized BatchNorm statistics): it runs at every step,
            # masked outside the window; its cost is paid throughout.
            loss = augmented(ops.cast(on, "float32"))
            return {"netaug_loss": ops.where(on, loss, _zero())}
        return {"netaug_loss": ops.cond(on, augmented, _zero)}

    def augmented_loss(self, trainer, x, y, widths, sample_weight=None):
        """The (unweighted) loss of the augmented sub-model of `widths`
        (`keras_compact.netaug.augmented_loss`)."""
        return self._monitor.loss(trainer, x, y, widths, sample_weight)

    def transform_gradients(self, ctx, grads):
        """With `gradient_guard`, bounds the shared weights' augmented
        gradient by their tiny one (`augmented_loss.guard_gradients`)."""
        return guard_gradients(grads, ctx.variables, self._taps)

    def strip(self, trainer, model):
        return model  # The augmented model only reads the model's variables.

    def sample_widths(self, step=None):
        """Draws one augmented sub-model: int32 widths, one per augmented
        group, a pure function of `sampler_seed` and `step` (the optimizer
        step; None: a new eager draw at every call)."""
        if step is None:
            step, self._eager_draws = self._eager_draws, self._eager_draws + 1
        return self._sampler.sample(self.width_enabled, self.sampler_seed, step)

    @property
    def supernet(self):
        """The `Supernet`; None before the technique is attached."""
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
    def effective_start_at(self):
        """`start_at`, with "auto" resolved for the attached model."""
        return sampling.start_at(self.start_at, self._supernet)

    @property
    def effective_stop_width_at(self):
        """`stop_width_at`, with "auto" resolved for the attached model."""
        return sampling.stop_width_at(self.stop_width_at, self._supernet)

    def expected_macs(self, width_phase=True, samples=20000, seed=0):
        """`(expected_augmented_macs, tiny_macs)`: a step costs at least
        `1 + expected / tiny` plain ones (`WidthSampler.expected_macs`)."""
        net = self._supernet
        return self._sampler.expected_macs(net, width_phase, samples, seed)

    def widened_output_inputs(self):
        """`{output layer: [first layer of each augmented group it reads]}`."""
        return monitoring.widened_output_inputs(self._supernet)

    def _report(self):
        net, cls = self._supernet, type(self).__name__
        taps = 0 if net is None else len(self._taps)
        guard = self.gradient_guard
        report = monitoring.build_report(cls, net, self.name, guard, taps)
        start = self.effective_start_at
        if net is not None and start:
            why = " (start_at='auto': feature maps below min_resolution)"
            report.note(
                f"Augmented pass from {start:.0%} of the epochs on"
                + (why if self.start_at == "auto" else "")
                + "."
            )
            stop = self.effective_stop_width_at
            if stop <= start and self._sampler.is_width.any():
                report.note(
                    f"The width phase ends at {stop:.0%} of the epochs "
                    "(stop_width_at): only the expand groups are augmented."
                )
        return report

    def get_config(self):
        return {
            **super().get_config(),
            "width_multipliers": list(self.width_multipliers),
            "expand_multipliers": list(self.expand_multipliers),
            "alpha": self.alpha,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
            "stop_width_at": self.stop_width_at,
            "start_at": self.start_at,
            "stop_at": self.stop_at,
            "sort_channels": self.sort_channels,
            "exclude": list(self.exclude),
            "output_guard": self.output_guard,
            "gradient_guard": self.gradient_guard,
            "min_resolution": self.min_resolution,
            "extra_init": self.extra_init,
            "seed": self.seed,
        }
