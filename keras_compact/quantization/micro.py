"""Running int8 files on the TensorFlow Lite for Microcontrollers runtime.

Uses the Python interpreter of the `tflite-micro` package (an optional
dependency: `pip install keras_compact[micro]`), which runs the same
reference kernels as the microcontroller build. `run_micro` returns the
outputs and the tensor arena the model needs; `check_micro` compares them
with LiteRT's reference kernels; an op the runtime lacks raises
`MicroUnsupportedOpsError`, which lists them.
"""

import contextlib
import ctypes
import os
import re
import sys
import tempfile

import numpy as np

# Arena given to the host interpreter; the report gives what the model used.
HOST_ARENA_BYTES = 64 * 1024 * 1024

INSTALL_HINT = (
    "The TensorFlow Lite for Microcontrollers interpreter is not "
    "installed: `pip install tflite-micro` (or `pip install "
    "keras_compact[micro]`)."
)


class MicroUnsupportedOpsError(RuntimeError):
    """The microcontroller runtime lacks some ops of a file (`ops`)."""

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = ops


def available():
    """Whether `tflite_micro` can be imported."""
    try:
        _runtime()
    except ImportError:
        return False
    return True


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return runtime


def _flush_c_streams():
    try:
        ctypes.CDLL(None).fflush(None)
    except Exception:  # no C library to flush (not expected on Linux)
        pass


@contextlib.contextmanager
def _captured_fd(fd):
    """Collects what native code writes on a file descriptor."""
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    _flush_c_streams()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), fd)
        box = {}
        try:
            yield box
        finally:
            stream.flush()
            _flush_c_streams()
            os.dup2(saved, fd)
            os.close(saved)
            f.seek(0)
            box["text"] = f.read().decode("utf-8", "replace")


def _quantize(x, detail):
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(x, dtype)
    q = detail["quantization_parameters"]
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    info = np.iinfo(dtype)
    v = np.round(np.asarray(x, np.float32) / scale + zero)
    return np.clip(v, info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    dtype = np.dtype(detail["dtype"])
    q = detail["quantization_parameters"]
    if not np.issubdtype(dtype, np.integer) or not len(q["scales"]):
        return np.asarray(y, np.float32)
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    return (y.astype(np.float32) - zero) * np.float32(scale)


def load(path, arena_size=None):
    """Loads a file into the micro interpreter.

    Returns:
        A tuple `(interpreter, arena_bytes)`.

    Raises:
        ImportError: if `tflite-micro` is not installed (with the command
            to install it).
        MicroUnsupportedOpsError: listing the ops the micro runtime lacks.
    """
    runtime = _runtime()
    with _captured_fd(2) as err:
        try:
            interpreter = runtime.Interpreter.from_file(
                os.fspath(path), arena_size=arena_size or HOST_ARENA_BYTES
            )
            error = None
        except Exception as e:  # the runtime's own exception types
            interpreter, error = None, e
    if error is not None:
        text = err.get("text", "") + " " + str(error)
        missing = sorted(
            set(re.findall(r"Didn't find op for builtin opcode '(\w+)'", text))
            | set(re.findall(r"[Uu]nsupported (?:op|opcode)[^\w]*(\w+)", text))
        )
        if missing:
            raise MicroUnsupportedOpsError(
                "The TensorFlow Lite for Microcontrollers runtime lacks "
                f"these ops of {os.fspath(path)!r}: {', '.join(missing)}. "
                "Replace the layers that produce them, or register custom "
                "kernels on the device.",
                missing,
            ) from error
        raise RuntimeError(
            f"The micro interpreter could not load {os.fspath(path)!r}: "
            f"{error}. Runtime log:\n{text[-4000:]}"
        ) from error
    with _captured_fd(2) as out:
        interpreter.print_allocations()
    match = re.search(r"Arena allocation total (\d+) bytes", out["text"])
    arena = int(match.group(1)) if match else None
    return interpreter, arena


def run_micro(path, x, arena_size=None):
    """Runs a single-input file on the micro interpreter, one example at a
    time.

    Args:
        path: the `.tflite` file.
        x: float numpy array `(n, ...)`; quantized for int8 inputs.
        arena_size: tensor arena given to the interpreter, in bytes; None
            gives 64 MiB (the host has room; the arena the model really
            needs is measured and returned).

    Returns:
        A tuple `(outputs, arena_bytes)`: float outputs `(n, ...)`
        (dequantized from int8 outputs; a list for several outputs) and the
        arena the model used, in bytes (None if not reported).

    Raises:
        ImportError, MicroUnsupportedOpsError: see `load`.

    Example:

    ```python
    logits, arena = run_micro("model_int8.tflite", x_test[:100])
    ```
    """
    from keras_compact.quantization.convert import _interpreter

    with open(path, "rb") as f:
        n_out = len(_interpreter(f.read()).get_output_details())
    interpreter, arena = load(path, arena_size)
    detail = interpreter.get_input_details(0)
    outs = [interpreter.get_output_details(i) for i in range(n_out)]
    results = [[] for _ in outs]
    x = np.asarray(x)
    for i in range(len(x)):
        interpreter.set_input(_quantize(x[i : i + 1], detail), 0)
        interpreter.invoke()
        for j, res in enumerate(results):
            res.append(np.array(interpreter.get_output(j)))
    arrays = [
        _dequantize(np.concatenate(res), d) for res, d in zip(results, outs)
    ]
    return (arrays[0] if len(arrays) == 1 else arrays), arena


def run_litert_reference(path, x):
    """Runs a file with LiteRT's reference kernels
    (`OpResolverType.BUILTIN_REF`), the kernels the micro runtime ports."""
    from keras_compact.export.interpreter import run_tflite

    return run_tflite(path, x, kernels="reference")


def output_step(path):
    """The smallest quantization step of a file's outputs (of the int8
    tensor that a float output is dequantized from); 0.0 if none."""
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_path=os.fspath(path))
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    outputs = {d["index"] for d in interpreter.get_output_details()}
    sources = set(outputs)
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) & outputs:
            sources |= {int(t) for t in op["inputs"]}
    steps = [
        float(details[i]["quantization"][0])
        for i in sources
        if i in details and details[i]["quantization"][0] > 0
    ]
    return min(steps, default=0.0)


