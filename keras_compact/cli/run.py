"""One training run of the command line: data, model, techniques, outputs.

Shared by `train` and `compare`. A run's output folder holds:

- `model.keras`: the deployable (stripped) model;
- `model_int8.tflite` (with `--qat`): the int8 file with the trained ranges;
- `history.json` (summary and per-epoch history) and `history.csv`;
- `logs/`: TensorBoard event files (`train/`, `validation/`), with every
  technique's scalars;
- `backup/`: the `keras.callbacks.BackupAndRestore` checkpoint while the
  run is unfinished: rerunning the same command resumes from it;
- `run.json`: the arguments the run was started with.
"""

import csv
import json
import os
import pathlib

from keras_compact.cli.techniques import CliError, check_technique_arguments

# The arguments that define a run (a rerun with the same ones resumes).
RUN_KEYS = (
    "model",
    "width",
    "dataset",
    "image_size",
    "n_per_class",
    "validation_split",
    "batch_size",
    "seed",
    "epochs",
    "optimizer",
    "learning_rate",
)


def is_keras_file(value):
    return str(value).endswith(".keras")


def check_model_and_data(args):
    """Raises `CliError` for an unknown or missing `--model` / `--dataset`."""
    from keras_compact import data, models

    names = [m["name"] for m in models.list_models()]
    if is_keras_file(args.model) or os.sep in args.model:
        if not os.path.isfile(args.model):
            raise CliError(
                "Expected --model to be a zoo model name or an existing "
                f".keras file. Received: --model={args.model} "
                "(file not found)"
            )
        if args.width is not None:
            raise CliError(
                "Expected --width only with a zoo model. "
                f"Received: --model={args.model}"
            )
    elif args.model not in names:
        raise CliError(
            f"Expected --model to be a zoo model name ({', '.join(names)}) "
            f"or an existing .keras file. Received: --model={args.model}"
        )
    if data.is_tfds_name(args.dataset):
        if args.dataset == "tfds:":
            raise CliError(
                "Expected --dataset=tfds:NAME[/CONFIG][:VERSION], e.g. "
                f"tfds:mnist. Received: --dataset={args.dataset}"
            )
    elif args.dataset not in data.list_datasets():
        if not data.is_image_folder(args.dataset):
            raise CliError(
                "Expected --dataset to be one of "
                f"{', '.join(data.list_datasets())}, tfds:NAME (a TFDS "
                "image-classification dataset) or a folder of images "
                f"in class sub-folders. Received: --dataset={args.dataset}"
                + (
                    " (a folder without class sub-folders)"
                    if os.path.isdir(args.dataset)
                    else ""
                )
            )
    elif args.image_size is not None:
        raise CliError(
            "Expected --image-size only with a folder of images or a TFDS "
            f"dataset. Received: --dataset={args.dataset}"
        )
    if args.epochs is not None and args.epochs < 1:
        raise CliError(
            f"Expected --epochs >= 1. Received: --epochs={args.epochs}"
        )
    if not 0 <= args.validation_split < 1:
        raise CliError(
            "Expected --validation-split in [0, 1). "
            f"Received: --validation-split={args.validation_split}"
        )


def check_args(args):
    """All checks of `train` / `compare` arguments; returns the techniques."""
    check_model_and_data(args)
    return check_technique_arguments(args)


def load_splits(args, augment=True, seed=None):
    """The `DatasetSplits` of `--dataset` (a built-in name, `tfds:NAME` or
    a folder)."""
    from keras_compact import data

    seed = args.seed if seed is None else seed
    size = None
    if args.image_size is not None:
        size = (args.image_size, args.image_size)
    common = dict(
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        n_per_class=args.n_per_class,
        augment=augment,
        seed=seed,
    )
    if data.is_tfds_name(args.dataset):
        common["image_size"] = size
    elif args.dataset not in data.list_datasets():
        return data.load_image_folder(args.dataset, image_size=size, **common)
    return data.load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        **common,
    )


def build_model(args, info):
    """A fresh zoo model, or the user's `.keras` model (checked to fit)."""
    import keras

    from keras_compact import models

    if not is_keras_file(args.model):
        kwargs = {}
        if args.width is not None:
            kwargs["width_multiplier"] = args.width
        return models.get_model(
            args.model,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            **kwargs,
        )
    model = keras.saving.load_model(args.model, compile=False)
    _check_fits(model, info, "--model", args.model)
    return model


def _check_fits(model, info, flag, value):
    shape = tuple(model.input_shape[1:])
    outputs = model.outputs if hasattr(model, "outputs") else None
    if shape != tuple(info.input_shape):
        raise CliError(
            f"Expected {flag} to take the dataset's images of shape "
            f"{tuple(info.input_shape)}. Received: {flag}={value} with "
            f"input shape {shape}"
        )
    if outputs and len(outputs) == 1:
        n = outputs[0].shape[-1]
        if n != info.num_classes:
            raise CliError(
                f"Expected {flag} to output {info.num_classes} classes (the "
                f"dataset's). Received: {flag}={value} with {n} outputs"
            )


