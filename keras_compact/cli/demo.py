"""`keras-compact demo`: the README's main job, on real data.

Trains a tiny CNN on Fashion-MNIST (by default) with the same budget,
data and seed in every arm: plainly, with the auxiliary module, with
NetAug, with dynamic sparse training (DSR), with ExpandNets
re-parameterisation (linear branches folded exactly into the tiny CNN),
distilled from a wider teacher,
with a combined recipe (distillation + auxiliary module), and with
quantization-aware training over the last epoch (QAT). The combined
student is exported to float32 and full-integer int8 `.tflite` files, each
verified with the LiteRT interpreter (and, for int8, the microcontroller
runtime when installed) on real test images. The int8 file of the QAT arm
is compared with the plain arm's after post-training quantization. Prints
the comparison table and saves `demo.json` and `demo.png` (accuracy against
training time).

One seed per arm: on this budget, differences of a point or less are
within seed noise (`keras-compact compare` runs several seeds).
"""

import copy
import json
import pathlib

from keras_compact.cli import report

STUDENT = "tiny_cnn"
STUDENT_KWARGS = {"width_multiplier": 0.5}
TEACHER = "tiny_cnn"
TEACHER_KWARGS = {"width_multiplier": 2.0}
SPARSITY = 0.5
# The demo's fixed budget: 9 trainings of 3 epochs on 20,000 images. Measured
# on 2 CPU cores: 447 s inside the command, 7 min 41 s wall with Python
# start-up, while two other trainings shared the cores (before the ExpandNets
# arm, on a quiet machine: 332 s, 5 min 40 s).
DEFAULT_EPOCHS = 3
DEFAULT_N_PER_CLASS = 2000
# `--quick`: a smoke test of every arm (seconds per arm, not a comparison).
QUICK_EPOCHS = 1
QUICK_N_PER_CLASS = 10
QUICK_TEST_N_PER_CLASS = 20
N_VERIFY = 1000
N_VERIFY_QUICK = 100
QAT_ARM = "qat"
COMBINED_ARM = "distill+aux"


def _qat_start(epochs):
    """QAT over the last epoch (from the first step when there is one)."""
    return (epochs - 1) / epochs if epochs > 1 else 0


def _arms(epochs):
    """The demo's arms: (label, techniques factory(teacher, seed))."""
    from keras_compact import (
        AuxiliaryModule,
        NetAug,
        QuantizationAwareTraining,
        Reparameterize,
        SparseTraining,
    )
    from keras_compact.training import Distillation

    return [
        ("plain", lambda teacher, seed: []),
        ("auxiliary", lambda teacher, seed: [AuxiliaryModule(seed=seed)]),
        ("netaug", lambda teacher, seed: [NetAug(seed=seed)]),
        (
            f"dsr {SPARSITY:.0%}",
            lambda teacher, seed: [
                SparseTraining(SPARSITY, policy="dsr", seed=seed)
            ],
        ),
        (
            "expandnets",
            lambda teacher, seed: [Reparameterize("expandnets", seed=seed)],
        ),
        ("distillation", lambda teacher, seed: [Distillation(teacher)]),
        (
            COMBINED_ARM,
            lambda teacher, seed: [
                Distillation(teacher),
                AuxiliaryModule(seed=seed),
            ],
        ),
        (
            QAT_ARM,
            lambda teacher, seed: [
                QuantizationAwareTraining(start=_qat_start(epochs))
            ],
        ),
    ]


