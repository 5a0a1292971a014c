"""Does the int8 file compute what the fake-quant model computes? Every zoo
model, real images, on each kind of LiteRT kernel.

For each zoo model: a short float training on real images (CIFAR-10;
Fashion-MNIST for `tiny_cnn`), then a short QAT fine-tune (BN frozen from
the start), then the int8 file against the fake-quant model in inference
mode on `--test-images` real test images: top-1 agreement, max |diff| in
quantization steps of the file's output and the share of logits more than
one step apart, with the file run on

- LiteRT's reference kernels (`kernels="reference"`, the integer
  arithmetic the microcontroller runtime ports, which the fake-quant model
  follows in inference): the fidelity goal;
- LiteRT's optimized builtin kernels (`opt_*`) and its default XNNPack
  delegate (`xnn_*`), which round some ties differently;

and the microcontroller runtime against the reference kernels.

The accuracy of these short trainings is not the point (see
`qat_cifar10.py`); fidelity needs trained ranges, not converged models.

    nice -n 10 python benchmarks/qat_fidelity.py --name qat_fidelity

Writes benchmarks/results/<name>.{json,md} (default qat_fidelity).
"""

import argparse
import os
import tempfile
import time

import harness  # first: it sets the environment
import keras
import numpy as np
from harness import RunLog, write_results

from keras_compact import data, models, training
from keras_compact.export import export_tflite, run_tflite
from keras_compact.quantization import QuantizationAwareTraining, micro
from keras_compact.quantization.micro import output_step


def dataset_of(name):
    return "fashion_mnist" if name == "tiny_cnn" else "cifar10"


def fidelity(path, reference, x, out=None, kernels="reference"):
    """File vs reference model on `x`: agreement, max and share of logits
    more than one output step apart (`out`: the file's outputs, if already
    computed; else LiteRT with `kernels`)."""
    ref = reference.predict(x, batch_size=100, verbose=0)
    if out is None:
        out = run_tflite(path, x, kernels=kernels)
    steps = np.abs(out - ref) / output_step(path)
    return {
        "agreement": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
        "max_steps": float(steps.max()),
        "over_1_step": float(np.mean(steps > 1.0001)),
    }


def train_qat(args, name):
    """Short float training then a QAT fine-tune (BN frozen from the
    start): `(train result, technique, test images)`."""
    splits = data.load_dataset(
        dataset_of(name),
        batch_size=args.batch_size,
        n_per_class=args.n_per_class,
        seed=args.seed,
        test_n_per_class=args.test_images // 10,
    )
    x, _ = data.as_numpy(splits.test)
    x = x.astype("float32")
    keras.utils.set_random_seed(args.seed)
    model = models.get_model(name)
    training.train_classifier(
        model, splits, args.epochs, seed=args.seed, verbose=0
    )
    qat = QuantizationAwareTraining(freeze_bn_delay=0)
    res = training.train_classifier(
        model,
        splits,
        args.qat_epochs,
        techniques=[qat],
        seed=args.seed,
        learning_rate=args.qat_lr,
        verbose=0,
    )
    return res, qat, x


def run_model(args, name, out_dir):
    t0 = time.time()
    res, qat, x = train_qat(args, name)
    model = res.trainer.compact_model
    row = {
        "model": name,
        "params": model.count_params(),
        "float_after_qat_acc": res.test_accuracy,
        "train_s": time.time() - t0,
    }
    path = os.path.join(out_dir, f"{name}.tflite")
    export_tflite(res.trainer, path, "int8")
    reference = qat.quantized_model()
    row.update(fidelity(path, reference, x))
    optimized = run_tflite(path, x, use_default_delegates=False)
    xnnpack = run_tflite(path, x, use_default_delegates=True)
    for prefix, out in (("opt", optimized), ("xnn", xnnpack)):
        found = fidelity(path, reference, x, out=out)
        row.update({f"{prefix}_{k}": v for k, v in found.items()})
    if micro.available():
        check = micro.check_micro(path, x[:100])
        row["micro_equal"] = bool(check["equal"])
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=[m["name"] for m in models.list_models()]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-per-class", type=int, default=300)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-lr", type=float, default=0.002)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--name", default="qat_fidelity")
    args = p.parse_args()
    budget = harness.budget_of(
        args,
        "seed",
        "n_per_class",
        "epochs",
        "qat_epochs",
        "qat_lr",
        "test_images",
        "batch_size",
    )
    log = RunLog(args.name, budget)
    with tempfile.TemporaryDirectory(prefix="qat_fidelity_") as out_dir:
        for name in args.models:
            if log.done(model=name) is None:
                log.add(run_model(args, name, out_dir))
    rows = [r for r in log.rows if r["model"] in args.models]
    goal = [
        f"{r['model']}: agreement {100 * r['agreement']:.1f}% (goal >= "
        f"99.5%), max {r['max_steps']:.2f} steps (goal <= 2): "
        f"{'met' if r['agreement'] >= 0.995 and r['max_steps'] <= 2.0001 else 'NOT met'}"  # noqa: E501
        for r in rows
    ]
    notes = [
        "File = the int8 .tflite on LiteRT's reference kernels (those the "
        "microcontroller runtime ports); reference = the fake-quant model "
        "in inference mode, which follows their integer arithmetic; "
        "max_steps and over_1_step in quantization steps of the file's "
        "output; opt_* and xnn_*: the same file on LiteRT's optimized "
        "builtin kernels and on its default XNNPack delegate (other tie "
        "rounding); micro_equal: the microcontroller runtime equals the "
        "reference kernels on 100 images. The same measurement before the "
        "fake-quant model followed the kernels' integer arithmetic (float "
        "rounding): qat_fidelity_float_rounding.md.",
        *goal,
    ]
    write_results(args.name, rows, budget, notes)


if __name__ == "__main__":
    main()
