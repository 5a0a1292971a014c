"""One standard classification recipe shared by the CLI, the demo, the
examples and the benchmarks, so that every comparison trains the same way."""

import dataclasses
import time

import keras
import numpy as np

from keras_compact.callbacks.step_timer import StepTimer
from keras_compact.training.trainer import Trainer

OPTIMIZERS = ("sgd", "adam")


def make_optimizer(
    name="sgd", learning_rate=0.05, total_steps=None, weight_decay=5e-5
):
    """The recipe's optimizer: SGD-Nesterov 0.9 or Adam, cosine decay.

    Weight decay is not applied to biases and normalisation parameters.

    Args:
        name: "sgd" (Nesterov momentum 0.9) or "adam".
        learning_rate: peak learning rate, > 0.
        total_steps: if given, the learning rate follows a cosine decay to
            zero over this many steps.
        weight_decay: decoupled weight decay, >= 0.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: for an unknown `name` or an out-of-range value.
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            f"Expected `optimizer` to be one of {OPTIMIZERS}. "
            f"Received: optimizer={name!r}"
        )
    if not learning_rate > 0:
        raise ValueError(
            "Expected `learning_rate` > 0. "
            f"Received: learning_rate={learning_rate}"
        )
    if weight_decay < 0:
        raise ValueError(
            "Expected `weight_decay` >= 0. "
            f"Received: weight_decay={weight_decay}"
        )
    lr = learning_rate
    if total_steps:
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    if name == "sgd":
        opt = keras.optimizers.SGD(
            lr, momentum=0.9, nesterov=True, weight_decay=weight_decay or None
        )
    else:
        opt = keras.optimizers.Adam(lr, weight_decay=weight_decay or None)
    if weight_decay:
        opt.exclude_from_weight_decay(
            var_names=["bias", "gamma", "beta", "moving"]
        )
    return opt


@dataclasses.dataclass
class TrainResult:
    """What `train_classifier` returns.

    Attributes:
        trainer: the fitted `Trainer` (its `strip()` is the compact model).
        history: `History.history` of the fit.
        test_accuracy: top-1 accuracy of the compact model on the test split.
        test_loss: the compact model's task loss on the test split.
        median_step_ms: median wall-clock training step (see `StepTimer`).
        seconds: wall-clock time of the whole fit.
    """

    trainer: Trainer
    history: dict
    test_accuracy: float
    test_loss: float
    median_step_ms: float
    seconds: float

    @property
    def model(self):
        return self.trainer.strip()


def train_classifier(
    model,
    splits,
    epochs,
    techniques=None,
    optimizer="sgd",
    learning_rate=0.05,
    weight_decay=5e-5,
    seed=0,
    callbacks=None,
    verbose="auto",
    compile_kwargs=None,
):
    """Trains `model` on `splits` with the standard recipe and evaluates it.

    Args:
        model: the compact `keras.Model` (logits outputs).
        splits: a `keras_compact.data.DatasetSplits` (train / val / test).
        epochs: number of epochs, a positive int.
        techniques: `Technique`s for the `Trainer` (None: plain training).
        optimizer, learning_rate, weight_decay: see `make_optimizer`; the
            learning rate decays with a cosine over all steps.
        seed: seeds Python, NumPy and Keras before training.
        callbacks: extra Keras callbacks.
        verbose: passed to `fit` (Keras progress bars by default).
        compile_kwargs: extra `compile` arguments (e.g. `loss`).

    Returns:
        A `TrainResult`.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            "Expected `epochs` to be a positive int. "
            f"Received: epochs={epochs!r}"
        )
    keras.utils.set_random_seed(seed)
    steps = int(splits.train.cardinality())
    if steps <= 0:
        raise ValueError(
            "The training split has no (or unknown) number of batches: "
            f"cardinality={steps}"
        )
    trainer = Trainer(model, techniques=techniques)
    kwargs = dict(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    kwargs.update(compile_kwargs or {})
    trainer.compile(
        optimizer=make_optimizer(
            optimizer, learning_rate, steps * epochs, weight_decay
        ),
        **kwargs,
    )
    timer = StepTimer()
    sync = []
    if getattr(splits, "train_orders", None) is not None:
        # Epoch e of fit reads epoch e of the data, also after a resume.
        sync = [splits.epoch_callback()]
    start = time.perf_counter()
    history = trainer.fit(
        splits.train,
        validation_data=splits.val,
        epochs=epochs,
        callbacks=[timer, *sync, *(callbacks or [])],
        verbose=verbose,
        shuffle=False,  # the pipeline reshuffles; Keras cannot for tf.data
    )
    seconds = time.perf_counter() - start
    logs = trainer.evaluate(splits.test, verbose=0, return_dict=True)
    return TrainResult(
        trainer=trainer,
        history=history.history,
        test_accuracy=float(logs["accuracy"]),
        test_loss=float(logs["loss"]),
        median_step_ms=timer.median_ms,
        seconds=seconds,
    )


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of a logits model on arrays."""
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, -1) == np.asarray(y).reshape(-1)))
