"""Where an int8 file and its fake-quant model part, tensor by tensor.

`layerwise_fidelity` runs the file on LiteRT's reference kernels (the
integer arithmetic the microcontroller runtime ports) keeping every
intermediate tensor, and compares each requantized tensor of the
fake-quant model (after each fused conv/dense + BN + activation, after
each Add, Concatenate, pooling) with the file's tensor:

- isolated: the fake-quant op recomputed from the file's OWN input tensors
  (dequantized): the error that op adds by itself. Convolutions, dense
  layers and global average pooling follow the kernels' integer arithmetic
  in inference (`keras_compact.quantization.integer`) and should match
  exactly; ops left to float arithmetic (Add, Concatenate) may be one step
  off on a small share of values (a tie rounded the other way); more than
  one step means the fake-quant model does not compute what the file
  computes at that op.
- propagated: the fake-quant model run from the input: the error
  accumulated up to that tensor (one-step differences compound through a
  deep network).
"""

import keras
import numpy as np

from keras_compact.export.interpreter import (
    _prepare_batch1,
    load_interpreter,
    quantize_input,
)
from keras_compact.graph.walk import ModelGraph


def _file_tensors(path, x):
    """Every quantized integer op output of the file on `x` (batch 1):
    `{index: (values (n, ...), scale, zero point, op name)}`."""
    interpreter, _ = load_interpreter(
        path, preserve_all_tensors=True, kernels="reference"
    )
    detail = _prepare_batch1(interpreter)
    # LiteRT's only op listing (also used by `check_int8_ops`).
    producers = {
        o: op["op_name"]
        for op in interpreter._get_ops_details()
        for o in op["outputs"]
    }
    details = [
        d
        for d in interpreter.get_tensor_details()
        if d["index"] in producers
        and np.issubdtype(np.dtype(d["dtype"]), np.integer)
        and d["quantization"][0]
    ]
    values = {d["index"]: [] for d in details}
    xq = quantize_input(x, detail)
    for i in range(len(xq)):
        interpreter.set_tensor(detail["index"], xq[i : i + 1])
        interpreter.invoke()
        for d in details:
            values[d["index"]].append(interpreter.get_tensor(d["index"]).copy())
    return {
        d["index"]: (
            np.concatenate(values[d["index"]]),
            *d["quantization"],
            producers[d["index"]],
        )
        for d in details
    }


def _dequantize(entry):
    q, scale, zero_point, _ = entry
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def _steps(values, entry):
    return (
        np.abs(np.asarray(values, np.float32) - _dequantize(entry)) / entry[1]
    )


def _call(node, values):
    """Runs a graph node's operation in inference on concrete inputs."""
    args, kwargs = node.arguments
    kwargs = {k: v for k, v in kwargs.items() if k != "training"}

    def value(t):
        return values[id(t)] if isinstance(t, keras.KerasTensor) else t

    args = keras.tree.map_structure(value, args)
    kwargs = keras.tree.map_structure(value, kwargs)
    if isinstance(node.operation, keras.layers.Layer):
        kwargs["training"] = False
    return node.operation(*args, **kwargs)


def _recompute(graph, quantizer, file_entry):
    """The quantizer's output computed from the file's tensors: the ops
    between it and the nearest matched quantized tensors (a fused layer,
    an Add, a max pooling that keeps its input's grid, ...) run on their
    dequantized values. None if that reaches the model input."""
    values = {}

    def value(tensor, top=False):
        if not top and id(tensor) in file_entry:
            return _dequantize(file_entry[id(tensor)])
        if id(tensor) not in values:
            node = graph.producer(tensor)
            if node.is_input:
                raise LookupError
            inputs = {id(t): value(t) for t in node.inputs}
            out = keras.ops.convert_to_numpy(_call(node, inputs))
            values[id(tensor)] = out
        return values[id(tensor)]

    try:
        return value(quantizer.outputs[0], top=True)
    except LookupError:
        return None


def layerwise_fidelity(qat, path, x):
    """Per requantized tensor: the file against the fake-quant model.

    Each fake-quant tensor is matched with the file's quantized tensor of
    the same shape nearest to it (in steps of that tensor).

    Args:
        qat: the `QuantizationAwareTraining` technique the file was
            exported from (its `quantized_model()` is the reference).
        path: the int8 `.tflite` file.
        x: a float numpy batch of model inputs (a few images suffice).

    Returns:
        A list of dicts in graph order, one per requantized tensor:
        `tensor` (the quantizer's name), `op` (the file op that produced
        it), `shape`, `isolated_max` and `isolated_share_off` (max and
        share of values more than half a step apart, recomputed from the
        file's own inputs; None where an input is not a matched tensor),
        `propagated_mean`, `propagated_max` and `propagated_share_over_1`.
        A tensor without a match in the file has `op` None.

    Raises:
        ValueError: if `x` does not fit the file's input.

    Example:

    ```python
    export_tflite(trainer, "model.tflite", quantization="int8")
    rows = layerwise_fidelity(qat, "model.tflite", x_test[:20])
    worst = max(r["isolated_max"] or 0 for r in rows)  # expect <= 1
    ```
    """
    from keras_compact.quantization.view import ActivationQuantizer

    view = qat.quantized_model()
    graph = ModelGraph(view)
    quantizers = [
        n for n in graph.nodes if isinstance(n.operation, ActivationQuantizer)
    ]
    tensors = _file_tensors(path, x)
    probe = keras.Model(view.inputs, [n.outputs[0] for n in quantizers])
    propagated = probe.predict(np.asarray(x), verbose=0)
    if len(quantizers) == 1:
        propagated = [propagated]
    rows, file_entry = [], {}
    for node, reference in zip(quantizers, propagated):
        row = {"tensor": node.name, "op": None, "shape": reference.shape[1:]}
        rows.append(row)
        candidates = [
            (float(_steps(reference, e).mean()), i)
            for i, e in tensors.items()
            if e[0].shape == reference.shape
        ]
        if not candidates:
            continue
        index = min(candidates)[1]
        entry = file_entry[id(node.outputs[0])] = tensors[index]
        steps = _steps(reference, entry)
        row.update(
            op=entry[3],
            propagated_mean=float(steps.mean()),
            propagated_max=float(steps.max()),
            propagated_share_over_1=float(np.mean(steps > 1.0001)),
            isolated_max=None,
            isolated_share_off=None,
        )
    for node, row in zip(quantizers, rows):
        if row["op"] is None:
            continue
        y = _recompute(graph, node, file_entry)
        if y is None:
            continue
        steps = _steps(y, file_entry[id(node.outputs[0])])
        row["isolated_max"] = float(steps.max())
        row["isolated_share_off"] = float(np.mean(steps > 0.5))
    return rows
