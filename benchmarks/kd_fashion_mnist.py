"""Knowledge distillation on real Fashion-MNIST: a tiny student trained
plainly vs distilled from a wider teacher, equal epochs, several seeds.

    python benchmarks/kd_fashion_mnist.py [--seeds 0 1] [--epochs 4]

Writes benchmarks/results/kd_fashion_mnist.{json,md}.
"""

import argparse

import harness  # noqa: F401  (first: it sets the environment)
import numpy as np
from harness import write_results

from keras_compact import data, models, training


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n-per-class", type=int, default=2500)
    p.add_argument("--student", default="tiny_cnn")
    p.add_argument("--student-width", type=float, default=0.5)
    p.add_argument("--teacher", default="tiny_cnn")
    p.add_argument("--teacher-width", type=float, default=2.0)
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        splits = data.load_dataset(
            "fashion_mnist", n_per_class=args.n_per_class, seed=seed
        )

        def build(name, width):
            return models.get_model(name, width_multiplier=width)

        teacher = training.train_classifier(
            build(args.teacher, args.teacher_width),
            splits,
            args.epochs,
            seed=seed,
            verbose=2,
        )
        plain = training.train_classifier(
            build(args.student, args.student_width),
            splits,
            args.epochs,
            seed=seed,
            verbose=2,
        )
        kd = training.train_classifier(
            build(args.student, args.student_width),
            splits,
            args.epochs,
            techniques=[training.Distillation(teacher.model)],
            seed=seed,
            verbose=2,
        )
        rows.append(
            {
                "seed": seed,
                "teacher_params": teacher.model.count_params(),
                "student_params": plain.model.count_params(),
                "teacher_acc": teacher.test_accuracy,
                "plain_acc": plain.test_accuracy,
                "kd_acc": kd.test_accuracy,
                "kd_minus_plain": kd.test_accuracy - plain.test_accuracy,
                "plain_step_ms": plain.median_step_ms,
                "kd_step_ms": kd.median_step_ms,
            }
        )
        print(rows[-1], flush=True)
    mean = {
        "seed": "mean",
        **{
            k: float(np.mean([r[k] for r in rows]))
            for k in rows[0]
            if k != "seed"
        },
    }
    rows.append(mean)
    budget = {
        "dataset": "fashion_mnist (real), 10% of train held out for val",
        "n_per_class": args.n_per_class,
        "epochs": args.epochs,
        "student": f"{args.student} width {args.student_width}",
        "teacher": f"{args.teacher} width {args.teacher_width}",
        "kd": "T=4, alpha=0.9",
        "batch_size": 128,
        "optimizer": "SGD-Nesterov 0.9, lr 0.05 cosine, wd 5e-5",
    }
    write_results("kd_fashion_mnist", rows, budget)


if __name__ == "__main__":
    main()
