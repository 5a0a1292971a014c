"""Small functional models shared by the NetAug and channel-group tests."""

import keras

L = keras.layers


def residual_model(size=16, classes=3):
    """conv -> [conv-bn-relu, conv-bn] + skip (Add) -> gap -> dense."""
    i = keras.Input((size, size, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(6, 3, padding="same", name="c1")(x)
    y = L.BatchNormalization(name="c1_bn")(y)
    y = L.ReLU(name="c1_relu")(y)
    y = L.Conv2D(8, 3, padding="same", name="c2")(y)
    y = L.BatchNormalization(name="c2_bn")(y)
    x = L.Add(name="add")([x, y])
    x = L.ReLU(name="add_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.0, name="drop")(x)
    return keras.Model(i, L.Dense(classes, name="head")(x), name="residual")


def concat_model(size=16, classes=3):
    """Two branches concatenated on channels, a conv after the concat, a
    second concat of a concat (nested layouts), a depthwise conv and a
    separable conv on concatenated channels."""
    i = keras.Input((size, size, 3), name="img")
    a = L.Conv2D(4, 3, padding="same", name="a")(i)
    a = L.BatchNormalization(name="a_bn")(a)
    b = L.Conv2D(6, 1, name="b")(i)
    b = L.ReLU(name="b_relu")(b)
    c = L.Concatenate(name="cat1")([a, b])
    c = L.BatchNormalization(name="cat1_bn")(c)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(c)
    e = L.Conv2D(5, 3, padding="same", strides=2, name="e")(d)
    f = L.MaxPooling2D(2, name="pool")(d)
    g = L.Concatenate(name="cat2")([f, e])
    g = L.SeparableConv2D(7, 3, padding="same", name="sep")(g)
    g = L.GlobalAveragePooling2D(name="gap")(g)
    return keras.Model(i, L.Dense(classes, name="head")(g), name="concat")


def se_model(size=16, classes=3):
    """An inverted residual block with squeeze-excite (GAP -> Reshape ->
    conv -> relu -> conv -> hard sigmoid from keras.ops -> Multiply), a
    residual Add and a Flatten head over a 1x1 map."""
    i = keras.Input((size, size, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", strides=2, use_bias=False, name="stem")(
        i
    )
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("hard_swish", name="stem_act")(x)
    inp = x
    x = L.Conv2D(24, 1, use_bias=False, name="expand")(x)
    x = L.BatchNormalization(name="expand_bn")(x)
    x = L.ReLU(6.0, name="expand_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(name="dw_relu")(x)
    s = L.GlobalAveragePooling2D(name="se_pool")(x)
    s = L.Reshape((1, 1, 24), name="se_reshape")(s)
    s = L.Conv2D(6, 1, name="se_reduce")(s)
    s = L.ReLU(name="se_relu")(s)
    s = L.Conv2D(24, 1, name="se_expand")(s)
    s = L.ReLU(6.0, name="se_hs")(s + 3.0) * (1.0 / 6.0)
    x = L.Multiply(name="se_mul")([x, s])
    x = L.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = L.BatchNormalization(name="project_bn")(x)
    x = L.Add(name="res_add")([inp, x])
    x = L.Conv2D(16, 1, name="head_conv")(x)
    x = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(i, L.Dense(classes, name="logits")(x), name="se")
