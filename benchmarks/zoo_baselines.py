"""Baselines every technique is compared against: the zoo's tiny models
trained plainly on real Fashion-MNIST and CIFAR-10 with one fixed budget,
then exported to float32 and int8 TFLite and verified.

    python benchmarks/zoo_baselines.py [--n-per-class 500] [--epochs 4]
        [--runs cifar10:resnet8 ...] [--name zoo_baselines] [--save-dir D]

Writes benchmarks/results/<name>.{json,md}. Besides the agreement of the
int8 .tflite with Keras, each row gives `near_tie_frac`: the fraction of the
verification images whose float top-2 logit margin is below the int8
model's output quantization step (two logits that close can round to the
same int8 value, so their order is a coin toss for the quantized model).
"""

import argparse
import os
import tempfile

import harness  # noqa: F401  (first: it sets the environment)
import numpy as np
from harness import write_results

from keras_compact import data, export, models, training
from keras_compact.graph import count_macs

RUNS = [
    ("fashion_mnist", "tiny_cnn"),
    ("fashion_mnist", "mobilenet_v2_tiny"),
    ("cifar10", "mobilenet_v2_tiny"),
    ("cifar10", "resnet8"),
    ("cifar10", "resnet20"),
    ("cifar10", "mobilenet_v2"),
    ("cifar10", "wrn16_2"),
    ("cifar10", "wrn28_2"),
]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-per-class", type=int, default=500)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-verify", type=int, default=500)
    p.add_argument(
        "--runs",
        nargs="+",
        default=[f"{d}:{m}" for d, m in RUNS],
        help="dataset:model pairs to run (default: the whole zoo table)",
    )
    p.add_argument("--name", default="zoo_baselines", help="results name")
    p.add_argument(
        "--save-dir",
        default=None,
        help="also save each trained model there as <dataset>_<model>.keras "
        "(for later diagnosis without retraining)",
    )
    args = p.parse_args()
    runs = []
    for run in args.runs:
        dataset, _, name = run.partition(":")
        if (dataset, name) not in RUNS:
            p.error(
                f"--runs: unknown pair {run!r}; choose from "
                f"{[f'{d}:{m}' for d, m in RUNS]}"
            )
        runs.append((dataset, name))
    budget = {
        "train_images": f"{args.n_per_class} per class (stratified), minus "
        "a 10% validation split",
        "epochs": args.epochs,
        "batch_size": 128,
        "optimizer": "SGD-Nesterov 0.9, lr 0.05 cosine, wd 5e-5",
        "seed": args.seed,
        "test_images": "full test set",
        "tflite_verify_images": args.n_verify,
    }
    rows = []
    for dataset, name in runs:
        splits = data.load_dataset(
            dataset, n_per_class=args.n_per_class, seed=args.seed
        )
        info = splits.info
        model = models.get_model(
            name, input_shape=info.input_shape, num_classes=info.num_classes
        )
        res = training.train_classifier(
            model, splits, args.epochs, seed=args.seed, verbose=2
        )
        if args.save_dir:
            os.makedirs(args.save_dir, exist_ok=True)
            model.save(os.path.join(args.save_dir, f"{dataset}_{name}.keras"))
        x, y = data.as_numpy(splits.test, limit=args.n_verify)
        row = {
            "dataset": dataset,
            "model": name,
            "params": model.count_params(),
            "MACs": count_macs(model),
            "test_acc": res.test_accuracy,
            "s_per_epoch": res.seconds / args.epochs,
            "step_ms": res.median_step_ms,
        }
        with tempfile.TemporaryDirectory() as d:
            for mode in ("float32", "int8"):
                path = os.path.join(d, f"{name}_{mode}.tflite")
                export.export_tflite(
                    model,
                    path,
                    quantization=mode,
                    representative_data=data.representative_images(splits),
                )
                r = export.verify_tflite(path, model, x, y)
                row[f"{mode}_KB"] = r.size_bytes / 1024
                row[f"{mode}_gzip_KB"] = r.gzip_bytes / 1024
                row[f"{mode}_ms_1t"] = r.latency_ms_1_thread
                row[f"{mode}_acc"] = r.tflite_accuracy
                row[f"{mode}_top1_agree"] = r.top1_agreement
                row[f"{mode}_max_diff"] = r.max_abs_diff
            row["near_tie_frac"] = _near_tie_fraction(model, x, path)
        rows.append(row)
        print(row, flush=True)
        write_results(args.name, rows, budget)  # after every row


def _near_tie_fraction(model, x, int8_path):
    """Fraction of `x` whose float top-2 logit margin is below the int8
    model's output quantization step."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=int8_path)
    out = interp.get_output_details()[0]
    scale = out["quantization"][0]
    if not scale:  # float outputs: the step of the tensor they dequantize
        step = [
            t["quantization"][0]
            for t in interp.get_tensor_details()
            if t["quantization"][0] and tuple(t["shape"]) == tuple(out["shape"])
        ]
        scale = step[-1] if step else 0.0
    logits = np.sort(model.predict(x, verbose=0), axis=-1)
    return float(np.mean(logits[:, -1] - logits[:, -2] < scale))


if __name__ == "__main__":
    main()
