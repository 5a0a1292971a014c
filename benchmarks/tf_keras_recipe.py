"""The project's training recipe in legacy tf_keras, for the tfmot peers
(`sparse_tfmot_peer.py`, `qat_tfmot_peer.py`), which must run in their own
process with TF_USE_LEGACY_KERAS=1: SGD-Nesterov 0.9, cosine decay to zero
over the run, decoupled weight decay off biases and BatchNormalization, as
`keras_compact.training.make_optimizer`."""

import tf_keras


def compile_like_recipe(model, learning_rate, total_steps, weight_decay):
    """Compiles a tf_keras `model` with the recipe's optimizer, the logits
    cross-entropy and accuracy."""
    lr = tf_keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    opt = tf_keras.optimizers.SGD(
        lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "moving"])
    model.compile(
        optimizer=opt,
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
