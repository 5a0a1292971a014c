"""The fake-quant model of a QAT trainer to a fully int8 `.tflite` file."""

import os

import numpy as np

FLOAT_TYPES = (np.float32, np.float16, np.float64)


class NotInt8Error(ValueError):
    """Raised when an int8 file holds ops that do not compute in int8
    (float fallback, Select TF ops, custom ops). `ops` lists them."""

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = ops


def find_qat(obj):
    """The `QuantizationAwareTraining` technique of a trainer, the technique
    itself, or None."""
    from keras_compact.quantization.qat import QuantizationAwareTraining

    if isinstance(obj, QuantizationAwareTraining):
        return obj
    for t in getattr(obj, "techniques", None) or ():
        if isinstance(t, QuantizationAwareTraining):
            return t
    return None


def _interpreter(flatbuffer):
    from ai_edge_litert import interpreter as litert

    return litert.Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )


def op_names(flatbuffer):
    """The op names of a `.tflite` flatbuffer (bytes or a path), in order."""
    if isinstance(flatbuffer, (str, os.PathLike)):
        with open(flatbuffer, "rb") as f:
            flatbuffer = f.read()
    # `_get_ops_details` is LiteRT's only op listing (also used by
    # `keras_compact.export.interpreter.infer_quantization`).
    return [op["op_name"] for op in _interpreter(flatbuffer)._get_ops_details()]


def check_int8_ops(flatbuffer):
    """Checks that every op of a file computes in int8 (builtin ops only).

    Float tensors may only enter through the `QUANTIZE` of a model input and
    leave through the `DEQUANTIZE` of a model output (float I/O); int32
    bias and shape tensors are fine.

    Args:
        flatbuffer: the file's bytes, or its path.

    Returns:
        The list of op names, in execution order.

    Raises:
        NotInt8Error: naming every op that computes in float or is not a
            builtin op (Select TF `Flex*` ops, custom ops).
    """
    if isinstance(flatbuffer, (str, os.PathLike)):
        with open(flatbuffer, "rb") as f:
            flatbuffer = f.read()
    interpreter = _interpreter(flatbuffer)
    dtypes = {
        t["index"]: np.dtype(t["dtype"])
        for t in interpreter.get_tensor_details()
    }
    graph_in = {d["index"] for d in interpreter.get_input_details()}
    graph_out = {d["index"] for d in interpreter.get_output_details()}
    names, bad = [], []
    for i, op in enumerate(interpreter._get_ops_details()):
        name = op["op_name"]
        names.append(name)
        ins = [int(t) for t in op["inputs"] if t >= 0]
        outs = [int(t) for t in op["outputs"] if t >= 0]
        floats = [
            t for t in ins + outs if t in dtypes and dtypes[t] in FLOAT_TYPES
        ]
        if name.startswith("Flex") or name in ("CUSTOM", "DELEGATE"):
            bad.append(f"{name} (op {i}: not a builtin op)")
            continue
        if name == "QUANTIZE" and set(floats) <= graph_in:
            continue
        if name == "DEQUANTIZE" and set(floats) <= graph_out:
            continue
        if floats:
            kinds = sorted({dtypes[t].name for t in floats})
            bad.append(f"{name} (op {i}: {'/'.join(kinds)} tensors)")
    if bad:
        raise NotInt8Error(
            "Expected every op of the int8 file to compute in int8 with "
            "builtin ops (no float fallback, no Select TF ops). Received: "
            f"{len(bad)} op(s) that do not: " + "; ".join(bad),
            bad,
        )
    return names


def convert_qat(obj, path, int8_io=False, sparsity=False):
    """Converts the fake-quant model of a QAT trainer to an int8 file.

    The converter reads the trained ranges from the fake-quant ops of
    `QuantizationAwareTraining.export_model()` (no calibration data) and
    quantizes the folded, already fake-quantized kernels on the same
    per-channel grid, so the file computes what `quantized_model()`
    computes. The result is checked with `check_int8_ops`.

    Args:
        obj: a `Trainer` holding a `QuantizationAwareTraining`, or the
            technique.
        path: destination file, ending in `.tflite`.
        int8_io: bool, int8 inputs and outputs instead of float ones.
        sparsity: bool, sparse storage of mostly-zero kernels
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).

    Returns:
        `path`.

    Raises:
        ValueError: if `obj` holds no QAT technique, or its ranges are not
            trained.
        NotInt8Error: if some op of the file is not int8.
        RuntimeError: if the conversion fails (with the converter's log).
    """
    import tensorflow as tf

    from keras_compact.export.tflite import _convert, _write

    technique = find_qat(obj)
    if technique is None:
        raise ValueError(
            "Expected a Trainer holding a QuantizationAwareTraining technique "
            f"(or the technique). Received: {obj!r}"
        )
    model = technique.export_model()

    def configure(converter):
        # No `supported_ops = [TFLITE_BUILTINS_INT8]`: with it the converter
        # demands calibration data before it sees the fake-quant ops. The
        # result is checked op by op below instead.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if sparsity:
            converter.optimizations.append(
                tf.lite.Optimize.EXPERIMENTAL_SPARSITY
            )
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    flatbuffer = _convert(
        model, configure, "TFLite conversion of the QAT model"
    )
    check_int8_ops(flatbuffer)
    return _write(path, flatbuffer)
