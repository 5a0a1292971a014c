"""`QuantizationAwareTraining`: int8 fake quantization in the train step."""

import keras
import numpy as np

from keras_compact.api_export import keras_compact_export
from keras_compact.graph.walk import require_call_graph
from keras_compact.quantization import schedule
from keras_compact.quantization.callbacks import StartAtEpoch
from keras_compact.quantization.report import qat_report
from keras_compact.quantization.schedule import NOT_STARTED
from keras_compact.quantization.view import QuantizationPlan
from keras_compact.training import arguments as args
from keras_compact.training import tensorflow_step
from keras_compact.training.technique import Technique
from keras_compact.training.untracked import Untracked


class QuantizationContext:
    """What the fake-quant layers read from the technique (a plain object,
    so that Keras does not track the technique twice)."""

    def __init__(self, technique):
        self.technique = technique

    def range_variable(self, key):
        return self.technique.ranges[key]

    def step(self):
        trainer = self.technique._holder.trainer
        optimizer = getattr(trainer, "optimizer", None) if trainer else None
        if optimizer is None:
            return keras.ops.convert_to_tensor(0, "int64")
        return keras.ops.cast(optimizer.iterations, "int64")

    def bn_frozen(self):
        t = self.technique
        return keras.ops.greater_equal(self.step(), t.freeze_step.value)

    def update_range(self, variable, x):
        """Moving-average update of a `[min, max]` range from a batch; the
        first QAT step takes the batch's range itself. Under a strategy of
        several replicas, the batch's range is that of the global batch
        (every replica then keeps the same range)."""
        x = keras.ops.stop_gradient(x)
        low, high = tensorflow_step.all_reduce_min_max(
            keras.ops.min(x), keras.ops.max(x)
        )
        batch = keras.ops.stack(
            [keras.ops.minimum(low, 0.0), keras.ops.maximum(high, 0.0)]
        )
        decay = self.technique.ema_decay
        first = keras.ops.equal(self.technique.quant_steps.value, 0)
        moved = variable.value * decay + batch * (1.0 - decay)
        new = keras.ops.where(first, batch, moved)
        variable.assign(new)
        return new


