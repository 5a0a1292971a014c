"""Which weights of which layers can be made sparse.

A small registry maps layer classes to the names of their prunable weights
(the kernels), looked up along the class hierarchy so that subclasses of a
registered layer are covered too. Any other layer can take part by duck
typing: give it a `prunable_weights` attribute, property or method that
returns its prunable `keras.Variable`s.

Biases, normalization parameters and embeddings are never pruned.
"""

import keras

from keras_compact import compat
from keras_compact.graph import kinds

_REGISTRY = {}


def register_prunable(layer_class, weight_names):
    """Declares the prunable weights of a layer class.

    Args:
        layer_class: a subclass of `keras.layers.Layer`.
        weight_names: names of the layer attributes that hold the prunable
            weights (e.g. `("kernel",)`). A private twin (`_kernel`) is used
            when present, since Keras exposes some kernels as properties.

    Raises:
        TypeError: if `layer_class` is not a Keras layer class.
        ValueError: if `weight_names` is empty or not a sequence of strings.

    Example:

    ```python
    keras_compact.sparse.register_prunable(MyConv, ("kernel",))
    ```
    """
    if not (
        isinstance(layer_class, type)
        and issubclass(layer_class, keras.layers.Layer)
    ):
        raise TypeError(
            "Expected `layer_class` to be a subclass of keras.layers.Layer. "
            f"Received: layer_class={layer_class!r}"
        )
    if isinstance(weight_names, str):
        weight_names = (weight_names,)
    weight_names = tuple(weight_names)
    if not weight_names or not all(isinstance(n, str) for n in weight_names):
        raise ValueError(
            "Expected `weight_names` to be a non-empty sequence of attribute "
            f"names. Received: weight_names={weight_names!r}"
        )
    _REGISTRY[layer_class] = weight_names


for _cls in kinds.KERNEL:
    if _cls not in kinds.SEPARABLE:
        register_prunable(_cls, ("kernel",))
for _cls in kinds.SEPARABLE:
    register_prunable(_cls, ("depthwise_kernel", "pointwise_kernel"))
del _cls


class UnsupportedLayer(Exception):
    """Raised by `prunable_weights` with the reason a layer is left dense."""


def _registered_names(layer):
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def _resolve(layer, name):
    for attr in ("_" + name, name):
        value = getattr(layer, attr, None)
        if isinstance(value, keras.Variable):
            return value
    raise UnsupportedLayer(
        f"its attribute {name!r} is not a keras.Variable (unbuilt layer?)"
    )


def prunable_weights(layer):
    """The prunable weights of one layer, as `(label, variable)` pairs.

    Duck typing comes first: a layer with a `prunable_weights` attribute or
    method declares its own weights. Otherwise the registry is consulted.

    Args:
        layer: a `keras.layers.Layer`.

    Returns:
        A list of `(label, variable)` pairs (empty for a layer that has no
        prunable weights, such as BatchNormalization or Add). `label` is a
        short name for the weight (`"kernel"`, `"pointwise_kernel"`).

    Raises:
        UnsupportedLayer: if the layer has trainable weights of its own but
            cannot be pruned (not registered, LoRA-enabled, quantized,
            non-float weights); the message says why.
    """
    declared = getattr(layer, "prunable_weights", None)
    if declared is not None:
        weights = declared() if callable(declared) else declared
        out = []
        for v in weights:
            if not isinstance(v, keras.Variable):
                raise UnsupportedLayer(
                    "its `prunable_weights` returned a non-variable "
                    f"{type(v).__name__}"
                )
            out.append((v.name, v))
        return _checked(layer, out)
    names = _registered_names(layer)
    if names is None:
        own = compat.own_trainable_variables(layer)
        if own and not _is_normalization(layer):
            raise UnsupportedLayer(
                f"{type(layer).__name__} is not in the prunable registry "
                "(register it with keras_compact.sparse.register_prunable or "
                "give it a `prunable_weights` attribute)"
            )
        return []
    if getattr(layer, "lora_enabled", False):
        raise UnsupportedLayer("LoRA is enabled on it")
    if getattr(layer, "quantization_mode", None):
        raise UnsupportedLayer(f"it is quantized ({layer.quantization_mode!r})")
    if not layer.built:
        raise UnsupportedLayer("it is not built")
    return _checked(layer, [(n, _resolve(layer, n)) for n in names])


def _checked(layer, pairs):
    for label, v in pairs:
        if not keras.backend.is_float_dtype(v.dtype):
            raise UnsupportedLayer(
                f"its weight {label!r} has the non-float dtype {v.dtype}"
            )
        if len(v.shape) < 2:
            raise UnsupportedLayer(
                f"its weight {label!r} has rank {len(v.shape)} (< 2)"
            )
    return pairs


def _is_normalization(layer):
    return isinstance(layer, kinds.NORMALIZATION)
