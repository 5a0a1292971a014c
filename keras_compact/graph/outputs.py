"""What a model's outputs are: logits or probabilities.

Many models end with a softmax (the `keras.applications` default, most
reference models); techniques that compare predictions (distillation, the
auxiliary and augmented heads) must work on logits or log-probabilities,
never on probabilities taken for logits. This module is the one place that
tells them apart.
"""

import keras


def is_softmax(fn):
    """Whether an activation function is softmax."""
    return fn is keras.activations.softmax or (
        getattr(fn, "__name__", None) == "softmax"
    )


def output_layers(model):
    """The layers that produce the outputs of `model`, in output order.

    Returns:
        A list of layers for a functional or Sequential model, or None for
        a subclassed model (whose outputs cannot be traced to layers).
    """
    if isinstance(model, keras.Sequential):
        return [model.layers[-1]] if model.layers else None
    names = getattr(model, "output_names", None)
    if not names or not getattr(model, "outputs", None):
        return None
    try:
        return [model.get_layer(name) for name in names]
    except ValueError:
        return None


def applies_softmax(layer):
    """Whether `layer`'s last operation is a softmax."""
    if isinstance(layer, keras.layers.Softmax):
        return True
    return is_softmax(getattr(layer, "activation", None))


def softmax_outputs(model):
    """One bool per output of `model`: whether it is a softmax output.

    A subclassed model's outputs cannot be inspected: they are taken as
    logits (pass `from_logits=False` explicitly for such a model).
    """
    layers = output_layers(model)
    if layers is None:
        return [False] * max(1, len(getattr(model, "outputs", None) or [0]))
    return [applies_softmax(layer) for layer in layers]


def to_logits(outputs, probabilities):
    """Log-probabilities for probability outputs, the rest unchanged.

    `log(p)` differs from the logits by a constant per example, so every
    softmax-based quantity (cross-entropy, KL divergence at any
    temperature) is the same computed from it.

    Args:
        outputs: a tensor or a flat list of tensors.
        probabilities: one bool per tensor.

    Returns:
        A flat list of tensors.
    """
    return [
        keras.ops.log(keras.ops.clip(out, 1e-7, 1.0)) if prob else out
        for out, prob in zip(keras.tree.flatten(outputs), probabilities)
    ]


def soft_target_kl(target, prediction, temperature=1.0):
    """`T**2 * KL(softmax(target / T) || softmax(prediction / T))`, the
    batch mean: the soft-target loss of distillation and mutual learning.

    Args:
        target: logits (or log-probabilities) of the soft targets; wrap them
            in `keras.ops.stop_gradient` when they must not learn.
        prediction: logits (or log-probabilities) being trained.
        temperature: softmax temperature `T` > 0.

    Returns:
        A scalar tensor.

    Reference:
        Hinton et al., Distilling the Knowledge in a Neural Network (2015):
        the `T**2` factor keeps the gradient scale independent of `T`.
    """
    t = float(temperature)
    log_p = keras.ops.log_softmax(target / t, axis=-1)
    log_q = keras.ops.log_softmax(prediction / t, axis=-1)
    kl = keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), axis=-1)
    return keras.ops.mean(kl) * (t * t)
