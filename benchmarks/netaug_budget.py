"""Does NetAug need a longer schedule? The tiny CIFAR-10 MobileNetV2 of
`netaug_cifar10.py` trained plainly and with NetAug for a longer budget
(same data, optimizer and NetAug settings; one seed).

    python benchmarks/netaug_budget.py [--epochs 40] [--seed 0]

Writes benchmarks/results/netaug_budget.{json,md}.
"""

import argparse
import time

from harness import write_results
from netaug_cifar10 import NetAug, _train, data, models


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
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
    for arm, techniques in (("baseline", None), ("netaug", True)):
        t = [NetAug(seed=args.seed)] if techniques else None
        r = _train(build, splits, args.epochs, args.seed, t)
        row[f"{arm}_acc"] = r.test_accuracy
        row[f"{arm}_train_acc"] = r.history["accuracy"][-1]
        row[f"{arm}_step_ms"] = r.median_step_ms
        print(arm, row, flush=True)
    row["netaug_minus_baseline"] = row["netaug_acc"] - row["baseline_acc"]
    budget = {
        "dataset": "cifar10 (real), stratified subset; 10% val held out; "
        "full 10k test set",
        "n_per_class": args.n_per_class,
        "epochs": args.epochs,
        "student": "mobilenet_v2 alpha 0.35, 32x32, ImageNet strides",
        "protocol": "as netaug_cifar10.py (SGD-Nesterov, 2 warm-up epochs "
        "to lr 0.02, cosine, wd 5e-5; NetAug defaults)",
        "wall_s": round(time.perf_counter() - start, 1),
    }
    write_results("netaug_budget", [row], budget, columns=list(row))


if __name__ == "__main__":
    main()
