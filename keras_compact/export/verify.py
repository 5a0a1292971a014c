"""`verify_tflite` and `export_and_verify`: check a `.tflite` file against
its Keras model, and measure its size and latency."""

import gzip
import os
import statistics
import time

import numpy as np

from keras_compact.export.interpreter import (
    DELEGATES_DEFAULT,
    DELEGATES_NONE,
    _open,
    _prepare_batch1,
    has_sparse_tensors,
    infer_quantization,
    quantize_input,
    run_interpreter,
    run_tflite,
)
from keras_compact.export.report import ExportReport
from keras_compact.export.tflite import (
    QUANTIZATIONS,
    deployable_model,
    export_tflite,
)


def verify_tflite(
    path,
    model,
    x,
    y=None,
    latency_runs=50,
    warmup_runs=5,
    quantization=None,
    use_default_delegates=None,
    micro="auto",
    micro_samples=100,
):
    """Compares a `.tflite` file with its Keras model and measures it.

    Both run on the same inputs `x`; integer (int8) outputs are dequantized
    before comparison, so the difference is in logit units whatever the
    file's I/O types. If `model` has a `strip()` method, `model.strip()` is
    the reference, as in `export_tflite`.

    Files with sparse tensors are run without the default XNNPack delegate
    (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), which refuses them in some modes;
    `report.delegates` records which was used, `report.backend` which
    interpreter.

    For the int8 file of a trainer holding a `QuantizationAwareTraining`
    technique, the reference is that technique's fake-quant model in
    inference mode (`report.reference == "fake-quant"`): what the file is
    meant to compute. It follows the integer arithmetic of LiteRT's
    reference kernels (those the microcontroller runtime ports), so
    `max_abs_diff` and `top1_agreement` then compare it with the file run
    on those kernels (equal but for rare ties in float-computed ops);
    `tflite_accuracy` is the file's on the interpreter's default kernels.
    Every int8 file is also run on the TensorFlow Lite for
    Microcontrollers interpreter (`micro`), compared with LiteRT's
    reference kernels, and its tensor arena measured.

    Args:
        path: the `.tflite` file.
        model: the Keras model it was converted from (or an object with a
            `strip()` method, or a QAT trainer).
        x: float numpy array, a batch of inputs `(n, ...)`.
        y: optional labels for accuracy: integer class ids `(n,)` or
            `(n, 1)`, or one-hot `(n, classes)`.
        latency_runs: positive int, the number of timed runs at batch 1 for
            each thread count. Defaults to 50.
        warmup_runs: int >= 0, untimed runs before timing. Defaults to 5.
        quantization: the mode the file was converted with; None to infer
            it from the file's tensor types. Defaults to None.
        use_default_delegates: see `load_interpreter`; None (the default)
            decides from the file.
        micro: `"auto"` (the default): check int8 files on the micro
            interpreter when `tflite-micro` is installed, else say in the
            report how to install it; True: require the check (ImportError
            when absent); False: skip it.
        micro_samples: positive int, how many inputs of `x` the micro
            check runs. Defaults to 100.

    Returns:
        An `ExportReport`.

    Raises:
        TypeError: if `model` is not a `keras.Model` (nor strips to one).
        ValueError: if `x` is empty, `y` does not match it, or
            `latency_runs`, `micro` or `micro_samples` is invalid.
        ImportError: if `micro=True` and `tflite-micro` is not installed.
        keras_compact.quantization.micro.MicroUnsupportedOpsError: if the
            micro runtime lacks ops of an int8 file (they are listed).

    Example:

    ```python
    export_tflite(model, "m.tflite", "int8", representative_data=x_train)
    report = verify_tflite("m.tflite", model, x_test, y_test)
    print(report)
    report.save("m.json")
    ```
    """
    from keras_compact.quantization.convert import find_qat

    qat = find_qat(model)
    model = deployable_model(model)
    if micro not in ("auto", True, False):
        raise ValueError(
            "Expected `micro` to be 'auto', True or False. "
            f"Received: micro={micro!r}"
        )
    if (
        isinstance(micro_samples, bool)
        or not isinstance(micro_samples, int)
        or micro_samples < 1
    ):
        raise ValueError(
            "Expected `micro_samples` to be a positive int. "
            f"Received: micro_samples={micro_samples!r}"
        )
    if (
        isinstance(latency_runs, bool)
        or not isinstance(latency_runs, int)
        or latency_runs < 1
    ):
        raise ValueError(
            "Expected `latency_runs` to be a positive int. "
            f"Received: latency_runs={latency_runs!r}"
        )
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Expected `quantization` to be one of {QUANTIZATIONS} or None. "
            f"Received: quantization={quantization!r}"
        )
    x = np.asarray(x, np.float32)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(
            "Expected `x` to be a non-empty batch of inputs. "
            f"Received: x with shape {x.shape}"
        )

    interpreter, backend, used_defaults = _open(path, 1, use_default_delegates)
    inferred, int8_io = infer_quantization(interpreter)
    sparse = has_sparse_tensors(interpreter)
    tflite_out = run_interpreter(interpreter, x)
    reference = model
    label = "keras"
    compared = tflite_out
    if qat is not None and (quantization or inferred) == "int8":
        reference, label = qat.quantized_model(), "fake-quant"
        # The fake-quant view follows the reference kernels' integer
        # arithmetic: compare with them, bit for bit.
        compared = run_tflite(path, x, kernels="reference", backend=backend)
    keras_out = reference.predict(x, batch_size=64, verbose=0)
    tflite_out = _as_list(tflite_out)
    compared = _as_list(compared)
    keras_out = _as_list(keras_out)
    if len(compared) != len(keras_out):
        raise ValueError(
            f"The .tflite file has {len(tflite_out)} outputs and the Keras "
            f"model {len(keras_out)}. Received: path={path!r}"
        )
    max_abs_diff = max(
        float(
            np.max(
                np.abs(
                    np.asarray(t, np.float32).reshape(np.shape(k))
                    - np.asarray(k, np.float32)
                )
            )
        )
        for t, k in zip(compared, keras_out)
    )

    agreement = tflite_acc = keras_acc = None
    t_cls, k_cls = _classes(tflite_out[0]), _classes(keras_out[0])
    if t_cls is not None:
        agreement = float(np.mean(_classes(compared[0]) == k_cls))
        if y is not None:
            labels = _labels(y, len(x))
            tflite_acc = float(np.mean(t_cls == labels))
            keras_acc = float(np.mean(k_cls == labels))

    sample = x[:1]
    latency_1 = _latency_ms(interpreter, sample, latency_runs, warmup_runs)
    interpreter_2, _, _ = _open(path, 2, used_defaults, backend)
    latency_2 = _latency_ms(interpreter_2, sample, latency_runs, warmup_runs)

    with open(path, "rb") as f:
        data = f.read()
    micro_fields = {}
    if (quantization or inferred) == "int8" and micro is not False:
        micro_fields = _micro_check(path, x[:micro_samples], micro)
    return ExportReport(
        path=os.fspath(path),
        quantization=quantization or inferred,
        int8_io=int8_io,
        sparse=sparse,
        num_params=int(model.count_params()),
        size_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9)),
        num_samples=len(x),
        max_abs_diff=max_abs_diff,
        top1_agreement=agreement,
        tflite_accuracy=tflite_acc,
        keras_accuracy=keras_acc,
        latency_ms_1_thread=latency_1,
        latency_ms_2_threads=latency_2,
        backend=backend,
        delegates=DELEGATES_DEFAULT if used_defaults else DELEGATES_NONE,
        reference=label,
        ops=_op_names(path),
        **micro_fields,
    )


