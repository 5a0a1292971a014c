"""The one layer-kind table and its subclass rule."""

import keras
import numpy as np
import pytest

from keras_compact.graph import kinds
from keras_compact.graph.channels import ChannelGroups
from keras_compact.graph.stats import count_macs
from keras_compact.sparse.registry import prunable_weights

L = keras.layers


class MyConv(L.Conv2D):
    """A user subclass that only changes a default."""

    def __init__(self, filters, **kwargs):
        kwargs.setdefault("padding", "same")
        super().__init__(filters, 3, **kwargs)


class MyDense(L.Dense):
    pass


class DoubledConv(L.Conv2D):
    """A subclass that computes something else."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


def test_keras_classes_of_different_kinds_are_not_subclasses():
    # The isinstance rule changes nothing on Keras' own classes: no Keras
    # class of one kind is a subclass of a class of another kind.
    assert not issubclass(L.DepthwiseConv2D, L.Conv2D)
    assert not issubclass(L.SeparableConv2D, L.Conv2D)
    assert not issubclass(L.Conv2DTranspose, L.Conv2D)
    for a, classes_a in kinds.TABLE.items():
        for b, classes_b in kinds.TABLE.items():
            if a == b:
                continue
            for ca in classes_a:
                assert not issubclass(ca, classes_b), (ca, b)


def test_kind_of_keras_layers():
    assert kinds.kind_of(L.Conv2D(2, 3)) == "conv2d"
    assert kinds.kind_of(L.DepthwiseConv2D(3)) == "depthwise2d"
    assert kinds.kind_of(L.SeparableConv2D(2, 3)) == "separable2d"
    assert kinds.kind_of(L.Conv2DTranspose(2, 3)) == "transpose2d"
    assert kinds.kind_of(L.Dense(2)) == "dense"
    assert kinds.kind_of(L.SpatialDropout2D(0.1)) == "dropout"
    assert kinds.kind_of(L.Add()) == "add"
    assert kinds.kind_of(L.Lambda(lambda x: x)) is None
    with pytest.raises(ValueError, match="Received: name='conv'"):
        kinds.of("conv")


def test_user_subclasses_are_of_their_base_kind():
    conv, dense = MyConv(4), MyDense(3)
    assert kinds.kind_of(conv) == "conv2d"
    assert isinstance(conv, kinds.CONVS)
    assert kinds.kind_of(dense) == "dense"
    assert kinds.keras_class(conv) is L.Conv2D
    assert kinds.keras_class(L.SpatialDropout2D(0.1)) is L.SpatialDropout2D
    assert kinds.computes_as_keras(conv)
    assert kinds.computes_as_keras(dense)
    assert not kinds.computes_as_keras(DoubledConv(2, 3))
    assert not kinds.computes_as_keras(L.Lambda(lambda x: x))


def test_pointwise_and_channel_preserving():
    assert kinds.is_pointwise_conv(L.Conv2D(2, 1))
    assert kinds.is_pointwise_conv(L.Conv2D(2, 1, strides=2))
    assert not kinds.is_pointwise_conv(L.Conv2D(2, 1, strides=2), True)
    assert not kinds.is_pointwise_conv(L.Conv2D(2, 3))
    assert not kinds.is_pointwise_conv(L.DepthwiseConv2D(1))
    assert not kinds.is_pointwise_conv(L.Dense(2))
    assert kinds.is_channel_preserving(L.ReLU())
    assert kinds.is_channel_preserving(L.MaxPooling2D())
    assert not kinds.is_channel_preserving(L.Activation("softmax"))
    assert not kinds.is_channel_preserving(L.PReLU())
    assert not kinds.is_channel_preserving(
        L.MaxPooling2D(data_format="channels_first")
    )


def _model(conv_cls, dense_cls):
    inputs = keras.Input((8, 8, 3))
    x = conv_cls(4, name="conv")(inputs)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = dense_cls(2, name="head")(x)
    return keras.Model(inputs, outputs)


def test_subclasses_are_handled_like_their_base_everywhere():
    plain = _model(
        lambda f, name: L.Conv2D(f, 3, padding="same", name=name), L.Dense
    )
    sub = _model(MyConv, MyDense)
    # MACs, prunable weights and channel groups see the same layers.
    assert count_macs(sub) == count_macs(plain) > 0
    assert [label for label, _ in prunable_weights(sub.get_layer("conv"))] == [
        "kernel"
    ]
    groups_plain = ChannelGroups(plain)
    groups_sub = ChannelGroups(sub)
    assert [(g.kind, g.size) for g in groups_sub.groups] == [
        (g.kind, g.size) for g in groups_plain.groups
    ]
    assert any(g.kind == "width" for g in groups_sub.groups)


def test_subclass_overriding_call_is_fixed_in_channel_groups():
    inputs = keras.Input((8, 8, 3))
    x = DoubledConv(4, 3, padding="same", name="doubled")(inputs)
    x = L.Conv2D(4, 3, padding="same")(x)
    outputs = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    groups = ChannelGroups(model)
    reasons = [r for g in groups.groups for r in g.reasons]
    assert any("doubled: DoubledConv overrides call" in r for r in reasons)
    np.testing.assert_equal(model.count_params(), 3 * 9 * 4 + 4 + 4 * 9 * 4 + 4)
