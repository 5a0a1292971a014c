"""The model zoo (`keras_compact.models`) and MAC / parameter counting."""

import math

import keras
import numpy as np
import pytest

from keras_compact import models
from keras_compact.graph import count_macs, count_params, model_profile
from keras_compact.models import registry

NAMES = [entry["name"] for entry in models.list_models()]

# Parameter counts at the default input shape with 10 classes: (low, high).
PARAM_RANGES = {
    "tiny_cnn": (20_000, 40_000),
    "mobilenet_v2": (2_000_000, 2_500_000),
    "mobilenet_v2_tiny": (300_000, 500_000),
    "resnet8": (70_000, 90_000),
    "resnet20": (250_000, 300_000),
    "wrn16_2": (650_000, 750_000),
    "wrn28_2": (1_400_000, 1_550_000),
}

ALLOWED_LAYERS = {
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "Add",
    "GlobalAveragePooling2D",
    "Dense",
    "ZeroPadding2D",
    "Flatten",
    "MaxPooling2D",
    "Dropout",
}


def _images(shape, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch, *shape)).astype("float32")


def test_registry_lists_every_model_with_description_and_shape():
    assert set(NAMES) == set(PARAM_RANGES)
    for entry in models.list_models():
        assert entry["description"] and "\n" not in entry["description"]
        assert len(entry["input_shape"]) == 3
    shapes = {e["name"]: e["input_shape"] for e in models.list_models()}
    assert shapes["tiny_cnn"] == (28, 28, 1)
    assert shapes["mobilenet_v2"] == (32, 32, 3)


@pytest.mark.parametrize("name", NAMES)
def test_build_train_and_save_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = models.get_model(name, num_classes=5)
    shape = models.get_model_spec(name).input_shape
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, 5)
    assert model.name == name

    # Plain functional model of standard layers; outputs are logits.
    types = {type(layer).__name__ for layer in model.layers}
    assert types <= ALLOWED_LAYERS, types - ALLOWED_LAYERS
    assert model.get_layer("logits").activation is keras.activations.linear

    x = _images(shape)
    y = np.arange(4) % 5
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][-1])

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(loaded(x, training=False))
    assert expected.shape == (4, 5)
    assert np.max(np.abs(expected - got)) == 0


@pytest.mark.parametrize("name", NAMES)
def test_params_match_keras_and_stated_ranges(name):
    model = models.get_model(name)
    counts = count_params(model)
    assert counts["total"] == model.count_params()
    assert counts["trainable"] == sum(
        math.prod(w.shape) for w in model.trainable_weights
    )
    assert counts["trainable"] + counts["non_trainable"] == counts["total"]
    low, high = PARAM_RANGES[name]
    assert low <= counts["total"] <= high
    assert count_macs(model) > 0


@pytest.mark.parametrize("name", NAMES)
def test_other_input_shape(name):
    default = models.get_model_spec(name).input_shape
    shape = (32, 32, 3) if default == (28, 28, 1) else (28, 28, 1)
    model = models.get_model(name, input_shape=shape, num_classes=3)
    out = keras.ops.convert_to_numpy(model(_images(shape, batch=2)))
    assert out.shape == (2, 3)
    assert np.all(np.isfinite(out))


def test_mobilenet_v2_structure_and_cifar_strides():
    model = models.mobilenet_v2(input_shape=(32, 32, 3))
    names = {layer.name for layer in model.layers}
    for expected in (
        "stem_conv",
        "block3_expand",
        "block3_expand_bn",
        "block3_dw",
        "block3_project",
        "block3_add",
        "head_conv",
        "logits",
    ):
        assert expected in names
    assert "block1_expand" not in names  # expand ratio 1
    assert "block2_add" not in names  # 16 -> 24 channels
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert model.get_layer("head_conv").output.shape == (None, 4, 4, 1280)
    fmnist = models.mobilenet_v2(input_shape=(28, 28, 1))
    assert fmnist.get_layer("head_conv").output.shape == (None, 4, 4, 1280)
    imagenet = models.mobilenet_v2(input_shape=(32, 32, 3), cifar_stem=False)
    assert imagenet.get_layer("head_conv").output.shape == (None, 1, 1, 1280)
    # make_divisible rounding: alpha=0.35 gives a 16-channel stem.
    tiny = models.mobilenet_v2_tiny()
    assert tiny.get_layer("stem_conv").filters == 16
    assert tiny.get_layer("block1_project").filters == 8
    assert models.make_divisible(32 * 0.35) == 16
    assert models.make_divisible(96 * 0.35) == 32


def test_mobilenet_v2_imagenet_counts_match_keras_applications():
    ours = models.mobilenet_v2(input_shape=(224, 224, 3), num_classes=1000)
    assert ours.get_layer("stem_conv").strides == (2, 2)
    reference = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), weights=None
    )
    assert ours.count_params() == reference.count_params() == 3_538_984
    # The paper's "300M multiply-adds".
    assert count_macs(ours) == count_macs(reference) == 300_774_272


def test_width_multiplier_and_alpha():
    half = models.get_model("tiny_cnn", width_multiplier=0.5)
    assert half.get_layer("conv3").filters == 32
    wide = models.get_model("tiny_cnn", width_multiplier=4.0)
    assert wide.count_params() > 10 * half.count_params()
    a = models.get_model("mobilenet_v2", width_multiplier=0.5)
    b = models.get_model("mobilenet_v2", alpha=0.5)
    assert a.count_params() == b.count_params()
    r = models.get_model("resnet8", width_multiplier=2.0)
    assert r.get_layer("stage3_block1_conv2").filters == 128


