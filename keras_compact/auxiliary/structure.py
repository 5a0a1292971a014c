"""Connection structures of the booster stream, free of Keras.

A structure says which taps feed which booster node. Booster node `j` sits
at tap `j` (its resolution and, times the width multiplier, its width); its
inputs are a list of tap indices. Pure functions over plain lists:

- `chain_structure(n)`: "connect all taps", tap `j` feeds node `j` (the
  released auxiliary-module design).
- `candidate_edges(stages)`: the searchable edges `i -> j`, `i <= j`, with
  tap `i` in the same or the previous resolution stage as node `j`.
- `select_edges(candidates, logits, k, margin)`: the searched structure:
  every node keeps its own tap, plus at most `k` extra edges whose logits
  are decided (beyond `margin`, see `noise_level`).
- `format_structure(...)`: a readable, one-line-per-node description.
- `name_structure(...)`, `resolve_connections(...)`: structures by tap
  names (the saved format) and back to tap indices.
"""

import math

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


def extra_candidates(candidates):
    """The searchable extra edges: every candidate but the node's own tap.

    Args:
        candidates: per node `j`, its candidate tap indices
            (`candidate_edges`), which contain `j` itself.

    Returns:
        A list with, for every node `j`, its candidates other than `j`.
    """
    return [[i for i in cand if i != j] for j, cand in enumerate(candidates)]


def noise_level(learning_rate, steps):
    """How far Adam moves a logit on zero-mean gradients: `lr * sqrt(steps)`.

    Adam's update is about `learning_rate` per step whatever the gradient's
    scale, in the direction of its recent sign. On gradients of consistent
    sign a logit moves about `learning_rate * steps`; on zero-mean noise it
    random-walks, and after `steps` steps `|logit|` stays below
    `2 * learning_rate * sqrt(steps)` in 95% of cases and below
    `2.6 * learning_rate * sqrt(steps)` in 99% (measured by simulation,
    Adam defaults). `select_edges` compares the logits to a multiple of this
    level.

    Args:
        learning_rate: the architecture learning rate.
        steps: the number of architecture steps taken.

    Returns:
        The float `learning_rate * sqrt(steps)`.
    """
    return float(learning_rate) * math.sqrt(max(int(steps), 0))


def select_edges(candidates, logits, k, margin):
    """The searched structure: own tap, plus the extra edges the search wants.

    Every node keeps its own tap (so every tap has an adaptor and every
    block before it gets auxiliary gradient). An extra edge `i -> j` (gate
    `sigmoid(logit)`) is *decided* when `|logit| > margin`; it is kept when
    its logit is `> margin` and among the `k` largest of its node (ties go
    to the tap closest to the node). An undecided edge is left out, as in
    "connect all taps" (so all-zero logits give the chain structure).

    Args:
        candidates: per node, its candidate tap indices (`candidate_edges`).
        logits: per node, one architecture logit per extra candidate (in the
            order of `extra_candidates(candidates)`).
        k: the most extra edges kept per node, an int >= 1.
        margin: the decision margin on the logits, a float >= 0.

    Returns:
        A tuple `(structure, undecided)`: per node its kept tap indices
        (sorted, always containing the node's own tap), and the list of the
        undecided edges as `(i, j)` pairs.

    Raises:
        ValueError: if `k < 1`, `margin < 0` or the logits do not match the
            candidates.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"Expected `top_k` to be an int >= 1. Received: {k=}")
    if not float(margin) >= 0:
        raise ValueError(f"Expected `margin` >= 0. Received: {margin=}")
    if len(logits) != len(candidates):
        raise ValueError(
            f"Expected one logit list per node ({len(candidates)}). "
            f"Received: {len(logits)}"
        )
    structure, undecided = [], []
    for j, (extra, lg) in enumerate(zip(extra_candidates(candidates), logits)):
        lg = [float(v) for v in lg]
        if len(lg) != len(extra):
            raise ValueError(
                f"Expected {len(extra)} logits for the extra candidates "
                f"{extra} of node {j}. Received: {lg}"
            )
        undecided += [(i, j) for i, v in zip(extra, lg) if abs(v) <= margin]
        order = sorted(range(len(extra)), key=lambda e: (-lg[e], -extra[e]))
        kept = [extra[e] for e in order[:k] if lg[e] > margin]
        structure.append(sorted(kept + [j]))
    return structure, undecided


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
        probs: optional per node, a dict `{tap index: weight}` (the search
            gates of the extra edges) to show next to each kept edge.

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


def name_structure(tap_names, structure):
    """One head's structure by tap names: `{node tap: [input taps]}`.

    Args:
        tap_names: the name of every tap of the head.
        structure: per node, its input tap indices.

    Returns:
        A dict mapping each node's tap name to the names of its input taps
        (the saved format of `AuxiliaryModule(connections=...)`).
    """
    return {
        tap_names[j]: [tap_names[i] for i in srcs]
        for j, srcs in enumerate(structure)
    }


def resolve_connections(connections, tap_lists):
    """Every head's structure from the `connections` argument.

    Args:
        connections: `"all"`, `"search"`, or a named structure: a dict
            mapping head names to `{node tap: [input taps]}` (a plain
            `{node tap: [input taps]}` for a single head).
        tap_lists: a dict mapping each head name to its tap names.

    Returns:
        A dict mapping each head name to `"search"` or to its structure
        (per node, its input tap indices); a head the named structure
        leaves out connects all its taps.

    Raises:
        ValueError: for an unknown head or tap name, or an invalid
            structure.
    """
    if connections == "all":
        return {h: chain_structure(len(ns)) for h, ns in tap_lists.items()}
    if connections == "search":
        return {h: "search" for h in tap_lists}
    conn = connections
    if not all(h in tap_lists for h in conn) and len(tap_lists) == 1:
        conn = {next(iter(tap_lists)): conn}
    unknown = sorted(set(conn) - set(tap_lists))
    if unknown:
        raise ValueError(
            f"Unknown head(s) {unknown} in `connections`. Heads: "
            f"{list(tap_lists)}. Received: connections={connections!r}"
        )
    out = {}
    for head, names in tap_lists.items():
        spec = conn.get(head)
        if spec is None:
            out[head] = chain_structure(len(names))
            continue
        bad = sorted(
            {n for n in spec if n not in names}
            | {s for v in spec.values() for s in v if s not in names}
        )
        if bad:
            raise ValueError(
                f"Unknown tap name(s) {bad} in `connections` for head "
                f"{head!r}. Taps: {names}"
            )
        out[head] = validate_structure(
            [[names.index(s) for s in spec.get(n, [])] for n in names],
            len(names),
        )
    return out
