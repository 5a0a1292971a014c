"""Where do the int8 file and the fake-quant model part? Layer by layer.

`qat_fidelity.py` measures the end-to-end gap (top-1 agreement, logits in
output steps). This script splits it, for one model trained exactly as
there (same seed and budget, so the same trained model), into:

- isolated: every requantizing tensor of the fake-quant model (after each
  fused conv/dense + BN + activation, after each Add and pooling)
  recomputed from the int8 file's OWN input tensors (dequantized), against
  the file's output tensor: the error each layer adds by itself;
- propagated: the fake-quant model run from the image, against the same
  file tensor: the error accumulated up to that layer.

The file runs on LiteRT's builtin kernels without the default delegate,
keeping every intermediate tensor. Each fake-quant tensor is matched with
the file's int8 tensor of the same shape nearest to it (the match distance
is reported as the propagated error). Differences are in quantization steps
of the file tensor.

    nice -n 10 python benchmarks/qat_layerwise.py --model mobilenet_v2_tiny

Writes benchmarks/results/<name>.{json,md} (default
qat_layerwise_<model>).
"""

import argparse
import os
import tempfile

import harness  # noqa: F401  (first: it sets the environment)
import numpy as np
from harness import write_results
from qat_fidelity import fidelity, train_qat

from keras_compact.export import export_tflite, run_tflite
from keras_compact.quantization import layerwise_fidelity
from keras_compact.quantization.micro import output_step

COLUMNS = [
    "tensor",
    "op",
    "shape",
    "isolated_max",
    "isolated_share_off",
    "propagated_mean",
    "propagated_max",
    "propagated_share_over_1",
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v2_tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-per-class", type=int, default=300)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-lr", type=float, default=0.002)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--name", default=None)
    args = p.parse_args()
    name = args.name or f"qat_layerwise_{args.model}"
    budget = harness.budget_of(
        args,
        "model",
        "seed",
        "n_per_class",
        "epochs",
        "qat_epochs",
        "qat_lr",
        "test_images",
        "images",
        "batch_size",
    )
    res, qat, x = train_qat(args, args.model)
    with tempfile.TemporaryDirectory(prefix="qat_layerwise_") as out_dir:
        path = os.path.join(out_dir, f"{args.model}.tflite")
        export_tflite(res.trainer, path, "int8")
        end = fidelity(path, qat.quantized_model(), x)
        # The same file on two LiteRT kernel sets: how far do two int8
        # runtimes agree with each other?
        xnnpack = run_tflite(path, x, use_default_delegates=True)
        builtin = run_tflite(path, x, use_default_delegates=False)
        steps = np.abs(xnnpack - builtin) / output_step(path)
        runtimes = {
            "agreement": float(
                np.mean(xnnpack.argmax(-1) == builtin.argmax(-1))
            ),
            "max_steps": float(steps.max()),
            "over_1_step": float(np.mean(steps > 1.0001)),
        }
        vs_builtin = fidelity(path, qat.quantized_model(), x, out=builtin)
        rows = layerwise_fidelity(qat, path, x[: args.images])
    for row in rows:
        row["shape"] = str(tuple(row["shape"]))
    iso = [r for r in rows if r.get("isolated_max") is not None]
    worst = max(iso, key=lambda r: r["isolated_share_off"])
    notes = [
        f"End to end on {len(x)} test images (as qat_fidelity.py): "
        f"agreement {100 * end['agreement']:.1f}%, max "
        f"{end['max_steps']:.0f} output steps, "
        f"{100 * end['over_1_step']:.2f}% of logits over one step.",
        f"Isolated ({args.images} images, {len(iso)} of {len(rows)} "
        f"tensors): max {max(r['isolated_max'] for r in iso):.0f} step; "
        f"at most {100 * worst['isolated_share_off']:.3f}% of a tensor's "
        f"values off (worst: {worst['tensor']}). Propagated: up to "
        f"{max(r.get('propagated_max') or 0 for r in rows):.0f} steps.",
        f"Fake-quant model vs the file on LiteRT's builtin kernels (no "
        f"delegate): agreement {100 * vs_builtin['agreement']:.1f}%, max "
        f"{vs_builtin['max_steps']:.0f} steps.",
        f"Runtime vs runtime, the same file: LiteRT with its default "
        f"delegate (XNNPack, as in the first line) vs its builtin "
        f"kernels: agreement {100 * runtimes['agreement']:.1f}%, "
        f"max {runtimes['max_steps']:.0f} output steps, "
        f"{100 * runtimes['over_1_step']:.2f}% of logits over one step.",
        "isolated_share_off: share of values more than half a step apart "
        "(i.e. one step: both sides are on the grid); "
        "propagated_share_over_1: share more than one step apart.",
    ]
    write_results(name, rows, budget, notes=notes, columns=COLUMNS)


if __name__ == "__main__":
    main()