def test_resnet_and_wrn_blocks():
    r20 = models.resnet20()
    names = {layer.name for layer in r20.layers}
    assert "stage2_block1_shortcut" in names
    assert "stage2_block1_shortcut_bn" in names
    assert "stage1_block1_shortcut" not in names
    assert "stage3_block3_add" in names and "stage3_block4_add" not in names
    assert r20.get_layer("gap").input.shape == (None, 8, 8, 64)
    wrn = models.wrn16_2(dropout_rate=0.3)
    names = {layer.name for layer in wrn.layers}
    assert "stage1_block1_shortcut" in names  # 16 -> 32 channels
    assert "stage1_block2_shortcut" not in names
    assert "stage3_block2_dropout" in names
    assert wrn.get_layer("stage3_block2_conv2").filters == 128
    assert "stage3_block4_add" in {
        layer.name for layer in models.wrn28_2().layers
    }


def test_count_macs_exact_on_two_layer_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    conv = 3 * 3 * 3 * 4 * 4 * 4  # k_h k_w c_in c_out H_out W_out
    dense = 4 * 4 * 4 * 5
    assert count_macs(model) == conv + dense == 2048


def test_count_macs_exact_on_every_counted_layer_type():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", groups=2)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same")(x)
    x = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Reshape((16, 2))(x)
    x = keras.layers.Conv1D(3, 5)(x)
    x = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, x)
    expected = [
        3 * 3 * 2 * 4 * 8 * 8,  # grouped conv: c_in / groups = 2
        0,  # batch norm
        3 * 3 * 4 * 4 * 4,  # depthwise, 4x4 output
        3 * 3 * 4 * 4 * 4 + 4 * 6 * 4 * 4,  # separable: dw + pw
        3 * 3 * 6 * 2 * 4 * 4,  # transpose: every input position
        0,  # pooling
        0,  # reshape
        5 * 2 * 3 * 12,  # conv1d, 12 output steps
        12 * 3 * 5,  # dense on (12, 3)
    ]
    assert count_macs(model) == sum(expected) == 8412
    profile = model_profile(model)
    assert [row["macs"] for row in profile["layers"]] == expected
    assert profile["macs"] == sum(expected)
    assert profile["params"] == model.count_params()
    assert sum(row["params"] for row in profile["layers"]) == profile["params"]


def test_count_macs_by_hand_on_tiny_cnn():
    model = models.tiny_cnn()
    expected = (
        28 * 28 * 3 * 3 * 1 * 16
        + 14 * 14 * 3 * 3 * 16 * 32
        + 7 * 7 * 3 * 3 * 32 * 64
        + 64 * 10
    )
    assert count_macs(model) == expected == 1_919_872
    profile = model_profile(model)
    assert profile["name"] == "tiny_cnn"
    assert profile["trainable_params"] + profile["non_trainable_params"] == (
        model.count_params()
    )


def test_count_macs_enters_nested_models_and_counts_shared_layers_twice():
    inner = models.tiny_cnn()
    inputs = keras.Input((28, 28, 1))
    outer = keras.Model(inputs, inner(inputs))
    assert count_macs(outer) == count_macs(inner)
    shared = keras.layers.Dense(3)
    a = keras.Input((4,))
    twice = keras.Model(a, shared(shared(keras.layers.Dense(3)(a))))
    assert count_macs(twice) == 4 * 3 + 3 * 3 * 2
    assert count_params(twice)["total"] == twice.count_params()


def test_count_macs_errors():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        count_macs(Sub())
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="unknown"):
        count_macs(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "nope"}, r"name='nope'.*|.*tiny_cnn"),
        ({"name": "tiny_cnn", "width_multiplier": 0}, "width_multiplier=0"),
        ({"name": "resnet8", "width_multiplier": -1.0}, "width_multiplier=-1"),
        ({"name": "tiny_cnn", "depth": 3}, r"does not accept.*\['depth'\]"),
        ({"name": "tiny_cnn", "input_shape": (28, 28)}, r"input_shape=\(28"),
        ({"name": "resnet20", "num_classes": 0}, "num_classes=0"),
        ({"name": "mobilenet_v2", "alpha": 0.0}, "alpha=0.0"),
        (
            {"name": "mobilenet_v2", "alpha": 0.5, "width_multiplier": 1.0},
            "alias",
        ),
        ({"name": "mobilenet_v2", "cifar_stem": "yes"}, "cifar_stem='yes'"),
        ({"name": "wrn16_2", "dropout_rate": 1.0}, "dropout_rate=1.0"),
    ],
)
def test_get_model_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get_model(**kwargs)


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError) as info:
        models.get_model("resnet9000")
    message = str(info.value)
    assert "name='resnet9000'" in message
    assert all(name in message for name in NAMES)


def test_builder_depth_errors():
    with pytest.raises(ValueError, match="depth=9"):
        models.cifar_resnet(depth=9)
    with pytest.raises(ValueError, match="depth=15"):
        models.wide_resnet(depth=15)
    with pytest.raises(ValueError, match="widen_factor=0"):
        models.wide_resnet(depth=16, widen_factor=0)


def test_register_model(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @models.register_model("one_dense")
    def one_dense(input_shape=(4, 4, 1), num_classes=10):
        """One dense layer on flattened pixels."""
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten(name="flatten")(inputs)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(x))

    entry = [e for e in models.list_models() if e["name"] == "one_dense"][0]
    assert entry["description"] == "One dense layer on flattened pixels."
    assert entry["input_shape"] == (4, 4, 1)
    assert models.get_model("one_dense", num_classes=3).output_shape == (
        None,
        3,
    )
    with pytest.raises(ValueError, match="name='one_dense'"):
        models.register_model("one_dense")(one_dense)
    with pytest.raises(ValueError, match="input_shape"):

        @models.register_model("no_default")
        def no_default(input_shape, num_classes=10):
            return None
