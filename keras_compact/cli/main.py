"""The `keras-compact` command: models, train, export, demo."""

import argparse
import json
import os
import pathlib
import sys
import time


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _add_data_args(p, dataset="fashion_mnist"):
    p.add_argument(
        "--dataset",
        default=dataset,
        help="fashion_mnist, cifar10 or digits (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (else "
        "$KERAS_COMPACT_DATA_DIR, then the Keras cache)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="allow downloading the dataset if no local copy",
    )
    p.add_argument(
        "--n-per-class",
        type=int,
        default=None,
        help="stratified training subset per class (fast runs)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


def _load(args, augment=True):
    from keras_compact import data

    return data.load_dataset(
        args.dataset,
        batch_size=args.batch_size,
        n_per_class=args.n_per_class,
        augment=augment,
        seed=args.seed,
        data_dir=args.data_dir,
        download=args.download,
    )


def cmd_models(args):
    from keras_compact import models
    from keras_compact.graph import count_macs

    rows = []
    for entry in models.list_models():
        m = models.get_model(entry["name"])
        rows.append(
            (
                entry["name"],
                m.count_params(),
                count_macs(m),
                str(tuple(m.input_shape[1:])),
                entry["description"],
            )
        )
    w = max(len(r[0]) for r in rows)
    print(
        f"{'model':<{w}}  {'params':>9}  {'MACs':>12}  {'input':<12} "
        "description"
    )
    for name, params, macs, shape, desc in rows:
        print(f"{name:<{w}}  {params:>9,}  {macs:>12,}  {shape:<12} {desc}")
    return 0


def _techniques(args, info):
    import keras

    from keras_compact import training

    techniques = []
    if args.teacher:
        teacher = keras.saving.load_model(args.teacher)
        techniques.append(
            training.Distillation(
                teacher, temperature=args.kd_temperature, alpha=args.kd_alpha
            )
        )
    return techniques


def cmd_train(args):
    import keras

    from keras_compact import models, training

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    splits = _load(args)
    model = models.get_model(
        args.model,
        input_shape=splits.info.input_shape,
        num_classes=splits.info.num_classes,
    )
    backup = keras.callbacks.BackupAndRestore(str(out / "backup"))
    result = training.train_classifier(
        model,
        splits,
        args.epochs,
        techniques=_techniques(args, splits.info),
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        seed=args.seed,
        callbacks=[backup],
    )
    compact = result.trainer.strip()
    compact.save(out / "model.keras")
    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "epochs": args.epochs,
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "median_step_ms": result.median_step_ms,
        "seconds": result.seconds,
        "history": result.history,
    }
    (out / "history.json").write_text(json.dumps(summary, indent=2))
    print(
        f"test accuracy {result.test_accuracy:.4f}; saved "
        f"{out / 'model.keras'} and {out / 'history.json'}"
    )
    return 0


def cmd_export(args):
    import keras

    from keras_compact import data, export

    model = keras.saving.load_model(args.model)
    splits = _load(args, augment=False)
    x, y = data.as_numpy(splits.test, limit=args.n_verify)
    rep = data.representative_images(splits, n=args.n_calibration)
    export.export_tflite(
        model,
        args.output,
        quantization=args.quantization,
        representative_data=rep if args.quantization == "int8" else None,
        int8_io=args.int8_io,
    )
    report = export.verify_tflite(args.output, model, x, y)
    print(report)
    report.save(str(pathlib.Path(args.output).with_suffix(".json")))
    return 0


def cmd_demo(args):
    from keras_compact.cli.demo import run_demo

    return run_demo(args)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-compact",
        description="Train tiny Keras models better; export them to TFLite.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("train", help="train a zoo model on a dataset")
    p.add_argument("--model", default="tiny_cnn")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument(
        "--teacher",
        default=None,
        help="a trained .keras teacher: adds knowledge distillation",
    )
    p.add_argument("--kd-alpha", type=float, default=0.9)
    p.add_argument("--kd-temperature", type=float, default=4.0)
    p.add_argument(
        "--output",
        default="runs/train",
        help="output folder (model.keras, history.json, backup/)",
    )
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "export", help="export a .keras model to a verified .tflite"
    )
    p.add_argument("model", help="path of a .keras model")
    p.add_argument("--output", required=True, help="path ending in .tflite")
    p.add_argument(
        "--quantization",
        default="int8",
        choices=["float32", "float16", "dynamic_range", "int8"],
    )
    p.add_argument(
        "--int8-io",
        action="store_true",
        help="int8 input and output tensors (int8 only)",
    )
    _add_data_args(p)
    p.add_argument(
        "--n-verify",
        type=int,
        default=500,
        help="test images used to verify the .tflite",
    )
    p.add_argument("--n-calibration", type=int, default=200)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser(
        "demo",
        help="the main job: plain vs distilled tiny "
        "model on real data, int8 export, verified",
    )
    _add_data_args(p)
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per model (default: the demo's budget)",
    )
    p.add_argument("--output", default="runs/demo")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv=None):
    _quiet_tf()
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        code = args.fn(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"keras-compact {args.command}: error: {e}", file=sys.stderr)
        return 2
    if args.command != "models":
        print(
            f"[{args.command} finished in {time.perf_counter() - start:.0f} s]"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
