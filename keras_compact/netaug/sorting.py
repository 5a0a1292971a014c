"""Channel permutation and importance sorting for NetAug's augmented model.

A channel group's channels can be reordered without changing what the
largest augmented model computes, provided every weight along them is
permuted the same way: the producing kernels' output columns, the biases,
BatchNormalization parameters and moving statistics, depthwise kernels and
the consuming kernels' input rows (including those of a `Concatenate`
segment). `permute_group` does this for the user's variables (the tiny
block) and the elastic extras alike, and for the optimizer's slot variables
(momentum, Adam moments) of each of them, so training goes on as if the
channels had always been in that order.

A permutation that keeps the tiny channels among themselves leaves the tiny
model's function unchanged; one that moves extra channels into the tiny
slice changes the tiny model (that is what sorting by importance is for).

`NetAug(sort_channels=True)` calls `sort_expand_channels` at the start of
every epoch of the width phase (before `stop_width_at`, as in the released
code): each expand group's channels are ordered by the sum of |W| of the
projection conv over its output and spatial axes (over the largest
augmented model). The moving statistics of a channel that enters the tiny
slice are those the augmented passes estimated for it (kept only when
sorting is on), which the tiny passes then refine; add `BNRecalibration`
for exact statistics.
"""

import numpy as np

from keras_compact.compat import optimizer_slots


def _positions(segments, group, full_size):
    """Index arrays into a full axis of every segment of `group`: each is
    the group's channels in order (tiny ones, then extra ones)."""
    tiny_total = sum(s.size for s in segments)
    out = []
    tiny_at, extra_at = 0, tiny_total
    for s in segments:
        if s.group == group:
            pos = list(range(tiny_at, tiny_at + s.size))
            if s.widx is not None and s.extra:
                pos += list(range(extra_at, extra_at + s.extra))
            out.append(np.array(pos))
        tiny_at += s.size
        if s.widx is not None:
            extra_at += s.extra
    assert extra_at <= full_size
    return out


def _optimizer_views(optimizer, variable):
    """`{i: slot}` for the optimizer state variables of `variable` (the
    i-th is the same kind of state for every variable)."""
    return dict(enumerate(optimizer_slots(optimizer, variable)))


def _slots_with(supernet, group):
    for layer in supernet.elastic_layers:
        for slot in layer.slots:
            axes = {
                axis: segs
                for axis, segs in slot.axes().items()
                if segs and any(s.group == group for s in segs)
            }
            if axes:
                yield slot, axes


def permute_group(supernet, group, permutation, optimizer=None):
    """Reorders the channels of one augmented channel group, exactly.

    Args:
        supernet: the `Supernet` (e.g. `netaug.supernet`).
        group: the `ChannelGroup` index (`supernet.augmented[i].index`).
        permutation: the new order, an array of the group's `max` channel
            indices (tiny ones first): new channel `i` is old channel
            `permutation[i]`.
        optimizer: the trainer's optimizer, whose slot variables are
            permuted too (None: skipped).

    Raises:
        ValueError: if `group` is not augmented or `permutation` is not a
            permutation of its channels.
    """
    if group not in supernet.plan:
        raise ValueError(
            "Expected the index of an augmented channel group. Received: "
            f"group={group!r}; augmented: "
            f"{[g.index for g in supernet.augmented]}"
        )
    size = supernet.sizes[group] + supernet.plan[group][1]
    perm = np.asarray(permutation)
    if perm.shape != (size,) or sorted(perm.tolist()) != list(range(size)):
        raise ValueError(
            f"Expected a permutation of range({size}) for group {group}. "
            f"Received: permutation={permutation!r}"
        )
    for slot, axes in _slots_with(supernet, group):
        variables = slot.variables()
        views = [{None: v} for v in variables]
        for i, v in enumerate(variables):
            views[i].update(_optimizer_views(optimizer, v))
        keys = set(views[0])
        for vw in views[1:]:
            keys &= set(vw)
        for key in keys:
            targets = [vw[key] for vw in views]
            full = slot.assemble([np.asarray(t.numpy()) for t in targets])
            for axis, segs in axes.items():
                index = np.arange(full.shape[axis])
                for pos in _positions(segs, group, full.shape[axis]):
                    index[pos] = pos[perm]
                full = np.take(full, index, axis=axis)
            for t, part in zip(targets, slot.split(full)):
                t.assign(part)


def importance(supernet, group):
    """Importance of each channel of an expand group (largest model): the
    sum of |W| of its projection convolutions over all axes but the input
    channel one. Returns None if the group has no projection."""
    names = supernet.channel_groups.projections(group)
    total = None
    for layer in supernet.elastic_layers:
        if layer.layer.name not in names:
            continue
        slot = getattr(layer, "kernel_slot", None) or layer.pointwise_slot
        full = slot.assemble([np.asarray(v.numpy()) for v in slot.variables()])
        per_row = np.abs(full).sum(
            axis=tuple(i for i in range(full.ndim) if i != full.ndim - 2)
        )
        for pos in _positions(slot.in_segs, group, full.shape[-2]):
            total = per_row[pos] if total is None else total + per_row[pos]
    return total


def sort_expand_channels(supernet, optimizer=None):
    """Sorts every expand group's channels by decreasing importance.

    Returns:
        The number of channels that entered the tiny slice, over all groups.
    """
    moved = 0
    for g in supernet.augmented:
        if g.kind != "expand":
            continue
        score = importance(supernet, g.index)
        if score is None:
            continue
        perm = np.argsort(-score, kind="stable")
        moved += int(np.sum(perm[: g.size] >= g.size))
        if np.array_equal(perm, np.arange(len(perm))):
            continue
        permute_group(supernet, g.index, perm, optimizer)
    return moved
