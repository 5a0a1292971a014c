"""NetAug on real Fashion-MNIST: a tiny CNN (tiny_cnn width 0.5) trained
plainly, with KD, with NetAug and with NetAug + KD, equal epochs, several
seeds (same protocol as `netaug_cifar10.py`, without the large model).

    python benchmarks/netaug_fashion_mnist.py [--seeds 0 1] [--epochs 8]
        [--n-per-class 500] [--arms ...] [--equal-time] [--name NAME]

Writes benchmarks/results/netaug_fashion_mnist.{json,md}.
"""

import time

from harness import write_results
from netaug_cifar10 import _notes, parse, run_comparison


def main():
    args = parse({"epochs": 8, "n": 500, "large": None})
    student = ("tiny_cnn", {"width_multiplier": 0.5})
    teacher = ("tiny_cnn", {"width_multiplier": 2.0})
    start = time.perf_counter()
    rows, notes, extras = run_comparison(
        "fashion_mnist", student, teacher, args
    )
    budget = {
        "dataset": "fashion_mnist (real), stratified subset; 10% val held "
        "out; full 10k test set",
        "n_per_class": args.n_per_class,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "student": "tiny_cnn width 0.5 (8/16/32 channels)",
        "arms": args.arms,
        "teacher": f"tiny_cnn width 2.0, trained once (seed {args.seeds[0]})",
        "netaug": "width [1, 1.8, 2.6] (no inverted residuals: no expand "
        "groups, width augmented throughout), alpha 1",
        "netaug_config": args.netaug_config,
        "kd": "T=4, alpha=0.9",
        "optimizer": "SGD-Nesterov 0.9, 2 warm-up epochs to lr 0.02 then "
        "cosine, wd 5e-5",
        "wall_s_all_runs": round(time.perf_counter() - start, 1),
    }
    write_results(
        args.name or "netaug_fashion_mnist",
        rows,
        budget,
        notes=notes + _notes(extras),
        columns=list(rows[0]),
    )


if __name__ == "__main__":
    main()
