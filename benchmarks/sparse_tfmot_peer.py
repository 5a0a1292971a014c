"""The tensorflow-model-optimization peer of benchmarks/sparse_cifar10.py.

Gradual magnitude pruning (Zhu and Gupta 2017, cubic schedule) with
tfmot 0.8 on legacy tf_keras, which is the only Keras tfmot supports. It
must run in its own process and environment:

    TF_USE_LEGACY_KERAS=1 PYTHONPATH=/work/peers-lib:benchmarks:. python \
        benchmarks/sparse_tfmot_peer.py --out peer.json

(`/work/peers-lib`: see `benchmarks/harness.py`, whose `run_peer` launches
it so; `--n-per-class 0` trains on the full training set.) The architecture
is CIFAR ResNet-8 rebuilt layer for layer in tf_keras (same names, no conv
bias, He-normal, BatchNormalization momentum 0.9 and epsilon 1e-5 as the
zoo), trained with the same data pipeline (keras_compact.data, same seed,
same subset and augmentation), the same optimizer and schedule, and the same
layers pruned (every conv but the stem and the 1x1 shortcuts, plus the
classifier), each to the target sparsity (tfmot prunes layer-wise).
"""

import argparse
import json
import os
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
from tf_keras_recipe import compile_like_recipe  # noqa: E402

from keras_compact.data import load_dataset  # noqa: E402


def resnet8(width=1.0, num_classes=10):
    layers = tf_keras.layers

    def conv(filters, k, stride, name):
        return layers.Conv2D(
            filters,
            k,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=name,
        )

    def bn(name):
        # The zoo's BatchNormalization (keras_compact.models.model_utils).
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)

    def ch(c):
        return max(1, int(round(c * width)))

    inp = tf_keras.Input((32, 32, 3), name="image")
    x = conv(ch(16), 3, 1, "stem_conv")(inp)
    x = bn("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, c in enumerate((16, 32, 64), start=1):
        p = f"stage{stage}_block1"
        stride = 2 if stage > 1 else 1
        short = x
        if stride != 1 or x.shape[-1] != ch(c):
            short = conv(ch(c), 1, stride, f"{p}_shortcut")(x)
            short = bn(f"{p}_shortcut_bn")(short)
        x = conv(ch(c), 3, stride, f"{p}_conv1")(x)
        x = bn(f"{p}_bn1")(x)
        x = layers.ReLU(name=f"{p}_relu1")(x)
        x = conv(ch(c), 3, 1, f"{p}_conv2")(x)
        x = bn(f"{p}_bn2")(x)
        x = layers.Add(name=f"{p}_add")([short, x])
        x = layers.ReLU(name=f"{p}_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inp, out, name="resnet8")


def prunable(layer):
    if isinstance(layer, tf_keras.layers.Dense):
        return True
    return isinstance(layer, tf_keras.layers.Conv2D) and not (
        layer.name == "stem_conv" or layer.name.endswith("_shortcut")
    )


def run(sparsity, args, splits):
    tf_keras.utils.set_random_seed(args.seed)
    steps = int(splits.train.cardinality())
    total = steps * args.epochs
    # The last pruning step must be one tfmot prunes at (a multiple of
    # `frequency`), so that the final sparsity is reached.
    end = max(
        args.frequency,
        int(args.end_fraction * total) // args.frequency * args.frequency,
    )
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end,
        power=3,
        frequency=args.frequency,
    )
    base = resnet8()

    def wrap(layer):
        if sparsity > 0 and prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule
            )
        return layer

    model = tf_keras.models.clone_model(base, clone_function=wrap)
    compile_like_recipe(model, args.lr, total, args.weight_decay)
    start = time.perf_counter()
    model.fit(
        splits.train,
        validation_data=splits.val,
        epochs=args.epochs,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    final = tfmot.sparsity.keras.strip_pruning(model)
    final.compile(
        metrics=["accuracy"],
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    acc = final.evaluate(splits.test, verbose=0, return_dict=True)
    nonzeros = int(
        sum(np.count_nonzero(w) for w in final.get_weights() if w.ndim > 0)
    )
    pruned = [layer for layer in final.layers if prunable(layer)]
    zeros = sum(int(np.sum(layer.kernel.numpy() == 0)) for layer in pruned)
    size = sum(int(np.prod(layer.kernel.shape)) for layer in pruned)
    return {
        "method": "tfmot GMP (tf_keras)",
        "sparsity": sparsity,
        "achieved_sparsity": zeros / size,
        "test_acc": float(acc["accuracy"]),
        "nonzero_params": nonzeros,
        "train_s": seconds,
        "steps": total,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-5)
    p.add_argument("--frequency", type=int, default=8)
    p.add_argument("--end-fraction", type=float, default=0.75)
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    splits = load_dataset(
        "cifar10",
        batch_size=args.batch_size,
        n_per_class=args.n_per_class or None,
        seed=args.seed,
    )
    rows = []
    for s in args.sparsities:
        rows.append(run(s, args, splits))
        print(rows[-1], flush=True)
    versions = {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tfmot": getattr(tfmot, "__version__", "0.8"),
    }
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "versions": versions}, f, indent=2)


if __name__ == "__main__":
    main()
