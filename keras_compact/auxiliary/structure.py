"""Connection structures of the booster stream, free of Keras.

A structure says which taps feed which booster node. Booster node `j` sits
at tap `j` (its resolution and, times the width multiplier, its width); its
inputs are a list of tap indices. Pure functions over plain lists:

- `chain_structure(n)`: "connect all taps", tap `j` feeds node `j` (the
  released auxiliary-module design).
- `candidate_edges(stages)`: the searchable edges `i -> j`, `i <= j`, with
  tap `i` in the same or the previous resolution stage as node `j`.
- `top_k_structure(candidates, logits, k)`: keeps the `k` strongest edges of
  every node.
- `format_structure(...)`: a readable, one-line-per-node description.
"""

import numpy as np


def chain_structure(num_taps):
    """ "Connect all taps": tap `j` feeds booster node `j`.

    Args:
        num_taps: number of taps (and of booster nodes).

    Returns:
        A list with, for every node `j`, the list `[j]`.
    """
    return [[j] for j in range(num_taps)]


def candidate_edges(stages):
    """The candidate edges of the structure search.

    Tap `i` may feed node `j` when `i <= j` and tap `i` lies in the same
    resolution stage as node `j` or in the stage just before it.

    Args:
        stages: the resolution-stage index of every tap, non-decreasing.

    Returns:
        A list with, for every node `j`, the sorted candidate tap indices
        (always containing `j` itself).

    Raises:
        ValueError: if `stages` decreases somewhere.
    """
    stages = [int(s) for s in stages]
    if any(b < a for a, b in zip(stages, stages[1:])):
        raise ValueError(
            f"Expected non-decreasing tap stages. Received: stages={stages}"
        )
    return [
        [i for i in range(j + 1) if stages[j] - stages[i] in (0, 1)]
        for j in range(len(stages))
    ]


def top_k_structure(candidates, logits, k):
    """Keeps the `k` edges with the largest logits into every node.

    Ties are broken in favour of the tap closest to the node (so untrained,
    all-equal logits give the chain structure for `k = 1`).

    Args:
        candidates: per node, its candidate tap indices (`candidate_edges`).
        logits: per node, one architecture logit per candidate (any
            sequence of floats of the same lengths).
        k: number of edges kept per node, an int >= 1 (nodes with fewer
            candidates keep them all).

    Returns:
        A list with, for every node, its kept tap indices, sorted.

    Raises:
        ValueError: if `k < 1` or the logits do not match the candidates.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"Expected `top_k` to be an int >= 1. Received: {k=}")
    if len(logits) != len(candidates):
        raise ValueError(
            f"Expected one logit list per node ({len(candidates)}). "
            f"Received: {len(logits)}"
        )
    kept = []
    for cand, lg in zip(candidates, logits):
        lg = [float(v) for v in lg]
        if len(lg) != len(cand):
            raise ValueError(
                f"Expected {len(cand)} logits for candidates {cand}. "
                f"Received: {lg}"
            )
        order = sorted(range(len(cand)), key=lambda e: (-lg[e], -cand[e]))
        kept.append(sorted(cand[e] for e in order[:k]))
    return kept


def validate_structure(structure, num_taps):
    """Checks a per-node list of tap-index lists; returns a clean copy."""
    if not isinstance(structure, (list, tuple)) or len(structure) != num_taps:
        raise ValueError(
            f"Expected a list of {num_taps} lists of tap indices (one per "
            f"booster node). Received: connections={structure!r}"
        )
    clean = []
    for j, srcs in enumerate(structure):
        srcs = sorted({int(i) for i in srcs})
        if any(i < 0 or i > j for i in srcs):
            raise ValueError(
                f"Booster node {j} may only take taps 0..{j} (earlier or at "
                f"its own position). Received: {srcs}"
            )
        clean.append(srcs)
    if not clean or not clean[0]:
        raise ValueError(
            "The first booster node needs an input tap. Received: "
            f"connections={structure!r}"
        )
    return clean


def format_structure(head, tap_names, tap_shapes, structure, probs=None):
    """A readable description of one head's booster structure.

    Args:
        head: the head's name.
        tap_names: the name of every tap.
        tap_shapes: the `(H, W, C)` of every tap.
        structure: per node, its input tap indices.
        probs: optional per node, a dict `{tap index: softmax weight}` to
            show next to each kept edge.

    Returns:
        A multi-line string.
    """
    lines = [f"booster for head {head!r} ({len(tap_names)} nodes):"]
    width = max(len(n) for n in tap_names) if tap_names else 0
    for j, srcs in enumerate(structure):
        h, w, c = tap_shapes[j]
        parts = []
        for i in srcs:
            p = f" ({probs[j][i]:.2f})" if probs and i in probs[j] else ""
            parts.append(f"{tap_names[i]}{p}")
        feed = ", ".join(parts) if parts else "(no tap)"
        lines.append(
            f"  node {j:2d} {tap_names[j]:<{width}} {h}x{w}x{c} <- {feed}"
        )
    return "\n".join(lines)
