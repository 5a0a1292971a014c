"""Running `.tflite` files: `load_interpreter` and `run_tflite`.

Interpreters are tried in this order: `ai_edge_litert` (LiteRT, the
maintained one), `tf.lite.Interpreter` (deprecated, but built with the
converter that wrote the file), then `tflite_runtime`. Falling back is never
silent: a warning names the backend used and why the preferred one was
skipped, and the backend name is returned. `backend="tflite_runtime"` runs
a file on that runtime only (what a device without TensorFlow would run).

`tflite_runtime` (the standalone wheel, no longer released) measured with
files written by TF 2.21's converter (tiny_cnn, mobilenet_v2_tiny and
resnet8 in float32, float16, dynamic-range and int8):

- under numpy 2 (2.4.6) neither `tflite-runtime` 2.14.0 nor the last
  `tflite-runtime-nightly` (2.20.0.dev20250409) can run anything: both
  import, but creating an interpreter fails (`SystemError` from
  `ImportError: numpy.core.multiarray failed to import`, `_ARRAY_API not
  found`: they are compiled against numpy 1.x). This module does not try
  them under numpy 2 and says so instead (`tflite_runtime_problem`).
- under numpy 1.26.4 both run every float32, float16 and int8 file, with
  outputs equal to LiteRT's to 5e-7 (float) and within two output steps
  (int8: other int8 kernels). 2.14.0 refuses the dynamic-range file of
  mobilenet_v2_tiny ("Didn't find op for builtin opcode 'FULLY_CONNECTED'
  version '12'"; those of tiny_cnn and resnet8 load); the nightly loads
  all. Both run int8 files 4-18x slower than LiteRT (mobilenet_v2_tiny at
  batch 1: 53 ms and 38 ms against 3 ms).

Files holding sparse tensors (`EXPERIMENTAL_SPARSITY`) are refused by the
default XNNPack delegate in some modes; by default (`use_default_delegates=
None`) `run_tflite` runs them with
`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`.
"""

import os
import re
import warnings

import numpy as np

BACKENDS = ("ai_edge_litert", "tf.lite", "tflite_runtime")

# The last `tflite_runtime` builds, all compiled against numpy 1.x: under
# numpy 2 creating an interpreter fails (measured: 2.14.0 and the nightly
# 2.20.0.dev20250409). A later build, if one ever comes, is tried.
_TFLITE_RUNTIME_NUMPY1_UP_TO = (2, 20, 0)


class BackendUnusableError(ImportError):
    """An interpreter backend is installed but cannot run here."""


def _version_tuple(version):
    """`"2.20.0dev20250409"` -> `(2, 20, 0)`; missing parts are 0."""
    parts = []
    for piece in str(version).split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts + [0] * (3 - len(parts)))


def tflite_runtime_problem(runtime_version=None, numpy_version=None):
    """Why the installed `tflite_runtime` cannot run here, or None.

    Args:
        runtime_version: optional version string (default: the installed
            `tflite_runtime.__version__`).
        numpy_version: optional version string (default: numpy's).

    Returns:
        A message naming both versions and what to do, or None when the
        pair is not known to fail.
    """
    if runtime_version is None:
        import tflite_runtime

        runtime_version = getattr(tflite_runtime, "__version__", "unknown")
    numpy_version = numpy_version or np.__version__
    if _version_tuple(numpy_version)[0] < 2:
        return None
    if _version_tuple(runtime_version) > _TFLITE_RUNTIME_NUMPY1_UP_TO:
        return None
    return (
        f"tflite_runtime {runtime_version} is compiled against numpy 1.x "
        f"and cannot create an interpreter under numpy {numpy_version} "
        "(SystemError: _ARRAY_API not found). Use `ai-edge-litert` (pip "
        "install ai-edge-litert), or run tflite_runtime in an environment "
        "with numpy<2."
    )


DELEGATES_DEFAULT = "default delegates (XNNPack)"
DELEGATES_NONE = (
    "no default delegates (BUILTIN_WITHOUT_DEFAULT_DELEGATES): "
    "sparse tensors are refused by XNNPack"
)


