"""The `TechniqueReport` of `AuxiliaryModule.summary()`."""

import keras

from keras_compact.auxiliary import structure as structure_lib
from keras_compact.auxiliary.selection import select
from keras_compact.training.report import TechniqueReport


def build_report(title, decisions):
    """The booster of every head and its structure.

    Args:
        title: the report's title (the technique's class name).
        decisions: the technique's `selection.SearchDecisions` (heads, tap
            names and shapes, boosters, `top_k` and margin of the search).

    Returns:
        A `TechniqueReport`: one "applied" row per head with its mode
        (fixed, or the state of the connection search) and, as notes, which
        taps feed which booster node (with the gates while searching).
    """
    report = TechniqueReport(title)
    searching = any(b.search for b in decisions.boosters)
    search = decisions.report() if searching else {}
    top_k, tap_lists = decisions.top_k, decisions.tap_lists
    for head, booster in zip(decisions.heads, decisions.boosters):
        gates = None
        if booster.search:
            conn, _ = select(booster, top_k, decisions.margin())
            gates = [
                {
                    i: float(g)
                    for i, g in zip(extra, keras.ops.convert_to_numpy(gate))
                }
                for extra, gate in zip(booster.extras, booster.edge_gates())
            ]
        else:
            conn = booster.connections
        text = structure_lib.format_structure(
            head, tap_lists[head], decisions.tap_shapes[head], conn, gates
        )
        if booster.search:
            r = search[head]
            mode = (
                f"searching, {r['steps']} steps: {r['decided']} of "
                f"{r['edges']} extra edges decided (|beta| > margin "
                f"{r['margin']:.3g}), {r['kept']} kept (top-{top_k} "
                f"per node); gate spread {r['gate_spread']:.3f}"
            )
            if r["fallback"] == "connect-all":
                mode += "; nothing separated: falls back to connect-all"
        else:
            mode = "fixed"
        report.add(head, "applied", mode, taps=len(tap_lists[head]))
        report.note(text)
    return report