def check_micro(path, x):
    """Runs a file on the micro runtime and on LiteRT, and compares them.

    The micro runtime ports LiteRT's reference kernels: it is compared with
    LiteRT run with `OpResolverType.BUILTIN_REF`. (LiteRT's optimized and
    XNNPack kernels round some requantizations differently: up to one
    output step apart on a few outputs.)

    Args:
        path: an int8 `.tflite` file.
        x: float numpy array of inputs `(n, ...)`.

    Returns:
        A dict: `"arena_bytes"` (the tensor arena the model used),
        `"max_abs_diff"` (micro vs LiteRT reference kernels, dequantized),
        `"equal"` (whether every output is the same integer: the difference
        is below half an output step), `"num_samples"`,
        `"max_steps_apart"` (the largest difference in output steps),
        `"outputs_apart"` (how many output values differ) and `"outputs"`
        (how many were compared).

    Raises:
        ImportError: if `tflite-micro` is not installed.
        MicroUnsupportedOpsError: listing the ops the micro runtime lacks.
    """
    micro_out, arena = run_micro(path, x)
    litert_out = run_litert_reference(path, x)
    micro_out = micro_out if isinstance(micro_out, list) else [micro_out]
    litert_out = litert_out if isinstance(litert_out, list) else [litert_out]
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(micro_out, litert_out)
    )
    step = output_step(path)
    equal = diff <= 1e-6 or (step > 0 and diff < 0.5 * step)
    apart = [
        np.abs(np.asarray(a) - np.asarray(b)) >= 0.5 * step
        for a, b in zip(micro_out, litert_out)
    ]
    return {
        "arena_bytes": arena,
        "max_abs_diff": diff,
        "equal": bool(equal),
        "num_samples": int(len(x)),
        "max_steps_apart": int(round(diff / step)) if step > 0 else None,
        "outputs_apart": 0 if equal else int(sum(a.sum() for a in apart)),
        "outputs": int(sum(a.size for a in apart)),
    }
