"""The scoreboard: every technique on full datasets at a realistic budget.

A campaign of named runs (task x arm x seed). Each run trains with the
project's one recipe (`keras_compact.training.train_classifier`) on the FULL
training set (10% held out for validation) and is scored on the FULL test
set, float and int8 as shipped (post-training int8 .tflite run by LiteRT).

Built to run for days in the background on a 2-core machine:

- every run checkpoints every epoch (`keras.callbacks.BackupAndRestore`)
  into its own folder under `--campaign-dir` (outside the repository), and
  its data pipeline follows fit's epoch, so an interrupted run resumes with
  the batches an uninterrupted one would have seen;
- each finished run is appended to `benchmarks/results/scoreboard_runs.json`
  at once; a rerun of the same command skips finished runs;
- `--dry-run` measures each arm's step time for a few steps and prints the
  estimated CPU hours of what is left, before anything trains;
- `--max-runs N` stops after N runs (to fill one session), `--only` picks
  tasks / arms / seeds.

Within a seed every arm sees the same batch order and augmentation (a fresh
seeded pipeline per run). Arms whose technique has not landed yet are
listed as pending.

    nice -n 10 python benchmarks/scoreboard.py --dry-run
    nice -n 10 python benchmarks/scoreboard.py --only arm=plain --max-runs 2

Writes benchmarks/results/scoreboard.{md,json} and scoreboard_runs.json.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import harness  # noqa: F401  (first: it sets the environment)
import keras
import numpy as np
from harness import RESULTS, write_results

from keras_compact import data, models, training
from keras_compact.export import export_tflite, verify_tflite
from keras_compact.graph import count_macs

RUNS_FILE = RESULTS / "scoreboard_runs.json"

# name: (dataset, model name, model kwargs, epochs, learning rate)
TASKS = {
    "cifar10_resnet8": ("cifar10", "resnet8", {}, 30, 0.05),
    "cifar10_mbv2_035": (
        "cifar10",
        "mobilenet_v2",
        {"alpha": 0.35, "cifar_stem": True},
        30,
        0.05,
    ),
    "fmnist_tiny_cnn": ("fashion_mnist", "tiny_cnn", {}, 15, 0.05),
}


def _sparse(policy, sparsity=0.9):
    def make():
        from keras_compact import SparseTraining
        from keras_compact.sparse import DSR, RigL, Static

        policies = {"DSR": DSR, "RigL": RigL, "static": Static}
        return [SparseTraining(sparsity, policy=policies[policy]())]

    return make


def _netaug():
    from keras_compact import NetAug

    return [NetAug()]


def _aux():
    from keras_compact import AuxiliaryModule

    return [AuxiliaryModule()]


def _qat():
    # Float training, then quantization-aware fine-tuning over the last 20%
    # of the same epochs (BN frozen from then on); the int8 file uses the
    # trained ranges.
    from keras_compact import QuantizationAwareTraining

    return [QuantizationAwareTraining(start=0.8)]


def _reparam(family):
    def make():
        from keras_compact import Reparameterize

        return [Reparameterize(family)]

    return make


# name: techniques factory, or None for an arm that is not available yet
# (its reason is in PENDING).
ARMS = {
    "plain": lambda: [],
    # Plain training for as long (wall clock) as the costliest technique
    # arm of the task: its epochs are set from the finished runs.
    "plain_wallclock": lambda: [],
    "netaug": _netaug,
    "aux": _aux,
    "dsr90": _sparse("DSR"),
    "rigl90": _sparse("RigL"),
    "static90": _sparse("static"),
    "distill": None,
    "reparam_acnet": _reparam("acnet"),
    "reparam_repvgg": _reparam("repvgg"),
    "qat": _qat,
    "combined": None,
}
PENDING = {
    "distill": "needs a trained teacher per task (its cost counted)",
    "combined": "chosen once the single techniques are measured",
}


def splits_for(task, seed, batch_size):
    dataset = TASKS[task][0]
    return data.load_dataset(dataset, batch_size=batch_size, seed=seed)


def model_for(task):
    dataset, name, kwargs, _, _ = TASKS[task]
    info = data.dataset_info(dataset)
    return models.get_model(
        name,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        **kwargs,
    )


def load_runs():
    if RUNS_FILE.exists():
        return json.loads(RUNS_FILE.read_text())["runs"]
    return []


def save_run(row):
    runs = [r for r in load_runs() if r["run"] != row["run"]] + [row]
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RUNS_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"runs": runs}, indent=1))
    tmp.replace(RUNS_FILE)


def planned(args):
    """`(task, arm, seed)` of every run the selection asks for."""
    out = []
    for task in args.tasks:
        for arm in args.arms:
            for seed in args.seeds:
                out.append((task, arm, seed))
    return out


def run_name(task, arm, seed):
    return f"{task}/{arm}/s{seed}"


def int8_accuracy(trainer, splits, workdir):
    """The int8 .tflite (post-training quantization) on the full test set."""
    path = os.path.join(workdir, "model_int8.tflite")
    export_tflite(
        trainer,
        path,
        quantization="int8",
        representative_data=data.representative_images(splits, n=500),
    )
    x, y = data.as_numpy(splits.test)
    report = verify_tflite(path, trainer, x, y, latency_runs=50)
    return report


def wallclock_epochs(task, epochs, runs=None):
    """Epochs of plain training that cost as much wall clock as the
    costliest finished technique arm of `task` (its median step time
    against plain's, times `epochs`), or None while there is none."""
    runs = load_runs() if runs is None else runs
    plain = [r for r in runs if r["task"] == task and r["arm"] == "plain"]
    others = [
        r
        for r in runs
        if r["task"] == task and r["arm"] not in ("plain", "plain_wallclock")
    ]
    if not plain or not others:
        return None
    base = float(np.median([r["median_step_ms"] for r in plain]))
    ratio = max(r["median_step_ms"] for r in others) / base
    return max(epochs, int(round(epochs * ratio)))


def train_run(args, task, arm, seed):
    _, _, _, epochs, lr = TASKS[task]
    epochs = args.epochs or epochs
    if arm == "plain_wallclock":
        epochs = wallclock_epochs(task, epochs)
    backup = pathlib.Path(args.campaign_dir) / task / arm / f"s{seed}"
    backup.mkdir(parents=True, exist_ok=True)
    splits = splits_for(task, seed, args.batch_size)
    keras.utils.set_random_seed(seed)
    model = model_for(task)
    t0 = time.perf_counter()
    res = training.train_classifier(
        model,
        splits,
        epochs,
        techniques=ARMS[arm](),
        learning_rate=lr,
        seed=seed,
        verbose=0,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(backup / "backup")),
            keras.callbacks.CSVLogger(str(backup / "history.csv"), append=True),
        ],
    )
    hours = (time.perf_counter() - t0) / 3600
    compact = res.trainer.strip()
    with tempfile.TemporaryDirectory() as tmp:
        report = int8_accuracy(res.trainer, splits, tmp)
    return {
        "run": run_name(task, arm, seed),
        "task": task,
        "arm": arm,
        "seed": seed,
        "epochs": epochs,
        "float_acc": res.test_accuracy,
        "int8_acc": report.tflite_accuracy,
        "int8_bytes": report.size_bytes,
        "int8_latency_ms": report.latency_ms_1_thread,
        "params": int(compact.count_params()),
        "macs": int(count_macs(compact)),
        "train_hours_this_call": hours,
        "median_step_ms": res.median_step_ms,
    }