def run_demo(args):
    """Runs the demo; see the module docstring. Returns 0."""
    from keras_compact import data, export, models, training

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    quick = getattr(args, "quick", False)
    epochs = args.epochs or (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    n_per_class = args.n_per_class or (
        QUICK_N_PER_CLASS if quick else DEFAULT_N_PER_CLASS
    )
    if args.dataset in data.list_datasets():
        splits = data.load_dataset(
            args.dataset,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            n_per_class=n_per_class,
            seed=args.seed,
            data_dir=args.data_dir,
            download=args.download,
            test_n_per_class=QUICK_TEST_N_PER_CLASS if quick else None,
        )
    else:  # a folder of images: all of it unless --n-per-class
        from keras_compact.cli.run import check_model_and_data, load_splits

        folder_args = copy.copy(args)
        folder_args.model, folder_args.width = STUDENT, None
        check_model_and_data(folder_args)
        splits = load_splits(folder_args)
    info = splits.info
    print(
        f"Dataset {info.name}: {info.counts} images, "
        f"{info.num_classes} classes, input {info.input_shape}; "
        f"{epochs} epochs per model"
    )
    verbose = getattr(args, "verbose", 0)

    def build(name, **kwargs):
        return models.get_model(
            name,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            **kwargs,
        )

    rows = []

    def run(label, model, techniques=None):
        print(f"== {label}: {model.count_params():,} params", flush=True)
        result = training.train_classifier(
            model,
            splits,
            epochs,
            techniques=techniques,
            seed=args.seed,
            verbose=verbose,
        )
        compact = result.trainer.strip()
        nonzero = int(
            sum(
                (w.numpy() != 0).sum()
                for w in compact.trainable_weights
                if len(w.shape) > 1
            )
        )
        row = {
            "arm": label,
            "params": compact.count_params(),
            "nonzero_kernel_weights": nonzero,
            "test_accuracy": result.test_accuracy,
            "median_step_ms": result.median_step_ms,
            "seconds": result.seconds,
        }
        print(
            f"   accuracy {result.test_accuracy:.4f}, "
            f"fit {result.seconds:.0f} s",
            flush=True,
        )
        return row, result

    teacher_row, teacher = run("teacher", build(TEACHER, **TEACHER_KWARGS))
    teacher_model = teacher.model
    results = {}
    for label, make in _arms(epochs):
        row, results[label] = run(
            label,
            build(STUDENT, **STUDENT_KWARGS),
            techniques=make(teacher_model, args.seed),
        )
        rows.append(row)
    student = results[COMBINED_ARM].trainer.strip()
    student.save(out / "student.keras")

    x, y = data.as_numpy(
        splits.test, limit=N_VERIFY_QUICK if quick else N_VERIFY
    )
    representative = data.representative_images(splits, n=200)

    def export_verify(model, name, mode, reference=None):
        path = str(out / f"{name}_{mode}.tflite")
        export.export_tflite(
            model, path, quantization=mode, representative_data=representative
        )
        return export.verify_tflite(path, reference or model, x, y)

    reports = [
        export_verify(student, "student", m) for m in ("float32", "int8")
    ]
    # What ships from QAT is its int8 file (with the trained ranges): against
    # the plain arm's float model quantized after training.
    qat_trainer = results[QAT_ARM].trainer
    int8 = {
        "plain, post-training int8": export_verify(
            results["plain"].trainer.strip(), "plain", "int8"
        ),
        "qat, int8 file": export_verify(qat_trainer, "qat", "int8"),
    }

    summary_rows = [
        {
            "arm": r["arm"],
            "n": 1,
            "mean": r["test_accuracy"],
            "std": 0.0,
            "min": r["test_accuracy"],
            "max": r["test_accuracy"],
            "seconds": r["seconds"],
            "step_ms": r["median_step_ms"],
        }
        for r in [teacher_row, *rows]
    ]
    print(
        f"\n== Results: test accuracy of the deployed model, "
        f"{info.counts.get('test')} test images, {epochs} epochs on "
        f"{info.counts.get('train')} training images, seed {args.seed}"
    )
    print(report.format_table(summary_rows, baseline="plain"))
    print(
        f"(the teacher is {TEACHER} x{TEACHER_KWARGS['width_multiplier']:g}; "
        f"every other arm deploys the same {STUDENT} "
        f"x{STUDENT_KWARGS['width_multiplier']:g}, "
        f"{rows[0]['params']:,} params; dsr keeps "
        f"{1 - SPARSITY:.0%} of the sparse kernels non-zero. One seed: "
        "see `keras-compact compare` for the spread)"
    )
    print(
        f"\n== TFLite export of the {COMBINED_ARM} student, verified on "
        f"{len(x)} real test images"
    )
    print(export.format_reports(reports))
    for r in reports:
        if r.micro is not None:
            print(
                f"{r.quantization} on the microcontroller runtime: "
                f"{r.micro_summary()}"
            )
    print(
        f"\n== int8 files of the same student: post-training quantization "
        f"against QAT over the last epoch, on {len(x)} real test images"
    )
    reference = {
        "plain, post-training int8": "its float model",
        "qat, int8 file": "its fake-quant model",
    }
    for label, r in int8.items():
        print(
            f"{label}: accuracy {100 * r.tflite_accuracy:.2f}% "
            f"({reference[label]} {100 * r.keras_accuracy:.2f}%, top-1 "
            f"agreement {100 * r.top1_agreement:.1f}%)"
        )
    report.plot_accuracy_vs_time(
        [teacher_row, *rows],
        out / "demo.png",
        title=f"{STUDENT} on {info.name}: {epochs} epochs per arm",
    )
    summary = {
        "epochs": epochs,
        "n_per_class": n_per_class,
        "teacher": teacher_row,
        "runs": rows,
        "tflite": [r.to_dict() for r in reports],
        "int8": {label: r.to_dict() for label, r in int8.items()},
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nSaved {out}/student.keras, the .tflite files, demo.json and "
        "demo.png"
    )
    return 0
