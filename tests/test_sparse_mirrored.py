"""SparseTraining under MirroredStrategy with 2 logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so the
training runs in a fresh subprocess that prints a JSON verdict.
"""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from keras_compact.sparse import DSR, PeriodSchedule, RigL, SparseTraining
from keras_compact.training import Trainer

def per_replica(var):
    v = var.value
    return [np.asarray(x.numpy()) for x in getattr(v, "values", [v])]

def model():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="logits")(x))

rng = np.random.default_rng(0)
x = rng.random((64, 8, 8, 3), dtype=np.float32)
y = rng.integers(0, 4, 64)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync}
policies = {
    "dsr": lambda: DSR(target_prunes=0.05, period=PeriodSchedule((), (2,)),
                       initial_threshold=0.05, stop_epoch=None),
    "rigl": lambda: RigL(update_interval=2, end_step=100),
}
for name, make in policies.items():
    keras.utils.set_random_seed(0)
    with strategy.scope():
        tech = SparseTraining(0.8, policy=make(), seed=1)
        trainer = Trainer(model(), techniques=[tech])
        trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                        loss=keras.losses.SparseCategoricalCrossentropy(
                            from_logits=True))
    start = {k: per_replica(m)[0].copy() for k, _, m in tech.sparse_weights}
    trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    same, sparse, moved, copies = True, True, False, 0
    for key, v, m in tech.sparse_weights:
        ms, ks = per_replica(m), per_replica(v)
        copies = max(copies, len(ms))
        same &= all((ms[0] == mi).all() for mi in ms[1:])
        same &= all(np.array_equal(ks[0], ki) for ki in ks[1:])
        sparse &= all(int(np.count_nonzero(k[mm == 0])) == 0
                      for k, mm in zip(ks, ms))
        moved |= bool((ms[0] != start[key]).any())
    out[name] = {"identical": bool(same), "sparse": bool(sparse),
                 "moved": moved, "copies": copies,
                 "updates": int(tech.update_count.numpy())}
print("RESULT" + json.dumps(out))
"""


def test_mirrored_strategy_keeps_replicas_identical():
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT") :])
    assert out["replicas"] == 2
    for name in ("dsr", "rigl"):
        r = out[name]
        assert r["copies"] == 2, r
        assert r["identical"] and r["sparse"] and r["moved"], r
        assert r["updates"] >= 3, r
