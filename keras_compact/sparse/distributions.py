"""Initial sparsity distributions: how a budget is split across layers.

Pure functions of the kernel shapes (numpy and Python only), as in
google-research/rigl's `sparse_utils`:

- uniform: every sparse layer gets the same density `1 - sparsity` (the
  stem is kept dense by the layer selection, not here);
- ERK (Erdos-Renyi-Kernel): raw density
  `(n_in + n_out + k_h + k_w) / (n_in * n_out * k_h * k_w)` (for a Dense
  kernel `(n_in + n_out) / (n_in * n_out)`), i.e. `sum(shape) / prod(shape)`
  of the kernel, scaled by one epsilon so that the total matches the budget;
  a layer whose density would exceed 1 is made dense and epsilon re-solved.

`nonzero_counts` turns densities into exact integer counts.

Reference:
    Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All
    Tickets Winners", ICML 2020 (arXiv:2006.11477), section 3 and appendix.
"""

import math

import numpy as np

DISTRIBUTIONS = ("uniform", "erk")


def _check(shapes, sparsity):
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(
            f"Expected `sparsity` in [0, 1). Received: sparsity={sparsity!r}"
        )
    shapes = [tuple(int(d) for d in s) for s in shapes]
    for s in shapes:
        if not s or min(s) < 1:
            raise ValueError(
                "Expected every kernel shape to be non-empty with positive "
                f"dimensions. Received: shape={s}"
            )
    return shapes


def uniform_densities(shapes, sparsity):
    """The same density `1 - sparsity` for every layer.

    Args:
        shapes: kernel shapes, one per sparse layer.
        sparsity: the fraction of zeros, in [0, 1).

    Returns:
        A list of floats, one density per shape.

    Raises:
        ValueError: for `sparsity` outside [0, 1) or an empty shape.
    """
    shapes = _check(shapes, sparsity)
    return [1.0 - float(sparsity)] * len(shapes)


def erk_densities(shapes, sparsity, power_scale=1.0):
    """Erdos-Renyi-Kernel densities with a total of `1 - sparsity`.

    Args:
        shapes: kernel shapes, one per sparse layer.
        sparsity: overall fraction of zeros over all these kernels, [0, 1).
        power_scale: exponent on the raw density (1.0 = ERK, 0.0 =
            uniform), as in rigl's `erk_power_scale`.

    Returns:
        A list of floats in (0, 1]: `density_l * size_l` sums to
        `(1 - sparsity) * sum(size_l)`.

    Raises:
        ValueError: for `sparsity` outside [0, 1) or an empty shape.
    """
    shapes = _check(shapes, sparsity)
    sizes = [math.prod(s) for s in shapes]
    raw = [(sum(s) / math.prod(s)) ** float(power_scale) for s in shapes]
    dense = set()
    while True:
        rhs = 0.0
        divisor = 0.0
        for i, n in enumerate(sizes):
            if i in dense:
                rhs -= n * float(sparsity)
            else:
                rhs += n * (1.0 - float(sparsity))
                divisor += raw[i] * n
        if divisor == 0.0:
            return [1.0] * len(shapes)
        eps = rhs / divisor
        free = [i for i in range(len(shapes)) if i not in dense]
        top = max(raw[i] for i in free)
        if top * eps > 1.0:
            dense.update(i for i in free if raw[i] == top)
            continue
        return [1.0 if i in dense else eps * raw[i] for i in range(len(sizes))]


def densities(distribution, shapes, sparsity):
    """Dispatches on the distribution name ("uniform" or "erk")."""
    if distribution == "uniform":
        return uniform_densities(shapes, sparsity)
    if distribution == "erk":
        return erk_densities(shapes, sparsity)
    raise ValueError(
        f"Expected `distribution` to be one of {DISTRIBUTIONS}. "
        f"Received: distribution={distribution!r}"
    )


def nonzero_counts(shapes, densities, total=None):
    """Exact numbers of non-zeros per layer.

    Each layer gets `round(density * size)`, clipped to [1, size] (a sparse
    layer is never empty). If `total` is given the counts are instead
    apportioned by largest remainders so that they sum to exactly `total`
    (still within [1, size]).

    Args:
        shapes: kernel shapes.
        densities: one density per shape, in [0, 1].
        total: optional exact total number of non-zeros.

    Returns:
        A list of Python ints.

    Raises:
        ValueError: if `total` cannot be met within [1, size] per layer.
    """
    sizes = [math.prod(tuple(s)) for s in shapes]
    if len(densities) != len(sizes):
        raise ValueError(
            f"Expected one density per shape ({len(sizes)}). "
            f"Received: {len(densities)} densities"
        )
    if total is None:
        return [
            int(min(n, max(1, round(d * n)))) for d, n in zip(densities, sizes)
        ]
    total = int(total)
    if not len(sizes) <= total <= sum(sizes):
        raise ValueError(
            f"Expected `total` in [{len(sizes)}, {sum(sizes)}]. "
            f"Received: total={total}"
        )
    exact = np.array([d * n for d, n in zip(densities, sizes)], dtype=float)
    exact *= total / max(exact.sum(), 1e-12)
    size = np.array(sizes, dtype=np.int64)
    counts = np.clip(np.floor(exact).astype(np.int64), 1, size)
    # Largest remainders first (ties: earlier layer), within capacity.
    while counts.sum() != total:
        diff = total - counts.sum()
        frac = exact - counts
        if diff > 0:
            frac = np.where(counts < size, frac, -np.inf)
            i = int(np.argmax(frac))
            counts[i] += 1
        else:
            frac = np.where(counts > 1, frac, np.inf)
            i = int(np.argmin(frac))
            counts[i] -= 1
    return [int(c) for c in counts]
