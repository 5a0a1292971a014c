"""Knowledge distillation in a few lines of `model.fit` code, then int8 export.

    python examples/distill_fashion_mnist.py --epochs 3 --n-per-class 1000

Trains a wider teacher, distils it into a tiny student through
`keras_compact.Trainer`, and exports the student (the user's own model
object) to a verified full-integer int8 .tflite.
"""

import argparse

import keras

import keras_compact as kc


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--output", default="student_int8.tflite")
    args = p.parse_args()

    splits = kc.data.load_dataset("fashion_mnist", n_per_class=args.n_per_class)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = kc.models.get_model("tiny_cnn", width_multiplier=2.0)
    teacher.compile("adam", loss, metrics=["accuracy"])
    teacher.fit(splits.train, epochs=args.epochs, verbose=2)

    student = kc.models.get_model("tiny_cnn", width_multiplier=0.5)
    trainer = kc.Trainer(student, techniques=[kc.Distillation(teacher)])
    trainer.compile("adam", loss, metrics=["accuracy"])
    trainer.fit(
        splits.train, validation_data=splits.val, epochs=args.epochs, verbose=2
    )
    logs = trainer.evaluate(splits.test, verbose=0, return_dict=True)
    print(f"student test accuracy: {logs['accuracy']:.4f}")

    compact = trainer.strip()  # `student` itself, trained
    kc.export.export_tflite(
        compact,
        args.output,
        quantization="int8",
        representative_data=kc.data.representative_images(splits),
    )
    x, y = kc.data.as_numpy(splits.test, limit=500)
    print(kc.export.verify_tflite(args.output, compact, x, y))


if __name__ == "__main__":
    main()
