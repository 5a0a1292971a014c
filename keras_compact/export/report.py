"""`ExportReport`: what a `.tflite` file costs and how faithful it is.

One report per file (size, compressed size, fidelity to the Keras model,
accuracy, latency, interpreter used); `format_reports` lays several side by
side, one row per quantization mode.
"""

import dataclasses
import json
import os


@dataclasses.dataclass
class ExportReport:
    """Measurements of one `.tflite` file against its Keras model.

    Made by `verify_tflite`. Latencies are medians at batch size 1 on this
    machine's CPU; compare them only between reports made on the same
    machine. Sparse storage shrinks `size_bytes`, not latency, and
    hardly `gzip_bytes`.

    Attributes:
        path: the `.tflite` file.
        quantization: `"float32"`, `"float16"`, `"dynamic_range"` or
            `"int8"`.
        int8_io: whether inputs and outputs are int8.
        sparse: whether the file stores tensors in a sparse format.
        num_params: parameter count of the Keras model.
        size_bytes: file size in bytes.
        gzip_bytes: size after gzip level 9 (what a download or an
            over-the-air update costs).
        num_samples: number of inputs compared.
        max_abs_diff: largest absolute difference between the file's
            (dequantized) outputs and the Keras model's.
        top1_agreement: fraction of inputs whose top-1 class is the same as
            Keras' (None for outputs with a single unit).
        tflite_accuracy: top-1 accuracy of the file on `(x, y)`, or None.
        keras_accuracy: top-1 accuracy of the Keras model, or None.
        latency_ms_1_thread: median latency in ms, batch 1, one thread.
        latency_ms_2_threads: the same with two threads.
        backend: the interpreter used (`"ai_edge_litert"`, ...).
        delegates: whether the default delegate (XNNPack) was used, and why
            not.
        reference: the Keras model compared with: `"keras"` (the model
            itself) or `"fake-quant"` (the inference-mode fake-quant model
            of a `QuantizationAwareTraining` trainer, for its int8 file).
        ops: the file's op names, in execution order.
        micro: the microcontroller check of an int8 file: `"equal"` (the
            TensorFlow Lite for Microcontrollers interpreter gives the
            same integers as LiteRT's reference kernels), `"1 step apart
            on K of N outputs"` (a requantization rounded differently:
            K output values one integer step apart), `"different"`, or why
            it did not run; None for other files.
        micro_arena_bytes: the tensor arena the micro interpreter used.
        micro_max_abs_diff: largest |micro - LiteRT reference kernels|.
        micro_samples: number of inputs run on the micro interpreter.
    """

    path: str
    quantization: str
    int8_io: bool
    sparse: bool
    num_params: int
    size_bytes: int
    gzip_bytes: int
    num_samples: int
    max_abs_diff: float
    top1_agreement: float | None
    tflite_accuracy: float | None
    keras_accuracy: float | None
    latency_ms_1_thread: float
    latency_ms_2_threads: float
    backend: str
    delegates: str
    reference: str = "keras"
    ops: list | None = None
    micro: str | None = None
    micro_arena_bytes: int | None = None
    micro_max_abs_diff: float | None = None
    micro_samples: int | None = None

    @property
    def mode(self):
        """Short label: the quantization plus `+int8io` / `+sparse`."""
        label = self.quantization
        if self.int8_io:
            label += "+int8io"
        if self.sparse:
            label += "+sparse"
        return label

    def to_dict(self):
        """Returns the fields as a plain, JSON-serializable dict."""
        return dataclasses.asdict(self)

    def to_json(self, indent=2):
        """Returns the fields as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path):
        """Writes the report as JSON to `path` (parents created); returns it."""
        parent = os.path.dirname(os.fspath(path))
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data):
        """Rebuilds a report from `to_dict()` output (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path):
        """Reads a report written by `save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def micro_summary(self):
        """The microcontroller check in one phrase (None when not run):
        its outcome, then the inputs, the largest difference to LiteRT's
        reference kernels and the tensor arena when it ran."""
        if self.micro is None:
            return None
        if self.micro_arena_bytes is None:
            return self.micro
        return (
            f"{self.micro} to LiteRT's reference kernels on "
            f"{self.micro_samples} inputs (max |diff| "
            f"{self.micro_max_abs_diff:.3g}), tensor arena "
            f"{_size(self.micro_arena_bytes)}"
        )

    def __str__(self):
        acc = "n/a"
        if self.tflite_accuracy is not None:
            acc = _pct(self.tflite_accuracy)
            if self.keras_accuracy is not None:
                acc += f" (Keras {_pct(self.keras_accuracy)})"
        rows = [
            ("file", self.path),
            ("quantization", self.mode),
            ("params (Keras)", f"{self.num_params:,}"),
            ("size", _size(self.size_bytes)),
            ("size, gzip -9", _size(self.gzip_bytes)),
            ("max |diff| vs Keras", f"{self.max_abs_diff:.3g}"),
            (
                "top-1 agreement",
                "n/a"
                if self.top1_agreement is None
                else _pct(self.top1_agreement),
            ),
            ("accuracy", acc),
            ("samples compared", str(self.num_samples)),
            ("latency, 1 thread", f"{self.latency_ms_1_thread:.3f} ms"),
            ("latency, 2 threads", f"{self.latency_ms_2_threads:.3f} ms"),
            ("interpreter", self.backend),
            ("delegates", self.delegates),
        ]
        if self.reference != "keras":
            rows.insert(5, ("compared with", self.reference))
        if self.ops:
            rows.append(("ops", ", ".join(sorted(set(self.ops)))))
        if self.micro is not None:
            rows.append(("microcontroller", self.micro_summary()))
        width = max(len(k) for k, _ in rows)
        lines = ["ExportReport"] + [f"  {k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines)


def format_reports(reports):
    """Formats several reports as one comparison table, one row per mode.

    Args:
        reports: an iterable of `ExportReport`.

    Returns:
        A string: a header line, a rule, and one aligned row per report.

    Raises:
        TypeError: if an element is not an `ExportReport`.

    Example:

    ```python
    reports = export_and_verify(model, "out", ("float32", "int8"),
                                x=x_test, y=y_test,
                                representative_data=x_train[:200])
    print(format_reports(reports))
    ```
    """
    reports = list(reports)
    for r in reports:
        if not isinstance(r, ExportReport):
            raise TypeError(
                "Expected `reports` to hold ExportReport objects. "
                f"Received: an element of type {type(r).__name__}"
            )
    header = (
        "mode",
        "size",
        "gzip",
        "max|diff|",
        "top-1 agree",
        "acc tflite",
        "acc keras",
        "ms 1 thr",
        "ms 2 thr",
        "interpreter",
    )
    rows = [header]
    for r in reports:
        rows.append(
            (
                r.mode,
                _size(r.size_bytes),
                _size(r.gzip_bytes),
                f"{r.max_abs_diff:.3g}",
                _pct(r.top1_agreement),
                _pct(r.tflite_accuracy),
                _pct(r.keras_accuracy),
                f"{r.latency_ms_1_thread:.3f}",
                f"{r.latency_ms_2_threads:.3f}",
                r.backend + _delegate_tag(r),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1])]
        cells.append(row[-1])
        return "  ".join(cells)

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule] + [line(row) for row in rows[1:]])


def _delegate_tag(report):
    if report.delegates.startswith("default"):
        return ""
    return " (no XNNPack)"


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _size(num_bytes):
    if num_bytes < 1024:
        return f"{num_bytes} B"
    if num_bytes < 1024 * 1024:
        return f"{num_bytes / 1024:.1f} KB"
    return f"{num_bytes / 1024 / 1024:.2f} MB"
