"""Auxiliary over-parameterisation on real CIFAR-10: baseline vs connect-all
vs searched structure, two tiny zoo models, equal epochs, several seeds.

Every configuration of a (model, seed) pair starts from the same initial
weights and sees the same batches: each run gets its own fresh pipeline of
that seed (`load_dataset` gives epoch e of seed s the same batches in any
process), so no arm trains on another arm's later epochs. The searched run
first
spends `--search-steps` DARTS steps on a copy of the model (reported as
search time, not counted as training), then trains its fixed structure for
the same epochs as the others. Accuracy is measured on a stratified subset
of the CIFAR-10 test set, the same for every run. The step-time ratio is the
median step time over the baseline's, from the first seed's runs (one run
each, made one after the other).

Usage (CPU: about 30 minutes on 2 cores shared with another job):

    nice -n 5 python benchmarks/auxiliary_cifar10.py
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import harness  # noqa: E402, F401  (first: it sets the environment)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from harness import RunLog, write_results  # noqa: E402

from keras_compact.auxiliary import (  # noqa: E402
    AuxiliaryModule,
    search_connections,
)
from keras_compact.callbacks import StepTimer  # noqa: E402
from keras_compact.data import load_dataset  # noqa: E402
from keras_compact.models import get_model  # noqa: E402
from keras_compact.training import Trainer  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer(lr, total_steps):
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(lr, total_steps)
    )


def _train(model, techniques, data, epochs, lr, steps_per_epoch):
    trainer = Trainer(model, techniques)
    trainer.compile(
        optimizer=_optimizer(lr, epochs * steps_per_epoch),
        loss=LOSS,
        metrics=["accuracy"],
    )
    timer = StepTimer(skip=3)
    t0 = time.perf_counter()
    trainer.fit(data.train, epochs=epochs, verbose=0, callbacks=[timer])
    train_s = time.perf_counter() - t0
    deployable = trainer.strip()
    deployable.compile(loss=LOSS, metrics=["accuracy"])
    _, acc = deployable.evaluate(data.test, verbose=0)
    return {
        "test_acc": float(acc),
        "median_step_ms": timer.median_ms,
        "train_s": train_s,
    }


def _differs_from_chain(structure):
    return sum(1 for node, srcs in structure.items() if srcs != [node])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet8,mobilenet_v2_tiny")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--n-per-class", type=int, default=400)
    p.add_argument("--test-per-class", type=int, default=300)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--search-steps", type=int, default=200)
    p.add_argument("--name", default="auxiliary_cifar10")
    args = p.parse_args(argv)
    models = args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    test = load_dataset(
        "cifar10",
        batch_size=256,
        validation_split=0.1,
        n_per_class=10,
        augment=False,
        seed=0,
        test_n_per_class=args.test_per_class,
    ).test
    budget = {
        "dataset": "CIFAR-10 (real), stratified subset",
        "models": models,
        "train_per_class": args.n_per_class,
        "heldout_fraction": 0.1,
        "test_per_class": args.test_per_class,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"Adam, cosine decay from {args.lr}",
        "augmentation": "pad-4 crop + flip",
        "search_steps": args.search_steps,
        "seeds": seeds,
        "data": "a fresh seeded pipeline per run (search included): every "
        "arm of a seed sees the same batches",
    }
    log = RunLog(args.name, budget)
    started = time.perf_counter()

    def splits(seed):
        data = load_dataset(
            "cifar10",
            batch_size=args.batch_size,
            validation_split=0.1,
            n_per_class=args.n_per_class,
            augment=True,
            seed=seed,
        )
        return type(
            "Splits", (), {"train": data.train, "val": data.val, "test": test}
        )

    for name in models:
        for seed in seeds:
            steps = int(splits(seed).train.cardinality())
            keras.utils.set_random_seed(seed)
            init = get_model(name, input_shape=(32, 32, 3), num_classes=10)
            init_weights = init.get_weights()

            def fresh():
                m = get_model(name, input_shape=(32, 32, 3), num_classes=10)
                m.set_weights(init_weights)
                return m

            configs = ["baseline", "connect-all", "searched"]
            if all(log.done(model=name, seed=seed, config=c) for c in configs):
                continue
            t0 = time.perf_counter()
            search_data = splits(seed)
            searched = search_connections(
                fresh(),
                search_data.train,
                search_data.val,
                steps=args.search_steps,
                loss=LOSS,
                optimizer=_optimizer(args.lr, args.search_steps),
                seed=seed,
            )
            search_s = time.perf_counter() - t0
            (structure,) = searched.connections.values()
            print(searched.search_description, flush=True)
            techniques = {
                "baseline": lambda: [],
                "connect-all": lambda: [AuxiliaryModule(seed=seed)],
                "searched": lambda: [searched],
            }
            for config in configs:
                if log.done(model=name, seed=seed, config=config):
                    continue
                keras.utils.set_random_seed(seed)
                result = _train(
                    fresh(),
                    techniques[config](),
                    splits(seed),
                    args.epochs,
                    args.lr,
                    steps,
                )
                row = {"model": name, "config": config, "seed": seed, **result}
                if config == "searched":
                    row["search_s"] = search_s
                    row["edges_changed"] = _differs_from_chain(structure)
                    row["structure"] = json.dumps(structure)
                    summary = getattr(searched, "search_summary", None)
                    if summary:
                        row["search_summary"] = json.dumps(summary, default=str)
                log.add(row)
    rows = [dict(r) for r in log.rows]
    summary = []
    for name in models:
        base = {
            r["seed"]: r
            for r in rows
            if r["model"] == name and r["config"] == "baseline"
        }
        for config in ("baseline", "connect-all", "searched"):
            rs = [
                r for r in rows if r["model"] == name and r["config"] == config
            ]
            accs = [100 * r["test_acc"] for r in rs]
            deltas = [
                100 * (r["test_acc"] - base[r["seed"]]["test_acc"]) for r in rs
            ]
            first = rs[0]
            summary.append(
                {
                    "model": name,
                    "config": config,
                    "acc_mean": float(np.mean(accs)),
                    "acc_per_seed": " / ".join(f"{a:.2f}" for a in accs),
                    "delta_vs_base": float(np.mean(deltas)),
                    "delta_per_seed": " / ".join(f"{d:+.2f}" for d in deltas),
                    "step_ratio": first["median_step_ms"]
                    / base[first["seed"]]["median_step_ms"],
                    "median_step_ms": first["median_step_ms"],
                }
            )
    budget["wall_s_this_invocation"] = round(time.perf_counter() - started, 1)
    notes = [
        "acc_mean: test accuracy (%) on the stratified test subset, mean "
        "over seeds; delta_vs_base: mean paired difference in points.",
        "step_ratio: median training step time over the baseline's "
        "(first seed, one run each, shared CPU: noisy).",
        "searched: the search runs on a copy of the model before training "
        "and is not counted in the epochs; its wall time is in the JSON "
        "rows (search_s).",
    ] + [
        f"{r['model']} seed {r['seed']} searched structure "
        f"({r['edges_changed']} nodes differ from connect-all): "
        f"{r['structure']}"
        for r in rows
        if r["config"] == "searched"
    ]
    write_results(args.name, summary, budget, notes=notes)
    write_results(f"{args.name}_runs", rows, budget)


if __name__ == "__main__":
    main()
