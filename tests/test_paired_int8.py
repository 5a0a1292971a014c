"""The paired comparison of int8 files (`benchmarks/paired_int8.py`): the
exact McNemar test and the paired interval."""

import math
import pathlib
import sys

import numpy as np

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import paired_int8  # noqa: E402


def test_mcnemar_exact_matches_the_binomial_tail():
    # 1 against 9 discordant pairs: 2 * (C(10,0) + C(10,1)) / 2^10.
    assert paired_int8.mcnemar_exact(1, 9) == 2 * 11 / 1024
    assert paired_int8.mcnemar_exact(9, 1) == paired_int8.mcnemar_exact(1, 9)
    assert paired_int8.mcnemar_exact(0, 6) == 2 / 64
    # Balanced or no discordant pairs: no evidence of a difference.
    assert paired_int8.mcnemar_exact(5, 5) == 1.0
    assert paired_int8.mcnemar_exact(0, 0) == 1.0
    # Large counts stay exact (no float overflow in the binomials).
    p = paired_int8.mcnemar_exact(400, 500)
    assert 0 < p < 0.01


def test_paired_counts_difference_and_interval():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.8
    b = a.copy()
    flip = rng.choice(2000, 300, replace=False)
    b[flip] = ~b[flip]
    row = paired_int8.paired("x", a, b)
    assert row["a_only"] == int(np.sum(a & ~b))
    assert row["b_only"] == int(np.sum(b & ~a))
    assert row["a_only"] + row["b_only"] == 300
    assert math.isclose(row["b_minus_a"], b.mean() - a.mean())
    assert row["ci95_low"] < row["b_minus_a"] < row["ci95_high"]
    assert math.isclose(
        row["p"], paired_int8.mcnemar_exact(row["a_only"], row["b_only"])
    )


def test_identical_files_do_not_differ():
    a = np.array([True, False, True, True])
    row = paired_int8.paired("same", a, a)
    assert row["b_minus_a"] == 0
    assert row["ci95_low"] == row["ci95_high"] == 0
    assert row["p"] == 1.0


def test_pooled_sums_discordant_images_and_variances():
    rng = np.random.default_rng(1)
    pairs = []
    for n, flips in ((1000, 120), (500, 80)):
        a = rng.random(n) < 0.8
        b = a.copy()
        flip = rng.choice(n, flips, replace=False)
        b[flip] = ~b[flip]
        pairs.append((a, b))
    rows = [paired_int8.paired(str(i), a, b) for i, (a, b) in enumerate(pairs)]
    row = paired_int8.pooled("both", pairs)
    assert row["a_only"] == rows[0]["a_only"] + rows[1]["a_only"]
    assert row["b_only"] == rows[0]["b_only"] + rows[1]["b_only"]
    assert row["a_only"] + row["b_only"] == 200
    # B - A over all 1,500 images, which is the n-weighted mean of the pairs.
    assert math.isclose(
        row["b_minus_a"],
        (1000 * rows[0]["b_minus_a"] + 500 * rows[1]["b_minus_a"]) / 1500,
    )
    assert math.isclose(
        row["acc_b"], np.concatenate([pairs[0][1], pairs[1][1]]).mean()
    )
    assert math.isclose(
        row["p"], paired_int8.mcnemar_exact(row["a_only"], row["b_only"])
    )
    # Variances add: the pooled half-width is sqrt(sum (n_i * h_i)^2) / n.
    half = [(r["ci95_high"] - r["ci95_low"]) / 2 for r in rows]
    pooled_half = (row["ci95_high"] - row["ci95_low"]) / 2
    assert math.isclose(
        pooled_half, math.hypot(1000 * half[0], 500 * half[1]) / 1500
    )
    # One pair pooled is that pair.
    assert paired_int8.pooled("0", pairs[:1]) == rows[0]
