"""QAT's activation ranges alone against the converter's calibration.

For each float model saved by `qat_cifar10.py --save-dir DIR`: the
post-training int8 file (200 calibration images), and a QAT "fine-tune" at
a learning rate of 1e-9 (weights unchanged, only the moving-average
activation ranges trained) exported with its ranges. Both files are scored
on the same test images; the notes list QAT's ranges and the calibrated
ranges of the post-training file's int8 activation tensors.

    nice -n 10 python benchmarks/qat_ranges_probe.py --models resnet8 \
        --seeds 0 1 --n-per-class 1000 --save-dir /path/of/qat_cifar10

Writes benchmarks/results/<name>.{json,md} (default name qat_ranges_probe).
"""

import argparse
import os
import tempfile

import harness  # first: it sets the environment
import keras
import numpy as np
import qat_cifar10
from harness import RunLog, write_results

from keras_compact import data, training
from keras_compact.export import export_tflite, load_interpreter, verify_tflite
from keras_compact.quantization import QuantizationAwareTraining


def calibrated_ranges(path):
    """`[(tensor name, min, max)]` of the file's int8 activation tensors."""
    out = []
    interpreter, _ = load_interpreter(path)
    for t in interpreter.get_tensor_details():
        scale, zero = t["quantization"]
        if t["dtype"] == np.int8 and scale and len(t["shape"]) in (2, 4):
            lo, hi = (-128 - zero) * scale, (127 - zero) * scale
            out.append((t["name"].split(";")[-1], lo, hi))
    return out


def run(args, name, seed, out_dir):
    path = os.path.join(os.path.expanduser(args.save_dir), f"{name}_s{seed}")
    if not os.path.exists(path + ".keras"):
        raise FileNotFoundError(
            f"No float model {path}.keras: train it first with "
            f"`qat_cifar10.py --models {name} --seeds {seed} --save-dir "
            f"{args.save_dir}` (the same --n-per-class)."
        )
    model = keras.saving.load_model(path + ".keras")
    splits = qat_cifar10.fresh_splits(args, seed)
    x, y = qat_cifar10.test_arrays(splits)
    ptq_path = os.path.join(out_dir, f"{name}_s{seed}_ptq.tflite")
    calib = data.representative_images(splits, 200)
    export_tflite(model, ptq_path, "int8", representative_data=calib)
    ptq = verify_tflite(ptq_path, model, x, y, latency_runs=1)
    qat = QuantizationAwareTraining(freeze_bn_delay=0)
    res = training.train_classifier(
        model,
        qat_cifar10.fresh_splits(args, seed),
        args.qat_epochs,
        techniques=[qat],
        seed=seed,
        learning_rate=1e-9,
        verbose=0,
    )
    qat_path = os.path.join(out_dir, f"{name}_s{seed}_qat.tflite")
    export_tflite(res.trainer, qat_path, "int8")
    q = verify_tflite(qat_path, res.trainer, x, y, latency_runs=1)
    ranges = {
        k: [round(float(v), 3) for v in keras.ops.convert_to_numpy(r)]
        for k, r in qat.ranges.items()
    }
    calibrated = [
        [n, round(float(lo), 3), round(float(hi), 3)]
        for n, lo, hi in calibrated_ranges(ptq_path)
    ]
    return {
        "model": name,
        "seed": seed,
        "float_acc": float(ptq.keras_accuracy),
        "float_after_acc": res.test_accuracy,
        "ptq_int8_acc": ptq.tflite_accuracy,
        "qat_ranges_int8_acc": q.tflite_accuracy,
        "qat_ranges": ranges,
        "calibrated_ranges": calibrated,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet8"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--test-n-per-class", type=int, default=None)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--save-dir", default="~/.cache/keras_compact/qat_bench")
    p.add_argument("--name", default="qat_ranges_probe")
    args = p.parse_args()
    budget = harness.budget_of(
        args, "n_per_class", "test_n_per_class", "qat_epochs", "batch_size"
    )
    log = RunLog(args.name, budget)
    with tempfile.TemporaryDirectory(prefix="qat_ranges_") as out_dir:
        for name in args.models:
            for seed in args.seeds:
                if not log.done(model=name, seed=seed):
                    log.add(run(args, name, seed, out_dir))
    columns = [
        "model",
        "seed",
        "float_acc",
        "float_after_acc",
        "ptq_int8_acc",
        "qat_ranges_int8_acc",
    ]
    notes = []
    for r in log.rows:
        notes.append(
            f"{r['model']} seed {r['seed']}: QAT ranges (min, max): "
            + ", ".join(
                f"{k} {lo}..{hi}" for k, (lo, hi) in r["qat_ranges"].items()
            )
        )
        notes.append(
            f"{r['model']} seed {r['seed']}: calibrated int8 tensors of the "
            "post-training file: "
            + ", ".join(
                f"{n} {lo}..{hi}" for n, lo, hi in r["calibrated_ranges"]
            )
        )
    write_results(args.name, log.rows, budget, notes, columns)


if __name__ == "__main__":
    main()
