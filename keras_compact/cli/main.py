"""The `keras-compact` command: models, train, export, demo."""

import argparse
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
        help="fashion_mnist, cifar10, digits; tfds:NAME[/CONFIG][:VERSION] "
        "for a TensorFlow Datasets image-classification dataset (e.g. "
        "tfds:mnist, tfds:beans; read from --data-dir, "
        "$KERAS_COMPACT_DATA_DIR/tensorflow_datasets, $TFDS_DATA_DIR or "
        "~/tensorflow_datasets; downloaded only with --download); or a "
        "folder of images in class sub-folders (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the built-in datasets' files (else "
        "$KERAS_COMPACT_DATA_DIR, then the Keras cache), or the TFDS data "
        "folder of a tfds: dataset",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="allow downloading a built-in or tfds: dataset if no local copy",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="folder of images or tfds: dataset only: resize to SIZE x SIZE "
        "(default: the dataset's or the first image's size)",
    )
    p.add_argument(
        "--validation-split",
        type=float,
        default=0.1,
        help="fraction of the training images held out for validation "
        "(default: %(default)s)",
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
    from keras_compact.cli.run import load_splits

    return load_splits(args, augment=augment)


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


def cmd_train(args):
    from keras_compact.cli.run import check_args, train_run

    techniques = check_args(args)
    summary = train_run(args, techniques, args.output)
    out = pathlib.Path(args.output)
    print(
        f"test accuracy {summary['test_accuracy']:.4f} ({summary['recipe']});"
        f" saved {out / 'model.keras'}, {out / 'history.json'}, "
        f"TensorBoard logs in {out / 'logs'}"
    )
    return 0


def cmd_compare(args):
    from keras_compact.cli.compare import run_compare

    return run_compare(args)


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


def _add_run_args(p, output):
    from keras_compact.cli.techniques import add_technique_arguments

    g = p.add_argument_group("model and training")
    g.add_argument(
        "--model",
        default="tiny_cnn",
        help="a zoo model name (see `keras-compact models`) or your own "
        ".keras file (default: %(default)s)",
    )
    g.add_argument(
        "--width",
        type=float,
        default=None,
        help="zoo models only: width_multiplier",
    )
    g.add_argument("--epochs", type=int, default=5)
    g.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    g.add_argument("--learning-rate", type=float, default=0.05)
    g.add_argument(
        "--output",
        default=output,
        help="output folder (default: %(default)s)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output instead of resuming it",
    )
    g.add_argument(
        "--verbose",
        type=int,
        default=2,
        choices=[0, 1, 2],
        help="Keras fit verbosity (default: %(default)s, a line per epoch)",
    )
    _add_data_args(p.add_argument_group("data"))
    add_technique_arguments(p)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-compact",
        description="Train tiny Keras models better; export them to TFLite.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser(
        "train",
        help="train a zoo or .keras model with any mix of techniques",
        description="Train a zoo model or your own .keras model on a "
        "built-in dataset, a TFDS image-classification dataset (tfds:NAME) "
        "or a folder of images, with any combination of the technique "
        "flags below. The output folder holds model.keras "
        "(deployable), history.json/.csv, TensorBoard logs/ and a backup/: "
        "rerunning the same command resumes an interrupted run.",
        epilog="Examples:\n"
        "  keras-compact train --aux --sparse 0.8 --output runs/a\n"
        "  keras-compact train --model my.keras --dataset photos/ "
        "--image-size 64 --netaug --distill teacher.keras\n"
        "  keras-compact train --dataset tfds:beans --image-size 64 "
        "--download --aux\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p, output="runs/train")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "compare",
        help="plain training against a recipe, over several seeds",
        description="Train the model plainly and with the recipe given by "
        "the technique flags, for --seeds seeds each, on the same data; "
        "print a table (mean and spread per arm) and save compare.json, "
        "compare.csv and compare.png (accuracy against training time).",
        epilog="Example:\n"
        "  keras-compact compare --dataset photos/ --aux --sparse 0.8 "
        "--seeds 3 --epochs 5\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p, output="runs/compare")
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="seeds per arm (default: %(default)s)",
    )
    p.set_defaults(fn=cmd_compare)

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
        help="the main job: a tiny model on real data, plain vs each "
        "technique and a combined recipe, int8 export verified",
    )
    _add_data_args(p)
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per model (default: the demo's budget)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny budget (a smoke test, not a comparison)",
    )
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    p.add_argument("--output", default="runs/demo")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv=None):
    """Runs the `keras-compact` command.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 2 for a usage error (the message,
        on stderr, names the flag and the value received).
    """
    _quiet_tf()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse's usage errors and --help
        return e.code if isinstance(e.code, int) else 2
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
