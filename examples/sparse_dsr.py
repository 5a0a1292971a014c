"""Sparsify a zoo model with DSR through `model.fit`, then export it.

Dynamic Sparse Reparameterization (Mostafa and Wang, ICML 2019) keeps a
fixed budget of non-zero weights and moves them between layers during
training. The essential lines:

    trainer = keras_compact.Trainer(model, techniques=[
        SparseTraining(sparsity=0.9, policy=DSR(...))])
    trainer.compile(optimizer, loss, metrics)
    trainer.fit(train, epochs=...)
    export_tflite(trainer, "model.tflite", sparsity=True)

Quick run (about 1-2 minutes on 2 CPU cores):

    python examples/sparse_dsr.py --epochs 3 --n-per-class 100

Real CIFAR-10 comes from KERAS_COMPACT_DATA_DIR (or the Keras cache).
"""

import argparse
import gzip
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_compact  # noqa: E402
from keras_compact.export import export_tflite, verify_tflite  # noqa: E402
from keras_compact.sparse import (  # noqa: E402
    DSR,
    PeriodSchedule,
    SparseTraining,
    plot_density,
)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet8")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-per-class", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="sparse_dsr_out")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    splits = keras_compact.data.load_dataset(
        args.dataset,
        batch_size=args.batch_size,
        n_per_class=args.n_per_class,
        test_n_per_class=100,
    )
    info = splits.info
    steps = int(splits.train.cardinality())
    model = keras_compact.models.get_model(
        args.model,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
    )

    # DSR's CIFAR schedule (200 epochs of 500 iterations) scaled to this
    # run; N_p = 20000 of WRN-28-2's 1.46M sparse weights, i.e. 1.37% of
    # the dense size, here as a fraction of the non-zero budget.
    dsr = DSR(
        target_prunes=min(0.5, 0.0137 / (1.0 - args.sparsity)),
        period=PeriodSchedule().scaled(
            args.epochs / 200, steps / 500, min_period=2
        ),
        stop_epoch=max(1, int(0.95 * args.epochs)),
    )
    sparse = SparseTraining(sparsity=args.sparsity, policy=dsr, seed=0)
    trainer = keras_compact.Trainer(model, techniques=[sparse])
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = trainer.fit(
        splits.train,
        validation_data=splits.val,
        epochs=args.epochs,
        verbose=2,
    )

    report = sparse.summary()
    print(
        "test accuracy:",
        trainer.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"],
    )
    sizes = {r.item: r.values["size"] for r in report.applied}
    plot_density(history, os.path.join(args.out, "density.png"), sizes=sizes)

    x, y = next(iter(splits.test))
    for name, kw in (
        ("dense_storage", {}),
        ("sparse_storage", {"sparsity": True}),
    ):
        path = os.path.join(args.out, f"{args.model}_{name}.tflite")
        export_tflite(trainer, path, **kw)  # exports trainer.strip()
        report = verify_tflite(
            path, trainer, x.numpy(), y.numpy(), latency_runs=20
        )
        with open(path, "rb") as f:
            gz = len(gzip.compress(f.read(), 9))
        print(
            f"{name}: {report.size_bytes} B raw, {gz} B gzip, max |diff| "
            f"{report.max_abs_diff:.2e}, {report.delegates}"
        )


if __name__ == "__main__":
    main()
