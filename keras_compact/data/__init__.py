"""Datasets for training tiny models, offline first.

Three named image classification datasets: `"fashion_mnist"`, `"cifar10"`
and `"digits"` (scikit-learn's 8x8 digits, no files needed), and any
TensorFlow Datasets image-classification dataset as `"tfds:NAME"` (e.g.
`"tfds:mnist"`, `"tfds:beans"`), read offline once prepared.

- `load_arrays(name)`: uint8 NHWC numpy arrays, read from local files
  (`data_dir`, then `$KERAS_COMPACT_DATA_DIR`, then the Keras cache), and
  downloaded through `keras.datasets` only with `download=True`.
- `load_dataset(name, ...)`: stratified, seeded train / validation / test
  `tf.data` pipelines of float32 images in `[0, 1]`, with light
  augmentation. Epoch `e` of seed `s` is the same batches in any process,
  whatever ran before (`epoch_permutation`): give each arm of a comparison
  its own pipeline and all arms see the same data.
- `load_tfds("tfds:NAME[/CONFIG][:VERSION]", ...)`: the same pipelines for
  a prepared TFDS dataset (also through `load_dataset`); downloads only
  with `download=True`.
- `load_image_folder(directory, ...)`: the same pipelines for a folder of
  images in class sub-folders (the user's own photos).
- `dataset_info(name)`: number of classes, input shape and class names.
- `representative_images(...)`, `as_numpy(...)`: numpy arrays back out.

Example:

```python
from keras_compact import data

splits = data.load_dataset("cifar10", n_per_class=100, batch_size=64)
model.fit(splits.train, validation_data=splits.val, epochs=5)
model.evaluate(splits.test)
```
"""

from keras_compact.data.folder import is_image_folder, load_image_folder
from keras_compact.data.loaders import DatasetNotFoundError, load_arrays
from keras_compact.data.numpy_utils import as_numpy, representative_images
from keras_compact.data.pipeline import (
    DatasetSplits,
    epoch_permutation,
    load_dataset,
)
from keras_compact.data.registry import DatasetInfo, dataset_info, list_datasets
from keras_compact.data.tfds import is_tfds_name, load_tfds

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSplits",
    "as_numpy",
    "epoch_permutation",
    "dataset_info",
    "is_image_folder",
    "is_tfds_name",
    "list_datasets",
    "load_arrays",
    "load_dataset",
    "load_image_folder",
    "load_tfds",
    "representative_images",
]
