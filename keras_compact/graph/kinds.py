"""The layer kinds the graph core and the techniques care about, in one table.

One subclass rule holds everywhere: a layer is of a kind when it is an
instance of one of the kind's Keras classes (`isinstance`), so a user's
subclass of `keras.layers.Conv2D` is a convolution and a subclass of
`keras.layers.Dense` is a dense layer. In Keras 3 the Keras classes of two
different kinds are never subclasses of one another (`DepthwiseConv2D`,
`SeparableConv2D` and `Conv2DTranspose` are not `Conv2D`s; checked by
`tests/test_kinds.py`); the one subclass pair inside a kind is
`SpatialDropout*D` < `Dropout`.

Code that re-implements a layer's computation (elastic twins, BN folding,
branch fusion) can ask `computes_as_keras(layer)`: a subclass that
overrides `call` may compute something else, so such code leaves it alone
and says why.

Example:

```python
from keras_compact.graph import kinds

kinds.kind_of(layer)             # "conv2d", "dense", "batch_norm", ... or None
isinstance(layer, kinds.CONVS)   # Conv1D / Conv2D / Conv3D and subclasses
kinds.is_pointwise_conv(layer)   # a 1x1 (regular) convolution
```
"""

import keras

L = keras.layers

#: Kind name -> the Keras classes of that kind (matched with `isinstance`).
TABLE = {
    "conv1d": (L.Conv1D,),
    "conv2d": (L.Conv2D,),
    "conv3d": (L.Conv3D,),
    "depthwise1d": (L.DepthwiseConv1D,),
    "depthwise2d": (L.DepthwiseConv2D,),
    "separable1d": (L.SeparableConv1D,),
    "separable2d": (L.SeparableConv2D,),
    "transpose1d": (L.Conv1DTranspose,),
    "transpose2d": (L.Conv2DTranspose,),
    "transpose3d": (L.Conv3DTranspose,),
    "dense": (L.Dense,),
    "einsum_dense": (L.EinsumDense,),
    "batch_norm": (L.BatchNormalization,),
    "layer_norm": (L.LayerNormalization,),
    "group_norm": (L.GroupNormalization,),
    "unit_norm": (L.UnitNormalization,),
    "pooling": (
        L.MaxPooling1D,
        L.MaxPooling2D,
        L.MaxPooling3D,
        L.AveragePooling1D,
        L.AveragePooling2D,
        L.AveragePooling3D,
    ),
    "global_pooling": (
        L.GlobalAveragePooling1D,
        L.GlobalAveragePooling2D,
        L.GlobalAveragePooling3D,
        L.GlobalMaxPooling1D,
        L.GlobalMaxPooling2D,
        L.GlobalMaxPooling3D,
    ),
    "activation": (L.Activation, L.ReLU, L.LeakyReLU, L.ELU),
    "prelu": (L.PReLU,),
    "softmax": (L.Softmax,),
    "dropout": (
        L.Dropout,  # and SpatialDropout1D/2D/3D, its subclasses
        L.GaussianNoise,
        L.GaussianDropout,
        L.AlphaDropout,
        L.ActivityRegularization,
    ),
    "identity": (L.Identity,),
    "padding": (
        L.ZeroPadding1D,
        L.ZeroPadding2D,
        L.ZeroPadding3D,
        L.Cropping1D,
        L.Cropping2D,
        L.Cropping3D,
    ),
    "upsampling": (L.UpSampling1D, L.UpSampling2D, L.UpSampling3D),
    "rescaling": (L.Rescaling,),
    "flatten": (L.Flatten,),
    "reshape": (L.Reshape,),
    "add": (L.Add,),
    "subtract": (L.Subtract,),
    "multiply": (L.Multiply,),
    "average": (L.Average,),
    "maximum": (L.Maximum,),
    "minimum": (L.Minimum,),
    "concatenate": (L.Concatenate,),
}


