"""The augmented loss of NetAug: how an augmented sub-model is scored.

`augmented_loss` runs the augmented sub-model of the given widths on the
batch and scores it like the compact model:

- with `label_smoothing`, a categorical cross-entropy with that smoothing
  (`smoothed_loss`, integer or one-hot labels; single output only);
- else, for a single softmax output compiled with a Keras (sparse)
  categorical cross-entropy and no loss weights, the same loss
  `from_logits=True` on the augmented model's logits;
- else the compiled loss (every output, with its loss and loss weight, as
  `Trainer.task_loss` scores the compact model). Other losses of a softmax
  output get its probabilities, as the compact model's output.

`guard_gradients` is the gradient guard (`NetAug(gradient_guard=True)`):
the augmented pass reads the shared weights through zero "tap" variables
(`Supernet(gradient_taps=True)`) that receive its gradient separately (one
extra copy of the compact model's trainable weights and of their optimizer
slots), and each shared weight then steps with
`g_tiny + min(1, |g_tiny| / |g_aug|) * g_aug`, so the augmented gradient
never outweighs the tiny one.
"""

import keras
from keras import ops

from keras_compact import compat
from keras_compact.training import tensorflow_step


def augmented_loss(
    net,
    trainer,
    x,
    y,
    widths,
    sample_weight=None,
    label_smoothing=None,
    from_logits=True,
    logits_loss=None,
):
    """The (unweighted) loss of the sub-model of `widths` of `net`.

    Args:
        net: the `Supernet`.
        trainer: the `Trainer` (its compiled loss).
        x, y, sample_weight: the batch.
        widths: int32 active widths, one per augmented group.
        label_smoothing: None or the smoothing of a categorical
            cross-entropy used instead of the compiled loss.
        from_logits: whether the model's (non-softmax) outputs are logits
            (only with `label_smoothing`).
        logits_loss: None, or a function of the trainer giving the
            compiled loss as a loss on logits, or None
            (`AugmentedLoss.logits_loss`).
    """
    softmax = any(net.softmax_outputs)
    if label_smoothing is not None:
        y_aug = net(x, widths, training=True, logits=softmax)
        return smoothed_loss(
            y, y_aug, sample_weight, from_logits or softmax, label_smoothing
        )
    fn = None
    if softmax and logits_loss is not None:
        fn = logits_loss(trainer)
    if fn is not None:
        y_aug = net(x, widths, training=True, logits=True)
        # A Keras loss: the replica batch's own value (as `task_loss`).
        return tensorflow_step.unscale_loss(
            fn(y, y_aug, sample_weight=sample_weight)
        )
    y_aug = net(x, widths, training=True)
    return trainer.task_loss(y, y_aug, sample_weight)


def smoothed_loss(y, y_aug, sample_weight, from_logits, label_smoothing):
    """Categorical cross-entropy of `y_aug` with `label_smoothing`, for
    integer or one-hot labels `y`, averaged with `sample_weight`."""
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
        label_smoothing=label_smoothing,
    )
    if sample_weight is not None:
        sw = ops.reshape(ops.cast(sample_weight, per_example.dtype), (-1,))
        return ops.sum(per_example * sw) / ops.maximum(ops.sum(sw), 1e-7)
    return ops.mean(per_example)


class AugmentedLoss:
    """`augmented_loss` with fixed settings, caching the compiled loss as
    a loss on logits (`logits_loss`) per compiled loss.

    Args:
        net: the `Supernet`.
        label_smoothing: None or the smoothing (see `augmented_loss`).
        from_logits: whether non-softmax outputs are logits.
    """

    def __init__(self, net, label_smoothing=None, from_logits=True):
        self.net = net
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits
        self._cached = None

    def __call__(self, trainer, x, y, widths, sample_weight=None):
        return augmented_loss(
            self.net,
            trainer,
            x,
            y,
            widths,
            sample_weight,
            self.label_smoothing,
            self.from_logits,
            self.logits_loss,
        )

    def logits_loss(self, trainer):
        """The compiled loss of `trainer` as a loss on logits for a model
        with a single (softmax) output compiled with a Keras (sparse)
        categorical cross-entropy and no loss weights; else None."""
        loss = getattr(trainer, "loss", None)
        key = id(loss)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        fn = None
        single = len(self.net.softmax_outputs) == 1
        weights = getattr(trainer, "loss_weights", None)
        if single and weights is None:
            fn = logits_cross_entropy(loss)
        self._cached = (key, fn)
        return fn


def check_trainer(trainer, net, label_smoothing):
    """Raises a ValueError when the augmented model of `net` cannot be
    scored: no compiled loss (without `label_smoothing`), or
    `label_smoothing` for a model with several outputs."""
    if compat.compiled_loss(trainer) is None and label_smoothing is None:
        raise ValueError(
            "NetAug scores the augmented model with the compiled loss: "
            "pass `loss=` to `trainer.compile()`."
        )
    outputs = len(net.softmax_outputs)
    if label_smoothing is not None and outputs != 1:
        raise ValueError(
            "Expected a single-output model with NetAug's `label_smoothing` "
            "(or use label_smoothing=None: the compiled loss on every "
            f"output). Received: model={net.compact.name!r} with {outputs} "
            f"outputs, label_smoothing={label_smoothing}"
        )


_CROSS_ENTROPIES = {
    keras.losses.sparse_categorical_crossentropy: (
        keras.losses.SparseCategoricalCrossentropy
    ),
    keras.losses.categorical_crossentropy: keras.losses.CategoricalCrossentropy,
}


def logits_cross_entropy(loss):
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


def guard_gradients(grads, variables, taps):
    """The gradient guard: for each `(variable, tap)` pair of `taps`, the
    variable's gradient becomes `g_tiny + min(1, |g_tiny| / |g_aug|) *
    g_aug` (norms per variable; `g_aug` is the tap's gradient, which
    includes `alpha`), and the tap's own gradient is zeroed.

    Args:
        grads: the gradients, aligned with `variables` (None allowed).
        variables: the trainable variables of the step.
        taps: `(shared variable, tap variable)` pairs.

    Returns:
        The new list of gradients.
    """
    grads = list(grads)
    index = {id(v): i for i, v in enumerate(variables)}
    for var, tap in taps:
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
