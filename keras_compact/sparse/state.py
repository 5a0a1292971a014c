"""The state of sparse training: which weights are masked, masks, counters.

Plain functions and small plain classes that take explicit arguments:
weights are created through an `add_weight` callable (the technique's, so
that masks and counters are Keras weights saved in `.keras` files and
checkpoints), never through a back-reference to the technique.
"""

import warnings

import keras
import numpy as np

from keras_compact.graph.walk import check_layer_names
from keras_compact.sparse import distributions
from keras_compact.sparse.registry import UnsupportedLayer, prunable_weights
from keras_compact.sparse.selection import default_dense_layers, scan
from keras_compact.training import arguments as args

#: Initial values of regrown weights.
REGROW_INITS = ("zeros", "he_normal")


class SparseWeight:
    """One masked weight (a plain object: invisible to Keras tracking).

    Attributes:
        layer: the layer that owns the weight.
        label: the weight's label in the layer (`"kernel"`,
            `"depthwise_kernel"`...).
        variable: the weight itself.
        mask: its mask, a non-trainable variable of the same shape.
        key: the name used in reports and logs (the layer name, or
            `"layer.label"` for a layer with several sparse weights).
        regrown: a variable marking the positions grown by the last update,
            or `None` (policies that never grow: static, gradual pruning).
        target: the weight's share of the budget, its final number of
            non-zeros (a dense-to-sparse policy prunes down to it).
    """

    def __init__(self, layer, label, variable, mask, key):
        self.layer = layer
        self.label = label
        self.variable = variable
        self.mask = mask
        self.key = key
        self.regrown = None  # positions grown by the last update
        self.target = None  # final non-zeros (set by `create_state`)

    @property
    def size(self):
        return int(np.prod(self.variable.shape))


class SparseCounters:
    """The scalar state of sparse training (non-trainable variables).

    Attributes:
        epoch: the current epoch (DSR's period schedule reads it).
        end_step: the last step at which SET/RigL update the masks.
        update_count: the number of mask updates so far.
        dropped: the weights replaced by the last update.
        regrown_judged, regrown_pruned: the weights regrown by the previous
            update that the last update judged, and those it pruned again.
        total_regrown_judged, total_regrown_pruned: the same, over all
            the updates.
    """

    #: `(attribute, weight name)` in creation order (the order in which
    #: `.keras` files store them).
    NAMES = (
        ("epoch", "epoch"),
        ("end_step", "end_step"),
        ("update_count", "updates"),
        ("dropped", "dropped"),
        ("regrown_judged", "regrown_judged"),
        ("regrown_pruned", "regrown_pruned"),
        ("total_regrown_judged", "total_regrown_judged"),
        ("total_regrown_pruned", "total_regrown_pruned"),
    )

    def __init__(self, add_weight, end_step=None):
        for attr, name in self.NAMES:
            dtype = "int32" if attr == "epoch" else "int64"
            init = "zeros"
            if attr == "end_step":
                init = keras.initializers.Constant(end_step or 0)
            setattr(
                self,
                attr,
                add_weight(
                    shape=(),
                    dtype=dtype,
                    initializer=init,
                    trainable=False,
                    name=name,
                ),
            )

    def items(self):
        """`(attribute, variable)` pairs in creation order."""
        return [(attr, getattr(self, attr)) for attr, _ in self.NAMES]


def check_dense_layers(dense_layers):
    """`SparseTraining`'s `dense_layers` checked (TypeError for a wrong
    type) and normalized (a tuple of names becomes a list)."""
    if dense_layers is None or dense_layers == "auto":
        return dense_layers
    if callable(dense_layers):
        return dense_layers
    args.check_names(dense_layers, "dense_layers")
    if isinstance(dense_layers, (list, tuple)):
        return list(dense_layers)
    return dense_layers


