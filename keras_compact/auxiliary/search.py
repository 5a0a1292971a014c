"""`search_connections`: search the booster structure, return it fixed."""

import keras

from keras_compact.auxiliary.auxiliary_module import AuxiliaryModule
from keras_compact.training.trainer import Trainer


def search_connections(
    model,
    train_data,
    heldout_data,
    steps,
    loss,
    optimizer="adam",
    top_k=1,
    seed=0,
    verbose=0,
    **module_kwargs,
):
    """Searches which taps feed which booster node (first-order DARTS).

    The search runs on a copy of `model` (same architecture and initial
    weights), so `model` itself is left untouched and its real training
    starts from the same point as a plain run: the search cost is an extra
    `steps` training steps, reported, not hidden in the comparison. Each
    step updates the network weights on a `train_data` batch with
    `optimizer`, then the architecture logits on a `heldout_data` batch with
    Adam (`arch_learning_rate`, default 3e-4), through `Trainer.fit` (so
    callbacks and logging work as usual). The top-`top_k` edges of every
    node are then kept.

    Args:
        model: the compact functional `keras.Model`.
        train_data: a `tf.data.Dataset` of `(x, y)` batches (repeated as
            needed).
        heldout_data: a `tf.data.Dataset` of `(x, y)` batches held out from
            the training data (never the test set).
        steps: number of alternation steps, an int >= 1.
        loss: the task loss, as for `compile`.
        optimizer: the weights' optimizer (name or instance; an instance is
            copied through its config). Defaults to `"adam"`.
        top_k: edges kept per node, an int >= 1. Defaults to 1.
        seed: int seed of the module's initializers. With the same datasets
            the search is deterministic. Defaults to 0.
        verbose: verbosity of `fit`. Defaults to 0.
        **module_kwargs: other `AuxiliaryModule` arguments (`taps`,
            `aux_width_mult`, `lambda_aux`, `lambda_mut`, `temperature`,
            `arch_learning_rate`).

    Returns:
        A new, unattached `AuxiliaryModule` whose `connections` is the
        searched structure, with `search_log` (the `fit` history),
        `search_logits` (per head, the final architecture logits) and
        `search_description` (the readable structure with the final edge
        weights) attached as attributes.

    Raises:
        ValueError: if `steps < 1` or an argument of `AuxiliaryModule` is
            out of range.

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
    result.search_description = module.describe()
    result.search_logits = {
        head: keras.ops.convert_to_numpy(b.arch_logits).tolist()
        for head, b in zip(module.heads, module.boosters)
    }
    return result
