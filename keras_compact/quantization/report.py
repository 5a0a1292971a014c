"""The `summary()` report of `QuantizationAwareTraining`."""

import keras

from keras_compact.quantization import fake_quant
from keras_compact.training.report import TechniqueReport


def qat_report(technique, plan, ranges):
    """Where the model is quantized, with the trained ranges.

    Args:
        technique: the technique's class name.
        plan: the `QuantizationPlan`.
        ranges: `{name: variable [min, max]}`, the activation ranges.

    Returns:
        A `TechniqueReport`: applied, one row per fused op or quantization
        point (its kind, layers and effective range `min` / `max`);
        skipped layers with the reason.
    """
    report = TechniqueReport(technique)
    for entry in plan.entries:
        lo, hi = fake_quant.effective_range(ranges[entry["range"]].value)
        report.add(
            entry["range"],
            "applied",
            f"{entry['kind']}: {' + '.join(entry['layers'])}",
            kind=entry["kind"],
            layers=list(entry["layers"]),
            min=float(keras.ops.convert_to_numpy(lo)),
            max=float(keras.ops.convert_to_numpy(hi)),
        )
    for name, reason in plan.skipped:
        report.add(name, "skipped", reason)
    return report
