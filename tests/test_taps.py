"""Tap detection (`keras_compact.graph.taps`) on zoo and Keras models."""

import keras
import pytest

from keras_compact.graph.taps import find_taps

models = pytest.importorskip("keras_compact.models")


def _names(model, **kwargs):
    (taps,) = find_taps(model, **kwargs).values()
    return [t.name for t in taps]


def test_resnet8_stem_and_every_residual_block():
    model = models.get_model("resnet8", input_shape=(32, 32, 3))
    (taps,) = find_taps(model).values()
    assert [t.name for t in taps] == [
        "stem_bn",
        "stage1_block1_add",
        "stage2_block1_add",
        "stage3_block1_add",
    ]
    assert [t.stage for t in taps] == [0, 0, 1, 2]
    assert [t.shape for t in taps] == [
        (32, 32, 16),
        (32, 32, 16),
        (16, 16, 32),
        (8, 8, 64),
    ]
    assert [t.kind for t in taps] == ["stem", "block", "block", "block"]


def test_mobilenet_v2_tiny_block_outputs_without_head_conv():
    model = models.get_model("mobilenet_v2_tiny", input_shape=(32, 32, 3))
    names = _names(model)
    adds = [f"block{i}_add" for i in (2, 3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]
    entries = [f"block{i}_project_bn" for i in (1, 4, 7, 11, 14, 17)]
    assert sorted(names) == sorted(["stem_bn", *adds, *entries])
    assert names[0] == "stem_bn" and names[-1] == "block17_project_bn"
    # The 1x1 head convolution (1280 wide) is not a block: not tapped.
    assert "head_bn" not in names


@pytest.mark.parametrize("size,stages", [(32, 5), (96, 5)])
def test_keras_applications_mobilenet_v2(size, stages):
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), classes=10
    )
    (taps,) = find_taps(model).values()
    names = [t.name for t in taps]
    residual = [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]
    entries = [1, 3, 6, 10, 13]
    expected = ["bn_Conv1", "expanded_conv_project_BN"] + [
        f"block_{i}_add" if i in residual else f"block_{i}_project_BN"
        for i in range(1, 17)
        if i in residual or i in entries or i == 16
    ]
    assert names == expected
    assert len(names) == 18  # stem + all 17 blocks
    assert taps[-1].kind == "bottleneck" and taps[0].kind == "stem"
    assert taps[-1].stage == stages - 1
    assert taps[0].shape == (size // 2, size // 2, 32)


def test_plain_chain_taps_every_resolution_stage():
    model = models.get_model("tiny_cnn", input_shape=(32, 32, 3))
    (taps,) = find_taps(model).values()
    assert [t.name for t in taps] == ["conv1_bn", "conv2_bn", "conv3_bn"]
    assert [t.stage for t in taps] == [0, 1, 2]


def _two_head_model():
    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    shared = keras.layers.BatchNormalization(name="bn2")(x)
    a = keras.layers.GlobalAveragePooling2D(name="gap_a")(shared)
    b = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="b_conv")(
        shared
    )
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    b = keras.layers.GlobalAveragePooling2D(name="gap_b")(b)
    heads = [
        keras.layers.Dense(4, name="a")(a),
        keras.layers.Dense(2, name="b")(b),
    ]
    return keras.Model(i, heads)


def test_per_head_taps_of_a_multi_output_model():
    taps = find_taps(_two_head_model())
    assert list(taps) == ["a", "b"]
    assert [t.name for t in taps["a"]] == ["bn1", "bn2"]
    # Head b goes on past the shared trunk: its own feature map is tapped.
    assert [t.name for t in taps["b"]] == ["bn1", "bn2", "b_bn"]
    # The shared taps are the same tensors for both heads.
    assert taps["a"][1].tensor is taps["b"][1].tensor


def test_named_taps_sorted_and_per_head():
    model = _two_head_model()
    taps = find_taps(model, layer_names=["b_bn", "r1"])
    assert [t.name for t in taps["a"]] == ["r1"]
    assert [t.name for t in taps["b"]] == ["r1", "b_bn"]
    assert all(t.kind == "named" for t in taps["b"])
    taps = find_taps(model, layer_names={"a": ["bn2"], "b": ["b_bn"]})
    assert [t.name for t in taps["a"]] == ["bn2"]


def test_named_tap_errors_name_argument_and_value():
    model = _two_head_model()
    with pytest.raises(ValueError, match="Unknown tap layer 'nope'"):
        find_taps(model, layer_names=["nope"])
    with pytest.raises(ValueError, match="rank-4"):
        find_taps(model, layer_names=["gap_a"])
    with pytest.raises(ValueError, match="not on the path to head 'a'"):
        find_taps(model, layer_names={"a": ["b_bn"]})
    with pytest.raises(ValueError, match="Unknown head"):
        find_taps(model, layer_names={"zzz": ["bn1"]})
    with pytest.raises(TypeError, match="taps='bn1'"):
        find_taps(model, layer_names="bn1")


def test_no_taps_is_a_clear_error():
    i = keras.Input((8,))
    model = keras.Model(i, keras.layers.Dense(3)(i))
    with pytest.raises(ValueError, match="No tap"):
        find_taps(model)
