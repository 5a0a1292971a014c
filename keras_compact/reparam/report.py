"""The `summary()` report of `Reparameterize`."""

from keras_compact.training.report import TechniqueReport


def reparam_report(technique, family, applied, skipped):
    """What was re-parameterised and what was skipped.

    Args:
        technique: the technique's class name.
        family: the family's name (the report's title).
        applied: one dict per layer with branches (`layer`, `type`,
            `branches`, `constant_into`, `extra_params`).
        skipped: one dict per skipped layer (`layer`, `type`, `reason`).

    Returns:
        A `TechniqueReport`: applied rows with their type, branches, where
        the constant folds (`"bias"`, `"batch_norm"` or `"none"`) and the
        extra training-only parameters; skipped rows with the reason;
        totals: `extra_params`.
    """
    report = TechniqueReport(technique, family)
    for a in applied:
        report.add(
            a["layer"],
            "applied",
            " + ".join(["main"] + a["branches"]),
            **{k: v for k, v in a.items() if k != "layer"},
        )
    for s in skipped:
        report.add(s["layer"], "skipped", f"{s['type']}: {s['reason']}")
    report.totals["extra_params"] = sum(a["extra_params"] for a in applied)
    return report
