"""`AuxiliaryModule`: auxiliary over-parameterisation as a `Technique`."""

import warnings

import keras
import numpy as np

from keras_compact.api_export import keras_compact_export
from keras_compact.auxiliary import structure as structure_lib
from keras_compact.auxiliary.booster import AuxiliaryBooster
from keras_compact.graph import outputs
from keras_compact.graph.taps import find_taps
from keras_compact.graph.walk import ModelGraph, as_functional
from keras_compact.training import arguments as args
from keras_compact.training import tensorflow_step
from keras_compact.training.report import TechniqueReport
from keras_compact.training.technique import Technique
from keras_compact.training.untracked import Untracked

_EXTRAS_KEY = "auxiliary_taps"


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
    - `"search"`: every node `j` keeps its own tap (weight 1), so every tap
      has an adaptor and every block gets auxiliary gradient; the search
      only chooses *extra* edges tap `i -> node j` (`i < j`, same or
      previous resolution stage), each gated by `sigmoid(beta_ij)`. `fit`
      alternates first-order DARTS steps: the network weights on the
      training batch (the compiled optimizer), then the architecture logits
      beta on a batch of `search_data` (a held-out split of the training
      data) with Adam(`arch_learning_rate`). Afterwards `fixed()` returns a
      new technique with the own taps plus, per node, at most `top_k` extra
      edges whose logits are separated from noise (below); or use
      `search_connections(...)`, which does both.
    - a fixed structure: a dict mapping each head name to a dict mapping
      each node's tap name to the list of tap names feeding it (the format
      of `structure`), as saved in the config. A plain dict of node -> list
      is accepted for single-head models.

    What the search optimises, and what it does not: the held-out step
    lowers, to first order, the *auxiliary* loss (plus the mutual term when
    `lambda_mut > 0`) of held-out batches with respect to the gates, the
    network weights held at their current values. It never measures the
    benefit to the compact network: the gates reach the compact network
    only through the auxiliary gradient it receives, a second-order effect
    that this search ignores. It selects edges that help the auxiliary head
    fit held-out data, not edges shown to improve the compact model; compare
    with `"all"` (the zero-cost default) on your task.

    Separation: an extra edge is kept only when its logit exceeds the
    margin `max(min_separation * arch_learning_rate * sqrt(steps),
    min_logit)`. The first term is noise: Adam moves a logit by about
    `arch_learning_rate` per step whatever the gradient's scale, so a
    gradient of random sign still moves it, by about
    `arch_learning_rate * sqrt(steps)` (less than twice that in 95% of
    cases, `structure.noise_level`). The second asks for a gate that moved
    visibly away from 0.5 while searching (outside [0.38, 0.62] at 0.5),
    i.e. that the relaxation actually weighted the candidates differently.
    Edges within the margin are undecided and left out, as in `"all"`.
    When no edge at all is decided (too few steps, too small a learning
    rate) the searched structure is connect-all. `fixed()` warns in both
    cases, and `search_report()` records the margin, the logits' spread
    and the fallback.

    The held-out step runs the compact model in training mode (batch
    statistics, like the weight step) inside a `keras.StatelessScope`, which
    discards every state update: it never writes the moving statistics of
    the compact model's BatchNormalization layers (nor the booster's).

    Multi-output models (hard parameter sharing) get one booster per head;
    the auxiliary loss is the compiled loss (with its loss weights) applied
    to the auxiliary predictions of all heads.

    Args:
        taps: `"auto"` (default; `keras_compact.graph.taps.find_taps`: stem,
            residual block outputs, stage boundaries, trunk end), a list of
            layer names, or a dict mapping head names to lists of layer
            names.
        connections: `"all"`, `"search"`, or a fixed structure (above).
        top_k: extra edges (besides the node's own tap) kept per node by
            `fixed()`, an int >= 1. Defaults to 1.
        aux_width_mult: adaptor width multiplier (> 0). Defaults to 1.0.
        lambda_aux: weight of the auxiliary loss (>= 0). Defaults to 1.0.
        lambda_mut: weight of the mutual-learning term (>= 0). Defaults to 0.
        temperature: softmax temperature of mutual learning (> 0). Defaults
            to 1.0.
        arch_learning_rate: Adam learning rate of the architecture logits
            (> 0). Defaults to 1e-2: over 200 steps a logit whose held-out
            gradient keeps its sign moves by up to about 2 (gate 0.12 or
            0.88), so the relaxation changes the booster while it is
            searched (at 3e-4 the gates stayed at 0.50).
        min_separation: the margin of an edge decision in units of the
            noise level `arch_learning_rate * sqrt(steps)` (>= 0). Defaults
            to 3.0 (a logit driven by a random-sign gradient exceeds it in
            under 1% of edges).
        min_logit: the smallest margin of an edge decision, on `|beta|`
            (>= 0). Defaults to 0.5 (gate outside [0.38, 0.62]).
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
        args.check_int(top_k, "top_k", minimum=1)
        args.check_float(aux_width_mult, "aux_width_mult", low=0, low_open=True)
        args.check_float(lambda_aux, "lambda_aux", low=0)
        args.check_float(lambda_mut, "lambda_mut", low=0)
        args.check_float(temperature, "temperature", low=0, low_open=True)
        args.check_float(
            arch_learning_rate, "arch_learning_rate", low=0, low_open=True
        )
        args.check_float(min_separation, "min_separation", low=0)
        args.check_float(min_logit, "min_logit", low=0)
        args.check_seed(seed)
        self.taps = taps if taps == "auto" else _copy(taps)
        self.connections = _copy(connections)
        self.top_k = int(top_k)
        self.aux_width_mult = float(aux_width_mult)
        self.lambda_aux = float(lambda_aux)
        self.lambda_mut = float(lambda_mut)
        self.temperature = float(temperature)
        self.arch_learning_rate = float(arch_learning_rate)
        self.min_separation = float(min_separation)
        self.min_logit = float(min_logit)
        self.search_data = search_data
        self.seed = None if seed is None else int(seed)
        self.term_names = ("aux_loss",) + (
            ("mutual_loss",) if self.lambda_mut > 0 else ()
        )
        # Training plumbing kept out of the technique's saved state: the
        # tap model (it shares the compact model's layers, saved with the
        # model), the held-out iterator and the architecture optimizer of
        # the search (the architecture logits are saved, in each booster).
        self._private = Untracked(
            tap_model=None, output_template=None, iterator=None, optimizer=None
        )
        self._attached = False
        if self.searching:
            # The architecture step runs the trunk on the held-out batch.
            self.extra_forward_passes = 1
            # Its nested gradient tape and stateless scope: keep XLA off.
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
        model = as_functional(trainer.compact_model)  # Sequential too
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
        self._private.taps = unique
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
        if self.searching:
            # Architecture steps taken: the noise level of the logits.
            self.search_steps = self.add_weight(
                shape=(),
                dtype="int64",
                initializer="zeros",
                trainable=False,
                name="search_steps",
            )
        self._attached = True

    def tensors(self, trainer):
        # The taps come out of the trainer's training forward pass.
        return {f"tap_{i}": t for i, t in enumerate(self._private.taps)}

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
        self._private.search_data = data
        if self._private.optimizer is None:
            opt = keras.optimizers.Adam(self.arch_learning_rate)
            opt.build(self._arch_variables())
            self._private.optimizer = opt

    def held_out_data(self, trainer):
        # `fit` zips it with the training data: one held-out batch arrives
        # with each training batch (each epoch reads it from its start).
        return self._private.search_data if self.searching else None

    def _taps_of(self, tensors):
        mine = tensors[self.name]
        return [mine[f"tap_{i}"] for i in range(len(self._private.taps))]

    def loss_terms(self, ctx):
        aux_pred = self._aux_predictions(
            self._taps_of(ctx.tensors), training=True
        )
        terms = {
            "aux_loss": keras.ops.multiply(
                self.lambda_aux,
                ctx.trainer.task_loss(ctx.y, aux_pred, ctx.sample_weight),
            )
        }
        if self.lambda_mut > 0:
            terms["mutual_loss"] = keras.ops.multiply(
                self.lambda_mut, self._mutual(ctx.y_pred, aux_pred)
            )
        return terms

    def after_step(self, ctx):
        """The architecture step of the search: one first-order DARTS step
        of the gate logits on the step's held-out batch, after the weight
        update."""
        if not self.searching:
            return
        batch = ctx.held_out.get(self.name)
        if batch is None or self._private.optimizer is None:
            raise ValueError(
                "The search takes its held-out batch from `fit` (which zips "
                "`search_data` with the training data). Received: no "
                f"held-out batch for technique {self.name!r}"
            )
        import tensorflow as tf

        trainer = ctx.trainer
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        variables = self._arch_variables()
        sources = [getattr(v, "value", v) for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            # Training mode (batch statistics), but statelessly: the moving
            # statistics the BatchNormalization layers would write (the
            # compact model's and the booster's) are discarded.
            with keras.StatelessScope():
                y_main, tensors = trainer.training_forward(x)
                aux_pred = self._aux_predictions(
                    self._taps_of(tensors), training=True
                )
                loss = trainer.task_loss(y, aux_pred, sample_weight)
                if self.lambda_mut > 0:
                    loss = loss + self.lambda_mut * self._mutual(
                        y_main, aux_pred
                    )
                # The optimizer sums the replicas' gradients.
                loss = tensorflow_step.rescale(
                    loss, 1.0 / tensorflow_step.replicas()
                )
        grads = tape.gradient(loss, sources)
        self._private.optimizer.apply_gradients(zip(grads, variables))
        self.search_steps.assign_add(1)

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

        In search mode, the structure `fixed()` would return now.
        """
        self._require_attached("structure")
        return self._named_structure(self.top_k, self.min_separation)

    def _named_structure(self, top_k, min_separation):
        out = {}
        for head, booster in zip(self.heads, self.boosters):
            names = self.tap_lists[head]
            if booster.search:
                conn, _ = self._select(booster, top_k, min_separation)
            else:
                conn = booster.connections
            out[head] = {
                names[j]: [names[i] for i in srcs]
                for j, srcs in enumerate(conn)
            }
        return out

    def _steps_taken(self):
        if not self.searching:
            return 0
        return int(self.search_steps.numpy())

    def _margin(self, min_separation=None):
        """The decision margin on the logits after the steps taken."""
        if min_separation is None:
            min_separation = self.min_separation
        noise = structure_lib.noise_level(
            self.arch_learning_rate, self._steps_taken()
        )
        return max(min_separation * noise, self.min_logit)

    def _logits(self, booster):
        return [
            keras.ops.convert_to_numpy(v).tolist()
            for v in booster.node_logits()
        ]

    def _select(self, booster, top_k=None, min_separation=None):
        return structure_lib.select_edges(
            booster.candidates,
            self._logits(booster),
            top_k or self.top_k,
            self._margin(min_separation),
        )

    def search_report(self, top_k=None, min_separation=None):
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
            noise_level` and `min_logit`), `edges` (the
            number of extra candidate edges), `decided`, `kept`,
            `undecided_edges` (`[tap, node]` name pairs), `max_abs_logit`,
            `gate_spread` (largest minus smallest gate), and `fallback`:
            `"connect-all"` when no edge was decided (the structure is
            connect-all because the search did not separate anything),
            `"partial"` when some were not, else `None`.

        Raises:
            ValueError: if the technique is not attached or not searching.
        """
        self._require_attached("search_report")
        if not self.searching:
            raise ValueError(
                "`search_report` needs connections='search'. Received: "
                f"connections={self.connections!r}"
            )
        if min_separation is None:
            min_separation = self.min_separation
        margin = self._margin(min_separation)
        report = {}
        for head, booster in zip(self.heads, self.boosters):
            names = self.tap_lists[head]
            conn, undecided = self._select(booster, top_k, min_separation)
            flat = [v for lg in self._logits(booster) for v in lg]
            edges = len(flat)
            gates = 1.0 / (1.0 + np.exp(-np.asarray(flat, dtype=np.float64)))
            if edges and len(undecided) == edges:
                fallback = "connect-all"
            elif undecided:
                fallback = "partial"
            else:
                fallback = None
            report[head] = {
                "steps": self._steps_taken(),
                "noise_level": structure_lib.noise_level(
                    self.arch_learning_rate, self._steps_taken()
                ),
                "min_separation": min_separation,
                "min_logit": self.min_logit,
                "margin": margin,
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

    def _warn_undecided(self, report):
        for head, r in report.items():
            if r["fallback"] is None:
                continue
            where = (
                f"{r['steps']} steps at arch_learning_rate="
                f"{self.arch_learning_rate:g}: margin {r['margin']:.3g} = "
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

    def _report(self):
        """The booster of every head (applied: one row per head, with its
        mode: fixed, or the state of the connection search) and its
        structure (the notes: which taps feed which booster node)."""
        self._require_attached("summary")
        report = TechniqueReport(type(self).__name__)
        search = self.search_report() if self.searching else {}
        for head, booster in zip(self.heads, self.boosters):
            gates = None
            if booster.search:
                conn, _ = self._select(booster)
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
                head, self.tap_lists[head], self._tap_shapes[head], conn, gates
            )
            if booster.search:
                r = search[head]
                mode = (
                    f"searching, {r['steps']} steps: {r['decided']} of "
                    f"{r['edges']} extra edges decided (|beta| > margin "
                    f"{r['margin']:.3g}), {r['kept']} kept (top-{self.top_k} "
                    f"per node); gate spread {r['gate_spread']:.3f}"
                )
                if r["fallback"] == "connect-all":
                    mode += "; nothing separated: falls back to connect-all"
            else:
                mode = "fixed"
            report.add(head, "applied", mode, taps=len(self.tap_lists[head]))
            report.note(text)
        return report

    def fixed(self, top_k=None, min_separation=None):
        """A new technique with the searched structure, not attached.

        Every node keeps its own tap, plus at most `top_k` extra edges whose
        logits exceed the margin (see the class docstring). Warns when some
        or all candidate edges were not separated from noise (all: the
        result is connect-all); the new technique's `search_summary`
        attribute holds `search_report()` (`None` when not searching).

        Args:
            top_k: extra edges kept per node (default: this technique's
                `top_k`).
            min_separation: the margin in noise levels (default: this
                technique's `min_separation`).

        Returns:
            An `AuxiliaryModule` with `connections` set to the structure and
            the same taps and hyper-parameters.
        """
        self._require_attached("fixed")
        if top_k is not None:
            structure_lib.select_edges([[0]], [[]], top_k, 0.0)
        if min_separation is not None:
            args.check_float(min_separation, "min_separation", low=0)
        report = None
        if self.searching:
            report = self.search_report(top_k, min_separation)
            self._warn_undecided(report)
        config = self.get_config()
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        config.update(
            connections=self._named_structure(
                top_k or self.top_k,
                self.min_separation
                if min_separation is None
                else float(min_separation),
            ),
            search_data=None,
        )
        if top_k is not None:
            config["top_k"] = int(top_k)
        result = AuxiliaryModule(**config)
        result.search_summary = report
        return result

    def _require_attached(self, what):
        if not self._attached:
            raise ValueError(
                f"`{what}` needs the technique attached to a trainer: "
                "`keras_compact.Trainer(model, techniques=[module])`."
            )

    # ------------------------------------------------------------------
    # Losses
    # ------------------------------------------------------------------
    def _aux_predictions(self, taps, training=False):
        preds = [
            booster([taps[i] for i in idx], training=training)
            for booster, idx in zip(self.boosters, self._tap_index)
        ]
        return keras.tree.pack_sequence_as(self._private.output_template, preds)

    def auxiliary_outputs(self, x, training=False):
        """The auxiliary heads' predictions for inputs `x`.

        Args:
            x: a batch of inputs of the compact model.
            training: whether the compact model and the booster run in
                training mode (BatchNormalization on batch statistics,
                updating the moving ones). Defaults to `False`: inference
                mode, deterministic and per-example.

        Returns:
            The auxiliary predictions, structured like the compact model's
            outputs (one per head).
        """
        self._require_attached("auxiliary_outputs")
        taps = self._private.tap_model(x, training=training)["taps"]
        return self._aux_predictions(taps, training=training)

    def _mutual(self, y_pred, aux_pred):
        total = 0.0
        t = self.temperature
        for main, aux, logits in zip(
            keras.tree.flatten(y_pred),
            keras.tree.flatten(aux_pred),
            self._head_from_logits,
        ):
            main, aux = outputs.to_logits([main, aux], [not logits] * 2)
            stop = keras.ops.stop_gradient
            total = total + (
                outputs.soft_target_kl(stop(aux), main, t)
                + outputs.soft_target_kl(stop(main), aux, t)
            )
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
            "min_separation": self.min_separation,
            "min_logit": self.min_logit,
            "seed": self.seed,
        }


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
