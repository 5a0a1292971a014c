"""What NetAug reports: its `summary()` report and its stability warning.

The fit history gets `netaug_aug_loss` (the unweighted augmented loss,
epoch mean), `netaug_loss_ratio` (it over `task_loss`) and `netaug_loss`
(`alpha` times it, the term added to the loss). `StabilityCheck` warns once
when, after the warm-up (the first epoch, or the first 1/30 of the epochs),
the augmented loss is above ln(num_classes), the loss of a uniform guess,
and more than `UNSTABLE_RATIO` times the compact model's (so a task the
compact model does not learn either is not blamed on NetAug), naming the
widened groups the output layers read.
"""

import math
import warnings

from keras_compact.training.report import TechniqueReport

#: Augmented / compact loss ratio above which (with the augmented loss above
#: ln(num_classes)) the augmented pass is reported as unstable.
UNSTABLE_RATIO = 1.25


def num_classes(net):
    """The number of classes of a single-output `net` (its last output
    dimension), else None."""
    outputs = net.channel_groups.graph.outputs
    if len(outputs) != 1 or len(outputs[0].shape) < 2:
        return None
    return outputs[0].shape[-1]


def widened_output_inputs(net):
    """`{output layer name: [first layer of each augmented group of its
    input]}`: the widened channels the output layers of `net` read."""
    cg = net.channel_groups
    out = {}
    for node in net.output_kernels:
        names = [
            cg.groups[gi].layers[0]
            for gi in cg.layout(node.inputs[0])
            if gi in net.plan
        ]
        if names:
            out[node.name] = names
    return out


class StabilityCheck:
    """Warns once when the augmented pass looks unstable (see the module).

    Args:
        net: the `Supernet`.
        name: the technique's name (in the warning).
        output_guard: the technique's `output_guard` (in the warning).
    """

    def __init__(self, net, name, output_guard):
        self.net = net
        self.name = name
        self.output_guard = output_guard
        self.warned = False

    def __call__(self, epoch, epochs, aug, task):
        """Checks epoch `epoch` of `epochs`, with the epoch's augmented loss
        `aug` and compact (task) loss `task` (None if unknown)."""
        classes = num_classes(self.net)
        if self.warned or epoch < max(1, epochs // 30) or not classes:
            return
        if classes < 2 or not aug > math.log(classes):
            return
        if task is not None and not aug > UNSTABLE_RATIO * float(task):
            return
        self.warned = True
        widened = widened_output_inputs(self.net)
        where = (
            "; ".join(f"{k} reads {', '.join(v)}" for k, v in widened.items())
            or "none is widened"
        )
        task = "?" if task is None else f"{float(task):.3g}"
        warnings.warn(
            f"NetAug ({self.name!r}): after warm-up (epoch {epoch + 1}) the "
            f"augmented sub-models' mean loss {aug:.3g} is above "
            f"ln({classes}) = {math.log(classes):.3g}, the loss of a "
            f"uniform guess (compact model: {task}). The augmented pass is "
            "likely unstable: its logits grow with the width of the "
            f"channels feeding the output layers (widened groups: {where}), "
            "typically a head conv over a 1x1 feature map, and its large "
            "gradient disturbs the shared weights. Try output_guard="
            f"'scale' (now {self.output_guard!r}) or 'tiny', `exclude`, "
            "gradient_guard=True, or a smaller `alpha` or learning rate.",
            stacklevel=2,
        )


def warn_nothing_augmented(model_name, report):
    """Warns that NetAug found no channel group to augment in the model,
    with its `report`."""
    warnings.warn(
        f"NetAug found nothing to augment in model {model_name!r}; "
        "the augmented loss will be zero.\n" + str(report),
        stacklevel=3,
    )


def build_report(technique, net, name, gradient_guard, num_taps):
    """The `TechniqueReport` of `net` (None: not attached): one applied row
    per augmented channel group (its tiny width and the widths it is
    trained at), kept rows for `output_guard="tiny"` and `exclude`, skipped
    rows with the reasons.

    Args:
        technique: the technique's class name.
        net: the `Supernet`, or None.
        name: the technique's name.
        gradient_guard: whether the gradient guard is on.
        num_taps: the number of guarded (tapped) shared variables.
    """
    report = TechniqueReport(technique)
    if net is None:
        report.title = f"{name} is not attached to a trainer yet."
        return report
    report.title = (
        f"{net.num_groups} augmented channel groups of {net.compact.name!r}"
    )

    def item(g):
        more = ", ..." if len(g.layers) > 3 else ""
        return f"{', '.join(g.layers[:3])}{more}"

    for g, c in zip(net.augmented, net.choices):
        report.add(item(g), "applied", g.kind, size=g.size, widths=list(c))
    groups = net.channel_groups.groups
    left = (
        [
            (gi, "kept", f"output_guard='tiny' (read by {layer!r})")
            for gi, layer in net.guarded
        ]
        + [
            (gi, "kept", f"`exclude` (output of {layer!r})")
            for gi, layer in net.excluded
        ]
        + [
            (
                gi,
                "kept",
                f"min_resolution={net.min_resolution} (on the "
                f"{layer!r} output's smaller feature map)",
            )
            for gi, layer in net.small_maps
        ]
        + [
            (gi, "skipped", "; ".join(reasons))
            for gi, reasons in net.channel_groups.skipped
        ]
    )
    for gi, status, reason in left:
        g = groups[gi]
        report.add(item(g), status, reason, size=g.size)
    if net.scaled_outputs:
        report.note(
            "Output guard 'scale': the input of "
            f"{', '.join(net.scaled_outputs)} is scaled by "
            "sqrt(tiny / active channels) in the augmented pass."
        )
    if any(net.softmax_outputs):
        report.note("Softmax output: the augmented loss is computed on logits.")
    if gradient_guard:
        untapped = net.untapped()
        report.note(
            f"Gradient guard on {num_taps} shared variables"
            + (
                f"; {len(untapped)} read by reused layers are not guarded."
                if untapped
                else "."
            )
        )
    if not report.kept and not report.skipped:
        report.note(
            "Every channel group is augmented except the model's inputs "
            "and outputs."
        )
    return report


def warn_no_augmented_epoch(name, start_at, stop_at, auto, epochs):
    """Warns that no epoch of a `fit` of `epochs` fell in the augmented
    pass's window `[start_at, stop_at)` (fractions of the epochs); `auto`:
    whether `start_at` came from `start_at="auto"`."""
    why = (
        f" (start_at='auto' is {start_at:g} on this model: it has feature "
        "maps below min_resolution)"
        if auto
        else ""
    )
    warnings.warn(
        f"NetAug ({name!r}): no epoch of this fit (epochs={epochs}) fell in "
        f"the augmented pass's window [{start_at:g}, {stop_at:g}) of the "
        f"epochs{why}, so the augmented pass never ran. Train more epochs or "
        "pass `start_at` (e.g. 0.0).",
        stacklevel=2,
    )
