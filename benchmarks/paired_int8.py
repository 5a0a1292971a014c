"""Paired comparison of int8 .tflite files on the same CIFAR-10 test images.

Two files scored on one test set are paired observations: what separates
their accuracies is the images one classifies correctly and the other not
(the discordant images). With `n` test images, `a_only` images right in A
only and `b_only` right in B only, B - A = (b_only - a_only) / n, and

- `p`: the exact two-sided McNemar test (a binomial test of `b_only` out of
  `a_only + b_only` discordant images at 1/2): how often two files of equal
  accuracy differ at least this much on these images;
- `ci95`: the normal 95% interval of B - A for paired proportions.

`--pool LABEL TEXT` adds a row over every pair whose label holds TEXT (for
example the same two methods on several models and seeds): the discordant
images of those pairs summed, B - A over all their test images, the exact
McNemar test of the summed counts (under "no difference" each discordant
image is a fair coin in every pair, so the sum is one binomial) and the
interval from the pairs' summed variances.

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
    return pooled(label, [(correct_a, correct_b)])


def pooled(label, pairs):
    """The row comparing the A and B vectors of per-image correctness of
    one or more pairs, each pair on its own test images: counts summed,
    the variance of B - A summed over the pairs."""
    if not pairs:
        raise ValueError(
            f"Expected at least one pair for {label!r}. Received: []"
        )
    n = a_only = b_only = right_a = right_b = 0
    var = 0.0
    for correct_a, correct_b in pairs:
        m = len(correct_a)
        a = int(np.sum(correct_a & ~correct_b))
        b = int(np.sum(correct_b & ~correct_a))
        var += max(a + b - (b - a) ** 2 / m, 0)
        n, a_only, b_only = n + m, a_only + a, b_only + b
        right_a += int(np.sum(correct_a))
        right_b += int(np.sum(correct_b))
    diff = (b_only - a_only) / n
    se = math.sqrt(var) / n
    return {
        "pair": label,
        "acc_a": right_a / n,
        "acc_b": right_b / n,
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
    p.add_argument(
        "--pool",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "TEXT"),
        help="a row pooling every pair whose label holds TEXT (repeatable)",
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
    for label, text in args.pool:
        if not any(text in pair[0] for pair in args.pair):
            raise ValueError(
                f"Expected --pool {label!r} to match a --pair label. "
                f"Received: {text!r}, labels {[pair[0] for pair in args.pair]}"
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
    for label, text in args.pool:
        row = pooled(
            label,
            [
                (is_correct(a), is_correct(b))
                for lab, a, b in args.pair
                if text in lab
            ],
        )
        row.update(a="", b="")
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
