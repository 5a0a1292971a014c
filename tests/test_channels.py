"""Channel groups: ties through Add, Concatenate, SE Multiply; expand
groups; what cannot be widened."""

import keras
import pytest
from netaug_models import concat_model, residual_model, se_model

from keras_compact.graph.channels import ChannelGroups

L = keras.layers


def _group(cg, layer_name, output=True):
    node = cg.graph.nodes_of(layer_name)[0]
    (layout,) = cg.output_layouts(node) if output else cg.input_layouts(node)
    assert len(layout) == 1, layout
    return cg.groups[layout[0]]


def test_residual_add_ties_both_branches_and_skip():
    cg = ChannelGroups(residual_model())
    stem = _group(cg, "stem")
    assert _group(cg, "c2") is stem  # tied through the Add
    assert _group(cg, "add") is stem
    assert stem.kind == "width" and stem.size == 8
    assert set(stem.producers) == {"stem", "c2"}
    inner = _group(cg, "c1")
    assert inner is not stem and inner.kind == "width" and inner.size == 6
    assert _group(cg, "head").kind == "fixed"
    assert _group(cg, "head").reasons == ["model output"]
    assert cg.groups[cg.layout(cg.graph.inputs[0])[0]].kind == "fixed"
    assert cg.skipped == []


def test_concatenate_layouts_are_segment_lists():
    cg = ChannelGroups(concat_model())
    a, b = _group(cg, "a"), _group(cg, "b")
    cat1 = cg.output_layouts(cg.graph.nodes_of("cat1")[0])[0]
    assert cat1 == (a.index, b.index)
    # BN and depthwise keep the concatenated layout.
    assert cg.output_layouts(cg.graph.nodes_of("dw")[0])[0] == cat1
    cat2 = cg.output_layouts(cg.graph.nodes_of("cat2")[0])[0]
    assert cat2 == (a.index, b.index, _group(cg, "e").index)
    # A depthwise over concatenated channels is not an inverted residual.
    assert a.kind == b.kind == "width"


def test_se_multiply_ties_gate_to_features_and_finds_projection():
    cg = ChannelGroups(se_model())
    mid = _group(cg, "expand")
    assert mid.kind == "expand" and mid.size == 24
    assert _group(cg, "se_expand") is mid  # the excite conv feeds the gate
    assert _group(cg, "se_mul") is mid
    assert _group(cg, "se_reduce").kind == "width"
    assert _group(cg, "project") is _group(cg, "stem")  # residual Add
    assert cg.projections(mid) == ["project"]  # not the SE squeeze conv
    assert _group(cg, "flat") is _group(cg, "head_conv")


def test_unsupported_layers_are_reported_not_fatal():
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(i)
    x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    x = L.Flatten(name="flat")(x)
    model = keras.Model(i, L.Dense(2, name="head")(x))
    cg = ChannelGroups(model)
    kinds = {n: _group(cg, n).kind for n in ("c1", "grouped", "c2")}
    assert kinds == {"c1": "fixed", "grouped": "fixed", "c2": "fixed"}
    reasons = " ".join(r for _, rs in cg.skipped for r in rs)
    assert "grouped convolution" in reasons
    assert "LayerNormalization" in reasons
    assert "Flatten over spatial positions" in reasons
    assert "fixed" in cg.summary()


def test_keras_applications_mobilenet_v3_groups():
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10
    )
    cg = ChannelGroups(model)
    expand = cg.groups_of("expand")
    assert len(expand) >= 8
    for g in expand:
        projections = cg.projections(g)
        assert len(projections) == 1 and projections[0].endswith("_project")


def test_subclassed_model_is_rejected_with_its_name():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Sub"):
        ChannelGroups(Sub())
