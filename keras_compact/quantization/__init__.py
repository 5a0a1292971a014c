"""Quantization-aware training and int8 export for microcontrollers.

- `QuantizationAwareTraining`: a `Technique` whose training forward pass
  fake-quantizes the compact model where the int8 TFLite file quantizes
  (per-channel weights with BN folded, per-tensor activations on
  moving-average ranges).
- `convert_qat`: the fake-quant model to an int8 `.tflite` file with the
  trained ranges and builtin int8 ops only (`export_tflite` calls it for a
  trainer holding the technique).
- `check_int8_ops`: names every op of a file that is not integer.
- `schedule` (start and BN freezing steps), `callbacks` (fractional
  start), `report` (`summary()`), `view` (`QuantizationPlan`, the
  fake-quant graphs): the parts of the technique.
- `layerwise_fidelity`: the int8 file against the fake-quant model, tensor
  by tensor (isolated and accumulated differences).
- `micro`: running int8 files with the TensorFlow Lite for
  Microcontrollers interpreter (`pip install keras_compact[micro]`).
"""

from keras_compact.quantization import fake_quant, micro
from keras_compact.quantization.convert import (
    NotInt8Error,
    check_int8_ops,
    convert_qat,
    find_qat,
)
from keras_compact.quantization.layerwise import layerwise_fidelity
from keras_compact.quantization.qat import QuantizationAwareTraining
from keras_compact.quantization.view import QuantizationPlan

__all__ = [
    "NotInt8Error",
    "QuantizationAwareTraining",
    "QuantizationPlan",
    "check_int8_ops",
    "convert_qat",
    "fake_quant",
    "find_qat",
    "layerwise_fidelity",
    "micro",
]