def of(*names):
    """The Keras classes of the named kinds, as one tuple for `isinstance`.

    Args:
        *names: kind names, keys of `TABLE`.

    Raises:
        ValueError: for a name that is not a kind.
    """
    out = []
    for name in names:
        if name not in TABLE:
            raise ValueError(
                f"Expected a layer kind, one of {sorted(TABLE)}. "
                f"Received: name={name!r}"
            )
        out.extend(TABLE[name])
    return tuple(out)


# Groups used around the code.
CONVS = of("conv1d", "conv2d", "conv3d")
DEPTHWISE = of("depthwise1d", "depthwise2d")
SEPARABLE = of("separable1d", "separable2d")
TRANSPOSED = of("transpose1d", "transpose2d", "transpose3d")
DENSE = of("dense")
EINSUM_DENSE = of("einsum_dense")
#: Every layer with a kernel (the layers sparsity and re-parameterisation
#: consider).
KERNEL = CONVS + TRANSPOSED + DEPTHWISE + SEPARABLE + DENSE + EINSUM_DENSE
NORMALIZATION = of("batch_norm", "layer_norm", "group_norm", "unit_norm")
POOLING = of("pooling")
GLOBAL_POOLING = of("global_pooling")
#: Activation layers (PReLU has per-channel weights: `of("prelu")`).
ACTIVATIONS = of("activation")
DROPOUT = of("dropout")
ELEMENTWISE_MERGES = of(
    "add", "subtract", "multiply", "average", "maximum", "minimum"
)
MERGES = ELEMENTWISE_MERGES + of("concatenate")
#: Layers without weights that treat every channel alike and keep the channel
#: axis (last, in channels_last) as it is: activations, dropout and noise,
#: identity, padding and cropping, upsampling, local and global pooling.
CHANNEL_PRESERVING = (
    ACTIVATIONS
    + DROPOUT
    + of("identity", "padding", "upsampling")
    + POOLING
    + GLOBAL_POOLING
)


def kind_of(layer):
    """The kind name of a layer (the first kind of `TABLE` it is an
    instance of), or None."""
    for name, classes in TABLE.items():
        if isinstance(layer, classes):
            return name
    return None


def keras_class(layer):
    """The Keras class of `TABLE` that `layer` is an instance of (its own
    class for a Keras layer, the Keras base for a user subclass), or None."""
    for classes in TABLE.values():
        for cls in classes:
            if isinstance(layer, cls):
                # The most derived Keras class (SpatialDropout2D, not
                # Dropout).
                for sub in type(layer).__mro__:
                    if sub.__module__.startswith("keras."):
                        return sub
                return cls
    return None


def computes_as_keras(layer):
    """Whether a layer of a known kind runs its Keras class's own `call`
    (True for Keras' layers and for subclasses that only change
    `__init__`, config or initialisation; False for a subclass that
    overrides `call`, or a layer of no known kind)."""
    base = keras_class(layer)
    return base is not None and type(layer).call is base.call


def is_pointwise_conv(layer, unit_strides=False):
    """Whether `layer` is a 1x1 convolution (a regular `Conv1D` / `Conv2D` /
    `Conv3D`, or a subclass, whose kernel is all ones).

    Args:
        layer: any layer.
        unit_strides: also require every stride to be 1.
    """
    if not isinstance(layer, CONVS):
        return False
    if any(k != 1 for k in layer.kernel_size):
        return False
    return not unit_strides or all(s == 1 for s in layer.strides)


def is_channel_preserving(layer):
    """Whether a weightless layer keeps the channel axis as it is (same
    channels, same order): a `CHANNEL_PRESERVING` layer in channels_last,
    other than a softmax `Activation` (which mixes channels)."""
    if not isinstance(layer, CHANNEL_PRESERVING):
        return False
    if getattr(layer, "data_format", None) == "channels_first":
        return False
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    return activation not in ("softmax", "log_softmax")
