"""`keras-compact demo`: the README's main job, on real data.

Trains a wider teacher, then the same tiny student twice (plainly, and
distilled from the teacher) for the same number of epochs, exports the
distilled student to a full-integer int8 .tflite, verifies that file with
the LiteRT interpreter on real test images and prints the comparison.
"""

import json
import pathlib

# The demo's fixed budget: it finishes in a few minutes on 2 CPU cores.
STUDENT = "tiny_cnn"
STUDENT_KWARGS = {"width_multiplier": 0.5}
TEACHER = "tiny_cnn"
TEACHER_KWARGS = {"width_multiplier": 2.0}
DEFAULT_EPOCHS = 4
DEFAULT_N_PER_CLASS = 2500
N_VERIFY = 1000


def run_demo(args):
    from keras_compact import data, export, models, training

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or DEFAULT_EPOCHS
    splits = data.load_dataset(
        args.dataset,
        batch_size=args.batch_size,
        n_per_class=args.n_per_class or DEFAULT_N_PER_CLASS,
        seed=args.seed,
        data_dir=args.data_dir,
        download=args.download,
    )
    info = splits.info
    print(
        f"Dataset {info.name}: {info.counts} images, "
        f"{info.num_classes} classes, input {info.input_shape}"
    )
    shape, classes = info.input_shape, info.num_classes

    def build(name, **kwargs):
        return models.get_model(
            name, input_shape=shape, num_classes=classes, **kwargs
        )

    rows = []

    def run(label, model, techniques=None):
        print(
            f"\n== {label}: {model.name}, {model.count_params():,} params, "
            f"{epochs} epochs"
        )
        result = training.train_classifier(
            model, splits, epochs, techniques=techniques, seed=args.seed
        )
        rows.append(
            {
                "run": label,
                "params": model.count_params(),
                "test_accuracy": result.test_accuracy,
                "median_step_ms": result.median_step_ms,
                "seconds": result.seconds,
            }
        )
        return result

    teacher = run("teacher", build(TEACHER, **TEACHER_KWARGS)).model
    run("student plain", build(STUDENT, **STUDENT_KWARGS))
    kd = run(
        "student + KD",
        build(STUDENT, **STUDENT_KWARGS),
        techniques=[training.Distillation(teacher)],
    )
    student = kd.trainer.strip()
    student.save(out / "student_kd.keras")

    x, y = data.as_numpy(splits.test, limit=N_VERIFY)
    reports = []
    for mode in ("float32", "int8"):
        path = out / f"student_kd_{mode}.tflite"
        export.export_tflite(
            student,
            str(path),
            quantization=mode,
            representative_data=data.representative_images(splits, n=200),
        )
        reports.append(export.verify_tflite(str(path), student, x, y))

    print(
        "\n== Results (test accuracy of the compact model, "
        f"{info.counts.get('test')} test images)"
    )
    for r in rows:
        print(
            f"  {r['run']:<14} params {r['params']:>8,}  "
            f"accuracy {r['test_accuracy']:.4f}  "
            f"step {r['median_step_ms']:.1f} ms  "
            f"fit {r['seconds']:.0f} s"
        )
    plain, dist = rows[1]["test_accuracy"], rows[2]["test_accuracy"]
    print(f"  KD vs plain: {100 * (dist - plain):+.2f} points")
    print(
        f"\n== TFLite export of the distilled student, verified on {len(x)} "
        "real test images"
    )
    print(export.format_reports(reports))
    summary = {"runs": rows, "tflite": [r.to_dict() for r in reports]}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(f"\nSaved {out}/student_kd.keras, the .tflite files and demo.json")
    return 0