def _op_names(path):
    """The file's ops, listed without delegates (which would show up as a
    single `DELEGATE` op)."""
    from keras_compact.quantization.convert import op_names

    try:
        return op_names(path)
    except Exception:  # LiteRT without the (private) op listing
        return None


def _micro_check(path, x, required):
    """The `micro*` fields of a report for an int8 file."""
    from keras_compact.quantization import micro

    if not micro.available():
        if required is True:
            raise ImportError(micro.INSTALL_HINT)
        return {"micro": "not run: " + micro.INSTALL_HINT}
    result = micro.check_micro(path, x)
    if result["equal"]:
        outcome = "equal"
    elif result["max_steps_apart"] == 1:
        # Rounding of a requantization: one integer step on a few values.
        outcome = (
            f"1 step apart on {result['outputs_apart']} of "
            f"{result['outputs']} outputs"
        )
    else:
        outcome = "different"
    return {
        "micro": outcome,
        "micro_arena_bytes": result["arena_bytes"],
        "micro_max_abs_diff": result["max_abs_diff"],
        "micro_samples": result["num_samples"],
    }


def export_and_verify(
    model,
    directory,
    quantizations=("float32", "int8"),
    x=None,
    y=None,
    representative_data=None,
    int8_io=False,
    sparsity=False,
    num_calibration=200,
    latency_runs=50,
):
    """Exports a model in several quantization modes and verifies each.

    Files are named `{model.name}_{quantization}.tflite` in `directory`.

    Args:
        model: a `keras.Model` (or an object with a `strip()` method).
        directory: output folder, created if needed.
        quantizations: modes to export, among `"float32"`, `"float16"`,
            `"dynamic_range"`, `"int8"`. Defaults to `("float32", "int8")`.
        x: float numpy array of evaluation inputs (required).
        y: optional labels for accuracy.
        representative_data: calibration inputs, required when `"int8"` is
            among `quantizations` (see `export_tflite`).
        int8_io: bool, int8 inputs and outputs for the `"int8"` file.
        sparsity: bool, sparse storage for every file.
        num_calibration: see `export_tflite`.
        latency_runs: see `verify_tflite`.

    Returns:
        A list of `ExportReport`, in the order of `quantizations`.

    Raises:
        ValueError: if `x` is None or `quantizations` is empty, and the
            errors of `export_tflite` and `verify_tflite`.

    Example:

    ```python
    reports = export_and_verify(
        model, "out", ("float32", "float16", "int8"), x=x_test, y=y_test,
        representative_data=x_train[:200])
    print(format_reports(reports))
    ```
    """
    source = model  # a QAT trainer exports its int8 file itself
    model = deployable_model(model)
    if x is None:
        raise ValueError(
            "Expected `x`, a batch of evaluation inputs to compare the "
            "files with the Keras model. Received: x=None"
        )
    if isinstance(quantizations, str):
        quantizations = (quantizations,)
    quantizations = tuple(quantizations)
    if not quantizations:
        raise ValueError(
            "Expected at least one quantization mode. "
            f"Received: quantizations={quantizations!r}"
        )
    reports = []
    for quantization in quantizations:
        path = os.path.join(
            os.fspath(directory), f"{model.name}_{quantization}.tflite"
        )
        export_tflite(
            source,
            path,
            quantization=quantization,
            representative_data=representative_data,
            int8_io=int8_io and quantization == "int8",
            sparsity=sparsity,
            num_calibration=num_calibration,
        )
        reports.append(
            verify_tflite(
                path,
                source,
                x,
                y,
                latency_runs=latency_runs,
                quantization=quantization,
            )
        )
    return reports


def _as_list(outputs):
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _classes(outputs):
    outputs = np.asarray(outputs)
    if outputs.ndim < 2 or outputs.shape[-1] < 2:
        return None
    return np.argmax(outputs.reshape(len(outputs), -1), axis=-1)


def _labels(y, n):
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(
            f"Expected `y` to have one label per input ({n}). "
            f"Received: y with shape {y.shape}"
        )
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=-1)
    return y.reshape(n).astype(np.int64)


def _latency_ms(interpreter, sample, runs, warmup):
    detail = _prepare_batch1(interpreter)
    interpreter.set_tensor(detail["index"], quantize_input(sample, detail))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))
