"""Why does NetAug hurt the tiny CIFAR-10 MobileNetV2? A probe of the
augmented sub-models' logits early in training.

Trains the student of `netaug_cifar10.py` with NetAug for the first
`--epochs` epochs of the 8-epoch schedule of `netaug_ablation.py`, then, on
one batch of test images (batch statistics, as in training), compares the
largest |logit| and the loss of: the tiny model, the largest augmented
model, and every augmented channel group widened alone to its largest width
(all other groups at their tiny width).

    python benchmarks/netaug_logits.py [--epochs 3] [--seed 0]

Writes benchmarks/results/netaug_logits.{json,md}.
"""

import argparse

import keras
import numpy as np
from harness import write_results
from netaug_cifar10 import _compiled

from keras_compact import data, models
from keras_compact.netaug import NetAug


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--schedule-epochs", type=int, default=8)
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    keras.utils.set_random_seed(args.seed)
    splits = data.load_dataset(
        "cifar10", n_per_class=args.n_per_class, seed=args.seed
    )
    model = models.get_model(
        "mobilenet_v2",
        input_shape=splits.info.input_shape,
        num_classes=splits.info.num_classes,
        alpha=0.35,
        cifar_stem=False,
    )
    netaug = NetAug(seed=args.seed)
    steps = int(splits.train.cardinality())
    trainer = _compiled(
        model, [netaug], steps, args.schedule_epochs, peak_lr=0.02
    )
    trainer.fit(splits.train, epochs=args.epochs, verbose=2)

    x, y = data.as_numpy(splits.test, limit=128)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net = netaug.supernet
    tiny, largest = net.min_widths(), net.max_widths()

    def row(name, kind, size, width, widths):
        logits = net(x, widths, training=True)
        return {
            "sub_model": name,
            "kind": kind,
            "tiny_width": size,
            "width": width,
            "max_abs_logit": float(np.max(np.abs(logits))),
            "loss": float(loss(y, logits)),
        }

    rows = [
        row("tiny", "", "", "", tiny),
        row("largest", "", "", "", largest),
    ]
    for j, g in enumerate(net.augmented):
        widths = tiny.copy()
        widths[j] = largest[j]
        rows.append(row(g.layers[0], g.kind, g.size, int(largest[j]), widths))
    budget = {
        "student": "mobilenet_v2 alpha 0.35, 32x32, ImageNet strides",
        "training": f"NetAug defaults, {args.epochs} epochs of the "
        f"{args.schedule_epochs}-epoch schedule of netaug_ablation.py "
        f"({args.n_per_class} images per class, seed {args.seed})",
        "probe": "128 test images, training-mode batch statistics; each "
        "group alone at its largest width",
    }
    write_results("netaug_logits", rows, budget)


if __name__ == "__main__":
    main()
