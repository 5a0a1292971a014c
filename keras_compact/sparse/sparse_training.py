"""`SparseTraining`: masks, budget and drop-and-grow updates, via `fit`.

The technique class holds the hooks only; its state is made by `state`,
updated by `masks`, measured by `stats` and logged by `callbacks`.
"""

import random

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.compat import optimizer_slots  # noqa: F401 (re-export)
from keras_compact.sparse import distributions, masks, state, stats
from keras_compact.sparse.callbacks import SparsityMonitor
from keras_compact.sparse.policies import get_policy
from keras_compact.sparse.state import REGROW_INITS
from keras_compact.training import arguments as args
from keras_compact.training.technique import Technique


@keras_compact_export
class SparseTraining(Technique):
    """Sparse training with a fixed budget of non-zero weights (or, with
    `GradualPruning`, pruning a dense start down to that budget).

    Masks the prunable kernels (convolutions of every kind, Dense,
    EinsumDense, any layer declaring `prunable_weights`) found by walking
    the model's layers: functional, Sequential, subclassed (built) and
    nested models alike; a multi-output model trains on its compiled loss
    over all outputs, one budget for all kernels. Layers it cannot handle
    stay dense and are listed in `summary()`, as do the paper's dense
    layers (the first layer, 1x1 shortcut convs) unless `dense_layers`
    says otherwise.

    In the compiled train step, gradients of inactive weights are masked
    and the kernels are multiplied by their masks after every optimizer
    step (any checkpoint is exactly sparse). The policy (`DSR`, `SET`,
    `RigL`, `Static`, `GradualPruning`) decides when and how the masks
    change, keyed on `optimizer.iterations`, with stateless random numbers
    seeded by `(seed, layer, step)`: replicas agree, resumed runs
    reproduce. Regrown weights start at zero (or He-normal), their
    optimizer slots reset.
    Masks, counters and DSR's threshold are weights of this technique
    (saved in `.keras` files and `BackupAndRestore` checkpoints).

    `Trainer.fit` installs a `SparsityMonitor`: it logs `sparse/density`
    (`/<layer>` too), `sparse/threshold`, `sparse/dropped`,
    `sparse/updates` and `sparse/regrown_pruned` (`plot_density` draws
    them), and warns once if updates come sooner than every 100 iterations
    or if most regrown weights are pruned again by the next update.
    Measured: `benchmarks/results/sparse_cifar10.md`.

    Args:
        sparsity: fraction of zeros over the sparse weights, in [0, 1)
            (default 0.9).
        policy: `"dsr"` (default), `"set"`, `"rigl"`, `"static"`, `"gmp"`
            or a policy instance (`DSR(...)`, `SET(...)`, `RigL(...)`,
            `Static()`, `GradualPruning(...)`).
        distribution: initial split of the budget: `"uniform"` (default:
            the same density in every sparse layer) or `"erk"`.
        dense_layers: layers kept dense: `"auto"` (default: the paper's,
            see `default_dense_layers`), a list of layer names, a predicate
            `callable(layer) -> bool`, or `None` (none).
        regrow_init: initial value of regrown weights: `"zeros"` (default)
            or `"he_normal"`.
        seed: int seed of the initial masks and of every random draw;
            `None` draws one (stored in the config).
        log_layer_density: whether to log `sparse/density/<layer>` (one
            per sparse weight) at each epoch end (default True).
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an out-of-range or unknown argument (the message
            names it), a model that is not built, unknown names in
            `dense_layers`, or a model without any prunable weight.

    Example:

    ```python
    model = keras_compact.models.get_model("resnet8")
    trainer = keras_compact.Trainer(model, techniques=[SparseTraining(0.9)])
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True), metrics=["accuracy"])
    history = trainer.fit(train_ds, epochs=30)
    sparse_model = trainer.strip()   # the user's model, exactly sparse
    ```

    Reference:
        Mostafa, Wang. "Parameter Efficient Training of Deep Convolutional
        Neural Networks by Dynamic Sparse Reparameterization", ICML 2019;
        Evci et al. "Rigging the Lottery: Making All Tickets Winners", 2020.
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
        self.dense_layers = state.check_dense_layers(dense_layers)
        seed = args.check_seed(seed)
        self.seed = random.randrange(2**31 - 1) if seed is None else int(seed)
        self.sparsity = float(sparsity)
        self.policy = get_policy(policy)
        self.distribution = distribution
        self.regrow_init = regrow_init
        self.log_layer_density = bool(log_layer_density)
        self.history = []
        self._weights = []  # state.SparseWeight, one per masked weight
        self._counters = None  # state.SparseCounters
        self._dense = {}
        self._skipped = []
        self._attached = False
        self._warned = set()  # warnings already given (once per technique)

    def attach(self, trainer):
        if self._attached:
            raise ValueError(
                f"The technique {self.name!r} is already attached to a "
                "trainer; create one SparseTraining per trainer."
            )
        entries, self._dense, self._skipped = state.select_weights(
            trainer.compact_model, self.dense_layers
        )
        self._weights, self._counters, budget = state.create_state(
            self.add_weight,
            entries,
            self.policy,
            self.distribution,
            self.sparsity,
            self.seed,
        )
        for name, variable in self._counters.items():
            setattr(self, name, variable)  # `epoch`, `update_count`...
        self.policy.build(self, budget)
        self.built = self._attached = True

    def validate(self, trainer):
        if trainer.optimizer is None:
            raise ValueError(
                "SparseTraining needs an optimizer: call "
                "`trainer.compile(optimizer=..., loss=...)` before `fit`."
            )
        state.check_trainable(self._weights, trainer.trainable_variables)

    def callbacks(self, trainer):
        return [SparsityMonitor(self)]

    def transform_gradients(self, ctx, grads):
        grads = masks.mask_gradients(self._weights, ctx.variables, grads)
        if self.policy.needs_gradients and not self.policy.is_static:
            # Unmasked, replica-summed gradients: RigL grows by them.
            ctx.state(self)["dense_grads"] = ctx.dense_gradients(
                [w.variable for w in self._weights], ctx.grads
            )
        return grads

    def after_step(self, ctx):
        masks.apply_masks(self._weights)
        if not self.policy.is_static:
            grads = ctx.state(self).get("dense_grads")
            masks.update_if_due(
                self.policy,
                self._counters,
                ctx.optimizer,
                lambda step: self.update_masks(ctx.optimizer, step, grads),
            )

    def update_masks(self, optimizer=None, step=None, grads=None):
        """Runs one drop-and-grow update of every mask now (the train step
        calls it when the policy says so; callable eagerly too).

        Args:
            optimizer: the optimizer whose slots of replaced weights are
                reset (`None`: no slots).
            step: the step that seeds random draws (defaults to
                `optimizer.iterations`, or 0).
            grads: dense gradients per sparse weight (RigL), or `None`.

        Returns:
            A boolean tensor `True`.
        """
        return masks.update_masks(
            self._weights,
            self.policy,
            self._counters,
            optimizer,
            step,
            grads,
            self.seed,
            self.regrow_init,
        )

    def strip(self, trainer, model):
        masks.strip_masks(self._weights)
        return model

    @property
    def sparse_weights(self):
        """`(key, variable, mask)` for every masked weight."""
        return [(w.key, w.variable, w.mask) for w in self._weights]

    def layer_densities(self):
        """Current density of every masked weight, `{key: float}`."""
        return stats.layer_densities(self._weights)

    def regrown_pruned_fraction(self, last=False):
        """Fraction of regrown weights that the next update pruned again
        (they start at zero and are judged by |w|): above about 0.5 the
        updates come too soon for them to grow.

        Args:
            last: `False` (default) for all the updates so far, `True` for
                the last one.

        Returns:
            A float in [0, 1], or `None` before any regrown weight has
            been judged (fewer than two updates, or a static policy).
        """
        return stats.fraction(*self.regrown_pruned_counts(last))

    def regrown_pruned_counts(self, last=False):
        """`(pruned_again, judged)` as ints; see `regrown_pruned_fraction`."""
        return stats.regrown_pruned_counts(
            self._counters, self.policy.is_static, last
        )

    def threshold_value(self):
        """DSR's current threshold H (None for other policies)."""
        return stats.threshold_value(self.policy)

    def _report(self):
        """Applied / kept / skipped layers (`stats.build_report`)."""
        return stats.build_report(
            type(self).__name__,
            f"{type(self.policy).__name__}, {self.distribution}",
            self._weights,
            self._dense,
            self._skipped,
            self._counters,
            self.policy.is_static,
        )

    def get_config(self):
        dense = state.dense_layers_config(
            self.dense_layers, self._dense if self._attached else None
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
