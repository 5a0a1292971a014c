"""Shipping compact models: TFLite conversion, verification and reports.

- `export_tflite(model, path, quantization=...)`: a Keras model (or a
  `Trainer`, exported through `strip()`) to a `.tflite` file in float32,
  float16, dynamic-range or full int8, optionally with sparse storage.
- `load_interpreter`, `run_tflite`: run a file with LiteRT
  (`ai_edge_litert`), falling back, with a warning, to `tf.lite` then
  `tflite_runtime` (skipped with its reason under numpy 2).
- `verify_tflite`: an `ExportReport` of fidelity to Keras (max |diff|,
  top-1 agreement, accuracy), size (raw and gzip), latency at batch 1.
- `export_and_verify`, `format_reports`: several modes in one table.

Example:

```python
from keras_compact import export

reports = export.export_and_verify(
    model, "out", ("float32", "float16", "int8"), x=x_test, y=y_test,
    representative_data=x_train[:200])
print(export.format_reports(reports))
```
"""

from keras_compact.export.interpreter import load_interpreter, run_tflite
from keras_compact.export.report import ExportReport, format_reports
from keras_compact.export.tflite import QUANTIZATIONS, export_tflite
from keras_compact.export.verify import export_and_verify, verify_tflite

__all__ = [
    "QUANTIZATIONS",
    "ExportReport",
    "export_and_verify",
    "export_tflite",
    "format_reports",
    "load_interpreter",
    "run_tflite",
    "verify_tflite",
]
