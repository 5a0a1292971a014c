"""Statistics of sparse training: densities, regrowth, threshold, report.

Plain functions over `state.SparseWeight`s, a policy and the counters
(eager, outside the train step): what `SparseTraining`'s accessors,
`summary()` and the `SparsityMonitor` callback read.
"""

import math

import keras
import numpy as np

from keras_compact.sparse.policies import DSR
from keras_compact.training.report import TechniqueReport


def to_int(variable):
    """A scalar variable's value as a Python int."""
    return int(np.asarray(keras.ops.convert_to_numpy(variable)))


def nonzeros(weight):
    """Active positions of a `SparseWeight`'s mask, as an int."""
    return int(np.sum(keras.ops.convert_to_numpy(weight.mask)))


def layer_densities(weights):
    """Current density of every sparse weight, `{key: float}`."""
    return {
        w.key: float(np.sum(keras.ops.convert_to_numpy(w.mask))) / w.size
        for w in weights
    }


def overall_density(weights, densities):
    """Density over all sparse weights, from `layer_densities(weights)`."""
    sizes = {w.key: w.size for w in weights}
    total = sum(sizes.values())
    return sum(densities[k] * sizes[k] for k in densities) / total


def regrown_pruned_counts(counters, is_static, last=False):
    """`(pruned_again, judged)` as ints, for the last update or all.

    Args:
        counters: the `state.SparseCounters` (`None` before the technique
            is attached: then `(0, 0)`).
        is_static: whether the policy never updates the masks (then
            `(0, 0)`).
        last: `True` for the last update only, `False` for all so far.
    """
    if is_static or counters is None:
        return 0, 0
    if last:
        p, j = counters.regrown_pruned, counters.regrown_judged
    else:
        p, j = counters.total_regrown_pruned, counters.total_regrown_judged
    return (
        int(keras.ops.convert_to_numpy(p)),
        int(keras.ops.convert_to_numpy(j)),
    )


def fraction(pruned, judged):
    """`pruned / judged`, or `None` when nothing was judged."""
    return pruned / judged if judged else None


def threshold_value(policy):
    """DSR's current threshold H as a float (None for other policies)."""
    if isinstance(policy, DSR) and policy.threshold is not None:
        return float(keras.ops.convert_to_numpy(policy.threshold))
    return None


def epoch_record(
    epoch, weights, counters, policy, seen=(0, 0), log_layer_density=True
):
    """The `sparse/...` entries logged at the end of an epoch.

    Args:
        epoch: the epoch index.
        weights: the `SparseWeight`s.
        counters: the `state.SparseCounters`.
        policy: the `SparsePolicy`.
        seen: `regrown_pruned_counts` at the start of the epoch.
        log_layer_density: whether to add `sparse/density/<key>` entries.

    Returns:
        `(record, (pruned, judged))`: the record (a dict with `"epoch"`)
        and the regrown weights pruned again and judged during the epoch.
    """
    densities = layer_densities(weights)
    record = {
        "epoch": int(epoch),
        "sparse/density": overall_density(weights, densities),
        "sparse/dropped": to_int(counters.dropped),
        "sparse/updates": to_int(counters.update_count),
    }
    h = threshold_value(policy)
    if h is not None:
        record["sparse/threshold"] = h
    delta = (0, 0)
    if not policy.is_static:
        pruned, judged = regrown_pruned_counts(counters, False)
        delta = (pruned - seen[0], judged - seen[1])
        record["sparse/regrown_pruned"] = (
            delta[0] / delta[1] if delta[1] > 0 else math.nan
        )
    if log_layer_density:
        for k, d in densities.items():
            record[f"sparse/density/{k}"] = d
    return record, delta


def build_report(name, title, weights, dense, skipped, counters, is_static):
    """The `TechniqueReport` of sparse training.

    Args:
        name: the technique's class name.
        title: the report's headline.
        weights: the `SparseWeight`s (one "applied" row each, with shape,
            size, nonzeros and density).
        dense: `{layer name: reason}` of the layers kept dense ("kept").
        skipped: `(name, class name, reason)` of the layers that could not
            be handled ("skipped").
        counters: the `state.SparseCounters` (regrown weights pruned
            again: `regrown_pruned_last` and `regrown_pruned_overall`,
            None when nothing was judged yet).
        is_static: whether the policy never updates the masks.

    Returns:
        A `TechniqueReport` whose totals are `sparsity`,
        `regrown_pruned_last` and `regrown_pruned_overall`.
    """
    report = TechniqueReport(name, title)
    total = nonzero = 0
    for w in weights:
        nz = nonzeros(w)
        total += w.size
        nonzero += nz
        report.add(
            w.layer.name,
            "applied",
            weight=w.label,
            shape=tuple(w.variable.shape),
            size=w.size,
            nonzeros=nz,
            density=nz / w.size,
        )
    for layer_name, reason in dense.items():
        report.add(layer_name, "kept", reason)
    for layer_name, kind, reason in skipped:
        report.add(layer_name, "skipped", f"{kind}: {reason}")
    report.totals["sparsity"] = 1.0 - nonzero / total if total else 0.0
    for key, last in (("last", True), ("overall", False)):
        report.totals[f"regrown_pruned_{key}"] = fraction(
            *regrown_pruned_counts(counters, is_static, last)
        )
    return report
