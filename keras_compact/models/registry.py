"""The model zoo's registry: builders registered by name.

Every zoo model is a function that returns a plain functional `keras.Model`
made of standard Keras layers and accepts at least `input_shape` and
`num_classes`. `register_model` records such a function under a name,
`get_model` calls it by name, and `list_models` describes what is there.
"""

import dataclasses
import inspect


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model builder.

    Args:
        name: the registered name, as passed to `get_model`.
        builder: the function that builds the model.
        description: one line saying what the model is.
        input_shape: the builder's default `(height, width, channels)`.
    """

    name: str
    builder: object
    description: str
    input_shape: tuple


_REGISTRY = {}


def register_model(name, description=None):
    """Decorator that registers a model builder under `name`.

    The builder must accept `input_shape` (with a default, the model's
    natural input) and `num_classes` keyword arguments and return a
    `keras.Model`. The description defaults to the first line of its
    docstring.

    Args:
        name: the name `get_model` will know the builder by.
        description: optional one-line description.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: if `name` is not a non-empty string, if it is already
            registered, or if the builder lacks a default `input_shape` or a
            `num_classes` argument.

    Example:

    ```python
    @register_model("my_cnn")
    def my_cnn(input_shape=(28, 28, 1), num_classes=10):
        \"\"\"A one-conv CNN.\"\"\"
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
    ```
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            "Expected a non-empty string as model name. "
            f"Received: name={name!r}"
        )

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(
                f"A model is already registered under this name. "
                f"Received: name={name!r}"
            )
        params = inspect.signature(builder).parameters
        shape = params.get("input_shape")
        if (
            shape is None
            or shape.default is inspect.Parameter.empty
            or "num_classes" not in params
        ):
            raise ValueError(
                "A model builder must accept `input_shape` (with a default) "
                "and `num_classes`. Received: builder="
                f"{getattr(builder, '__name__', builder)!r} for name={name!r}"
            )
        desc = description
        if desc is None:
            doc = inspect.getdoc(builder) or ""
            desc = doc.strip().splitlines()[0] if doc.strip() else name
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            description=desc,
            input_shape=tuple(shape.default),
        )
        return builder

    return decorator


def get_model(name, input_shape=None, num_classes=10, **kwargs):
    """Builds a zoo model by name.

    Args:
        name: a registered model name (see `list_models()`).
        input_shape: `(height, width, channels)` of one image; `None` uses
            the model's default (see `list_models()`).
        num_classes: number of output logits.
        **kwargs: model-specific arguments, for example
            `width_multiplier` (every zoo model), `alpha` and `cifar_stem`
            (MobileNetV2) or `dropout_rate` (wide ResNets).

    Returns:
        A functional `keras.Model` whose outputs are logits (no softmax):
        compile it with a `from_logits=True` loss.

    Raises:
        ValueError: if `name` is not registered (the message lists the known
            names), if a keyword argument is not accepted by that model, or if
            an argument value is invalid (for example `width_multiplier=0`).

    Example:

    ```python
    model = get_model("resnet8", input_shape=(28, 28, 1), num_classes=10)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ```
    """
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(
            f"Unknown model. Known models: {sorted(_REGISTRY)}. "
            f"Received: name={name!r}"
        )
    params = inspect.signature(spec.builder).parameters
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        accepted = sorted(
            k for k in params if k not in ("input_shape", "num_classes")
        )
        raise ValueError(
            f"Model {name!r} does not accept the keyword arguments {unknown}. "
            f"It accepts: {accepted}. Received: kwargs={kwargs!r}"
        )
    if input_shape is None:
        input_shape = spec.input_shape
    return spec.builder(
        input_shape=input_shape, num_classes=num_classes, **kwargs
    )


def list_models():
    """Describes every registered model, sorted by name.

    Returns:
        A list of dicts with keys `"name"`, `"description"` (one line) and
        `"input_shape"` (the default `(height, width, channels)`).

    Example:

    ```python
    for entry in list_models():
        print(entry["name"], entry["input_shape"], entry["description"])
    ```
    """
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "input_shape": spec.input_shape,
        }
        for spec in sorted(_REGISTRY.values(), key=lambda s: s.name)
    ]


def get_model_spec(name):
    """The `ModelSpec` registered under `name` (raises `ValueError`)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model. Known models: {sorted(_REGISTRY)}. "
            f"Received: name={name!r}"
        )
    return _REGISTRY[name]
