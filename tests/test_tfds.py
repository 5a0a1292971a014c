"""`tfds:` datasets: TFDS image classification through `load_dataset` and
`keras-compact train`, offline. Tiny datasets are written into tmp_path by
test builders (no network): 8x8 grey images, 3 classes."""

import json

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from keras_compact import data  # noqa: E402
from keras_compact.cli.main import main  # noqa: E402

CLASSES = ["ant", "bee", "cat"]


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)


class KcTinyImages(tfds.core.GeneratorBasedBuilder):
    """Image classification with train (60) and test (15) splits."""

    VERSION = tfds.core.Version("1.0.0")
    SPLITS = {"train": (60, 0), "test": (15, 1)}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            name: self._generate_examples(n, seed)
            for name, (n, seed) in self.SPLITS.items()
        }

    def _generate_examples(self, n, seed):
        for i, image in enumerate(_images(n, seed)):
            yield i, {"image": image, "label": i % 3}


class KcTinyImagesVal(KcTinyImages):
    """The same, with its own validation split (9 images)."""

    SPLITS = {"train": (30, 0), "validation": (9, 2), "test": (12, 1)}


class KcTinyVaried(tfds.core.GeneratorBasedBuilder):
    """Only a train split (30), images of varying sizes."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(names=CLASSES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(4)
        for i in range(30):
            shape = (8, 8, 1) if i % 2 else (10, 6, 1)
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            yield i, {"image": image, "label": i % 3}


class KcTinyText(tfds.core.GeneratorBasedBuilder):
    """Not image classification: text and a label."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=CLASSES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(6):
            yield i, {"text": f"example {i}", "label": i % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds.disable_progress_bar()
    for cls in (KcTinyImages, KcTinyImagesVal, KcTinyVaried, KcTinyText):
        cls(data_dir=str(root)).download_and_prepare()
    return root


@pytest.fixture
def no_default_dirs(tmp_path, monkeypatch):
    """TFDS' default folder and $KERAS_COMPACT_DATA_DIR point at nothing."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_default"))
    monkeypatch.delenv("KERAS_COMPACT_DATA_DIR", raising=False)


def _first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def test_load_dataset_reads_a_prepared_tfds_dataset(tfds_dir, no_default_dirs):
    splits = data.load_dataset(
        "tfds:kc_tiny_images", data_dir=tfds_dir, batch_size=16, seed=3
    )
    info = splits.info
    assert info.name == "tfds:kc_tiny_images"
    assert info.num_classes == 3
    assert info.input_shape == (8, 8, 1)
    assert info.class_names == tuple(CLASSES)
    # No validation split in the dataset: 10% of each class of train.
    assert info.counts == {"train": 54, "val": 6, "test": 15}
    x, y = first = _first_batch(splits.train)
    assert x.shape == (16, 8, 8, 1) and x.dtype == np.float32
    assert y.dtype == np.int32 and 0.0 <= x.min() and x.max() <= 1.0
    # The test set is the dataset's own test split, every image of it.
    x_test, y_test = data.as_numpy(splits.test)
    expected = np.sort(_images(15, 1).reshape(15, -1), axis=0)
    got = np.sort(np.round(x_test * 255).reshape(15, -1), axis=0)
    np.testing.assert_array_equal(got, expected)
    assert sorted(np.bincount(y_test)) == [5, 5, 5]
    # Same arguments, same batches; the validation images come from train.
    again = data.load_dataset(
        "tfds:kc_tiny_images", data_dir=tfds_dir, batch_size=16, seed=3
    )
    for a, b in zip(first, _first_batch(again.train)):
        np.testing.assert_array_equal(a, b)
    x_val, _ = data.as_numpy(splits.val)
    train_rows = {r.tobytes() for r in _images(60, 0).reshape(60, -1)}
    val_rows = np.round(x_val * 255).astype(np.uint8).reshape(6, -1)
    assert all(r.tobytes() in train_rows for r in val_rows)


def test_dataset_validation_split_resize_and_env_folder(
    tfds_dir, no_default_dirs, monkeypatch
):
    # Found through $KERAS_COMPACT_DATA_DIR/tensorflow_datasets.
    (tfds_dir.parent / "kc_root").mkdir(exist_ok=True)
    link = tfds_dir.parent / "kc_root" / "tensorflow_datasets"
    if not link.exists():
        link.symlink_to(tfds_dir, target_is_directory=True)
    monkeypatch.setenv("KERAS_COMPACT_DATA_DIR", str(link.parent))
    splits = data.load_tfds(
        "tfds:kc_tiny_images_val:1.0.0",
        image_size=(4, 6),
        batch_size=8,
        n_per_class=5,
    )
    # The dataset's own validation split, whole; train subset per class.
    assert splits.info.counts == {"train": 15, "val": 9, "test": 12}
    assert splits.info.input_shape == (4, 6, 1)
    x, _ = _first_batch(splits.val)
    assert x.shape == (8, 4, 6, 1)


def test_train_only_dataset_of_varying_sizes(tfds_dir):
    splits = data.load_tfds(
        "tfds:kc_tiny_varied", data_dir=tfds_dir, batch_size=32
    )
    # A stratified 10% of train is the test set, then 10% of the rest
    # validates; every image is resized to the first one's size (the
    # first in TFDS' stored order).
    assert splits.info.counts == {"train": 24, "val": 3, "test": 3}
    shape = splits.info.input_shape
    assert shape in {(8, 8, 1), (10, 6, 1)}
    x, y = _first_batch(splits.train)
    assert x.shape == (24, *shape) and sorted(np.bincount(y)) == [8, 8, 8]


def test_not_prepared_lists_folders_and_command(tmp_path, no_default_dirs):
    empty = tmp_path / "empty"
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load_dataset("tfds:kc_tiny_images", data_dir=empty)
    message = str(e.value)
    assert "not prepared" in message
    assert str(empty) in message
    assert str(tmp_path / "tfds_default") in message
    assert "--download" in message and "tfds build kc_tiny_images" in message
    assert not empty.exists()  # nothing written without download=True


def test_not_image_classification_names_the_features(tfds_dir):
    with pytest.raises(ValueError, match="image-classification") as e:
        data.load_dataset("tfds:kc_tiny_text", data_dir=tfds_dir)
    assert "'text': 'Text'" in str(e.value)
    assert "'label': 'ClassLabel'" in str(e.value)


def test_misspelt_name_lists_close_matches(tmp_path, no_default_dirs):
    with pytest.raises(ValueError, match="Unknown TFDS dataset") as e:
        data.load_dataset("tfds:mnistt", data_dir=tmp_path)
    assert "tfds:mnist" in str(e.value)
    with pytest.raises(ValueError, match="Expected a TFDS dataset name"):
        data.load_tfds("mnist")


def test_cli_train_on_a_tfds_dataset(tfds_dir, tmp_path, no_default_dirs):
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "tfds:kc_tiny_images",
        "--data-dir",
        str(tfds_dir),
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--verbose",
        "0",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "history.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert (out / "model.keras").exists()


def test_cli_errors_for_tfds(tmp_path, no_default_dirs, tfds_dir, capsys):
    base = ["train", "--epochs", "1", "--output", str(tmp_path / "x")]
    argv = base + ["--dataset", "tfds:kc_tiny_images"]
    assert main(argv + ["--data-dir", str(tmp_path / "none")]) == 2
    assert "not prepared" in capsys.readouterr().err
    assert main(base + ["--dataset", "tfds:"]) == 2
    assert "tfds:NAME" in capsys.readouterr().err
    argv = base + ["--dataset", "tfds:kc_tiny_text", "--data-dir"]
    assert main(argv + [str(tfds_dir)]) == 2
    assert "ClassLabel" in capsys.readouterr().err
    # A run that could not start leaves nothing that blocks the fixed one.
    assert not (tmp_path / "x" / "run.json").exists()
