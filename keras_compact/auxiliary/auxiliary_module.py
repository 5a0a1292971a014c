"""`AuxiliaryModule`: auxiliary over-parameterisation as a `Technique`."""

import keras
import numpy as np

from keras_compact.api_export import keras_compact_export
from keras_compact.auxiliary import structure as structure_lib
from keras_compact.auxiliary.booster import AuxiliaryBooster
from keras_compact.graph.taps import find_taps
from keras_compact.graph.walk import ModelGraph
from keras_compact.training.technique import Technique

_EXTRAS_KEY = "auxiliary_taps"


class _Private:
    """Training plumbing kept out of the technique's saved state.

    A plain object on purpose, so that Keras does not track what it holds:
    the tap model (it shares the compact model's layers, which are saved
    once, with the model), the held-out iterator and the architecture
    optimizer of the search (the architecture logits are saved, as a
    weight of each booster).
    """

    def __init__(self):
        self.tap_model = None
        self.output_template = None
        self.iterator = None
        self.optimizer = None


@keras_compact_export
class AuxiliaryModule(Technique):
    """Trains a compact model with a hierarchical auxiliary branch.

    During training the compact network is over-parameterised by an
    auxiliary module that reads its intermediate feature maps (taps): an
    adaptor `BN(Conv1x1)` per tap, a hierarchical "booster" stream that
    aggregates the taps stage by stage, and an auxiliary head (global pool +
    Dense) per task head (see `AuxiliaryBooster`). The loss becomes
    `L_main + lambda_aux * L_aux` (+ optionally
    `lambda_mut * T**2 * [KL(sg(p_aux) || p_main) + KL(sg(p_main) || p_aux)]`,
    symmetric mutual learning with stop-gradients), each term tracked as a
    metric (`task_loss`, `aux_loss`, `mutual_loss`). Every compact block gets
    extra gradient through its adaptor; at inference the module is dropped:
    `strip` returns the user's model untouched.

    Connections:

    - `"all"` (default, zero cost): tap `j` feeds booster node `j`, the
      released auxiliary-module design.
    - `"search"`: every candidate edge tap `i -> node j` (`i <= j`, same or
      previous resolution stage) is used, weighted by softmax(beta_j) over
      the node's candidates. `fit` alternates first-order DARTS steps: the
      network weights on the training batch (the compiled optimizer), then
      the architecture logits beta on a batch of `search_data` (a held-out
      split of the training data) with Adam(`arch_learning_rate`), on the
      auxiliary loss (the only loss beta changes to first order). Afterwards
      `fixed()` returns a new technique with the top-k edges per node; or
      use `search_connections(...)`, which does both.
    - a fixed structure: a dict mapping each head name to a dict mapping
      each node's tap name to the list of tap names feeding it (the format
      of `structure`), as saved in the config. A plain dict of node -> list
      is accepted for single-head models.

    Multi-output models (hard parameter sharing) get one booster per head;
    the auxiliary loss is the compiled loss (with its loss weights) applied
    to the auxiliary predictions of all heads.

    Args:
        taps: `"auto"` (default; `keras_compact.graph.taps.find_taps`: stem,
            residual block outputs, stage boundaries, trunk end), a list of
            layer names, or a dict mapping head names to lists of layer
            names.
        connections: `"all"`, `"search"`, or a fixed structure (above).
        top_k: edges kept per node by `fixed()`, an int >= 1. Defaults to 1.
        aux_width_mult: adaptor width multiplier (> 0). Defaults to 1.0.
        lambda_aux: weight of the auxiliary loss (>= 0). Defaults to 1.0.
        lambda_mut: weight of the mutual-learning term (>= 0). Defaults to 0.
        temperature: softmax temperature of mutual learning (> 0). Defaults
            to 1.0.
        arch_learning_rate: Adam learning rate of the architecture logits
            (> 0). Defaults to 3e-4.
        search_data: search mode only: a `tf.data.Dataset` of `(x, y)`
            batches held out from the training data (repeated as needed).
            Not saved in the config.
        seed: optional int seed of the module's initializers.
        **kwargs: layer arguments such as `name`.

    Raises:
        ValueError: for an out-of-range argument (naming it and the value),
            an unknown tap layer or head, or (at attach time) a model whose
            heads are not per-example vectors.
        TypeError: for arguments of the wrong type.

    Example:

    ```python
    trainer = keras_compact.Trainer(
        model, techniques=[keras_compact.auxiliary.AuxiliaryModule()]
    )
    trainer.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer.fit(train_ds, epochs=10)
    deployable = trainer.strip()  # the user's model, unchanged
    ```

    Reference:
        Liu, Zhuang, Shen, Chen, Yin. "Training Compact Neural Networks via
        Auxiliary Overparameterization" (searched hierarchical auxiliary
        structure), arXiv:1909.02214, 2019.
        Zhuang, Liu, Tan, Shen, Reid. "Training Quantized
        Neural Networks with a Full-precision Auxiliary Module",
        CVPR 2020 (the released auxiliary-module design followed here).
    """

    # The taps come out of the same forward pass when this technique owns
    # it; when another technique (e.g. NetAug) does, `loss_terms` taps the
    # compact model's graph itself (one extra trunk pass).
    forward_optional = True

    def __init__(
        self,
        taps="auto",
        connections="all",
        top_k=1,
        aux_width_mult=1.0,
        lambda_aux=1.0,
        lambda_mut=0.0,
        temperature=1.0,
        arch_learning_rate=3e-4,
        search_data=None,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "auxiliary")
        super().__init__(**kwargs)
        if not (taps == "auto" or isinstance(taps, (list, tuple, dict))):
            raise TypeError(
                "Expected `taps` to be 'auto', a list of layer names or a "
                f"dict of head name -> list. Received: taps={taps!r}"
            )
        if isinstance(connections, str):
            if connections not in ("all", "search"):
                raise ValueError(
                    "Expected `connections` to be 'all', 'search' or a "
                    f"structure dict. Received: connections={connections!r}"
                )
        elif not isinstance(connections, dict):
            raise TypeError(
                "Expected `connections` to be 'all', 'search' or a "
                f"structure dict. Received: connections={connections!r}"
            )
        if (
            not isinstance(top_k, (int, np.integer))
            or isinstance(top_k, bool)
            or top_k < 1
        ):
            raise ValueError(
                f"Expected `top_k` to be an int >= 1. Received: top_k={top_k!r}"
            )
        _check_number("aux_width_mult", aux_width_mult, strict=True)
        _check_number("lambda_aux", lambda_aux, strict=False)
        _check_number("lambda_mut", lambda_mut, strict=False)
        _check_number("temperature", temperature, strict=True)
        _check_number("arch_learning_rate", arch_learning_rate, strict=True)
        if seed is not None and (
            not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
        ):
            raise TypeError(f"Expected `seed` to be an int. Received: {seed=}")
        self.taps = taps if taps == "auto" else _copy(taps)
        self.connections = _copy(connections)
        self.top_k = int(top_k)
        self.aux_width_mult = float(aux_width_mult)
        self.lambda_aux = float(lambda_aux)
        self.lambda_mut = float(lambda_mut)
        self.temperature = float(temperature)
        self.arch_learning_rate = float(arch_learning_rate)
        self.search_data = search_data
        self.seed = None if seed is None else int(seed)
        self.term_names = ("aux_loss",) + (
            ("mutual_loss",) if self.lambda_mut > 0 else ()
        )
        self._private = _Private()
        self._attached = False
        if self.searching:
            # The held-out step draws from a tf.data iterator: keep XLA off.
            self.supports_jit = False

    @property
    def searching(self):
        """Whether this technique searches the connections."""
        return self.connections == "search"

    # ------------------------------------------------------------------
    # Technique hooks
    # ------------------------------------------------------------------
    def attach(self, trainer):
        if self._attached:
            raise ValueError(
                f"Technique {self.name!r} is already attached to a trainer; "
                "create a new instance (e.g. `fixed()`) for another one."
            )
        model = trainer.compact_model
        graph = ModelGraph(model)
        taps = find_taps(model, None if self.taps == "auto" else self.taps)
        self.heads = list(taps)
        self.tap_lists = {h: [t.name for t in ts] for h, ts in taps.items()}
        connections = self._resolve_connections(taps)
        unique, index = [], {}
        for ts in taps.values():
            for t in ts:
                if id(t.tensor) not in index:
                    index[id(t.tensor)] = len(unique)
                    unique.append(t.tensor)
        self._tap_index = [
            [index[id(t.tensor)] for t in ts] for ts in taps.values()
        ]
        self._private.tap_model = keras.Model(
            model.input,
            {"main": model.output, "taps": unique},
            name=f"{model.name}_with_taps",
        )
        self._private.output_template = model.output
        boosters, self._head_from_logits = [], []
        for k, (head, out) in enumerate(zip(self.heads, graph.outputs)):
            if len(out.shape) != 2 or out.shape[-1] is None:
                raise ValueError(
                    f"The auxiliary module needs per-example vector outputs "
                    f"(batch, units); head {head!r} outputs {out.shape}. "
                    "Dense-prediction heads are not supported."
                )
            activation = _head_activation(graph, out)
            self._head_from_logits.append(activation in (None, "linear"))
            if self.lambda_mut > 0 and activation not in (
                None,
                "linear",
                "softmax",
            ):
                raise ValueError(
                    "Mutual learning needs logits or softmax outputs; head "
                    f"{head!r} uses activation={activation!r}. Received: "
                    f"lambda_mut={self.lambda_mut}"
                )
            ts = taps[head]
            booster = AuxiliaryBooster(
                tap_shapes=[t.shape for t in ts],
                tap_stages=[t.stage for t in ts],
                units=out.shape[-1],
                connections=connections[head],
                width_mult=self.aux_width_mult,
                activation=None if activation == "linear" else activation,
                seed=None if self.seed is None else self.seed + k,
                name=f"{self.name}_booster_{k}",
            )
            booster.build()
            boosters.append(booster)
        self.boosters = boosters
        self._tap_shapes = {h: [t.shape for t in ts] for h, ts in taps.items()}
        self._attached = True

    def validate(self, trainer):
        if not self.searching:
            return
        data = self.search_data
        if data is None:
            raise ValueError(
                "connections='search' needs `search_data`: a tf.data.Dataset "
                "of (x, y) batches held out from the training data. "
                "Received: search_data=None"
            )
        import tensorflow as tf

        if isinstance(data, (tuple, list)) and len(data) in (2, 3):
            data = tf.data.Dataset.from_tensor_slices(tuple(data)).batch(32)
        if not isinstance(data, tf.data.Dataset):
            raise TypeError(
                "Expected `search_data` to be a tf.data.Dataset of batches "
                f"or an (x, y) tuple of arrays. Received: {type(data)}"
            )
        if self._private.iterator is None:
            self._private.iterator = iter(data.repeat())
        if self._private.optimizer is None:
            opt = keras.optimizers.Adam(self.arch_learning_rate)
            opt.build(self._arch_variables())
            self._private.optimizer = opt

    def forward(self, trainer, x):
        out = self._private.tap_model(x, training=True)
        return out["main"], {_EXTRAS_KEY: out["taps"]}

    def loss_terms(self, trainer, x, y, y_pred, sample_weight):
        extras = trainer.extras
        if isinstance(extras, dict) and _EXTRAS_KEY in extras:
            taps = extras[_EXTRAS_KEY]
        else:
            # Another technique owns the forward pass: tap the graph again.
            taps = self._private.tap_model(x, training=True)["taps"]
        aux_pred = self._aux_predictions(taps)
        terms = {
            "aux_loss": keras.ops.multiply(
                self.lambda_aux,
                trainer.task_loss(y, aux_pred, sample_weight),
            )
        }
        if self.lambda_mut > 0:
            terms["mutual_loss"] = keras.ops.multiply(
                self.lambda_mut, self._mutual(y_pred, aux_pred)
            )
        return terms

    def after_step(self, trainer):
        if not self.searching:
            return
        if self._private.iterator is None:
            raise ValueError(
                "The search needs `fit` (which prepares `search_data`)."
            )
        import tensorflow as tf

        batch = next(self._private.iterator)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        variables = self._arch_variables()
        sources = [getattr(v, "value", v) for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            out = self._private.tap_model(x, training=True)
            aux_pred = self._aux_predictions(out["taps"])
            loss = trainer.task_loss(y, aux_pred, sample_weight)
            if self.lambda_mut > 0:
                loss = loss + self.lambda_mut * self._mutual(
                    out["main"], aux_pred
                )
        grads = tape.gradient(loss, sources)
        self._private.optimizer.apply_gradients(zip(grads, variables))

    def strip(self, trainer, model):
        return model

    # ------------------------------------------------------------------
    # Structure
    # ------------------------------------------------------------------
    def _resolve_connections(self, taps):
        if self.connections == "all":
            return {
                h: structure_lib.chain_structure(len(ts))
                for h, ts in taps.items()
            }
        if self.connections == "search":
            return {h: "search" for h in taps}
        conn = self.connections
        if not all(h in taps for h in conn) and len(taps) == 1:
            conn = {next(iter(taps)): conn}
        unknown = sorted(set(conn) - set(taps))
        if unknown:
            raise ValueError(
                f"Unknown head(s) {unknown} in `connections`. Heads: "
                f"{list(taps)}. Received: connections={self.connections!r}"
            )
        out = {}
        for head, ts in taps.items():
            names = [t.name for t in ts]
            spec = conn.get(head)
            if spec is None:
                out[head] = structure_lib.chain_structure(len(ts))
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
            out[head] = structure_lib.validate_structure(
                [[names.index(s) for s in spec.get(n, [])] for n in names],
                len(names),
            )
        return out

    def _arch_variables(self):
        return [b.arch_logits for b in self.boosters if b.search]

    @property
    def structure(self):
        """The connections as saved: head -> {node tap: [input taps]}.

        In search mode, the current top-`top_k` choice.
        """
        self._require_attached("structure")
        out = {}
        for head, booster in zip(self.heads, self.boosters):
            names = self.tap_lists[head]
            conn = (
                self._top_k(booster) if booster.search else booster.connections
            )
            out[head] = {
                names[j]: [names[i] for i in srcs]
                for j, srcs in enumerate(conn)
            }
        return out

    def _top_k(self, booster, k=None):
        logits = [
            keras.ops.convert_to_numpy(booster.arch_logits[a:b])
            for a, b in booster._segments
        ]
        return structure_lib.top_k_structure(
            booster.candidates, logits, k or self.top_k
        )

    def describe(self):
        """A readable description of the booster structure of every head."""
        self._require_attached("describe")
        blocks = []
        for head, booster in zip(self.heads, self.boosters):
            probs = None
            if booster.search:
                conn = self._top_k(booster)
                probs = []
                for cand, w in zip(booster.candidates, booster.edge_weights()):
                    w = keras.ops.convert_to_numpy(w)
                    probs.append({i: float(p) for i, p in zip(cand, w)})
            else:
                conn = booster.connections
            text = structure_lib.format_structure(
                head, self.tap_lists[head], self._tap_shapes[head], conn, probs
            )
            mode = (
                f"searching, top-{self.top_k} shown"
                if booster.search
                else "fixed"
            )
            blocks.append(f"{text}\n  ({mode})")
        return "\n".join(blocks)

    def summary(self):
        """Prints `describe()`."""
        print(self.describe())

    def fixed(self, top_k=None):
        """A new technique with the searched (top-k) structure, not attached.

        Args:
            top_k: edges kept per node (default: this technique's `top_k`).

        Returns:
            An `AuxiliaryModule` with `connections` set to the structure and
            the same taps and hyper-parameters.
        """
        self._require_attached("fixed")
        if top_k is not None:
            structure_lib.top_k_structure([[0]], [[0.0]], top_k)
        structure = {}
        for head, booster in zip(self.heads, self.boosters):
            names = self.tap_lists[head]
            conn = (
                self._top_k(booster, top_k)
                if booster.search
                else booster.connections
            )
            structure[head] = {
                names[j]: [names[i] for i in srcs]
                for j, srcs in enumerate(conn)
            }
        config = self.get_config()
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        config.update(connections=structure, search_data=None)
        if top_k is not None:
            config["top_k"] = int(top_k)
        return AuxiliaryModule(**config)

    def _require_attached(self, what):
        if not self._attached:
            raise ValueError(
                f"`{what}` needs the technique attached to a trainer: "
                "`keras_compact.Trainer(model, techniques=[module])`."
            )

    # ------------------------------------------------------------------
    # Losses
    # ------------------------------------------------------------------
    def _aux_predictions(self, taps):
        preds = [
            booster([taps[i] for i in idx], training=True)
            for booster, idx in zip(self.boosters, self._tap_index)
        ]
        return keras.tree.pack_sequence_as(self._private.output_template, preds)

    def _mutual(self, y_pred, aux_pred):
        total = 0.0
        t = self.temperature
        for main, aux, logits in zip(
            keras.tree.flatten(y_pred),
            keras.tree.flatten(aux_pred),
            self._head_from_logits,
        ):
            if not logits:
                main = keras.ops.log(keras.ops.clip(main, 1e-7, 1.0))
                aux = keras.ops.log(keras.ops.clip(aux, 1e-7, 1.0))
            log_main = keras.ops.log_softmax(main / t, axis=-1)
            log_aux = keras.ops.log_softmax(aux / t, axis=-1)
            total = total + (
                _kl(keras.ops.stop_gradient(log_aux), log_main)
                + _kl(keras.ops.stop_gradient(log_main), log_aux)
            ) * (t * t)
        return total

    # ------------------------------------------------------------------
    # Serialization
    # ------------------------------------------------------------------
    def get_config(self):
        taps = self.taps
        connections = self.connections
        if self._attached:
            taps = {h: list(n) for h, n in self.tap_lists.items()}
            if not self.searching:
                connections = self.structure
        return {
            **super().get_config(),
            "taps": taps,
            "connections": connections,
            "top_k": self.top_k,
            "aux_width_mult": self.aux_width_mult,
            "lambda_aux": self.lambda_aux,
            "lambda_mut": self.lambda_mut,
            "temperature": self.temperature,
            "arch_learning_rate": self.arch_learning_rate,
            "seed": self.seed,
        }


def _kl(log_p, log_q):
    """Mean over the batch of KL(p || q) from log-probabilities."""
    return keras.ops.mean(
        keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), axis=-1)
    )


def _check_number(name, value, strict):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"Expected `{name}` to be a number. Received: {name}={value!r}"
        ) from None
    ok = v > 0 if strict else v >= 0
    if not ok or not np.isfinite(v):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(
            f"Expected `{name}` to be a finite number {bound}. "
            f"Received: {name}={value!r}"
        )


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _head_activation(graph, out):
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