def dense_layers_config(dense_layers, resolved=None):
    """The `dense_layers` entry of the config.

    Args:
        dense_layers: the argument as given.
        resolved: `{name: reason}` of the layers kept dense once attached
            (`None` before): then the config stores these names.

    Raises:
        ValueError: for a predicate before the technique is attached.
    """
    if resolved is not None:
        return list(resolved)
    if callable(dense_layers):
        raise ValueError(
            "A callable `dense_layers` can be serialized only once the "
            "technique is attached to a Trainer (it is then saved as the "
            "list of names it selected). "
            f"Received: dense_layers={dense_layers!r}"
        )
    return dense_layers


def resolve_dense(spec, model, prunable):
    """`{layer name: reason}` of the prunable layers kept dense.

    Args:
        spec: `dense_layers` as given: `None`, `"auto"`, a predicate or a
            list of layer names.
        model: the compact model.
        prunable: `scan(model)`'s first output.

    Raises:
        ValueError: for names that are not prunable layers of `model`.
    """
    names = [layer.name for layer, _ in prunable]
    if spec is None:
        return {}
    if spec == "auto":
        return default_dense_layers(model)
    if callable(spec):
        return {
            layer.name: "dense_layers predicate"
            for layer, _ in prunable
            if spec(layer)
        }
    check_layer_names(
        "dense_layers",
        spec,
        names,
        f"prunable layers of model {model.name!r} ({names})",
    )
    return {n: "dense_layers" for n in spec}


def select_weights(model, dense_layers):
    """The weights of `model` to make sparse.

    Warns (once per call) about the layers that cannot be handled.

    Args:
        model: the compact model (built).
        dense_layers: the `dense_layers` argument of `SparseTraining`.

    Returns:
        `(entries, dense, skipped)`: `entries` a list of
        `(layer, label, variable)` in walk order, `dense` `{name: reason}`
        of the layers kept dense on purpose, `skipped` a list of
        `(name, class name, reason)` of the layers that cannot be handled.

    Raises:
        ValueError: for a model that is not built, unknown names in
            `dense_layers`, or no prunable weight left.
    """
    if not model.built:
        raise ValueError(
            "The model must be built before sparse training (call it on "
            "a batch or give it an Input). "
            f"Received: model={model.name!r} (not built)"
        )
    prunable, skipped = scan(model)
    skipped = [
        (layer.name, type(layer).__name__, reason) for layer, reason in skipped
    ]
    dense = resolve_dense(dense_layers, model, prunable)
    chosen = [(lay, pairs) for lay, pairs in prunable if lay.name not in dense]
    if not chosen:
        raise ValueError(
            "No prunable weight is left to make sparse in model "
            f"{model.name!r}. Received: dense_layers="
            f"{dense_layers!r}, skipped layers="
            f"{[s[0] for s in skipped]}"
        )
    if skipped:
        warnings.warn(
            "SparseTraining leaves these layers dense (see summary()): "
            + "; ".join(f"{n} ({r})" for n, _, r in skipped),
            stacklevel=3,
        )
    entries = [
        (layer, label, var) for layer, pairs in chosen for label, var in pairs
    ]
    return entries, dense, skipped


def initial_counts(distribution, shapes, sparsity):
    """Non-zeros of every sparse weight at the start: the budget's split.

    Args:
        distribution: `"uniform"` or `"erk"`.
        shapes: the shapes of the sparse weights.
        sparsity: the fraction of zeros over all of them.

    Returns:
        A list of ints, one per shape.
    """
    dens = distributions.densities(distribution, shapes, sparsity)
    total = None
    if distribution == "erk":
        size = sum(int(np.prod(s)) for s in shapes)
        total = max(len(shapes), round((1.0 - sparsity) * size))
    return distributions.nonzero_counts(shapes, dens, total=total)


