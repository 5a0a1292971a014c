"""`export_tflite`: a Keras model to a `.tflite` file, float or quantized.

The model goes through a SavedModel (`model.export(..., "tf_saved_model")`)
written to a temporary directory, then `tf.lite.TFLiteConverter
.from_saved_model`. `from_concrete_functions` is deliberately not used: with
Keras 3 models it silently produces NaN outputs.
"""

import contextlib
import numbers
import os
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_compact.data.numpy_utils import as_numpy

QUANTIZATIONS = ("float32", "float16", "dynamic_range", "int8")


def deployable_model(model):
    """Returns the model that is exported: `model.strip()` if it has one.

    keras_compact's training wrapper (`Trainer`) carries training-only state
    and offers `strip()`, which returns the compact model. Any object with a
    callable `strip` is treated the same way.

    Raises:
        TypeError: if the result is not a `keras.Model`.
    """
    original = model
    strip = getattr(model, "strip", None)
    if callable(strip):
        model = strip()
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Expected `model.strip()` to return a keras.Model. Received: "
                f"model={original!r}, whose strip() returned an object of "
                f"type {type(model).__name__}"
            )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected `model` to be a keras.Model (or an object with a "
            "`strip()` method that returns one). Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    return model


class _CapturedLog:
    def __init__(self, file):
        self._file = file

    def text(self):
        self._file.flush()
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")[-20000:]


@contextlib.contextmanager
def _native_log_captured():
    """Sends the converter's native (C++) log lines to a temporary file.

    The converter prints dozens of INFO lines per model on file descriptor
    2. They are kept and shown only if the conversion fails; Python's own
    warnings and errors are unaffected.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield _CapturedLog(f)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def export_tflite(
    model,
    path,
    quantization="float32",
    representative_data=None,
    int8_io=False,
    sparsity=False,
    num_calibration=200,
):
    """Converts a Keras model to a `.tflite` file.

    If `model` has a `strip()` method (keras_compact's `Trainer`), the
    stripped compact model, `model.strip()`, is what gets exported: the
    file holds none of the training-only parts.

    Quantization modes:

    - `"float32"`: no quantization; outputs match Keras to about 1e-6.
    - `"float16"`: float16 weights (half the size), float compute.
    - `"dynamic_range"`: int8 weights, float activations; no calibration.
    - `"int8"`: full integer quantization (weights and activations) with
      only int8 builtin ops, calibrated on `representative_data`. Inputs
      and outputs stay float32 unless `int8_io=True`. Measured top-1
      agreement with Keras is in the README and
      `benchmarks/results/zoo_int8_*.md`.

    A `Trainer` holding a `keras_compact.QuantizationAwareTraining`
    technique exports to `"int8"` through its fake-quant model
    (`keras_compact.quantization.convert_qat`): the trained activation
    ranges and the folded, per-channel quantized kernels are used,
    `representative_data` is not needed (ignored), and every op of the file
    is checked to be a builtin int8 op (`NotInt8Error` names any other).
    Other modes export the stripped float model as usual.

    `sparsity=True` adds `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`: kernels
    that are mostly zero are stored in a sparse format. This shrinks the
    raw file (an 80%-zero CNN: 3.3x in float32, 1.7x with int8 weights) but
    hardly the gzip-compressed one, which already squeezes the zeros (with
    int8 weights it even grows a little), and it does not speed up
    inference. Such files are refused by the default XNNPack CPU delegate
    in some modes (dynamic range): `run_tflite` and `verify_tflite` run
    them without default delegates.

    Args:
        model: a built `keras.Model`, or an object with a `strip()` method
            returning one.
        path: destination file, ending in `.tflite`. Parent directories are
            created.
        quantization: one of `"float32"`, `"float16"`, `"dynamic_range"`,
            `"int8"`. Defaults to `"float32"`.
        representative_data: calibration inputs, required for `"int8"` and
            ignored otherwise: a numpy array of input images `(n, ...)`, or
            a `tf.data.Dataset` whose elements are `(x, y)` or `x`, batched
            or not. Use un-augmented training images.
        int8_io: bool, whether the model's inputs and outputs are int8
            (only with `quantization="int8"`). `run_tflite` quantizes
            inputs and dequantizes outputs with each tensor's scale and
            zero point. Defaults to False.
        sparsity: bool, whether to store sparse kernels in a sparse format.
            Defaults to False.
        num_calibration: positive int, the maximum number of images taken
            from `representative_data`, fed one per calibration step at
            batch size 1. Defaults to 200.

    Returns:
        `path`, as given.

    Raises:
        TypeError: if `model` is not a `keras.Model` (nor strips to one), or
            `representative_data` is of an unsupported type.
        ValueError: if `path` does not end in `.tflite`, `quantization` is
            unknown, `"int8"` lacks `representative_data`, `int8_io=True`
            is asked without `"int8"`, or another argument is invalid.

    Example:

    ```python
    export_tflite(model, "out/model_int8.tflite", quantization="int8",
                  representative_data=x_train[:200], int8_io=True)
    ```
    """
    qat = None
    if quantization == "int8":
        from keras_compact.quantization.convert import find_qat

        qat = find_qat(model)
    if qat is None:
        model = deployable_model(model)
    is_path = isinstance(path, (str, os.PathLike))
    if not is_path or not os.fspath(path).endswith(".tflite"):
        raise ValueError(
            "Expected `path` to be a file path ending in '.tflite'. "
            f"Received: path={path!r}"
        )
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    for name, value in (("int8_io", int8_io), ("sparsity", sparsity)):
        if not isinstance(value, bool):
            raise ValueError(
                f"Expected `{name}` to be a bool. Received: {name}={value!r}"
            )
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` needs full integer quantization: pass "
            "quantization='int8' (with representative_data), or leave "
            f"int8_io=False. Received: int8_io=True, "
            f"quantization={quantization!r}"
        )
    if (
        isinstance(num_calibration, bool)
        or not isinstance(num_calibration, numbers.Integral)
        or num_calibration < 1
    ):
        raise ValueError(
            "Expected `num_calibration` to be a positive int. "
            f"Received: num_calibration={num_calibration!r}"
        )
    if qat is not None:
        from keras_compact.quantization.convert import convert_qat

        return convert_qat(qat, path, int8_io=int8_io, sparsity=sparsity)
    calibration = None
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                "quantization='int8' needs calibration inputs: pass "
                "`representative_data`, a numpy array of input images "
                "(e.g. 200 un-augmented training images) or a "
                "tf.data.Dataset of `(x, y)` or `x`. Received: "
                "representative_data=None"
            )
        calibration = _calibration_images(
            model, representative_data, num_calibration
        )

    def configure(converter):
        optimizations = []
        if quantization != "float32":
            optimizations.append(tf.lite.Optimize.DEFAULT)
        if sparsity:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            converter.representative_dataset = _representative_dataset(
                calibration
            )
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            ]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8

    flatbuffer = _convert(
        model, configure, f"TFLite conversion ({quantization})"
    )
    return _write(path, flatbuffer)


def _convert(model, configure, what="TFLite conversion"):
    """Converts a Keras model to a TFLite flatbuffer (bytes).

    The model is exported as a SavedModel in a temporary folder and read by
    `tf.lite.TFLiteConverter.from_saved_model`; `configure(converter)` sets
    the converter's options. The converter's native log is captured and
    quoted in the error when the conversion fails.

    Raises:
        RuntimeError: if the conversion fails (`what` names it).
    """
    with (
        tempfile.TemporaryDirectory(prefix="keras_compact_") as tmp,
        _native_log_captured() as native_log,
    ):
        saved_model = os.path.join(tmp, "saved_model")
        model.export(saved_model, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        configure(converter)
        try:
            return converter.convert()
        except Exception as e:
            raise RuntimeError(
                f"{what} failed. Converter log:\n{native_log.text()}"
            ) from e


def _write(path, flatbuffer):
    """Writes a flatbuffer to `path` (making its folder) and returns `path`."""
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def _calibration_images(model, data, limit):
    """Up to `limit` calibration inputs as one float array `(n, ...)`."""
    if isinstance(data, tf.data.Dataset):
        x, _ = as_numpy(data, limit=limit)
    else:
        try:
            x = np.asarray(data)
        except Exception as e:
            raise TypeError(
                "Expected `representative_data` to be a numpy array or a "
                "tf.data.Dataset. Received: representative_data of type "
                f"{type(data).__name__}"
            ) from e
        if x.dtype == object or x.ndim == 0:
            raise TypeError(
                "Expected `representative_data` to be a numpy array or a "
                "tf.data.Dataset. Received: representative_data of type "
                f"{type(data).__name__}"
            )
    input_shape = _input_shape(model)
    if input_shape is not None and x.ndim == len(input_shape) - 1:
        x = x[np.newaxis]  # a single image
    if len(x) == 0:
        raise ValueError(
            "Expected `representative_data` to hold at least one input. "
            f"Received: representative_data with shape {x.shape}"
        )
    dtype = _input_dtype(model)
    return x[:limit].astype(dtype, copy=False)


def _representative_dataset(images):
    def generator():
        for i in range(len(images)):
            yield [images[i : i + 1]]

    return generator


def _input_shape(model):
    try:
        return tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _input_dtype(model):
    try:
        dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    except (AttributeError, IndexError, TypeError, ValueError):
        return "float32"
    return dtype if "float" in dtype else "float32"
