"""Paired comparison of int8 .tflite files on the same CIFAR-10 test images.

Two files scored on one test set are paired observations: what separates
their accuracies is the images one classifies correctly and the other not
(the discordant images). With `n` test images, `a_only` images right in A
only and `b_only` right in B only, B - A = (b_only - a_only) / n, and

- `p`: the exact two-sided McNemar test (a binomial test of `b_only` out of
  `a_only + b_only` discordant images at 1/2): how often two files of equal
  accuracy differ at least this much on these images;
- `ci95`: the normal 95% interval of B - A for paired proportions.

A difference whose interval holds 0 is not resolved by this test set: on
10,000 images two fine-tunes of one float model typically differ on a few
hundred images, which makes a 0.2-0.3 point gap a coin's toss.

The files come from `qat_cifar10.py` and `qat_tfmot_peer.py` run with
`--keep-files DIR`, for example:

    python benchmarks/paired_int8.py --name qat_paired_full \\
        --pair "resnet8 s0" DIR/resnet8_s0_tfmot.tflite \\
        DIR/resnet8_s0_qat.tflite

Writes benchmarks/results/<name>.{json,md} (default paired_int8).
"""

import argparse
import math
import pathlib

import harness  # first: it sets the environment
import numpy as np
from harness import write_results
from qat_cifar10 import fresh_splits, test_arrays

from keras_compact.export import run_tflite


def mcnemar_exact(a_only, b_only):
    """Two-sided exact McNemar p-value of `a_only` against `b_only`
    discordant pairs."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired(label, correct_a, correct_b):
    """The row comparing two boolean vectors of per-image correctness."""
    n = len(correct_a)
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(correct_b & ~correct_a))
    diff = (b_only - a_only) / n
    se = math.sqrt(max(a_only + b_only - (b_only - a_only) ** 2 / n, 0)) / n
    return {
        "pair": label,
        "acc_a": float(np.mean(correct_a)),
        "acc_b": float(np.mean(correct_b)),
        "b_minus_a": diff,
        "a_only": a_only,
        "b_only": b_only,
        "p": mcnemar_exact(a_only, b_only),
        "ci95_low": diff - 1.96 * se,
        "ci95_high": diff + 1.96 * se,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--pair",
        nargs=3,
        action="append",
        required=True,
        metavar=("LABEL", "A", "B"),
        help="a label and two .tflite files (repeat for more pairs)",
    )
    p.add_argument("--test-n-per-class", type=int, default=None)
    p.add_argument(
        "--kernels",
        choices=("optimized", "reference"),
        default="optimized",
        help="LiteRT's default (optimized) kernels, what the benchmarks' "
        "int8 accuracy uses, or its reference kernels, whose integer "
        "arithmetic the microcontroller runtime ports",
    )
    p.add_argument("--name", default="paired_int8")
    p.add_argument("--note", default="")
    args = p.parse_args()
    for _, *files in args.pair:
        for f in files:
            if not pathlib.Path(f).is_file():
                raise FileNotFoundError(
                    f"Expected an existing .tflite file. Received: {f!r}"
                )
    # The test images do not depend on the seed or the training subset.
    splits = fresh_splits(
        argparse.Namespace(
            batch_size=256,
            n_per_class=1,
            test_n_per_class=args.test_n_per_class,
        ),
        0,
    )
    x, y = test_arrays(splits)
    correct = {}

    def is_correct(path):
        if path not in correct:
            out = run_tflite(path, x, kernels=args.kernels)
            correct[path] = np.argmax(out, axis=-1) == y
        return correct[path]

    rows = []
    for label, a, b in args.pair:
        row = paired(label, is_correct(a), is_correct(b))
        row.update(a=pathlib.Path(a).name, b=pathlib.Path(b).name)
        print(row, flush=True)
        rows.append(row)
    budget = harness.budget_of(args, "test_n_per_class", "kernels")
    budget["n_test"] = len(y)
    notes = [
        "b_minus_a: accuracy of B minus A; a_only / b_only: test images "
        "only A / only B classifies correctly; p: exact two-sided McNemar "
        "test; ci95: normal 95% interval of b_minus_a for paired "
        "proportions. Files run on LiteRT at batch 1, on its "
        f"{args.kernels} kernels.",
    ]
    if args.note:
        notes.insert(0, args.note)
    write_results(args.name, rows, budget, notes)


if __name__ == "__main__":
    main()
