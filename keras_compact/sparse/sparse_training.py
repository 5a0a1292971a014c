"""`SparseTraining`: masks, budget and drop-and-grow updates, via `fit`."""

import random
import warnings

import keras
import numpy as np

from keras_compact.api_export import keras_compact_export
from keras_compact.compat import optimizer_slots
from keras_compact.graph.walk import check_layer_names
from keras_compact.sparse import distributions
from keras_compact.sparse.policies import DSR, UpdateContext, get_policy
from keras_compact.sparse.selection import default_dense_layers, scan
from keras_compact.training import arguments as args
from keras_compact.training import tensorflow_step
from keras_compact.training.report import TechniqueReport
from keras_compact.training.technique import Technique

REGROW_INITS = ("zeros", "he_normal")


class _SparseWeight:
    """One masked weight (a plain object: invisible to Keras tracking)."""

    def __init__(self, layer, label, variable, mask, key):
        self.layer = layer
        self.label = label
        self.variable = variable
        self.mask = mask
        self.key = key
        self.regrown = None  # positions grown by the last update

    @property
    def size(self):
        return int(np.prod(self.variable.shape))


@keras_compact_export
class SparseTraining(Technique):
    """Sparse training with a fixed budget of non-zero weights.

    Masks the prunable kernels of the compact model (Conv1D/2D/3D and their
    transposes, DepthwiseConv, SeparableConv depthwise and pointwise, Dense,
    EinsumDense, and any layer that declares `prunable_weights`), found by
    walking the model, nested and subclassed ones included. Layers that
    cannot be handled stay dense and are listed in `summary()`; the paper's
    always-dense layers (the first layer, 1x1 shortcut convs) stay dense
    unless `dense_layers` says otherwise.

    After every optimizer step, inside the compiled train step, the kernels
    are multiplied by their masks, so any checkpoint holds exactly sparse
    kernels; gradients of inactive weights are masked before the step. The
    policy (`DSR`, `SET`, `RigL`, `Static`) decides when and how the masks
    change; an update runs in the train step too, keyed on
    `optimizer.iterations`, with stateless random numbers seeded by
    `(seed, layer, step)`: replicas of a `MirroredStrategy` compute
    identical masks without communicating, and a resumed or repeated run
    reproduces them. Regrown weights start at zero (or He-normal) and their
    optimizer slots are reset. Masks, counters and DSR's threshold are
    non-trainable weights of this technique: saved in `.keras` files and
    `BackupAndRestore` checkpoints.

    The technique installs a callback (through `Trainer.fit`) that tells
    the train step the epoch (DSR's period schedule), resolves the end of
    SET/RigL updates from the length of training, and logs at every epoch
    end `sparse/density` (overall), `sparse/density/<layer>` (per sparse
    weight), `sparse/threshold` (DSR's H), `sparse/dropped` (weights
    replaced in the last update), `sparse/updates` and
    `sparse/regrown_pruned` (the fraction of regrown weights that the next
    update pruned again, over the epoch's updates) into the history and
    any TensorBoard callback. `plot_density(history)` draws the per-layer
    densities over training.

    Regrown weights start at zero and are judged by |w| at the next update:
    updates spaced too closely prune most of them before they can grow.
    The policies' defaults space updates as their references do (100
    iterations or more); at the start of `fit` the technique warns once if
    the updates come sooner, and during training once if more than half
    of the regrown weights are pruned again (`regrown_pruned_fraction()`).

    Args:
        sparsity: fraction of zeros over the sparse weights, in [0, 1).
            Defaults to 0.9.
        policy: `"dsr"`, `"set"`, `"rigl"`, `"static"` or a policy instance
            (`DSR(...)`, `SET(...)`, `RigL(...)`, `Static()`). Defaults to
            `"dsr"`.
        distribution: initial split of the budget: `"uniform"` (the same
            density in every sparse layer) or `"erk"`. Defaults to
            `"uniform"`.
        dense_layers: layers kept dense: `"auto"` (the paper defaults, see
            `default_dense_layers`), a list of layer names, a predicate
            `callable(layer) -> bool`, or `None` (none). Defaults to
            `"auto"`.
        regrow_init: initial value of regrown weights: `"zeros"` or
            `"he_normal"`. Defaults to `"zeros"`.
        seed: int seed of the initial masks and of every random draw;
            `None` draws one (stored in the config).
        log_layer_density: whether to log one density per sparse weight
            (`sparse/density/<layer>`) at each epoch end. Defaults to True.
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an out-of-range or unknown argument (the message
            names it), a model that is not built, unknown names in
            `dense_layers`, or a model without any prunable weight.

    Example:

    ```python
    model = keras_compact.models.get_model("resnet8")
    trainer = keras_compact.Trainer(
        model, techniques=[SparseTraining(sparsity=0.9, policy="dsr")]
    )
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True), metrics=["accuracy"])
    history = trainer.fit(train_ds, epochs=30)
    sparse_model = trainer.strip()   # the user's model, exactly sparse
    ```

    Reference:
        Mostafa, Wang. "Parameter Efficient Training of Deep Convolutional
        Neural Networks by Dynamic Sparse Reparameterization", ICML 2019.
        Evci et al. "Rigging the Lottery: Making All Tickets Winners",
        ICML 2020.
    """

    def __init__(
        self,
        sparsity=0.9,
        policy="dsr",
        distribution="uniform",
        dense_layers="auto",
        regrow_init="zeros",
        seed=None,
        log_layer_density=True,
        **kwargs,
    ):
        kwargs.setdefault("name", "sparse_training")
        super().__init__(**kwargs)
        args.check_float(sparsity, "sparsity", 0.0, 1.0, high_open=True)
        args.check_choice(
            distribution, distributions.DISTRIBUTIONS, "distribution"
        )
        args.check_choice(regrow_init, REGROW_INITS, "regrow_init")
        if not (
            dense_layers is None
            or dense_layers == "auto"
            or callable(dense_layers)
        ):
            args.check_names(dense_layers, "dense_layers")
        seed = args.check_seed(seed)
        if seed is None:
            seed = random.randrange(2**31 - 1)
        self.sparsity = float(sparsity)
        self.policy = get_policy(policy)
        self.distribution = distribution
        self.dense_layers = (
            list(dense_layers)
            if isinstance(dense_layers, (list, tuple))
            else dense_layers
        )
        self.regrow_init = regrow_init
        self.seed = int(seed)
        self.log_layer_density = bool(log_layer_density)
        self.history = []
        self._weights = []
        self._dense = {}
        self._skipped = []
        self._attached = False
        self._warned = set()  # warnings already given (once per technique)

    # ------------------------------------------------------------------
    # Attach: choose layers, split the budget, create state
    # ------------------------------------------------------------------
    def attach(self, trainer):
        if self._attached:
            raise ValueError(
                f"The technique {self.name!r} is already attached to a "
                "trainer; create one SparseTraining per trainer."
            )
        model = trainer.compact_model
        if not model.built:
            raise ValueError(
                "The model must be built before sparse training (call it on "
                "a batch or give it an Input). "
                f"Received: model={model.name!r} (not built)"
            )
        prunable, skipped = scan(model)
        self._skipped = [
            (layer.name, type(layer).__name__, reason)
            for layer, reason in skipped
        ]
        dense = self._resolve_dense(model, prunable)
        self._dense = dense
        chosen = [
            (lay, pairs) for lay, pairs in prunable if lay.name not in dense
        ]
        if not chosen:
            raise ValueError(
                "No prunable weight is left to make sparse in model "
                f"{model.name!r}. Received: dense_layers="
                f"{self.dense_layers!r}, skipped layers="
                f"{[s[0] for s in self._skipped]}"
            )
        if self._skipped:
            warnings.warn(
                "SparseTraining leaves these layers dense (see summary()): "
                + "; ".join(f"{n} ({r})" for n, _, r in self._skipped),
                stacklevel=2,
            )
        entries = [
            (layer, label, var)
            for layer, pairs in chosen
            for label, var in pairs
        ]
        shapes = [tuple(v.shape) for _, _, v in entries]
        dens = distributions.densities(self.distribution, shapes, self.sparsity)
        total = None
        if self.distribution == "erk":
            size = sum(int(np.prod(s)) for s in shapes)
            total = max(len(shapes), round((1.0 - self.sparsity) * size))
        counts = distributions.nonzero_counts(shapes, dens, total=total)
        self.policy.check_budget(int(sum(counts)))
        multi = {}
        for layer, _, _ in entries:
            multi[layer.name] = multi.get(layer.name, 0) + 1
        for i, ((layer, label, var), n) in enumerate(zip(entries, counts)):
            key = (
                layer.name
                if multi[layer.name] == 1
                else (f"{layer.name}.{label}")
            )
            mask = self.add_weight(
                shape=tuple(var.shape),
                dtype=var.dtype,
                initializer="ones",
                trainable=False,
                name=f"{layer.name}_{label}_mask".replace("/", "_"),
            )
            rng = np.random.default_rng([self.seed, i])
            flat = np.zeros(int(np.prod(var.shape)), dtype=var.dtype)
            flat[rng.choice(flat.size, size=n, replace=False)] = 1
            mask.assign(flat.reshape(var.shape))
            var.assign(var * mask)
            self._weights.append(_SparseWeight(layer, label, var, mask, key))
        if not self.policy.is_static:
            for w in self._weights:
                w.regrown = self.add_weight(
                    shape=tuple(w.variable.shape),
                    dtype=w.mask.dtype,
                    initializer="zeros",
                    trainable=False,
                    name=f"{w.layer.name}_{w.label}_regrown".replace("/", "_"),
                )
        self.epoch = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="epoch",
        )
        end = getattr(self.policy, "end_step", None)
        self.end_step = self.add_weight(
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(end or 0),
            trainable=False,
            name="end_step",
        )
        self.update_count = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name="updates",
        )
        self.dropped = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name="dropped",
        )
        # Weights regrown by one update and judged at the next one (last
        # update and running totals), and how many of them it pruned.
        for name in (
            "regrown_judged",
            "regrown_pruned",
            "total_regrown_judged",
            "total_regrown_pruned",
        ):
            setattr(
                self,
                name,
                self.add_weight(
                    shape=(),
                    dtype="int64",
                    initializer="zeros",
                    trainable=False,
                    name=name,
                ),
            )
        self.policy.build(self, int(sum(counts)))
        self.built = True
        self._attached = True

    def _resolve_dense(self, model, prunable):
        names = [layer.name for layer, _ in prunable]
        spec = self.dense_layers
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

    # ------------------------------------------------------------------
    # Fit-time hooks
    # ------------------------------------------------------------------
    def validate(self, trainer):
        if trainer.optimizer is None:
            raise ValueError(
                "SparseTraining needs an optimizer: call "
                "`trainer.compile(optimizer=..., loss=...)` before `fit`."
            )
        trainable = {id(v) for v in trainer.trainable_variables}
        frozen = [
            w.key for w in self._weights if id(w.variable) not in trainable
        ]
        if frozen:
            raise ValueError(
                "These sparse weights are not trainable, so their masks "
                "could not be trained: unfreeze them or list their layers "
                f"in `dense_layers`. Received: frozen sparse weights={frozen}"
            )
        for w in self._weights:
            current = dict(
                (label, v) for label, v in _pairs_or_empty(w.layer)
            ).get(w.label)
            if current is not None and current is not w.variable:
                raise ValueError(
                    f"The weight {w.key!r} was replaced after SparseTraining "
                    "was attached (was the layer rebuilt?). Create the "
                    "Trainer after the model is final."
                )

    def callbacks(self, trainer):
        from keras_compact.sparse.monitor import SparsityMonitor

        return [SparsityMonitor(self)]

    def transform_gradients(self, ctx, grads):
        index = {id(v): i for i, v in enumerate(ctx.variables)}
        grads = list(grads)
        for w in self._weights:
            i = index.get(id(w.variable))
            if i is None or grads[i] is None:
                continue
            g = tensorflow_step.densify(grads[i])
            grads[i] = g * keras.ops.cast(w.mask.value, g.dtype)
        if self.policy.needs_gradients and not self.policy.is_static:
            # The unmasked gradients, summed over the replicas, for the
            # update of this step's `after_step` (RigL grows by them).
            ctx.state(self)["dense_grads"] = ctx.dense_gradients(
                [w.variable for w in self._weights], ctx.grads
            )
        return grads

    def after_step(self, ctx):
        import tensorflow as tf

        for w in self._weights:
            w.variable.assign(w.variable.value * w.mask.value)
        if self.policy.is_static:
            return
        optimizer = ctx.optimizer
        step = optimizer.iterations
        due = self.policy.should_update(
            step.value, self.epoch.value, self.end_step.value
        )
        grads = ctx.state(self).get("dense_grads")
        tf.cond(
            due,
            lambda: self.update_masks(optimizer, step.value, grads),
            lambda: tf.constant(False),
        )

    def update_masks(self, optimizer=None, step=None, grads=None):
        """Runs one drop-and-grow update of every mask now.

        Called by the train step when the policy says so; callable eagerly
        too (tests, custom loops).

        Args:
            optimizer: the optimizer whose slots of replaced weights are
                reset (`None`: no slots).
            step: the step used to seed random draws (defaults to
                `optimizer.iterations`, or 0).
            grads: dense gradients per sparse weight (RigL), or `None`.

        Returns:
            A boolean tensor `True`.
        """
        import tensorflow as tf

        from keras_compact.sparse import algorithms

        if step is None:
            step = optimizer.iterations.value if optimizer is not None else 0
        step = tf.cast(step, tf.int64)
        n = len(self._weights)
        seed = self.seed

        def seed_fn(i, salt):
            return algorithms.seed_for(seed, i, salt, step)

        kernels = [w.variable.value for w in self._weights]
        actives = [w.mask.value > 0 for w in self._weights]
        ctx = UpdateContext(
            kernels,
            actives,
            list(grads) if grads else [None] * n,
            step,
            self.end_step.value,
            seed_fn,
        )
        n_drop = self.policy.drop_counts(ctx)
        drop_scores = self.policy.drop_scores(ctx)
        n_grow = self.policy.grow_counts(ctx, n_drop)
        grow_scores = self.policy.grow_scores(ctx)
        judged, pruned_again = [], []
        for i, w in enumerate(self._weights):
            new, kept = algorithms.drop_and_grow(
                actives[i],
                drop_scores[i],
                grow_scores[i],
                n_drop[i],
                n_grow[i],
            )
            born = tf.logical_and(new, tf.logical_not(actives[i]))
            keep = tf.logical_and(new, actives[i])
            if w.regrown is not None:
                young = tf.logical_and(w.regrown.value > 0, actives[i])
                # Judged by the drop step: a position it drops counts as
                # pruned even if the random regrowth picks it again.
                j, p = algorithms.regrown_pruned_counts(young, actives[i], kept)
                judged.append(j)
                pruned_again.append(p)
                w.regrown.assign(tf.cast(born, w.regrown.dtype))
            value = kernels[i]
            if self.regrow_init == "he_normal":
                shape = tuple(value.shape)
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                noise = tf.random.stateless_normal(
                    tf.shape(value),
                    seed=seed_fn(i, 4),
                    stddev=float(np.sqrt(2.0 / fan_in)),
                    dtype=value.dtype,
                )
                value = tf.where(born, noise, value)
            else:
                value = tf.where(born, tf.zeros_like(value), value)
            new_f = tf.cast(new, value.dtype)
            w.variable.assign(value * new_f)
            w.mask.assign(tf.cast(new, w.mask.dtype))
            keep_f = tf.cast(keep, value.dtype)
            for slot in optimizer_slots(optimizer, w.variable):
                slot.assign(slot.value * tf.cast(keep_f, slot.dtype))
        self.policy.after_update(ctx, n_drop)
        if judged:
            j = tf.cast(tf.add_n(judged), tf.int64)
            p = tf.cast(tf.add_n(pruned_again), tf.int64)
            self.regrown_judged.assign(j)
            self.regrown_pruned.assign(p)
            self.total_regrown_judged.assign_add(j)
            self.total_regrown_pruned.assign_add(p)
        self.update_count.assign_add(tf.constant(1, tf.int64))
        self.dropped.assign(
            tf.cast(tf.add_n([tf.cast(k, tf.int32) for k in n_drop]), tf.int64)
        )
        return tf.constant(True)

    def strip(self, trainer, model):
        # Kernels are already exactly sparse after every step; re-applying
        # the masks covers weights assigned by hand since the last step.
        for w in self._weights:
            w.variable.assign(w.variable * w.mask)
        return model

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------
    @property
    def sparse_weights(self):
        """`(key, variable, mask)` for every masked weight."""
        return [(w.key, w.variable, w.mask) for w in self._weights]

    def layer_densities(self):
        """Current density of every masked weight, `{key: float}`."""
        return {
            w.key: float(np.sum(keras.ops.convert_to_numpy(w.mask))) / w.size
            for w in self._weights
        }

    def regrown_pruned_fraction(self, last=False):
        """Fraction of regrown weights that the next update pruned again.

        At every update, the weights that the previous update regrew are
        judged (they start at zero, and are ranked by |w| like all others);
        the update's drop step prunes some of them. A high value (say above
        0.5) means that updates come too soon for regrown weights to grow:
        the connectivity churns without learning.

        Args:
            last: `False` (default) for the whole run so far: the regrown
                weights pruned again over all the updates, divided by the
                regrown weights judged over all the updates (a mean weighted
                by the number regrown); `True` for the last update only.

        Returns:
            A float in [0, 1], or `None` before any regrown weight has
            been judged (fewer than two updates, or a static policy).
        """
        pruned, judged = self.regrown_pruned_counts(last)
        return pruned / judged if judged else None

    def regrown_pruned_counts(self, last=False):
        """`(pruned_again, judged)` as ints; see `regrown_pruned_fraction`."""
        if self.policy.is_static:
            return 0, 0
        if last:
            p, j = self.regrown_pruned, self.regrown_judged
        else:
            p, j = self.total_regrown_pruned, self.total_regrown_judged
        return (
            int(keras.ops.convert_to_numpy(p)),
            int(keras.ops.convert_to_numpy(j)),
        )

    def threshold_value(self):
        """DSR's current threshold H (None for other policies)."""
        if isinstance(self.policy, DSR) and self.policy.threshold is not None:
            return float(keras.ops.convert_to_numpy(self.policy.threshold))
        return None

    def _report(self):
        """What was made sparse (applied: one row per masked weight, with
        shape, size, nonzeros and density), what stayed dense on purpose
        (kept) and what could not be handled (skipped); totals: overall
        `sparsity` of the masked weights and `regrown_pruned_last` /
        `regrown_pruned_overall` (`regrown_pruned_fraction()`, None if not
        known yet)."""
        report = TechniqueReport(
            type(self).__name__,
            f"{type(self.policy).__name__}, {self.distribution}",
        )
        total = nonzeros = 0
        for w in self._weights:
            nz = int(np.sum(keras.ops.convert_to_numpy(w.mask)))
            total += w.size
            nonzeros += nz
            report.add(
                w.layer.name,
                "applied",
                weight=w.label,
                shape=tuple(w.variable.shape),
                size=w.size,
                nonzeros=nz,
                density=nz / w.size,
            )
        for name, reason in self._dense.items():
            report.add(name, "kept", reason)
        for name, kind, reason in self._skipped:
            report.add(name, "skipped", f"{kind}: {reason}")
        report.totals["sparsity"] = 1.0 - nonzeros / total if total else 0.0
        report.totals["regrown_pruned_last"] = self.regrown_pruned_fraction(
            last=True
        )
        report.totals["regrown_pruned_overall"] = self.regrown_pruned_fraction()
        return report

    def get_config(self):
        dense = self.dense_layers
        if self._attached:
            dense = list(self._dense)
        elif callable(dense):
            raise ValueError(
                "A callable `dense_layers` can be serialized only once the "
                "technique is attached to a Trainer (it is then saved as the "
                f"list of names it selected). Received: dense_layers={dense!r}"
            )
        return {
            **super().get_config(),
            "sparsity": self.sparsity,
            "policy": keras.saving.serialize_keras_object(self.policy),
            "distribution": self.distribution,
            "dense_layers": dense,
            "regrow_init": self.regrow_init,
            "seed": self.seed,
            "log_layer_density": self.log_layer_density,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["policy"] = get_policy(config["policy"])
        return cls(**config)


def _pairs_or_empty(layer):
    from keras_compact.sparse.registry import UnsupportedLayer, prunable_weights

    try:
        return prunable_weights(layer)
    except UnsupportedLayer:
        return []
