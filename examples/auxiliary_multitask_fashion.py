"""Multi-task Fashion-MNIST with hard parameter sharing and one auxiliary
booster per head.

One tiny convolutional trunk feeds two heads: the 10 Fashion-MNIST classes
("fine") and a coarse 3-group label ("coarse"): tops {T-shirt, pullover,
dress, coat, shirt}, footwear {sandal, sneaker, ankle boot} and
bags-and-trousers {trouser, bag}. The auxiliary module taps the trunk and
builds one booster (adaptors, hierarchical stream, auxiliary head) per head;
all of it is dropped at the end. A plain run with the same budget is
trained first for comparison.

    python examples/auxiliary_multitask_fashion.py [--n-per-class 1000]
        [--epochs 3] [--search]
"""

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import keras_compact
from keras_compact.auxiliary import AuxiliaryModule, search_connections

# Coarse group of every fine class: 0 tops, 1 footwear, 2 bags-and-trousers.
COARSE = np.array([0, 2, 0, 0, 0, 1, 0, 1, 2, 1], dtype=np.int32)
LOSSES = {
    "fine": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "coarse": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
}


def two_labels(ds):
    """Maps `(x, fine)` batches to `(x, {"fine": ..., "coarse": ...})`."""
    table = tf.constant(COARSE)
    return ds.map(
        lambda x, y: (x, {"fine": y, "coarse": tf.gather(table, y)}),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def tiny_multitask_trunk(input_shape=(28, 28, 1)):
    """A tiny shared trunk (conv-BN-ReLU x3) with two classification heads."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, (filters, stride) in enumerate([(16, 1), (32, 2), (48, 2)]):
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            name=f"conv{i + 1}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"conv{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"conv{i + 1}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(
        inputs,
        {
            "fine": keras.layers.Dense(10, name="fine")(x),
            "coarse": keras.layers.Dense(3, name="coarse")(x),
        },
        name="fashion_multitask",
    )


def train(model, techniques, data, epochs):
    trainer = keras_compact.Trainer(model, techniques=techniques)
    trainer.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=LOSSES,
        loss_weights={"fine": 1.0, "coarse": 0.5},
        metrics={"fine": ["accuracy"], "coarse": ["accuracy"]},
    )
    trainer.fit(two_labels(data.train), epochs=epochs, verbose=2)
    deployable = trainer.strip()
    deployable.compile(
        loss=LOSSES,
        metrics={"fine": ["accuracy"], "coarse": ["accuracy"]},
    )
    logs = deployable.evaluate(
        two_labels(data.test), verbose=0, return_dict=True
    )
    return {k: v for k, v in logs.items() if k.endswith("accuracy")}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search", action="store_true")
    args = p.parse_args()
    shared = os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "..",
        "..",
        "shared",
        "datasets",
    )
    if "KERAS_COMPACT_DATA_DIR" not in os.environ and os.path.isdir(shared):
        os.environ["KERAS_COMPACT_DATA_DIR"] = os.path.abspath(shared)
    data = keras_compact.data.load_dataset(
        "fashion_mnist",
        batch_size=64,
        n_per_class=args.n_per_class,
        validation_split=0.1,
        seed=args.seed,
    )

    keras.utils.set_random_seed(args.seed)
    init = tiny_multitask_trunk().get_weights()

    def fresh():
        model = tiny_multitask_trunk()
        model.set_weights(init)
        return model

    print("== plain training")
    plain = train(fresh(), [], data, args.epochs)

    model = fresh()
    if args.search:
        aux = search_connections(
            model,
            two_labels(data.train),
            two_labels(data.val),
            loss=LOSSES,
            seed=args.seed,
        )
    else:
        aux = AuxiliaryModule(seed=args.seed)
    print("== with the auxiliary module (one booster per head)")
    boosted = train(model, [aux], data, args.epochs)
    aux.summary()
    print(f"params of the deployed model: {model.count_params()}")
    for name in plain:
        print(f"{name}: plain {plain[name]:.4f}  auxiliary {boosted[name]:.4f}")


if __name__ == "__main__":
    main()