def _import_backend(backend):
    """Returns `(Interpreter class, OpResolverType enum)` of a backend."""
    if backend == "ai_edge_litert":
        from ai_edge_litert import interpreter as module

        return module.Interpreter, module.OpResolverType
    if backend == "tflite_runtime":
        from tflite_runtime import interpreter as module

        problem = tflite_runtime_problem()
        if problem:
            raise BackendUnusableError(problem)
        return module.Interpreter, module.OpResolverType
    import tensorflow as tf

    return tf.lite.Interpreter, tf.lite.experimental.OpResolverType


def _create(
    backend,
    path,
    num_threads,
    use_default_delegates,
    preserve=False,
    kernels="optimized",
):
    cls, resolver = _import_backend(backend)
    extra = {"experimental_preserve_all_tensors": True} if preserve else {}
    if kernels == "reference":
        kind = resolver.BUILTIN_REF
    elif use_default_delegates:
        kind = resolver.AUTO
    else:
        kind = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return cls(
            model_path=os.fspath(path),
            num_threads=num_threads,
            experimental_op_resolver_type=kind,
            **extra,
        )
    except SystemError as e:  # a C extension built for another numpy
        raise BackendUnusableError(
            f"{backend} failed to create an interpreter ({e.__cause__ or e}"
            f"); it may be built for another numpy than {np.__version__}"
        ) from e
    except ValueError as e:
        if "Didn't find op for builtin opcode" not in str(e):
            raise
        op = str(e).strip().splitlines()[0]
        raise BackendUnusableError(
            f"{backend} is older than the converter that wrote "
            f"{os.fspath(path)!r}: {op}"
        ) from e


def has_sparse_tensors(interpreter):
    """Whether an interpreter's model stores tensors in a sparse format."""
    return any(
        t.get("sparsity_parameters") for t in interpreter.get_tensor_details()
    )


KERNELS = ("optimized", "reference")