class RunContext:
    """What a technique's `build` may need: data, seed, a teacher.

    Args:
        args: the parsed arguments.
        splits: the run's `DatasetSplits`.
        output: the run's output folder (`pathlib.Path`).
        teachers: optional dict shared between runs (zoo teachers trained
            once per command).
        teacher_dir: where a zoo teacher is saved (default: `output`).
    """

    def __init__(self, args, splits, output, teachers=None, teacher_dir=None):
        self.args = args
        self.splits = splits
        self.output = output
        self.teachers = {} if teachers is None else teachers
        self.teacher_dir = pathlib.Path(teacher_dir or output)

    def teacher(self, value):
        """The teacher model of `--distill`: loaded, or trained once."""
        import keras

        if value in self.teachers:
            return self.teachers[value]
        if is_keras_file(value) or os.path.isfile(value):
            model = keras.saving.load_model(value, compile=False)
            _check_fits(model, self.splits.info, "--distill", value)
        else:
            model = self._train_teacher(value)
        self.teachers[value] = model
        return model

    def _train_teacher(self, name):
        import keras

        from keras_compact import models, training

        args = self.args
        path = self.teacher_dir / "teacher.keras"
        if path.exists():
            print(f"Teacher: reusing {path}")
            return keras.saving.load_model(path, compile=False)
        width = args.teacher_width or 2.0
        epochs = args.teacher_epochs or args.epochs
        info = self.splits.info
        model = models.get_model(
            name,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            width_multiplier=width,
        )
        print(
            f"Teacher: {name} x{width:g} ({model.count_params():,} params), "
            f"{epochs} epochs"
        )
        result = training.train_classifier(
            model,
            self.splits,
            epochs,
            optimizer=args.optimizer,
            learning_rate=args.learning_rate,
            seed=args.seed,
            verbose=args.verbose,
        )
        print(f"Teacher test accuracy {result.test_accuracy:.4f}")
        teacher = result.model
        self.teacher_dir.mkdir(parents=True, exist_ok=True)
        teacher.save(path)
        return teacher


def run_config(args, techniques):
    config = {k: getattr(args, k, None) for k in RUN_KEYS}
    config["techniques"] = {
        t.name: {o: getattr(args, o, None) for o in (t.dest, *t.options)}
        for t in techniques
    }
    return json.loads(json.dumps(config, default=str))


def train_run(
    args,
    techniques,
    output,
    splits=None,
    teachers=None,
    teacher_dir=None,
    extra_callbacks=None,
):
    """Trains one run into `output`; resumes an unfinished one.

    Args:
        args: parsed `train` / `compare` arguments.
        techniques: the enabled `TechniqueFlags` entries.
        output: the run's output folder.
        splits: optional `DatasetSplits` (else loaded from `args`).
        teachers: optional dict of zoo teachers shared between runs.
        teacher_dir: where a zoo teacher is saved (default: `output`).
        extra_callbacks: optional extra Keras callbacks (tests).

    Returns:
        The summary dict also written to `history.json`.
    """
    import keras

    from keras_compact import callbacks as kc_callbacks
    from keras_compact import training

    out = pathlib.Path(output)
    config = run_config(args, techniques)
    run_file, backup = out / "run.json", out / "backup"
    summary_file = out / "history.json"
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous != config and not args.overwrite:
            raise CliError(
                "Expected --output to be a new folder or one of a run of "
                "the same command (to resume it); use --overwrite to "
                f"replace it. Received: --output={out} (holds another run)"
            )
        if (
            previous == config
            and summary_file.exists()
            and not backup.exists()
            and not args.overwrite
        ):
            summary = json.loads(summary_file.read_text())
            print(
                f"{out} already holds this finished run (test accuracy "
                f"{summary['test_accuracy']:.4f}); use --overwrite to "
                "train again."
            )
            return summary
    if args.overwrite:
        for name in ("history.csv", "history.json", "model.keras"):
            (out / name).unlink(missing_ok=True)
        if backup.exists():
            import shutil

            shutil.rmtree(backup)
    # Data and model first: a run that cannot start leaves no run.json
    # behind to block the corrected command.
    splits = splits or load_splits(args)
    # The initial weights (and any technique's random state) follow --seed
    # alone, whatever ran before in this process: a rerun that resumes
    # builds the same model as the interrupted one.
    keras.utils.set_random_seed(args.seed)
    model = build_model(args, splits.info)
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(config, indent=2))
    resuming = backup.exists()
    context = RunContext(args, splits, out, teachers, teacher_dir)
    built = [t.build(args, context) for t in techniques]
    csv_path = out / "history.csv"
    if not resuming:
        csv_path.unlink(missing_ok=True)
    cbs = [
        kc_callbacks.TechniqueScalars(),
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.CSVLogger(str(csv_path), append=True),
        *tensorboard_callbacks(out / "logs"),
        *(extra_callbacks or []),
    ]
    label = "+".join(t.name for t in techniques) or "plain"
    print(
        f"{'Resuming' if resuming else 'Training'} {model.name} "
        f"({model.count_params():,} params) on {splits.info.name} "
        f"{splits.info.counts}: {label}, {args.epochs} epochs -> {out}"
    )
    result = training.train_classifier(
        model,
        splits,
        args.epochs,
        techniques=built,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        seed=args.seed,
        callbacks=cbs,
        verbose=args.verbose,
    )
    compact = result.trainer.strip()
    compact.save(out / "model.keras")
    if any(t.name == "qat" for t in techniques):
        # The int8 file of quantization-aware training, with its ranges.
        from keras_compact.export import export_tflite

        export_tflite(
            result.trainer, str(out / "model_int8.tflite"), quantization="int8"
        )
    summary = {
        **config,
        "recipe": label,
        "params": compact.count_params(),
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "median_step_ms": result.median_step_ms,
        "seconds": result.seconds,
        "resumed": resuming,
        "history": read_history(csv_path) or result.history,
    }
    summary_file.write_text(json.dumps(summary, indent=2))
    return summary


def tensorboard_callbacks(log_dir):
    """`[keras.callbacks.TensorBoard(log_dir)]`, or `[]` (with a note)
    where the `tensorboard` package is not installed."""
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorboard") is None:
        print("Note: no TensorBoard logs (pip install tensorboard).")
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]


def read_history(path):
    """The per-epoch history written by `CSVLogger`, as lists per key."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    history = {}
    for row in rows:
        for k, v in row.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                pass
            history.setdefault(k, []).append(v)
    return history