def create_masks(add_weight, entries, counts, seed, track_regrowth):
    """Creates the masks, draws the initial ones and zeroes the kernels.

    Args:
        add_weight: the technique's `add_weight`.
        entries: `(layer, label, variable)` of every sparse weight.
        counts: the initial non-zeros of each (`initial_counts`).
        seed: the int seed of the random initial masks (the mask of weight
            `i` is drawn with `numpy.random.default_rng([seed, i])`).
        track_regrowth: whether to create the `regrown` variables (the
            policies that grow weights: all but static and gradual pruning).

    Returns:
        A list of `SparseWeight`.
    """
    multi = {}
    for layer, _, _ in entries:
        multi[layer.name] = multi.get(layer.name, 0) + 1
    weights = []
    for i, ((layer, label, var), n) in enumerate(zip(entries, counts)):
        key = layer.name if multi[layer.name] == 1 else f"{layer.name}.{label}"
        mask = add_weight(
            shape=tuple(var.shape),
            dtype=var.dtype,
            initializer="ones",
            trainable=False,
            name=f"{layer.name}_{label}_mask".replace("/", "_"),
        )
        rng = np.random.default_rng([seed, i])
        flat = np.zeros(int(np.prod(var.shape)), dtype=var.dtype)
        flat[rng.choice(flat.size, size=n, replace=False)] = 1
        mask.assign(flat.reshape(var.shape))
        var.assign(var * mask)
        weights.append(SparseWeight(layer, label, var, mask, key))
    if track_regrowth:
        for w in weights:
            w.regrown = add_weight(
                shape=tuple(w.variable.shape),
                dtype=w.mask.dtype,
                initializer="zeros",
                trainable=False,
                name=f"{w.layer.name}_{w.label}_regrown".replace("/", "_"),
            )
    return weights


def create_state(add_weight, entries, policy, distribution, sparsity, seed):
    """Splits the budget, then creates the masks and the counters.

    Args:
        add_weight: the technique's `add_weight`.
        entries: `(layer, label, variable)` of every sparse weight.
        policy: the `SparsePolicy` (its budget is checked before any mask
            is made, so that a failed check leaves the model untouched).
        distribution: `"uniform"` or `"erk"`.
        sparsity: the fraction of zeros over the sparse weights.
        seed: the int seed of the random initial masks.

    Returns:
        `(weights, counters, budget)`: the `SparseWeight`s, the
        `SparseCounters` and the total number of non-zeros.
    """
    shapes = [tuple(v.shape) for _, _, v in entries]
    counts = initial_counts(distribution, shapes, sparsity)
    budget = int(sum(counts))
    policy.check_budget(budget)
    # A dense-to-sparse policy starts with every weight active and prunes
    # down to `counts` (each weight's `target`); nothing is regrown.
    start = [int(np.prod(s)) for s in shapes] if policy.starts_dense else counts
    grows = not (policy.is_static or policy.starts_dense)
    weights = create_masks(add_weight, entries, start, seed, grows)
    for w, n in zip(weights, counts):
        w.target = int(n)
    end = getattr(policy, "end_step", None)
    return weights, SparseCounters(add_weight, end), budget


def _pairs_or_empty(layer):
    try:
        return prunable_weights(layer)
    except UnsupportedLayer:
        return []


def check_trainable(weights, trainable_variables):
    """Raises ValueError if a sparse weight is frozen or was replaced.

    Args:
        weights: the `SparseWeight`s.
        trainable_variables: the trainer's trainable variables.
    """
    trainable = {id(v) for v in trainable_variables}
    frozen = [w.key for w in weights if id(w.variable) not in trainable]
    if frozen:
        raise ValueError(
            "These sparse weights are not trainable, so their masks "
            "could not be trained: unfreeze them or list their layers "
            f"in `dense_layers`. Received: frozen sparse weights={frozen}"
        )
    for w in weights:
        current = dict(_pairs_or_empty(w.layer)).get(w.label)
        if current is not None and current is not w.variable:
            raise ValueError(
                f"The weight {w.key!r} was replaced after SparseTraining "
                "was attached (was the layer rebuilt?). Create the "
                "Trainer after the model is final."
            )
