"""The heads of the auxiliary module: one booster per model output.

- `AuxiliaryHeads`: a compact model's taps, its tap model and one booster
  per output, with the predictions and the mutual term.
- `distinct_taps`: the tap tensors shared by the heads, each once.
- `tap_model`: the compact model with its taps as extra outputs.
- `build_boosters`: one built `AuxiliaryBooster` per output, shaped and
  activated like that output.
- `head_activation`: the activation of the layer producing an output.
"""

import keras

from keras_compact.auxiliary import losses
from keras_compact.auxiliary import structure as structure_lib
from keras_compact.auxiliary.booster import AuxiliaryBooster
from keras_compact.graph.taps import find_taps
from keras_compact.graph.walk import ModelGraph


class AuxiliaryHeads:
    """The training-only heads of a compact model.

    Finds the taps of every head (`find_taps`), builds the tap model (the
    compact model with its taps as extra outputs) and one booster per
    output, in the order of `model.outputs`: booster `k` reads head `k`'s
    taps and predicts the `k`-th output (same units and activation).

    Args:
        model: the compact model, functional.
        taps: `"auto"` or the layer names (`find_taps`).
        connections: `"all"`, `"search"` or a named structure
            (`structure.resolve_connections`).
        width_mult: the adaptor width multiplier.
        lambda_mut: the mutual-learning weight (> 0 needs logits or
            softmax outputs).
        temperature: the mutual-learning temperature.
        seed: optional int seed; head `k`'s booster takes `seed + k`.
        name: the prefix of the boosters' names.

    Attributes:
        names: the head names (the layers producing the outputs).
        tap_lists: a dict mapping each head name to its tap names.
        tap_shapes: a dict mapping each head name to its taps' `(H, W, C)`.
        taps: the distinct tap tensors of the model's graph.
        tap_model: the compact model returning `{"main", "taps"}`.
        boosters: one built `AuxiliaryBooster` per head.
    """

    def __init__(
        self,
        model,
        taps,
        connections,
        width_mult,
        lambda_mut,
        temperature,
        seed,
        name,
    ):
        graph = ModelGraph(model)
        found = find_taps(model, None if taps == "auto" else taps)
        self.names = list(found)
        self.tap_lists = {h: [t.name for t in ts] for h, ts in found.items()}
        self.tap_shapes = {h: [t.shape for t in ts] for h, ts in found.items()}
        connections = structure_lib.resolve_connections(
            connections, self.tap_lists
        )
        self.taps, self.tap_index = distinct_taps(found)
        self.tap_model = tap_model(model, self.taps)
        self.output_template = model.output
        self.boosters, self.from_logits = build_boosters(
            graph, found, connections, width_mult, lambda_mut, seed, name
        )
        self.temperature = temperature

    def predict(self, taps, training=False):
        """The auxiliary predictions, structured like the model's outputs.

        Args:
            taps: the tap tensors (`taps` of the tap model), or the tensors
                a technique declared, `{"tap_0": ..., "tap_1": ...}`.
            training: whether the boosters run in training mode.
        """
        if isinstance(taps, dict):
            taps = [taps[f"tap_{i}"] for i in range(len(self.taps))]
        return losses.auxiliary_predictions(
            self.boosters,
            self.tap_index,
            taps,
            self.output_template,
            training,
        )

    def outputs(self, x, training=False):
        """The auxiliary predictions for inputs `x` (the compact model and
        the boosters in training mode when `training`)."""
        taps = self.tap_model(x, training=training)["taps"]
        return self.predict(taps, training=training)

    def arch_logits(self):
        """The architecture logits of the searching boosters."""
        return [b.arch_logits for b in self.boosters if b.search]

    def search_step(self, trainer, batch, key, optimizer, lambda_mut):
        """One architecture step of the search on a held-out batch
        (`losses.architecture_step`).

        Args:
            trainer: the `Trainer`.
            batch: the held-out batch (`None` raises a ValueError).
            key: the key of the taps in the forward pass's tensors (the
                technique's name).
            optimizer: the logits' (built) optimizer.
            lambda_mut: the weight of the mutual term in the search loss.
        """
        if batch is None or optimizer is None:
            raise ValueError(
                "The search takes its held-out batch from `fit` (which zips "
                "`search_data` with the training data). Received: no "
                f"held-out batch for technique {key!r}"
            )
        losses.architecture_step(
            trainer,
            batch,
            lambda tensors: self.predict(tensors[key], training=True),
            self.arch_logits(),
            optimizer,
            lambda_mut,
            self.mutual,
        )

    def mutual(self, y_pred, aux_pred):
        """The mutual term of the outputs and their auxiliary predictions."""
        return losses.mutual_loss(
            y_pred, aux_pred, self.from_logits, self.temperature
        )


