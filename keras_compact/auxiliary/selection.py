"""Reading the connection search: margin, selected edges, report, warnings.

Plain functions over searching boosters (`AuxiliaryBooster` with
`connections="search"`) and the search's settings, behind the accessors of
`AuxiliaryModule` (`structure`, `search_report`, `fixed`):

- `margin`: the decision margin on the logits after some steps;
- `select`: a booster's searched structure and its undecided edges;
- `SearchDecisions`: every head's structure by tap names and the search
  report (what the search decided, per head, and how clearly);
- `warn_undecided`: the warning when edges were not separated from noise;
- `check_overrides`, `fixed_config`: the arguments and the config of
  `AuxiliaryModule.fixed()`.
"""

import warnings

import keras
import numpy as np

from keras_compact.auxiliary import structure as structure_lib
from keras_compact.training import arguments as args


def margin(arch_learning_rate, steps, min_separation, min_logit):
    """The decision margin on the logits after `steps` architecture steps.

    Returns:
        `max(min_separation * noise_level, min_logit)`, with the noise level
        `arch_learning_rate * sqrt(steps)` (`structure.noise_level`).
    """
    noise = structure_lib.noise_level(arch_learning_rate, steps)
    return max(min_separation * noise, min_logit)


def logits(booster):
    """Per node, a searching booster's logits of its extra edges (floats)."""
    return [
        keras.ops.convert_to_numpy(v).tolist() for v in booster.node_logits()
    ]


def select(booster, top_k, margin):
    """A searching booster's structure: `(structure, undecided)` of
    `structure.select_edges` at `top_k` and `margin`."""
    return structure_lib.select_edges(
        booster.candidates, logits(booster), top_k, margin
    )


class SearchDecisions:
    """What the boosters' connections are: fixed, or the search's choice.

    Reads the searching boosters' logits each time it is asked, so it
    follows the search as it runs.

    Args:
        heads: the technique's `heads.AuxiliaryHeads` (head names, tap
            names and shapes, one booster per head).
        steps: the variable counting the architecture steps taken, or
            `None` when nothing is searched.
        arch_learning_rate: the logits' Adam learning rate.
        min_separation: the default margin in noise levels.
        min_logit: the smallest margin.
        top_k: the default number of extra edges kept per node.
    """

    def __init__(
        self, heads, steps, arch_learning_rate, min_separation, min_logit, top_k
    ):
        self.heads = list(heads.names)
        self.tap_lists = heads.tap_lists
        self.tap_shapes = heads.tap_shapes
        self.boosters = list(heads.boosters)
        self.steps = steps
        self.arch_learning_rate = arch_learning_rate
        self.min_separation = min_separation
        self.min_logit = min_logit
        self.top_k = top_k

    def steps_taken(self):
        """The architecture steps taken (0 when nothing is searched)."""
        return 0 if self.steps is None else int(self.steps.numpy())

    def margin(self, min_separation=None):
        """The decision margin on the logits after the steps taken."""
        if min_separation is None:
            min_separation = self.min_separation
        return margin(
            self.arch_learning_rate,
            self.steps_taken(),
            min_separation,
            self.min_logit,
        )

    def structures(self, top_k=None, min_separation=None):
        """Every head's structure by tap names: `{head: {node tap: [input
        taps]}}`, for a searching booster what the search selects now."""
        if min_separation is not None:
            min_separation = float(min_separation)
        out = {}
        for head, booster in zip(self.heads, self.boosters):
            if booster.search:
                conn, _ = select(
                    booster, top_k or self.top_k, self.margin(min_separation)
                )
            else:
                conn = booster.connections
            out[head] = structure_lib.name_structure(self.tap_lists[head], conn)
        return out

    def report(self, top_k=None, min_separation=None):
        """What the search decided, per head, and how clearly.

        Args:
            top_k: extra edges kept per node (default: `top_k`).
            min_separation: the margin in noise levels (default:
                `min_separation`).

        Returns:
            A dict mapping each head name to a dict with `steps` (the
            architecture steps taken), `noise_level`
            (`arch_learning_rate * sqrt(steps)`), `min_separation`,
            `min_logit`, `margin` (the larger of `min_separation *
            noise_level` and `min_logit`), `edges` (the number of extra
            candidate edges), `decided`, `kept`, `undecided_edges`
            (`[tap, node]` name pairs), `max_abs_logit`, `gate_spread`
            (largest minus smallest gate), and `fallback`: `"connect-all"`
            when no edge was decided (the structure is connect-all because
            the search did not separate anything), `"partial"` when some
            were not, else `None`.
        """
        if min_separation is None:
            min_separation = self.min_separation
        steps = self.steps_taken()
        m = self.margin(min_separation)
        report = {}
        for head, booster in zip(self.heads, self.boosters):
            names = self.tap_lists[head]
            conn, undecided = select(booster, top_k or self.top_k, m)
            flat = [v for lg in logits(booster) for v in lg]
            edges = len(flat)
            gates = 1.0 / (1.0 + np.exp(-np.asarray(flat, dtype=np.float64)))
            if edges and len(undecided) == edges:
                fallback = "connect-all"
            elif undecided:
                fallback = "partial"
            else:
                fallback = None
            report[head] = {
                "steps": steps,
                "noise_level": structure_lib.noise_level(
                    self.arch_learning_rate, steps
                ),
                "min_separation": min_separation,
                "min_logit": self.min_logit,
                "margin": m,
                "edges": edges,
                "decided": edges - len(undecided),
                "kept": sum(len(srcs) - 1 for srcs in conn),
                "undecided_edges": [[names[i], names[j]] for i, j in undecided],
                "max_abs_logit": float(np.max(np.abs(flat))) if flat else 0.0,
                "gate_spread": float(gates.max() - gates.min())
                if edges
                else 0.0,
                "fallback": fallback,
            }
        return report


