"""The auxiliary module's maths: predictions, mutual learning, search step.

Plain functions over the boosters and tensors, used by `AuxiliaryModule`:

- `auxiliary_predictions`: every booster's prediction from the taps,
  structured like the compact model's outputs (one per output).
- `mutual_loss`: symmetric mutual learning between each output and its
  auxiliary prediction, with stop-gradients.
- `architecture_step`: one first-order DARTS step of the gate logits on a
  held-out batch.
"""

import keras

from keras_compact.graph import outputs
from keras_compact.training import tensorflow_step


def auxiliary_predictions(boosters, tap_index, taps, template, training=False):
    """The auxiliary predictions, structured like the model's outputs.

    Args:
        boosters: one `AuxiliaryBooster` per output, in the order of the
            model's flattened outputs (`model.outputs`).
        tap_index: per booster, the indices in `taps` of its taps.
        taps: the distinct tap tensors of all heads.
        template: the model's output structure (`model.output`).
        training: whether the boosters run in training mode.

    Returns:
        The boosters' predictions packed like `template`: booster `k`
        predicts the `k`-th flattened output.
    """
    preds = [
        booster([taps[i] for i in idx], training=training)
        for booster, idx in zip(boosters, tap_index)
    ]
    return keras.tree.pack_sequence_as(template, preds)


def mutual_loss(y_pred, aux_pred, from_logits, temperature):
    """Symmetric mutual learning between outputs and auxiliary predictions.

    `sum_k T**2 * [KL(sg(p_aux_k) || p_k) + KL(sg(p_k) || p_aux_k)]` over
    the flattened outputs `k`, each compared with its own auxiliary
    prediction (softmax outputs are compared through their logarithm).

    Args:
        y_pred: the compact model's predictions.
        aux_pred: the auxiliary predictions, structured like `y_pred`.
        from_logits: per flattened output, whether it holds logits (else
            softmax probabilities).
        temperature: the softmax temperature `T`.

    Returns:
        A scalar tensor.
    """
    total = 0.0
    t = temperature
    for main, aux, logits in zip(
        keras.tree.flatten(y_pred), keras.tree.flatten(aux_pred), from_logits
    ):
        main, aux = outputs.to_logits([main, aux], [not logits] * 2)
        stop = keras.ops.stop_gradient
        total = total + (
            outputs.soft_target_kl(stop(aux), main, t)
            + outputs.soft_target_kl(stop(main), aux, t)
        )
    return total


def architecture_step(
    trainer, batch, predict, variables, optimizer, lambda_mut=0.0, mutual=None
):
    """One first-order DARTS step of the architecture logits.

    Descends `task_loss(y, aux_pred) [+ lambda_mut * mutual(y_pred,
    aux_pred)]` on a held-out batch, the network weights held. The forward
    pass runs in training mode (batch statistics) inside a
    `keras.StatelessScope`, which discards every state update: the moving
    statistics of the BatchNormalization layers are never written.

    Args:
        trainer: the `Trainer` (its training forward pass and task loss).
        batch: a held-out `(x, y[, sample_weight])` batch.
        predict: `tensors -> aux_pred`, the auxiliary predictions from the
            tensors of the training forward pass.
        variables: the architecture logits.
        optimizer: their (built) optimizer.
        lambda_mut: the weight of the mutual term.
        mutual: `(y_pred, aux_pred) -> loss`, the mutual term (used when
            `lambda_mut > 0`).
    """
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    sources = [getattr(v, "value", v) for v in variables]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        with keras.StatelessScope():
            y_main, tensors = trainer.training_forward(x)
            aux_pred = predict(tensors)
            loss = trainer.task_loss(y, aux_pred, sample_weight)
            if lambda_mut > 0:
                loss = loss + lambda_mut * mutual(y_main, aux_pred)
            # The optimizer sums the replicas' gradients.
            loss = tensorflow_step.rescale(
                loss, 1.0 / tensorflow_step.replicas()
            )
    grads = tape.gradient(loss, sources)
    optimizer.apply_gradients(zip(grads, variables))