def step_seconds(task, arm, batch_size, steps=6):
    """Median seconds of one training step of `arm` on `task`."""
    splits = splits_for(task, 0, batch_size)
    x, y = next(iter(splits.train))
    trainer = training.Trainer(model_for(task), techniques=ARMS[arm]())
    trainer.compile(
        optimizer=training.make_optimizer("sgd", 0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:])), int(splits.train.cardinality())


def dry_run(args, todo):
    total = 0.0
    lines = []
    cache = {}
    for task, arm, seed in todo:
        if (task, arm) not in cache:
            cache[(task, arm)] = step_seconds(task, arm, args.batch_size)
        sec, steps = cache[(task, arm)]
        epochs = args.epochs or TASKS[task][3]
        hours = sec * steps * epochs / 3600
        total += hours
        lines.append(
            f"{run_name(task, arm, seed)}: {steps} steps x {epochs} epochs x "
            f"{sec * 1e3:.0f} ms = {hours:.2f} h"
        )
    print("\n".join(lines))
    print(
        f"estimated: {total:.1f} CPU hours for {len(todo)} runs "
        "(training only, at this moment's machine speed)"
    )


def report():
    runs = load_runs()
    summary = []
    for task in TASKS:
        plain = {
            r["seed"]: r
            for r in runs
            if r["task"] == task and r["arm"] == "plain"
        }
        for arm in ARMS:
            rs = [r for r in runs if r["task"] == task and r["arm"] == arm]
            if not rs:
                continue
            deltas = [
                100 * (r["float_acc"] - plain[r["seed"]]["float_acc"])
                for r in rs
                if r["seed"] in plain
            ]
            summary.append(
                {
                    "task": task,
                    "arm": arm,
                    "seeds": len(rs),
                    "float_acc": float(
                        np.mean([100 * r["float_acc"] for r in rs])
                    ),
                    "int8_acc": float(
                        np.mean([100 * (r["int8_acc"] or 0) for r in rs])
                    ),
                    "delta_vs_plain": float(np.mean(deltas))
                    if deltas and arm != "plain"
                    else None,
                    "params": rs[0]["params"],
                    "macs": rs[0]["macs"],
                    "int8_kb": rs[0]["int8_bytes"] / 1024,
                    "int8_latency_ms": rs[0]["int8_latency_ms"],
                    "train_hours": float(
                        np.sum([r["train_hours_this_call"] for r in rs])
                    ),
                }
            )
    notes = [f"pending arm {a}: {why}" for a, why in PENDING.items()]
    budget = {
        "tasks": {t: list(v) for t, v in TASKS.items()},
        "recipe": "train_classifier: SGD-Nesterov 0.9, cosine from the "
        "task's lr, decoupled wd 5e-5, batch 128, pad-crop(+flip)",
        "data": "full training set (10% held out), full test set; a fresh "
        "seeded pipeline per run",
    }
    write_results("scoreboard", summary, budget, notes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=None, help="override")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--campaign-dir",
        default=os.path.expanduser("~/.cache/keras_compact/scoreboard"),
    )
    p.add_argument("--max-runs", type=int, default=None)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--report", action="store_true", help="tables only")
    args = p.parse_args(argv)
    for name, known, values in (
        ("--tasks", TASKS, args.tasks),
        ("--arms", ARMS, args.arms),
    ):
        unknown = [v for v in values if v not in known]
        if unknown:
            p.error(f"unknown {name} {unknown}; known: {sorted(known)}")
    if args.report:
        return report()
    done = {r["run"] for r in load_runs()}
    todo = [
        (t, a, s)
        for t, a, s in planned(args)
        if run_name(t, a, s) not in done
        and ARMS[a] is not None
        and (a != "plain_wallclock" or wallclock_epochs(t, 1) is not None)
    ]
    skipped = sorted({a for a in args.arms if ARMS[a] is None})
    for a in skipped:
        print(f"pending arm {a}: {PENDING[a]}")
    if args.dry_run:
        return dry_run(args, todo)
    for i, (task, arm, seed) in enumerate(todo):
        if args.max_runs is not None and i >= args.max_runs:
            break
        print(f"run {run_name(task, arm, seed)}", flush=True)
        row = train_run(args, task, arm, seed)
        save_run(row)
        print(json.dumps(row), flush=True)
        report()


if __name__ == "__main__":
    sys.exit(main())
