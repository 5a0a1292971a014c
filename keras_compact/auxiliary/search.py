"""`search_connections`: search the booster structure, return it fixed."""

import warnings

import keras

from keras_compact.auxiliary import selection
from keras_compact.auxiliary.auxiliary_module import AuxiliaryModule
from keras_compact.training.trainer import Trainer


def search_connections(
    model,
    train_data,
    heldout_data,
    steps=200,
    loss=None,
    optimizer="adam",
    top_k=1,
    seed=0,
    verbose=0,
    **module_kwargs,
):
    """Searches which extra taps feed each booster node (first-order DARTS).

    Every booster node keeps its own tap, so every tap has an adaptor and
    every block of the compact model gets auxiliary gradient, whatever the
    search decides; the search only chooses *extra* edges (an earlier tap
    of the same or the previous resolution stage), each gated by
    `sigmoid(beta)` while it searches.

    The search runs on a copy of `model` (same architecture and initial
    weights), so `model` itself is left untouched and its real training
    starts from the same point as a plain run: the search cost is an extra
    `steps` training steps, reported, not hidden in the comparison. Each
    step updates the network weights on a `train_data` batch with
    `optimizer`, then the architecture logits on a `heldout_data` batch with
    Adam (`arch_learning_rate`, default 1e-2), through `Trainer.fit` (so
    callbacks and logging work as usual). The held-out step never writes
    the moving statistics of BatchNormalization layers (it runs in a
    `keras.StatelessScope`).

    What it optimises: the held-out *auxiliary* loss, to first order, with
    the network weights fixed. What it does not: the benefit to the compact
    network, which the gates reach only through the auxiliary gradient (a
    second-order effect). Compare the result with connect-all
    (`AuxiliaryModule()`, the zero-cost default).

    Decisions: an extra edge is kept when its logit exceeds the margin
    `max(min_separation * arch_learning_rate * sqrt(steps), min_logit)`
    (defaults 3.0 and 0.5: beyond what Adam's random walk on random-sign
    gradients reaches, and a gate outside [0.38, 0.62]) and it is among the
    `top_k` strongest of its node; edges within the margin are left out, as
    in connect-all. Adam moves a logit by at most about
    `arch_learning_rate` per step, so with `arch_learning_rate * steps`
    below the margin nothing can be decided (a warning says so up front).
    When nothing is decided the result is connect-all: a `UserWarning` says
    so, and `search_summary[head]["fallback"]` is `"connect-all"`
    (`"partial"` when only some edges were undecided).

    Args:
        model: the compact functional `keras.Model`.
        train_data: a `tf.data.Dataset` of `(x, y)` batches (repeated as
            needed).
        heldout_data: a `tf.data.Dataset` of `(x, y)` batches held out from
            the training data (never the test set).
        steps: number of alternation steps, an int >= 1. Defaults to 200:
            at the default `arch_learning_rate` (1e-2) a logit can move by
            up to 2 against a margin of 0.5 (at 40 steps the margin cannot
            be reached).
        loss: the task loss, as for `compile` (required).
        optimizer: the weights' optimizer (name or instance; an instance is
            copied through its config). Defaults to `"adam"`.
        top_k: extra edges kept per node, an int >= 1. Defaults to 1.
        seed: int seed of the module's initializers. With the same datasets
            the search is deterministic. Defaults to 0.
        verbose: verbosity of `fit`. Defaults to 0.
        **module_kwargs: other `AuxiliaryModule` arguments (`taps`,
            `aux_width_mult`, `lambda_aux`, `lambda_mut`, `temperature`,
            `arch_learning_rate`, `min_separation`, `min_logit`).

    Returns:
        A new, unattached `AuxiliaryModule` whose `connections` is the
        searched structure, with `search_log` (the `fit` history),
        `search_logits` (per head, the final logits of the extra edges, per
        node), `search_summary` (per head, `AuxiliaryModule.search_report`:
        margin, decided and kept edges, gate spread, fallback) and
        `search_description` (the readable structure with the final gates)
        attached as attributes.

    Raises:
        ValueError: if `steps < 1`, `loss` is missing or an argument of
            `AuxiliaryModule` is out of range.

    Example:

    ```python
    aux = search_connections(
        model, train_ds, heldout_ds, steps=200,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(aux.search_description)
    trainer = keras_compact.Trainer(model, techniques=[aux])
    ```

    Reference:
        Liu, Zhuang, Shen, Chen, Yin, arXiv:1909.02214, 2019 (searched
        auxiliary structure); Liu, Simonyan, Yang. "DARTS: Differentiable
        Architecture Search", ICLR 2019 (first-order alternation).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(
            f"Expected `steps` to be an int >= 1. Received: steps={steps!r}"
        )
    if loss is None:
        raise ValueError(
            "`search_connections` trains the network weights: pass the task "
            "`loss` (as for `compile`). Received: loss=None"
        )
    if "connections" in module_kwargs:
        raise ValueError(
            "`search_connections` searches the connections; do not pass "
            f"connections={module_kwargs['connections']!r}"
        )
    import tensorflow as tf

    if not isinstance(train_data, tf.data.Dataset):
        raise TypeError(
            "Expected `train_data` to be a tf.data.Dataset of batches. "
            f"Received: {type(train_data).__name__}"
        )
    module = AuxiliaryModule(
        connections="search",
        search_data=heldout_data,
        top_k=top_k,
        seed=seed,
        **module_kwargs,
    )
    lr = module.arch_learning_rate
    margin = max(module.min_separation * lr * steps**0.5, module.min_logit)
    if lr * steps <= margin:
        warnings.warn(
            f"steps={steps} at arch_learning_rate={lr:g} cannot separate any "
            f"edge: Adam moves a logit by at most about {lr * steps:.3g}, "
            f"not beyond the decision margin {margin:.3g}. The result will "
            "be connect-all; raise `steps` (or `arch_learning_rate`).",
            UserWarning,
            stacklevel=2,
        )
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = optimizer.__class__.from_config(optimizer.get_config())
    trainer = Trainer(copy, techniques=[module])
    trainer.compile(optimizer=optimizer, loss=loss)
    history = trainer.fit(
        train_data.repeat(),
        steps_per_epoch=steps,
        epochs=1,
        shuffle=False,
        verbose=verbose,
    )
    result = module.fixed()
    result.search_log = history.history
    result.search_description = str(module._report())
    result.search_logits = {
        head: selection.logits(b)
        for head, b in zip(module.heads, module.boosters)
    }
    return result
