"""Which part of NetAug costs the tiny CIFAR-10 MobileNetV2 its accuracy?
The student of `netaug_cifar10.py` trained plainly, with NetAug, with
NetAug augmenting only the width groups, and only the expand groups (same
data, optimizer and schedule; one seed). `--epochs 40` asks instead whether
a longer schedule closes the gap.

    python benchmarks/netaug_ablation.py [--epochs 8] [--seed 0]
        [--arms baseline netaug width_only expand_only]
        [--name netaug_ablation]

Writes benchmarks/results/<name>.{json,md}.
"""

import argparse
import time

from harness import write_results
from netaug_cifar10 import _train

from keras_compact import data, models
from keras_compact.netaug import NetAug

ARMS = {
    "baseline": None,
    "netaug": {},
    # Width groups only (expand groups at their tiny width), augmented
    # throughout; expand groups only.
    "width_only": {"expand_multipliers": (1.0,), "stop_width_at": 1.0},
    "expand_only": {"width_multipliers": (1.0,)},
}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="netaug_ablation", help="results name")
    args = p.parse_args()
    splits = data.load_dataset(
        "cifar10", n_per_class=args.n_per_class, seed=args.seed
    )

    def build():
        return models.get_model(
            "mobilenet_v2",
            input_shape=splits.info.input_shape,
            num_classes=splits.info.num_classes,
            alpha=0.35,
            cifar_stem=False,
        )

    start = time.perf_counter()
    row = {"seed": args.seed, "epochs": args.epochs}
    for arm in args.arms:
        t = None if ARMS[arm] is None else [NetAug(seed=args.seed, **ARMS[arm])]
        r = _train(build, splits, args.epochs, args.seed, t)
        row[f"{arm}_acc"] = r.test_accuracy
        row[f"{arm}_train_acc"] = r.history["accuracy"][-1]
        row[f"{arm}_step_ms"] = r.median_step_ms
        if arm != "baseline" and "baseline_acc" in row:
            row[f"{arm}_minus_baseline"] = (
                row[f"{arm}_acc"] - row["baseline_acc"]
            )
        print(arm, row, flush=True)
        budget = {
            "dataset": "cifar10 (real), stratified subset; 10% val held "
            "out; full 10k test set",
            "n_per_class": args.n_per_class,
            "epochs": args.epochs,
            "student": "mobilenet_v2 alpha 0.35, 32x32, ImageNet strides",
            "protocol": "as netaug_cifar10.py (SGD-Nesterov, 2 warm-up "
            "epochs to lr 0.02, cosine, wd 5e-5; NetAug defaults but for "
            "the arm's multipliers: {}".format(ARMS),
            "wall_s": round(time.perf_counter() - start, 1),
        }
        # Written after every arm, so an interrupted run keeps its arms.
        write_results(args.name, [row], budget, columns=list(row))


if __name__ == "__main__":
    main()
