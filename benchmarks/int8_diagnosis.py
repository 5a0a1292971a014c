"""Where does a trained model lose top-1 agreement in full-int8 TFLite?

Takes a model saved by `zoo_baselines.py --save-dir` and measures three
things:

1. Per-tensor quantization error with TFLite's `QuantizationDebugger`: the
   RMS error of each quantized tensor in units of its own quantization
   step. Plain rounding of a well-ranged tensor gives 1/sqrt(12) = 0.289;
   a tensor far above that is a badly quantized layer worth fixing.
2. Per-channel ranges at the quantization points (ReLU and Add outputs):
   the largest channel's max |activation| over the median channel's. A
   large ratio wastes int8 levels on most channels (per-tensor activation
   scales) and is what cross-layer equalization would fix.
3. Top-1 agreement with Keras as a function of the number of calibration
   images, on `--n-verify` test images.

    python benchmarks/int8_diagnosis.py --model DIR/cifar10_wrn28_2.keras
        [--dataset cifar10] [--n-per-class 500] [--n-verify 3000]
        [--calibration 200 1000 3000] [--name int8_diagnosis]

Writes benchmarks/results/<name>.{json,md}.
"""

import argparse
import csv
import io
import os
import tempfile

import harness  # noqa: F401  (first: it sets the environment)
import keras
import numpy as np
import tensorflow as tf
from harness import write_results

from keras_compact import data, export
from keras_compact.export.tflite import (
    _representative_dataset as _feed,  # the exporter's own feed
)

IDEAL = 1 / np.sqrt(12)


def debugger_errors(model, calibration, images):
    """`(op, tensor, rmse / scale)` of every quantized tensor."""
    with tempfile.TemporaryDirectory() as d:
        model.export(d, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(d)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _feed(calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_feed(images)
        )
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    out = []
    for r in csv.DictReader(buf):
        scale = float(r["scale"])
        err = float(r["mean_squared_error"]) ** 0.5 / scale if scale else 0
        out.append((r["op_name"], r["tensor_name"], err))
    return out


def channel_range_ratios(model, images):
    """`{layer: max channel range / median channel range}` at the ReLU and
    Add outputs."""
    names = [
        layer.name
        for layer in model.layers
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Add))
        or (
            isinstance(layer, keras.layers.Activation)
            and "relu" in str(layer.get_config().get("activation"))
        )
    ]
    probe = keras.Model(
        model.inputs, [model.get_layer(n).output for n in names]
    )
    acts = probe.predict(images, verbose=0)
    if len(names) == 1:
        acts = [acts]
    ratios = {}
    for name, a in zip(names, acts):
        per_channel = np.abs(a).reshape(-1, a.shape[-1]).max(axis=0)
        ratios[name] = float(per_channel.max() / np.median(per_channel))
    return ratios


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--n-per-class", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-verify", type=int, default=3000)
    p.add_argument(
        "--calibration", type=int, nargs="+", default=[200, 1000, 3000]
    )
    p.add_argument("--name", default="int8_diagnosis", help="results name")
    args = p.parse_args()
    if not os.path.exists(args.model):
        p.error(
            f"--model {args.model!r} does not exist. Train and save one "
            "with: python benchmarks/zoo_baselines.py --runs "
            "cifar10:wrn28_2 --save-dir DIR"
        )
    model = keras.models.load_model(args.model)
    splits = data.load_dataset(
        args.dataset, n_per_class=args.n_per_class, seed=args.seed
    )
    calibration = data.representative_images(splits, n=max(args.calibration))
    x, y = data.as_numpy(splits.test, limit=args.n_verify)

    debug_cal, debug_x = calibration[:200], x[:100]
    errors = debugger_errors(model, debug_cal, debug_x)
    errs = np.array([e for _, _, e in errors])
    worst = sorted(errors, key=lambda r: -r[2])[:3]
    ratios = channel_range_ratios(model, debug_cal)

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in args.calibration:
            path = os.path.join(d, f"int8_{n}.tflite")
            export.export_tflite(
                model,
                path,
                quantization="int8",
                representative_data=calibration,
                num_calibration=n,
            )
            r = export.verify_tflite(path, model, x, y)
            rows.append(
                {
                    "calibration_images": n,
                    "verify_images": len(x),
                    "int8_top1_agree": r.top1_agreement,
                    "int8_acc": r.tflite_accuracy,
                    "keras_acc": r.keras_accuracy,
                    "int8_max_diff": r.max_abs_diff,
                }
            )
            print(rows[-1], flush=True)
    notes = [
        f"QuantizationDebugger ({len(debug_cal)} calibration images, "
        f"{len(debug_x)} test images): "
        f"{len(errs)} quantized tensors, RMS error / quantization step "
        f"median {np.median(errs):.3f}, min {errs.min():.3f}, max "
        f"{errs.max():.3f} (plain rounding: {IDEAL:.3f}). Largest: "
        + "; ".join(f"{op} {t[-50:]} {e:.3f}" for op, t, e in worst),
        f"Per-channel ranges at {len(ratios)} ReLU/Add outputs: largest "
        f"channel max over median channel max is "
        f"{min(ratios.values()):.1f}-{max(ratios.values()):.1f} "
        f"(median {np.median(list(ratios.values())):.1f}).",
    ]
    budget = {
        "model": os.path.basename(args.model),
        "dataset": args.dataset,
        "calibration": "un-augmented training images "
        "(data.representative_images), first N",
        "verify": f"first {len(x)} test images",
    }
    write_results(args.name, rows, budget, notes=notes)
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
