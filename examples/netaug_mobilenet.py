"""NetAug on a zoo MobileNetV2 in a few lines.

Trains a tiny MobileNetV2 (alpha 0.35) on CIFAR-10 with network
augmentation, prints what was augmented, evaluates the compact model and
exports it: the shipped model has exactly the architecture (and .tflite
size) of the plainly trained one.

    python examples/netaug_mobilenet.py --n-per-class 100 --epochs 2

Needs the CIFAR-10 files (see `keras_compact.data`; set
KERAS_COMPACT_DATA_DIR). Use `--dataset digits` to run with no files at all.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_compact import Trainer, data, models  # noqa: E402
from keras_compact.netaug import BNRecalibration, NetAug  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--n-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--export", default=None, help="optional .tflite path")
    args = p.parse_args()

    splits = data.load_dataset(
        args.dataset, batch_size=args.batch_size, n_per_class=args.n_per_class
    )
    model = models.get_model(
        "mobilenet_v2",
        input_shape=splits.info.input_shape,
        num_classes=splits.info.num_classes,
        alpha=0.35,
        # ImageNet strides: 1.2M MACs at 32x32, quick to run. At 1,000
        # images/class x 15 epochs NetAug loses about 2 points on average
        # with these strides and lost 2.15 with cifar_stem=True (15.6M MACs)
        # on seed 0 (docs/techniques.md, benchmarks/results/netaug_*.md):
        # compare with plain training on your own model.
        cifar_stem=False,
    )

    # The three lines that matter: wrap, compile, fit.
    trainer = Trainer(model, techniques=[NetAug()])
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.02, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer.fit(
        splits.train,
        validation_data=splits.val,
        epochs=args.epochs,
        # Optional: NetAug never touches the compact model's BN statistics;
        # re-estimating them helps short runs whose moving averages lag.
        callbacks=[BNRecalibration(splits.train, num_images=1000)],
        verbose=2,
    )

    trainer.techniques[0].summary()
    compact = trainer.strip()  # `model` itself: the trained tiny model
    logs = trainer.evaluate(splits.test, verbose=0, return_dict=True)
    print(
        f"compact model: {compact.count_params()} params, "
        f"test accuracy {logs['accuracy']:.4f}"
    )
    if args.export:
        from keras_compact.export import export_tflite

        export_tflite(compact, args.export)
        print(f"exported {args.export} ({os.path.getsize(args.export)} bytes)")


if __name__ == "__main__":
    main()
