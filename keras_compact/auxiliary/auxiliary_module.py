"""`AuxiliaryModule`: auxiliary over-parameterisation as a `Technique`."""

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.auxiliary import selection
from keras_compact.auxiliary.heads import AuxiliaryHeads
from keras_compact.auxiliary.report import build_report
from keras_compact.graph.walk import require_call_graph
from keras_compact.training import arguments as args
from keras_compact.training.technique import Technique
from keras_compact.training.untracked import Untracked

# The step counter of the search: a non-trainable int64 scalar.
_COUNTER = dict(shape=(), dtype="int64", trainable=False)


@keras_compact_export
class AuxiliaryModule(Technique):
    """Trains a compact model with a hierarchical auxiliary branch.

    During training, an adaptor `BN(Conv1x1)` per intermediate feature map
    (tap), a hierarchical "booster" stream aggregating them stage by stage
    and an auxiliary head per task head (`AuxiliaryBooster`) give every
    compact block extra gradient. The loss becomes `L_main + lambda_aux *
    L_aux` (+ `lambda_mut` times the symmetric mutual learning `T**2 *
    [KL(sg(p_aux) || p_main) + KL(sg(p_main) || p_aux)]`), each term a
    metric (`task_loss`, `aux_loss`, `mutual_loss`). `strip` returns the
    user's model untouched.

    Connections: `"all"` (default, zero cost: tap `j` feeds booster node
    `j`); `"search"` (`fit` alternates first-order DARTS steps of the
    weights and of gate logits on extra edges, on `search_data`; then
    `fixed()`; see `search_connections`); or a fixed structure, head name
    -> {node tap: [input taps]} (the format of `structure`; for one head,
    the inner dict alone).

    Multi-output models (list or dict of outputs): booster `k` predicts the
    `k`-th output of `model.outputs`, scored against that output's target
    by the compiled loss (its per-output losses and loss weights); the
    mutual term pairs each output with its own auxiliary prediction.
    Measured: `benchmarks/results/auxiliary_cifar10.md`.

    Args:
        taps: `"auto"` (default; `keras_compact.graph.taps.find_taps`), a
            list of layer names, or a dict of head name -> list of names.
        connections: `"all"`, `"search"`, or a fixed structure (above).
        top_k: extra edges kept per node by `fixed()` (int >= 1, default 1).
        aux_width_mult: adaptor width multiplier (> 0). Defaults to 1.0.
        lambda_aux: weight of the auxiliary loss (>= 0). Defaults to 1.0.
        lambda_mut: weight of the mutual-learning term (>= 0). Defaults to 0.
        temperature: mutual-learning temperature (> 0). Defaults to 1.0.
        arch_learning_rate: Adam learning rate of the gate logits (> 0).
            Defaults to 1e-2 (over 200 steps a logit can move by 2).
        min_separation: an edge is decided when its logit exceeds
            `max(min_separation * arch_learning_rate * sqrt(steps),
            min_logit)`, beyond Adam's random walk on random-sign gradients
            (`structure.noise_level`). >= 0, defaults to 3.0.
        min_logit: the smallest margin on `|beta|` (>= 0). Defaults to 0.5
            (a gate outside [0.38, 0.62]).
        search_data: search mode only: a `tf.data.Dataset` of `(x, y)`
            batches held out from the training data. Not saved.
        seed: optional int seed of the module's initializers.
        **kwargs: layer arguments such as `name`.

    Raises:
        ValueError: for an out-of-range argument, an unknown tap layer or
            head, or (at attach) heads that are not per-example vectors.
        TypeError: for arguments of the wrong type, or (at attach) a
            subclassed model (no call graph to tap).

    Example:

    ```python
    aux = keras_compact.auxiliary.AuxiliaryModule()
    trainer = keras_compact.Trainer(model, techniques=[aux])
    trainer.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    trainer.fit(train_ds, epochs=10)
    deployable = trainer.strip()  # the user's model, unchanged
    ```

    Reference:
        Liu, Zhuang, Shen, Chen, Yin. "Training Compact Neural Networks via
        Auxiliary Overparameterization", arXiv:1909.02214, 2019. Zhuang,
        Liu, Tan, Shen, Reid. "Training Quantized Neural Networks with a
        Full-precision Auxiliary Module", CVPR 2020 (the design followed).
    """

    def __init__(
        self,
        taps="auto",
        connections="all",
        top_k=1,
        aux_width_mult=1.0,
        lambda_aux=1.0,
        lambda_mut=0.0,
        temperature=1.0,
        arch_learning_rate=1e-2,
        min_separation=3.0,
        min_logit=0.5,
        search_data=None,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "auxiliary")
        super().__init__(**kwargs)
        _check_taps_and_connections(taps, connections)
        positive = dict(low=0, low_open=True)
        self.top_k = args.check_int(top_k, "top_k", minimum=1)
        self.aux_width_mult = args.check_float(
            aux_width_mult, "aux_width_mult", **positive
        )
        self.lambda_aux = args.check_float(lambda_aux, "lambda_aux", low=0)
        self.lambda_mut = args.check_float(lambda_mut, "lambda_mut", low=0)
        self.temperature = args.check_float(
            temperature, "temperature", **positive
        )
        self.arch_learning_rate = args.check_float(
            arch_learning_rate, "arch_learning_rate", **positive
        )
        self.min_separation = args.check_float(
            min_separation, "min_separation", low=0
        )
        self.min_logit = args.check_float(min_logit, "min_logit", low=0)
        self.seed = args.check_seed(seed)
        self.taps = taps if taps == "auto" else _copy(taps)
        self.connections = _copy(connections)
        self.search_data = search_data
        self.term_names = ("aux_loss",) + (
            ("mutual_loss",) if self.lambda_mut > 0 else ()
        )
        # Not saved: the heads (taps, tap model; the boosters are saved),
        # the search's data, decisions and optimizer.
        self._private = Untracked(heads=None, decisions=None, optimizer=None)
        self._attached = False
        if self.searching:  # The architecture step: a forward pass, no XLA.
            self.extra_forward_passes = 1
            self.supports_jit = False

    @property
    def searching(self):
        """Whether this technique searches the connections."""
        return self.connections == "search"

    def attach(self, trainer):
        if self._attached:
            raise ValueError(
                f"Technique {self.name!r} is already attached to a trainer; "
                "create a new instance (e.g. `fixed()`) for another one."
            )
        model = require_call_graph(
            trainer.compact_model,
            "AuxiliaryModule",
            "find and tap its intermediate layers",
        )
        options = (self.aux_width_mult, self.lambda_mut, self.temperature)
        self._private.heads = heads = AuxiliaryHeads(
            model, self.taps, self.connections, *options, self.seed, self.name
        )
        self.heads, self.tap_lists = heads.names, heads.tap_lists
        self.boosters = heads.boosters
        steps = None
        if self.searching:  # Architecture steps: the logits' noise level.
            self.search_steps = steps = self.add_weight(
                name="search_steps", initializer="zeros", **_COUNTER
            )
        margins = (self.arch_learning_rate, self.min_separation, self.min_logit)
        self._private.decisions = selection.SearchDecisions(
            heads, steps, *margins, self.top_k
        )
        self._attached = True

    def tensors(self, trainer):
        # The taps come out of the trainer's training forward pass.
        return {f"tap_{i}": t for i, t in enumerate(self._private.heads.taps)}

    def validate(self, trainer):
        if not self.searching:
            return
        self._private.search_data = _search_dataset(self.search_data)
        if self._private.optimizer is None:
            opt = keras.optimizers.Adam(self.arch_learning_rate)
            opt.build(self._private.heads.arch_logits())
            self._private.optimizer = opt

    def held_out_data(self, trainer):
        # `fit` zips it with the training data: one held-out batch arrives
        # with each training batch (each epoch reads it from its start).
        return self._private.search_data if self.searching else None

    def loss_terms(self, ctx):
        heads = self._private.heads
        aux_pred = heads.predict(ctx.tensors[self.name], training=True)
        terms = {
            "aux_loss": keras.ops.multiply(
                self.lambda_aux,
                ctx.trainer.task_loss(ctx.y, aux_pred, ctx.sample_weight),
            )
        }
        if self.lambda_mut > 0:
            terms["mutual_loss"] = keras.ops.multiply(
                self.lambda_mut, heads.mutual(ctx.y_pred, aux_pred)
            )
        return terms

    def after_step(self, ctx):
        """The search's architecture step on the step's held-out batch."""
        if not self.searching:
            return
        batch, opt = ctx.held_out.get(self.name), self._private.optimizer
        self._private.heads.search_step(
            ctx.trainer, batch, self.name, opt, self.lambda_mut
        )
        self.search_steps.assign_add(1)

    def strip(self, trainer, model):
        return model

    def _report(self):
        self._require_attached("summary")
        return build_report(type(self).__name__, self._private.decisions)

    @property
    def structure(self):
        """The connections as saved: head -> {node tap: [input taps]} (in
        search mode, the structure `fixed()` would return now)."""
        self._require_attached("structure")
        return self._private.decisions.structures()

    def search_report(self, top_k=None, min_separation=None):
        """What the search decided, per head, and how clearly, at `top_k`
        and `min_separation` (defaults: this technique's): per head a dict
        of `steps`, `margin`, `decided` and `kept` edges, `fallback`, ...
        (`selection.SearchDecisions.report`). Needs `connections="search"`
        and the technique attached (ValueError otherwise)."""
        self._require_attached("search_report")
        if not self.searching:
            raise ValueError(
                "`search_report` needs connections='search'. Received: "
                f"connections={self.connections!r}"
            )
        return self._private.decisions.report(top_k, min_separation)

    def fixed(self, top_k=None, min_separation=None):
        """A new, unattached `AuxiliaryModule` with the searched structure:
        per node its own tap and at most `top_k` extra edges beyond the
        margin at `min_separation` (defaults: this technique's). Warns about
        undecided edges; `search_summary` holds `search_report()`."""
        self._require_attached("fixed")
        selection.check_overrides(top_k, min_separation)
        report = None
        if self.searching:
            report = self.search_report(top_k, min_separation)
            selection.warn_undecided(report, self.arch_learning_rate)
        config = selection.fixed_config(
            self.get_config(), self._private.decisions, top_k, min_separation
        )
        result = AuxiliaryModule(**config)
        result.search_summary = report
        return result

    def auxiliary_outputs(self, x, training=False):
        """The auxiliary heads' predictions for inputs `x`, structured like
        the compact model's outputs. `training=True` runs the model and the
        boosters in training mode (updating moving statistics)."""
        self._require_attached("auxiliary_outputs")
        return self._private.heads.outputs(x, training=training)

    def _require_attached(self, what):
        if not self._attached:
            raise ValueError(
                f"`{what}` needs the technique attached to a trainer: "
                "`keras_compact.Trainer(model, techniques=[module])`."
            )

    def get_config(self):
        taps, connections = self.taps, self.connections
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
            "min_separation": self.min_separation,
            "min_logit": self.min_logit,
            "seed": self.seed,
        }


def _check_taps_and_connections(taps, connections):
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


def _search_dataset(data):
    """`search_data` as a `tf.data.Dataset` of batches."""
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
    return data


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value
