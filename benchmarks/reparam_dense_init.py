"""Does ExpandNets keep MobileNetV2 trainable at the scoreboard's learning
rates? The first steps of MobileNetV2-w0.35 (CIFAR strides) on the full
CIFAR-10 training set, plain and with `Reparameterize("expandnets")` (its
Dense chain on the 1,280-feature classifier, or `include_dense=False`,
the paper's ExpandNet-CL for MobileNetV2), at several peak learning rates
of the scoreboard's recipe (SGD-Nesterov, cosine over 15 epochs).

Per run: the steps it trained before a non-finite loss stopped it
(`NonFiniteTrainingError`), the largest batch loss and the mean loss of
the last 20 steps.

    nice -n 10 python benchmarks/reparam_dense_init.py [--steps 120]
        [--lrs 0.05 0.1 0.2] [--name reparam_dense_init]
"""

import argparse
import sys
import time

import harness  # noqa: F401 (first: it sets the environment)
import keras
import numpy as np
from harness import write_results

from keras_compact import (
    NonFiniteTrainingError,
    Reparameterize,
    data,
    models,
    training,
)

ARMS = {
    "plain": lambda: [],
    "expandnets": lambda: [Reparameterize("expandnets", seed=0)],
    "expandnets_cl": lambda: [
        Reparameterize("expandnets", include_dense=False, seed=0)
    ],
}


class BatchLosses(keras.callbacks.Callback):
    """Each step's own loss (fit logs the running mean of the epoch)."""

    def __init__(self):
        super().__init__()
        self.losses, self._mean = [], 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._mean)
        self._mean = mean


def run(arm, lr, steps, splits):
    keras.utils.set_random_seed(0)
    info = data.dataset_info("cifar10")
    model = models.get_model(
        "mobilenet_v2",
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        width_multiplier=0.35,
        cifar_stem=True,
    )
    trainer = training.Trainer(model, techniques=ARMS[arm]())
    total = int(splits.train.cardinality()) * 15
    trainer.compile(
        optimizer=training.make_optimizer("sgd", lr, total),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    log = BatchLosses()
    start = time.perf_counter()
    try:
        trainer.fit(
            splits.train.take(steps), epochs=1, callbacks=[log], verbose=0
        )
        stopped = None
    except NonFiniteTrainingError:
        stopped = len(log.losses)
    losses = log.losses
    return {
        "arm": arm,
        "lr": lr,
        "steps": len(losses),
        "non_finite_at_step": stopped,
        "max_loss": float(np.max(losses)) if losses else None,
        "last20_loss": float(np.mean(losses[-20:])) if losses else None,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument(
        "--lrs", type=float, nargs="+", default=[0.05, 0.1, 0.2]
    )
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--name", default="reparam_dense_init")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args(argv)
    splits = data.load_dataset("cifar10", batch_size=128, seed=0)
    rows = []
    for lr in args.lrs:
        for arm in args.arms:
            rows.append(run(arm, lr, args.steps, splits))
            print(rows[-1], flush=True)
    notes = [
        *args.note,
        "non_finite_at_step: the step a non-finite loss stopped the run "
        "(nothing of that step applied); empty: it trained every step.",
        "max_loss / last20_loss: per-step training loss (the largest, and "
        "the mean of the last 20 steps).",
    ]
    write_results(
        args.name,
        rows,
        {"steps": args.steps, "batch_size": 128, "schedule_epochs": 15},
        notes,
    )


if __name__ == "__main__":
    sys.exit(main())