def distinct_taps(taps):
    """The distinct tap tensors of all heads, and where each head's are.

    Args:
        taps: a dict mapping each head name to its `Tap`s (`find_taps`).

    Returns:
        A tuple `(tensors, index)`: the distinct tap tensors, in order of
        first use, and per head the indices in `tensors` of its taps.
    """
    unique, index = [], {}
    for ts in taps.values():
        for t in ts:
            if id(t.tensor) not in index:
                index[id(t.tensor)] = len(unique)
                unique.append(t.tensor)
    return unique, [[index[id(t.tensor)] for t in ts] for ts in taps.values()]


def tap_model(model, taps):
    """A model of `model.input` returning `{"main": model.output, "taps":
    taps}`: the compact model's layers, its outputs and its tap tensors."""
    return keras.Model(
        model.input,
        {"main": model.output, "taps": taps},
        name=f"{model.name}_with_taps",
    )


def build_boosters(
    graph, taps, connections, width_mult, lambda_mut, seed, name
):
    """One built booster per head, in the order of the model's outputs.

    Booster `k` reads the taps of head `k` and predicts the `k`-th output
    of `graph.outputs` (`model.outputs`, the flattened outputs): same
    units and activation (logits, softmax, ...).

    Args:
        graph: the compact model's `ModelGraph`.
        taps: a dict mapping each head name to its `Tap`s, in output order.
        connections: a dict mapping each head name to its structure or
            `"search"` (`structure.resolve_connections`).
        width_mult: the adaptor width multiplier.
        lambda_mut: the mutual-learning weight (> 0 needs logits or
            softmax outputs).
        seed: optional int seed; head `k`'s booster takes `seed + k`.
        name: the technique's name, prefix of the boosters' names.

    Returns:
        A tuple `(boosters, from_logits)`: the boosters, and per head
        whether its output holds logits.

    Raises:
        ValueError: if an output is not a per-example vector, or if
            `lambda_mut > 0` and an output is neither logits nor softmax.
    """
    boosters, from_logits = [], []
    for k, (head, out) in enumerate(zip(taps, graph.outputs)):
        if len(out.shape) != 2 or out.shape[-1] is None:
            raise ValueError(
                f"The auxiliary module needs per-example vector outputs "
                f"(batch, units); head {head!r} outputs {out.shape}. "
                "Dense-prediction heads are not supported."
            )
        activation = head_activation(graph, out)
        from_logits.append(activation in (None, "linear"))
        if lambda_mut > 0 and activation not in (None, "linear", "softmax"):
            raise ValueError(
                "Mutual learning needs logits or softmax outputs; head "
                f"{head!r} uses activation={activation!r}. Received: "
                f"lambda_mut={lambda_mut}"
            )
        ts = taps[head]
        booster = AuxiliaryBooster(
            tap_shapes=[t.shape for t in ts],
            tap_stages=[t.stage for t in ts],
            units=out.shape[-1],
            connections=connections[head],
            width_mult=width_mult,
            activation=None if activation == "linear" else activation,
            seed=None if seed is None else seed + k,
            name=f"{name}_booster_{k}",
        )
        booster.build()
        boosters.append(booster)
    return boosters, from_logits


def head_activation(graph, out):
    """The activation name of the layer producing a head, or None."""
    op = graph.producer(out).operation
    if isinstance(op, keras.layers.Softmax):
        return "softmax"
    act = getattr(op, "activation", None)
    if act is None:
        return None
    if isinstance(op, (keras.layers.Dense, keras.layers.Activation)):
        name = keras.activations.serialize(act)
        if isinstance(name, dict):
            name = name.get("config", name.get("class_name"))
        return None if name == "linear" else name
    return None