def _open(
    path,
    num_threads=1,
    use_default_delegates=None,
    backend=None,
    preserve_all_tensors=False,
    kernels="optimized",
):
    """Returns `(interpreter, backend, used_default_delegates)`, allocated."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise FileNotFoundError(
            f"Expected `path` to be an existing .tflite file. "
            f"Received: path={path!r}"
        )
    if (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, int)
        or num_threads < 1
    ):
        raise ValueError(
            "Expected `num_threads` to be a positive int. "
            f"Received: num_threads={num_threads!r}"
        )
    if use_default_delegates not in (None, True, False):
        raise ValueError(
            "Expected `use_default_delegates` to be True, False or None "
            f"(automatic). Received: "
            f"use_default_delegates={use_default_delegates!r}"
        )
    if backend is not None and backend not in BACKENDS:
        raise ValueError(
            f"Expected `backend` to be one of {BACKENDS} or None. "
            f"Received: backend={backend!r}"
        )
    if kernels not in KERNELS:
        raise ValueError(
            f"Expected `kernels` to be one of {KERNELS}. "
            f"Received: kernels={kernels!r}"
        )
    if kernels == "reference":
        if use_default_delegates:
            raise ValueError(
                "The reference kernels run without delegates. Expected "
                "`use_default_delegates` to be False or None with "
                "kernels='reference'. Received: "
                f"use_default_delegates={use_default_delegates!r}"
            )
        use_default_delegates = False
    candidates = BACKENDS if backend is None else (backend,)
    failures = []
    interpreter = None
    for name in candidates:
        try:
            interpreter = _create(
                name,
                path,
                num_threads,
                use_default_delegates is not False,
                preserve_all_tensors,
                kernels,
            )
        except (ImportError, AttributeError) as e:  # missing or broken
            failures.append(f"{name}: {type(e).__name__}: {e}")
            continue
        backend = name
        break
    if interpreter is None:
        if len(candidates) == 1:
            raise ImportError(
                f"The {candidates[0]!r} interpreter could not be created. "
                f"Received: backend={candidates[0]!r} ({failures[0]})"
            )
        raise ImportError(
            "No TFLite interpreter could be created. Install "
            "`ai-edge-litert` (pip install ai-edge-litert). Tried: "
            + "; ".join(failures)
        )
    if failures:
        warnings.warn(
            f"Running {os.fspath(path)!r} with the {backend!r} interpreter; "
            "preferred ones failed: " + "; ".join(failures),
            stacklevel=3,
        )
    use_defaults = use_default_delegates
    if use_defaults is None:
        use_defaults = not has_sparse_tensors(interpreter)
        if not use_defaults:
            interpreter = _create(
                backend, path, num_threads, False, preserve_all_tensors
            )
    try:
        interpreter.allocate_tensors()
    except RuntimeError as e:
        if use_defaults and "delegate" in str(e):
            raise RuntimeError(
                f"The default delegate (XNNPack) refused {path!r}: "
                f"{str(e).rstrip('. ')}. "
                "Sparse models (sparsity=True) must run without it: pass "
                "use_default_delegates=False (or None, automatic)."
            ) from e
        raise
    return interpreter, backend, use_defaults


def load_interpreter(
    path,
    num_threads=1,
    use_default_delegates=True,
    backend=None,
    preserve_all_tensors=False,
    kernels="optimized",
):
    """Loads a `.tflite` file into an allocated interpreter.

    Backends are tried in the order `"ai_edge_litert"`, `"tf.lite"`,
    `"tflite_runtime"`. If the first cannot be imported or created, a
    warning says which one is used instead and why. `tflite_runtime` is
    skipped with a clear reason under numpy 2 (its builds need numpy 1.x)
    and when it is too old for an op of the file (see the module notes).

    Args:
        path: path of the `.tflite` file.
        num_threads: positive int, the number of CPU threads. Defaults to 1.
        use_default_delegates: True to let the interpreter apply its default
            delegate (XNNPack on CPU); False for
            `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (needed by
            files converted with `sparsity=True`, which XNNPack may refuse);
            None to decide from the file (no default delegates when it holds
            sparse tensors). Defaults to True.
        backend: None (the fallback order above), or one of
            `"ai_edge_litert"`, `"tf.lite"`, `"tflite_runtime"` to use that
            one only.
        preserve_all_tensors: whether every intermediate tensor stays
            readable after `invoke()` (no buffer reuse; for debugging, with
            `use_default_delegates=False`: a delegate hides the tensors of
            the ops it runs). Defaults to False.
        kernels: `"optimized"` (the default): the builtin kernels LiteRT
            runs on a phone; `"reference"`: LiteRT's reference kernels
            (`OpResolverType.BUILTIN_REF`, no delegate), the integer
            arithmetic the microcontroller runtime ports and that a QAT
            model's fake-quant view reproduces exactly (the optimized and
            XNNPack int8 kernels may round ties differently).

    Returns:
        A tuple `(interpreter, backend)`: the interpreter, with tensors
        allocated, and the name of the backend used.

    Raises:
        FileNotFoundError: if `path` is not an existing file.
        ValueError: if an argument is invalid.
        RuntimeError: if the default delegate refuses the model.
        ImportError: if no interpreter is installed or usable (a
            `BackendUnusableError` message says why, e.g. tflite_runtime
            under numpy 2).

    Example:

    ```python
    interpreter, backend = load_interpreter("model.tflite", num_threads=2)
    ```
    """
    if not isinstance(preserve_all_tensors, bool):
        raise TypeError(
            "Expected `preserve_all_tensors` to be a bool. Received: "
            f"preserve_all_tensors={preserve_all_tensors!r}"
        )
    interpreter, backend, _ = _open(
        path,
        num_threads,
        False if kernels == "reference" else use_default_delegates,
        backend,
        preserve_all_tensors,
        kernels,
    )
    return interpreter, backend


def quantize_input(x, detail):
    """Converts float inputs to an integer input tensor's type, rounding as
    the file's own `QUANTIZE` kernel does (`round(x / scale)` in float32,
    ties away from zero, plus the zero point)."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(x, dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ValueError(
            f"Input tensor {detail['name']!r} is {dtype.name} without "
            "quantization parameters (scale=0); cannot quantize float inputs."
        )
    info = np.iinfo(dtype)
    v = np.asarray(x, np.float32) / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(q, detail):
    """Converts an integer output tensor to float32 (unchanged if float)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:
        return q
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def _prepare_batch1(interpreter):
    """Resizes the single input to batch 1 if needed; returns its detail."""
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ValueError(
            "Only single-input models are supported. Received: a model "
            f"with {len(inputs)} inputs"
        )
    detail = inputs[0]
    if detail["shape"][0] != 1:
        shape = list(detail["shape"])
        shape[0] = 1
        interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
    return detail


def run_interpreter(interpreter, x):
    """Runs an allocated interpreter on a batch, one example at a time.

    Returns a float array (one output) or a list of them, with integer
    outputs dequantized.
    """
    detail = _prepare_batch1(interpreter)
    x = np.asarray(x)
    if x.ndim != len(detail["shape"]) or tuple(x.shape[1:]) != tuple(
        detail["shape"][1:]
    ):
        raise ValueError(
            "Expected `x` to be a batch of inputs of shape "
            f"(n, {', '.join(str(d) for d in detail['shape'][1:])}). "
            f"Received: x with shape {x.shape}"
        )
    xq = quantize_input(x, detail)
    outputs = interpreter.get_output_details()
    results = [[] for _ in outputs]
    for i in range(len(xq)):
        interpreter.set_tensor(detail["index"], xq[i : i + 1])
        interpreter.invoke()
        for out, res in zip(outputs, results):
            res.append(interpreter.get_tensor(out["index"]).copy())
    arrays = [
        dequantize_output(np.concatenate(res), out)
        if res
        else np.zeros((0,) + tuple(out["shape"][1:]), np.float32)
        for out, res in zip(outputs, results)
    ]
    return arrays[0] if len(arrays) == 1 else arrays


def run_tflite(
    path,
    x,
    num_threads=1,
    use_default_delegates=None,
    backend=None,
    kernels="optimized",
):
    """Runs a `.tflite` file on a batch of inputs.

    Examples are run one at a time at batch size 1 (the deployment case,
    and safe for files whose ops do not accept other batch sizes). Integer
    (int8) inputs are quantized from float `x`, and integer outputs
    dequantized, with each tensor's scale and zero point: the result is
    comparable to the Keras model's outputs whatever the file's I/O types.

    Args:
        path: path of a single-input `.tflite` file.
        x: float numpy array, a batch of inputs `(n, ...)`.
        num_threads: positive int, CPU threads. Defaults to 1.
        use_default_delegates: see `load_interpreter`. Defaults to None:
            default delegates unless the file holds sparse tensors.
        backend: see `load_interpreter`. Defaults to None.
        kernels: see `load_interpreter`. Defaults to `"optimized"`.

    Returns:
        A float numpy array `(n, ...)`, or a list of them for several
        outputs (in the interpreter's output order).

    Raises:
        ValueError: if the model has several inputs or `x` has the wrong
            shape.

    Example:

    ```python
    logits = run_tflite("model_int8.tflite", x_test[:100])
    ```
    """
    interpreter, _, _ = _open(
        path, num_threads, use_default_delegates, backend, kernels=kernels
    )
    return run_interpreter(interpreter, x)


def infer_quantization(interpreter):
    """Guesses the quantization mode of a loaded `.tflite` model.

    Returns:
        A tuple `(quantization, int8_io)`: one of `"float32"`, `"float16"`,
        `"dynamic_range"`, `"int8"`, and whether the input is an integer.
    """
    input_dtype = np.dtype(interpreter.get_input_details()[0]["dtype"])
    int_io = bool(np.issubdtype(input_dtype, np.integer))
    dtypes = {np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    try:
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
    except Exception:
        ops = set()
    if int_io or "QUANTIZE" in ops:
        return "int8", int_io
    if np.dtype(np.float16) in dtypes:
        return "float16", False
    if np.dtype(np.int8) in dtypes or np.dtype(np.uint8) in dtypes:
        return "dynamic_range", False
    return "float32", False
