"""The tensorflow-model-optimization QAT peer of benchmarks/qat_cifar10.py.

tfmot 0.8 quantization-aware training (`quantize_model`, its default 8-bit
scheme) on legacy tf_keras, the only Keras tfmot supports. For each model
and seed it starts from the very float model that qat_cifar10.py trained
and saved (`--save-dir`): the Keras 3 graph is rebuilt layer for layer in
tf_keras (same layer classes and configs, same weights), fine-tuned with
the same budget as keras_compact's QAT arm (epochs, learning rate, cosine,
SGD-Nesterov 0.9, decoupled weight decay 5e-5 off biases and BN, the same
seeded data pipeline), converted with tfmot's documented path
(`TFLiteConverter.from_keras_model`, `Optimize.DEFAULT`, int8 input and
output, 200 calibration images for any tensor tfmot leaves without a
range) and scored by LiteRT on the same test images.

tfmot must run in its own process with TF_USE_LEGACY_KERAS=1 and tf_keras
and tfmot importable, for example:

    pip install --target /work/peers-lib --no-deps "tf-keras==2.21.*" \\
        "tensorflow-model-optimization==0.8.*"
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=/work/peers-lib:. python \\
        benchmarks/qat_tfmot_peer.py --models resnet8 mobilenet_v2 wrn16_2 \\
        --seeds 0 1 --n-per-class 1000 \\
        --save-dir ~/.cache/keras_compact/qat_bench

Writes benchmarks/results/<name>.{json,md} (default qat_tfmot_peer).
"""

import argparse
import inspect
import os
import pathlib
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import harness  # first: it sets the environment
import keras  # noqa: E402  (Keras 3: reads the saved float models)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
from harness import RunLog, write_results  # noqa: E402
from qat_cifar10 import (  # noqa: E402
    add_data_arguments,
    file_row,
    files_dir,
    fresh_splits,
    test_arrays,
)
from tf_keras_recipe import compile_like_recipe  # noqa: E402

from keras_compact import data  # noqa: E402
from keras_compact.export import verify_tflite  # noqa: E402
from keras_compact.graph import ModelGraph  # noqa: E402
from keras_compact.quantization.convert import (  # noqa: E402
    NotInt8Error,
    check_int8_ops,
    op_names,
)

_DROP = ("_initializer", "_regularizer", "_constraint")


def tf_keras_layer(layer):
    """A tf_keras layer of the same class and config as a Keras 3 layer
    (initialisers and regularisers dropped: the weights are copied)."""
    cls = getattr(tf_keras.layers, type(layer).__name__)
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {
        k: v
        for k, v in layer.get_config().items()
        if k in accepted and not k.endswith(_DROP) and k != "dtype"
    }
    return cls(**config)


def to_tf_keras(model):
    """The Keras 3 functional `model` rebuilt in tf_keras, weights copied."""
    graph = ModelGraph(model)
    tensors, built = {}, {}
    inputs = []
    for t in model.inputs:
        inputs.append(tf_keras.Input(t.shape[1:], name=t.name))
        tensors[id(t)] = inputs[-1]
    for node in graph.nodes:
        if node.is_input:
            continue
        layer = node.operation
        if layer.name not in built:
            built[layer.name] = tf_keras_layer(layer)
        args = [tensors[id(t)] for t in node.inputs]
        out = built[layer.name](args if len(args) > 1 else args[0])
        tensors[id(node.outputs[0])] = out
    rebuilt = tf_keras.Model(
        inputs, [tensors[id(t)] for t in model.outputs], name=model.name
    )
    for name, layer in built.items():
        layer.set_weights(model.get_layer(name).get_weights())
    return rebuilt


class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantizes a layer's output only: what tfmot's guide prescribes for a
    layer its default scheme refuses (here a BatchNormalization that does
    not follow a convolution, as after the pre-activation Adds of a
    Wide ResNet; the converter lowers it to int8 MUL and ADD)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [
            tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self):
        return {}


def quantize(base):
    """tfmot's `quantize_model`, with standalone BatchNormalization layers
    annotated with `OutputQuantizeConfig` (tfmot refuses them otherwise)."""
    convs = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)

    def standalone_bn(layer):
        if not isinstance(layer, tf_keras.layers.BatchNormalization):
            return False
        parents = layer.inbound_nodes[0].inbound_layers
        parents = parents if isinstance(parents, list) else [parents]
        return not (len(parents) == 1 and isinstance(parents[0], convs))

    def annotate(layer):
        if standalone_bn(layer):
            return tfmot.quantization.keras.quantize_annotate_layer(
                layer, quantize_config=OutputQuantizeConfig()
            )
        return layer

    if not any(standalone_bn(layer) for layer in base.layers):
        return tfmot.quantization.keras.quantize_model(base)
    annotated = tf_keras.models.clone_model(base, clone_function=annotate)
    annotated.set_weights(base.get_weights())
    annotated = tfmot.quantization.keras.quantize_annotate_model(annotated)
    with tfmot.quantization.keras.quantize_scope(
        {"OutputQuantizeConfig": OutputQuantizeConfig}
    ):
        return tfmot.quantization.keras.quantize_apply(annotated)