def warn_undecided(report, arch_learning_rate):
    """Warns, per head of a `search_report`, when some (or all) candidate
    edges were not separated from noise. Call it from the public method
    whose caller the warning should point to."""
    for head, r in report.items():
        if r["fallback"] is None:
            continue
        where = (
            f"{r['steps']} steps at arch_learning_rate="
            f"{arch_learning_rate:g}: margin {r['margin']:.3g} = "
            f"max({r['min_separation']:g} x noise level "
            f"{r['noise_level']:.3g}, min_logit {r['min_logit']:g}); "
            f"largest |beta| {r['max_abs_logit']:.3g}, gate spread "
            f"{r['gate_spread']:.3f}"
        )
        if r["fallback"] == "connect-all":
            msg = (
                f"The auxiliary structure search did not separate any "
                f"of the {r['edges']} candidate edges of head {head!r} "
                f"from noise ({where}). Falling back to connect-all: "
                "every node takes its own tap only. Search longer "
                "(`steps`) for a decision."
            )
        else:
            msg = (
                f"{len(r['undecided_edges'])} of the {r['edges']} "
                f"candidate edges of head {head!r} were not separated "
                f"from noise ({where}); they are left out, as in "
                "connect-all."
            )
        warnings.warn(msg, UserWarning, stacklevel=3)


def check_overrides(top_k, min_separation):
    """Checks the `top_k` and `min_separation` overrides of `fixed()`."""
    if top_k is not None:
        structure_lib.select_edges([[0]], [[]], top_k, 0.0)
    if min_separation is not None:
        args.check_float(min_separation, "min_separation", low=0)


def fixed_config(config, decisions, top_k=None, min_separation=None):
    """The config of a new technique with the structure decided now.

    Args:
        config: the searching technique's `get_config()` (changed).
        decisions: its `SearchDecisions`.
        top_k: extra edges kept per node (default: the technique's).
        min_separation: the margin in noise levels (default: the
            technique's).

    Returns:
        `config` without its name, with `connections` set to the structure
        by tap names, no `search_data`, and `top_k` when given.
    """
    for key in ("name", "trainable", "dtype"):
        config.pop(key, None)
    config.update(
        connections=decisions.structures(top_k, min_separation),
        search_data=None,
    )
    if top_k is not None:
        config["top_k"] = int(top_k)
    return config
