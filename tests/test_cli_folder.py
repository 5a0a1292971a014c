"""`train` and `compare` on the user's own data: a folder of a few hundred
real Fashion-MNIST images written as PNG files, and the user's own .keras
model."""

import json

import keras
import numpy as np
import pytest

from keras_compact import data
from keras_compact.cli.main import main

PER_CLASS = 30  # 300 images in all


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    import os

    if not os.environ.get("KERAS_COMPACT_DATA_DIR"):
        pytest.skip("real datasets not found (set KERAS_COMPACT_DATA_DIR)")
    (x, y), _ = data.load_arrays("fashion_mnist")
    names = data.dataset_info("fashion_mnist").class_names
    root = tmp_path_factory.mktemp("photos")
    for c, name in enumerate(names):
        folder = root / name.replace("/", "_")
        folder.mkdir()
        for i in np.flatnonzero(y == c)[:PER_CLASS]:
            keras.utils.save_img(folder / f"{i}.png", x[i], scale=False)
    return root


def test_load_image_folder_matches_the_images(image_folder):
    splits = data.load_image_folder(image_folder, batch_size=16, seed=0)
    info = splits.info
    assert info.input_shape == (28, 28, 1)
    assert info.num_classes == 10
    assert info.class_names[0] == "Ankle boot"  # sorted folder names
    assert sum(info.counts.values()) == 10 * PER_CLASS
    assert info.counts == {"train": 240, "val": 30, "test": 30}
    x, y = data.as_numpy(splits.test)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    # Same seed, same batches; epoch e is epoch e.
    again = data.load_image_folder(image_folder, batch_size=16, seed=0)
    a, b = next(iter(splits.train)), next(iter(again.train))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory="):
        data.load_image_folder(tmp_path / "nowhere")
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="no image"):
        data.load_image_folder(tmp_path)


def test_train_a_user_model_on_a_folder(image_folder, tmp_path):
    user = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="my_model",
    )
    user.save(tmp_path / "my_model.keras")
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(image_folder), "--model"]
    argv += [str(tmp_path / "my_model.keras"), "--epochs", "2"]
    argv += ["--batch-size", "32", "--sparse", "0.5", "--verbose", "0"]
    assert main([*argv, "--output", str(out)]) == 0
    summary = json.loads((out / "history.json").read_text())
    assert summary["test_accuracy"] > 0.2  # 10 classes: chance is 0.1
    model = keras.saving.load_model(out / "model.keras")
    assert model.name == "my_model"
    kernel = model.layers[-1].kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)


def test_compare_on_a_folder(image_folder, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--dataset", str(image_folder), "--epochs", "1"]
    argv += ["--batch-size", "32", "--sparse", "0.5", "--seeds", "2"]
    argv += ["--verbose", "0"]
    assert main([*argv, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "plain vs sparse" in printed and "+-" in printed
    result = json.loads((out / "compare.json").read_text())
    assert [a["arm"] for a in result["arms"]] == ["plain", "sparse"]
    assert all(a["n"] == 2 for a in result["arms"])
    assert len(result["runs"]) == 4
    assert (out / "compare.png").stat().st_size > 1000
    assert (out / "compare.csv").exists()
    assert (out / "sparse" / "seed1" / "model.keras").exists()
    # A rerun finds every run finished and only rebuilds the table.
    assert main([*argv, "--output", str(out)]) == 0
    assert "already holds this finished run" in capsys.readouterr().out


def test_load_image_folder_with_train_and_test_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)
                keras.utils.save_img(folder / f"{i}.png", image, scale=False)
    splits = data.load_image_folder(
        tmp_path, image_size=(12, 12), validation_split=0.2, augment=False
    )
    assert splits.info.class_names == ("cat", "dog")
    assert splits.info.input_shape == (12, 12, 3)
    assert splits.info.counts == {"train": 10, "val": 2, "test": 4}