def fine_tune(qmodel, splits, args):
    steps = int(splits.train.cardinality())
    compile_like_recipe(
        qmodel, args.qat_lr, steps * args.qat_epochs, args.weight_decay
    )
    start = time.perf_counter()
    qmodel.fit(
        splits.train,
        validation_data=splits.val,
        epochs=args.qat_epochs,
        verbose=0,
    )
    return time.perf_counter() - start


def convert(qmodel, path, calibration):
    converter = tf.lite.TFLiteConverter.from_keras_model(qmodel)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Ranges of tensors tfmot left without a fake-quant (the MUL and ADD a
    # standalone BatchNormalization lowers to) come from calibration;
    # without it they stay float32 ops.
    converter.representative_dataset = lambda: (
        [image[None]] for image in calibration
    )
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    pathlib.Path(path).write_bytes(converter.convert())


def run_seed(args, name, seed, out_dir):
    saved = pathlib.Path(args.save_dir).expanduser() / f"{name}_s{seed}.keras"
    if not saved.exists():
        raise FileNotFoundError(
            f"No float model at {saved}: run benchmarks/qat_cifar10.py with "
            "the same --save-dir first."
        )
    float_model = keras.saving.load_model(saved)
    splits = fresh_splits(args, seed)
    tf_keras.utils.set_random_seed(seed)
    base = to_tf_keras(float_model)
    x, y = test_arrays(splits)
    # The rebuilt float model computes what the saved one does.
    diff = float(
        np.max(np.abs(base.predict(x[:256], verbose=0) - float_model(x[:256])))
    )
    qmodel = quantize(base)
    seconds = fine_tune(qmodel, splits, args)
    path = os.path.join(out_dir, f"{name}_s{seed}_tfmot.tflite")
    convert(qmodel, path, data.representative_images(splits, 200))
    # Reference for agreement: the float model (tfmot's fake-quant model
    # is a tf_keras object the report cannot run).
    report = verify_tflite(
        path, float_model, x, y, latency_runs=args.latency_runs
    )
    fq = qmodel.predict(x, verbose=0, batch_size=256)
    try:
        check_int8_ops(path)
        not_int8 = []
    except NotInt8Error as e:
        not_int8 = e.ops
    return {
        "model": name,
        "seed": seed,
        "arm": "tfmot_qat_int8",
        "acc": report.tflite_accuracy,
        "fake_quant_acc": float(np.mean(np.argmax(fq, -1) == y)),
        "rebuild_max_diff": diff,
        "train_s": seconds,
        **file_row(report),
        "ops": len(op_names(path)),
        "not_int8_ops": "; ".join(not_int8) or "none",
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(p)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--qat-lr", type=float, default=0.002)
    p.add_argument("--weight-decay", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latency-runs", type=int, default=50)
    p.add_argument("--save-dir", default="~/.cache/keras_compact/qat_bench")
    p.add_argument("--name", default="qat_tfmot_peer")
    args = p.parse_args()
    budget = harness.budget_of(
        args,
        "n_per_class",
        "test_n_per_class",
        "qat_epochs",
        "qat_lr",
        "weight_decay",
        "batch_size",
    )
    budget["versions"] = {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tfmot": getattr(tfmot, "__version__", "0.8"),
    }
    log = RunLog(args.name, budget)
    with files_dir(args, "qat_peer_") as out_dir:
        for name in args.models:
            for seed in args.seeds:
                if log.done(model=name, seed=seed):
                    continue
                row = run_seed(args, name, seed, out_dir)
                print(row, flush=True)
                log.add(row)
    notes = [
        "tfmot QAT (quantize_model, default 8-bit scheme) fine-tuning the "
        "float model that qat_cifar10.py saved, with the same QAT budget; "
        "acc: the int8 .tflite (LiteRT) on the test images; fake_quant_acc: "
        "tfmot's fake-quant tf_keras model; rebuild_max_diff: max |logit| "
        "difference between the tf_keras rebuild and the saved Keras 3 "
        "float model on 256 test images.",
    ]
    write_results(args.name, log.rows, budget, notes)


if __name__ == "__main__":
    main()