@keras_compact_export
class QuantizationAwareTraining(Technique):
    """Quantization-aware training for int8 TFLite files (fake quantization).

    From its start step, the training forward pass runs through a
    fake-quant view of the compact model that reuses the model's own layers
    and variables, and quantizes exactly where the int8 TFLite file does
    (see `QuantizationPlan`): int8 weights per output channel with the
    following BatchNormalization folded in, int8 activations per tensor on
    moving-average ranges wherever TFLite requantizes.

    Gradients are straight-through (`keras.quantizers.
    fake_quant_with_min_max_vars`). For `freeze_bn_delay` steps after the
    start the BN is folded with batch statistics and its moving statistics
    are updated (Jacob et al., 2018); then they are frozen and used, as in
    the exported file. Before the start step, training is plain float
    training of the compact model.

    `export_tflite(trainer, path, quantization="int8")` converts the
    fake-quant model with the trained ranges (no calibration data): the int8
    file computes what `quantized_model()` computes, with builtin int8 ops
    only. `trainer.strip()` returns the user's float model, unchanged.

    Models: functional or Sequential (a subclassed model has no graph to
    quantize: TypeError). Multi-output models work: every output is
    fake-quantized (its own range) and the int8 file has every output; the
    fake-quant model keeps the outputs' structure (a dict's keys).

    Composition: `SparseTraining` (zero weights stay zero in the int8
    file) and `Distillation` (its loss sees the fake-quant predictions)
    compose; `AuxiliaryModule` taps are read from the fake-quant graph: a
    tap on a BN (the automatic taps) reads the fused layer that folds it,
    which computes the BN's output with the int8 kernel; a tap on a conv
    whose BN is folded into it is refused. `NetAug`'s tiny pass is the
    fake-quant graph, its augmented pass trains in float. It replaces the
    training graph, so it cannot be combined with `Reparameterize`.

    Args:
        start: when fake quantization starts: an int >= 0, the optimizer
            step (0: from scratch, or fine-tuning a trained model in a new
            `fit`), or a float in (0, 1), the fraction of the epochs of the
            `fit` call after which it starts (float training first).
            Defaults to 0.
        freeze_bn_delay: steps after the start during which BN statistics
            are still estimated from batches (the fold uses the batch's
            statistics, the moving ones keep being updated for the
            exported file); None (the default) never freezes them, 0
            freezes them from the start. Frozen statistics take away the
            normalization's scale invariance, and a learning rate tuned
            for batch statistics can then make training diverge (measured:
            docs/techniques.md).
        ema_decay: decay of the moving average of activation ranges, in
            [0, 1). Defaults to 0.99.
        dense_as_conv: whether the int8 file computes a `Dense` layer (on
            2-D inputs) as a 1x1 `CONV_2D` between two `RESHAPE`s instead
            of `FULLY_CONNECTED`: the same numbers, and the micro runtime's
            `CONV_2D` matches LiteRT's integers exactly (its
            `FULLY_CONNECTED` does not always; docs/techniques.md). Defaults
            to True.
        integer_inference: whether the fake-quant model in inference
            (`quantized_model()`, `evaluate`, validation in `fit`) computes
            convolutions, dense layers and global average pooling with the
            integer arithmetic of the int8 reference kernels (int32
            accumulation, fixed-point requantization): its outputs then
            equal the file's on LiteRT's reference kernels and on the
            microcontroller runtime, bit for bit (measured:
            `benchmarks/results/qat_fidelity.md`), at about 20x the float
            inference time on CPU. False rounds once in float32 (fast; a
            small share of values land one step off, and these differences
            compound with depth). Training is the same either way. Defaults
            to True.
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: if an argument has the wrong type, or (at `Trainer`
            construction) for a subclassed model.
        ValueError: for an out-of-range argument, or (when attached) a model
            that is not built.

    Example:

    ```python
    model = keras_compact.models.get_model("resnet8")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(train_ds, epochs=20)                 # float training
    qat = keras_compact.QuantizationAwareTraining()
    trainer = keras_compact.Trainer(model, techniques=[qat])
    trainer.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    trainer.fit(train_ds, epochs=2)                # QAT fine-tuning
    keras_compact.export.export_tflite(trainer, "m.tflite", "int8")
    ```

    Measured: `benchmarks/results/qat_cifar10.md`.

    Reference:
        Jacob et al. "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
        Krishnamoorthi. "Quantizing deep convolutional networks for
        efficient inference: A whitepaper", arXiv:1806.08342, 2018.
    """

    def __init__(
        self,
        start=0,
        freeze_bn_delay=None,
        ema_decay=0.99,
        dense_as_conv=True,
        integer_inference=True,
        **kwargs,
    ):
        kwargs.setdefault("name", "quantization_aware_training")
        super().__init__(**kwargs)
        start = schedule.check_start(start)
        freeze_bn_delay = args.check_int(
            freeze_bn_delay, "freeze_bn_delay", minimum=0, allow_none=True
        )
        args.check_float(ema_decay, "ema_decay", 0.0, 1.0, high_open=True)
        args.check_bool(dense_as_conv, "dense_as_conv")
        args.check_bool(integer_inference, "integer_inference")
        self.dense_as_conv = dense_as_conv
        self.integer_inference = integer_inference
        self.start = start
        self.freeze_bn_delay = freeze_bn_delay
        self.ema_decay = float(ema_decay)
        # The trainer, plan and views: not tracked, not saved.
        self._holder = Untracked(
            trainer=None, ranges=None, plan=None, context=None, view=None
        )

    @property
    def ranges(self):
        """`{name: variable [min, max]}`: the activation ranges."""
        return self._holder.ranges

    @property
    def plan(self):
        return self._holder.plan

    def attach(self, trainer):
        if self._holder.trainer is not None:
            raise ValueError(
                f"The technique {self.name!r} is already attached to a "
                "trainer; create one QuantizationAwareTraining per trainer."
            )
        model = trainer.compact_model
        if not model.built:
            raise ValueError(
                "The model must be built before quantization-aware training "
                "(give it a `keras.Input`). "
                f"Received: model={model.name!r} (not built)"
            )
        purpose = "place fake quantization where TFLite quantizes"
        require_call_graph(model, "QuantizationAwareTraining", purpose)
        plan = QuantizationPlan(model)
        self._holder.trainer = trainer
        self._holder.plan = plan
        self._holder.context = QuantizationContext(self)
        self._holder.ranges = {}
        for key in plan.keys:
            self._holder.ranges[key] = self.add_weight(
                shape=(2,),
                initializer="zeros",
                trainable=False,
                name=f"{key}_range".replace("/", "_"),
            )
        start = self.start if isinstance(self.start, int) else NOT_STARTED
        self.start_step = self._scalar("start_step", start)
        freeze = schedule.freeze_from(start, self.freeze_bn_delay)
        self.freeze_step = self._scalar("freeze_step", freeze)
        self.quant_steps = self._scalar("quant_steps", 0)
        self._holder.view = plan.build(self._holder.context)
        self.built = True

    def _scalar(self, name, value):
        return self.add_weight(
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(value),
            trainable=False,
            name=name,
        )

    def set_start_step(self, step):
        """Starts fake quantization at optimizer step `step` (an int)."""
        step = int(step)
        self.start_step.assign(step)
        self.freeze_step.assign(
            schedule.freeze_from(step, self.freeze_bn_delay)
        )

    def validate(self, trainer):
        if trainer.optimizer is None:
            raise ValueError(
                "QuantizationAwareTraining needs an optimizer: call "
                "`trainer.compile(optimizer=..., loss=...)` before `fit`."
            )
        strategy = getattr(trainer, "distribute_strategy", None)
        replicas = getattr(strategy, "num_replicas_in_sync", 1)
        schedule.check_replicas(self.start, replicas)

    def callbacks(self, trainer):
        if isinstance(self.start, float):
            return [StartAtEpoch(self)]
        return []

    def active(self, trainer):
        """Boolean tensor: whether fake quantization is on at this step."""
        step = keras.ops.cast(trainer.optimizer.iterations, "int64")
        return keras.ops.greater_equal(step, self.start_step.value)

    def training_graph(self, trainer, model):
        # The fake-quant view over the compact model's variables.
        return self._holder.view

    def training_graph_active(self, ctx):
        # From `start` on the fake-quant graph trains; before, the float one.
        if self.start == 0:
            return True
        return self.active(ctx.trainer)

    def after_step(self, ctx):
        on = keras.ops.cast(self.active(ctx.trainer), "int64")
        self.quant_steps.assign_add(on)

    def strip(self, trainer, model):
        return model

    def _check_attached(self):
        if self._holder.trainer is None:
            raise ValueError(
                f"The technique {self.name!r} is not attached: pass it to "
                "`keras_compact.Trainer(model, techniques=[...])` first."
            )

    def calibrate(self, images, batch_size=128):
        """Sets every activation range to the `[min, max]` (0 included)
        that the model reaches on `images` in inference, as post-training
        calibration sets the converter's ranges.

        `fit` trains the ranges as moving averages over the training
        batches; when those differ from what the deployed model sees
        (heavier augmentation, another preprocessing, a fine-tuning set of
        another distribution), calibrating on deployment-like images sets
        them as the post-training converter would. Call it after `fit` and
        before export, with un-augmented images
        (`keras_compact.data.representative_images`): the fake-quant model
        and the int8 file then use these ranges. Measured on resnet8
        (CIFAR-10, 1,000 images/class, pad-crop and flip augmentation, 2
        seeds): the calibrated ranges are 0.61-1.36x the trained ones and
        the int8 accuracy moves by -0.09 / +0.01 point
        (`qat_calibrate_resnet8.md`): there the trained ranges need no
        calibration.

        Args:
            images: array of model inputs, shape `(n, *input_shape)`,
                n >= 1, preprocessed as the model expects them.
            batch_size: positive int, images per forward pass.

        Raises:
            TypeError: if `batch_size` is not an int.
            ValueError: if the technique is not attached, for an empty or
                mis-shaped `images`, or a `batch_size` below 1.
        """
        self._check_attached()
        args.check_int(batch_size, "batch_size", minimum=1)
        plan = self.plan
        if len(plan.model.inputs) != 1:
            raise ValueError(
                "Expected a model with one input for `calibrate`. Received: "
                f"a model with {len(plan.model.inputs)} inputs"
            )
        x = np.asarray(images, dtype="float32")
        expected = tuple(plan.model.inputs[0].shape[1:])
        if (
            x.ndim != len(expected) + 1
            or len(x) == 0
            or any(
                e is not None and e != d for e, d in zip(expected, x.shape[1:])
            )
        ):
            raise ValueError(
                f"Expected `images` of shape (n >= 1, *{expected}). "
                f"Received: images with shape {x.shape}"
            )
        probe = keras.Model(
            plan.model.inputs[0], [plan.tensors[k] for k in plan.keys]
        )
        low = np.zeros(len(plan.keys), "float32")
        high = np.zeros(len(plan.keys), "float32")
        for i in range(0, len(x), batch_size):
            outs = probe(x[i : i + batch_size], training=False)
            for j, out in enumerate(outs):
                out = keras.ops.convert_to_numpy(out)
                low[j] = min(low[j], out.min())
                high[j] = max(high[j], out.max())
        for key, lo, hi in zip(plan.keys, low, high):
            self.ranges[key].assign(np.array([lo, hi], "float32"))

    def quantized_model(self):
        """The fake-quant model in inference mode (shares the variables).

        Its `predict` is what the int8 file computes (up to integer
        rounding): BN folded with the moving statistics, per-channel int8
        kernels, activations on the trained ranges.

        Returns:
            A functional `keras.Model`.
        """
        self._check_attached()
        return self._holder.view

    def export_model(self):
        """A constant-only copy of `quantized_model()` for the converter.

        Raises:
            ValueError: if no training step ran with fake quantization (the
                activation ranges are not trained yet).
        """
        self._check_attached()
        steps = int(keras.ops.convert_to_numpy(self.quant_steps))
        if steps == 0:
            raise ValueError(
                "The activation ranges are not trained: run `fit` past the "
                "start of quantization-aware training first. Received: "
                f"quant_steps=0, start={self.start!r}"
            )
        return self.plan.build(self._holder.context, baked=True)

    def _report(self):
        """Where the model is quantized: one applied row per fused op or
        quantization point (kind, layers, trained range `min` / `max`);
        skipped layers with the reason."""
        self._check_attached()
        return qat_report(type(self).__name__, self.plan, self.ranges)

    def get_config(self):
        return {
            **super().get_config(),
            "start": self.start,
            "freeze_bn_delay": self.freeze_bn_delay,
            "ema_decay": self.ema_decay,
            "dense_as_conv": self.dense_as_conv,
            "integer_inference": self.integer_inference,
        }
