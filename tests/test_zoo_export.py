"""Every zoo model exports to a float32 .tflite that matches Keras.

(int8 top-1 agreement needs trained models: it is measured on real test
images by `benchmarks/zoo_baselines.py`.)
"""

import numpy as np
import pytest

from keras_compact import export, models


@pytest.mark.parametrize("name", [m["name"] for m in models.list_models()])
def test_float32_tflite_matches_keras(name, tmp_path):
    model = models.get_model(name)
    x = np.random.default_rng(0).random(
        (4, *model.input_shape[1:]), dtype=np.float32
    )
    path = export.export_tflite(model, str(tmp_path / f"{name}.tflite"))
    out = export.run_tflite(path, x)
    ref = model.predict(x, verbose=0)
    assert np.abs(out - ref).max() <= 1e-4
