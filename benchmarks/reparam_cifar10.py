"""Structural re-parameterisation on real CIFAR-10, equal epochs per arm.

Each family of `keras_compact.Reparameterize` (RepVGG, ACNet, ExpandNets)
against plain training of the same compact model, trained with the
project's one recipe (`keras_compact.training.train_classifier`:
SGD-Nesterov 0.9, lr 0.05 with cosine decay, decoupled weight decay 5e-5,
batch 128, pad-crop + flip) on a stratified subset of the real training
set (or all of it), the SAME epochs for every arm, evaluated on the full
real test set (10,000 images) with the folded model, i.e. the user's model
object after `strip()`: the exact architecture that ships.

- models: zoo `resnet8` and `mobilenet_v2` (alpha 0.35, CIFAR stem);
- a fresh seeded pipeline per run: within a seed every arm sees the same
  batches, in the same order, with the same augmentation; deltas are
  paired per seed;
- after each run, the fold is checked on a test batch: max |training view
  (inference mode) - folded model| and the parameter count against plain;
- step time: each family's training step against plain in ONE paired,
  interleaved run (`train_on_batch` on the same batch, arms alternated
  every 2 steps, medians), because this shared machine's speed drifts.

    nice -n 10 python benchmarks/reparam_cifar10.py
    nice -n 10 python benchmarks/reparam_cifar10.py --models resnet8 \\
        --families repvgg --n-per-class 100 --epochs 3 --name reparam_small

Writes benchmarks/results/<name>.{json,md} (default reparam_cifar10).
"""

import argparse
import json
import time

import harness  # first: it sets the environment
import keras
import numpy as np
from harness import RESULTS, RunLog, write_results

from keras_compact import data, models, training
from keras_compact.reparam import FAMILIES, Reparameterize

MODELS = {
    "resnet8": ("resnet8", {}),
    "mobilenet_v2_w0.35": (
        "mobilenet_v2",
        {"alpha": 0.35, "cifar_stem": True},
    ),
}


def make_model(key):
    name, kwargs = MODELS[key]
    return models.get_model(name, **kwargs)


def fresh_splits(args, seed):
    """A new pipeline for each run: every arm of a seed sees the same
    batches, in the same order, with the same augmentation."""
    return data.load_dataset(
        "cifar10",
        batch_size=args.batch_size,
        n_per_class=args.n_per_class,
        seed=seed,
    )


def techniques(family, seed):
    if family == "plain":
        return None
    return [Reparameterize(family, seed=seed)]


def fold_check(res, splits):
    """max |training view (inference) - folded model| on one test batch."""
    reps = [t for t in res.trainer.techniques if isinstance(t, Reparameterize)]
    if not reps:
        return None, None
    rep = reps[0]
    x = next(iter(splits.test))[0]
    rep.unfold()
    ref = keras.ops.convert_to_numpy(rep.training_model(x, training=False))
    model = res.trainer.strip()
    out = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.max(np.abs(ref - out))), rep.summary()


def paired_step_times(args, key, families, batch, rounds):
    """Median train_on_batch time of each arm, interleaved with plain."""
    xb, yb = batch
    trainers = {}
    for family in ["plain", *families]:
        keras.utils.set_random_seed(0)
        tr = training.Trainer(make_model(key), techniques=techniques(family, 0))
        tr.compile(
            optimizer=training.make_optimizer("sgd", 0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        for _ in range(3):
            tr.train_on_batch(xb, yb)
        trainers[family] = tr
    times = {n: [] for n in trainers}
    for _ in range(rounds):
        for name, tr in trainers.items():
            for _ in range(2):
                t0 = time.perf_counter()
                tr.train_on_batch(xb, yb)
                times[name].append(time.perf_counter() - t0)
    return {n: float(np.median(t)) * 1e3 for n, t in times.items()}


def summarize(rows, seeds):
    """One row per (model, arm): mean, per-seed values, paired deltas."""
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["arm"]), {})[r["seed"]] = r
    out = []
    for (model, arm), per_seed in by.items():
        accs = [100 * per_seed[s]["test_acc"] for s in seeds if s in per_seed]
        plain = by.get((model, "plain"), {})
        # Per seed of `seeds`: the paired delta, None where not run yet.
        paired = [
            100 * (per_seed[s]["test_acc"] - plain[s]["test_acc"])
            if s in per_seed and s in plain
            else None
            for s in seeds
        ]
        deltas = [d for d in paired if d is not None]
        first = per_seed[min(per_seed)]
        out.append(
            {
                "model": model,
                "arm": arm,
                "test_acc_mean": float(np.mean(accs)),
                # A seed not run yet shows as "pending" (a resumed
                # benchmark reports what it has).
                "test_acc_per_seed": " / ".join(
                    f"{100 * per_seed[s]['test_acc']:.2f}"
                    if s in per_seed
                    else "pending"
                    for s in seeds
                ),
                "delta_vs_plain": float(np.mean(deltas))
                if deltas and arm != "plain"
                else None,
                "delta_per_seed": " / ".join(
                    f"{d:+.2f}" if d is not None else "pending" for d in paired
                )
                if arm != "plain"
                else None,
                "max_fold_error": max(
                    (per_seed[s].get("fold_error") or 0.0) for s in per_seed
                )
                if arm != "plain"
                else None,
                "params": first["params"],
                "extra_train_params": first.get("extra_train_params"),
                "step_ratio_vs_plain": first.get("step_ratio_vs_plain"),
            }
        )
    return out


COLUMNS = [
    "model",
    "arm",
    "test_acc_mean",
    "test_acc_per_seed",
    "delta_vs_plain",
    "delta_per_seed",
    "max_fold_error",
    "params",
    "extra_train_params",
    "step_ratio_vs_plain",
]


def verdicts(summary, seeds):
    notes = []
    for key in sorted({r["model"] for r in summary}):
        fams = [
            r
            for r in summary
            if r["model"] == key and r["arm"] != "plain" and r["delta_per_seed"]
        ]
        if not fams:
            continue
        best = max(fams, key=lambda r: r["delta_vs_plain"])
        per_seed = [
            float(d)
            for d in best["delta_per_seed"].split(" / ")
            if d != "pending"
        ]
        ok = len(per_seed) == len(seeds) and all(d >= 0.5 for d in per_seed)
        notes.append(
            f"{key}: best family {best['arm']} "
            f"{best['delta_vs_plain']:+.2f} points vs plain (per seed "
            f"{best['delta_per_seed']}): goal (>= +0.5 on every seed) "
            f"{'MET' if ok else 'NOT met'}."
        )
    return notes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=list(MODELS)
    )
    p.add_argument(
        "--families", nargs="+", default=list(FAMILIES), choices=FAMILIES
    )
    p.add_argument(
        "--n-per-class",
        type=int,
        default=None,
        help="stratified training subset per class (default: all)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--timing-rounds", type=int, default=10)
    harness.add_checkpoint_dir(p, "reparam_bench")
    p.add_argument("--name", default="reparam_cifar10")
    p.add_argument("--note", action="append", default=[])
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="ARM:SEED",
        help="train only these runs in this process (a second lane beside "
        "another process of the same command; both share the results file)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="write the tables of the finished runs (with a fresh paired "
        "step timing), train nothing",
    )
    args = p.parse_args()

    arms = ["plain", *args.families]
    budget = {
        "dataset": "CIFAR-10 (real): "
        + (
            f"stratified subset of {args.n_per_class}/class = "
            f"{10 * args.n_per_class} train images"
            if args.n_per_class
            else "the full training set"
        )
        + " (10% held out for val), full 10,000 test images",
        "models": args.models,
        "arms": arms,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "data": "a fresh seeded pipeline per run: within a seed every arm "
        "sees the same batches in the same order with the same "
        "augmentation",
        "recipe": "SGD-Nesterov 0.9, lr 0.05 cosine to 0, decoupled wd "
        "5e-5 (not on BN/bias), pad-crop+flip; same for all",
        "reparam": "Reparameterize defaults: every eligible layer, "
        "expansion r=4, RepVGG identity where allowed, a BN on the main "
        "branch (main_norm=True) for RepVGG/ACNet/DBB; test accuracy of "
        "the folded (stripped) model",
    }
    log = RunLog(args.name, budget)
    for key in args.models:
        # Arm by arm (every seed of an arm before the next arm): an
        # interrupted benchmark has paired results for the cheap families
        # first. Each run has its own fresh pipeline, so the order does not
        # change what a run sees.
        runs = [(a, s) for a in arms for s in args.seeds]
        if args.only:
            names = {f"{a}:{s}": (a, s) for a, s in runs}
            bad = [o for o in args.only if o not in names]
            if bad:
                raise SystemExit(
                    f"Expected --only values among {list(names)}. "
                    f"Received: {bad}"
                )
            runs = [names[o] for o in args.only]
        for arm, seed in [] if args.report else runs:
            if log.done(model=key, seed=seed, arm=arm):
                continue
            # The same initial weights for every arm of a seed.
            keras.utils.set_random_seed(seed)
            model = make_model(key)
            params = model.count_params()
            splits = fresh_splits(args, seed)
            res = training.train_classifier(
                model,
                splits,
                args.epochs,
                techniques=techniques(arm, seed),
                seed=seed,
                verbose=0,
                # Every epoch backed up: an interrupted run resumes (its
                # `train_s` then counts the resumed part only).
                callbacks=[harness.run_backup(args, f"{key}_{arm}_s{seed}")],
            )
            error, report = fold_check(res, splits)
            stripped = res.trainer.strip()
            log.add(
                {
                    "model": key,
                    "seed": seed,
                    "arm": arm,
                    "test_acc": res.test_accuracy,
                    "params": params,
                    "params_after_strip": stripped.count_params(),
                    "fold_error": error,
                    "extra_train_params": None
                    if report is None
                    else report.totals["extra_params"],
                    "layers_applied": None
                    if report is None
                    else len(report.applied),
                    "layers_skipped": None
                    if report is None
                    else len(report.skipped),
                    "train_s": res.seconds,
                    "fit_median_step_ms": res.median_step_ms,
                }
            )
        if args.only:
            continue  # a lane trains; the full command times and reports
        timed = [a for a in args.families if log.done(model=key, arm=a)]
        if not log.done(model=key, arm="plain"):
            continue
        splits = fresh_splits(args, args.seeds[0])
        batch = next(iter(splits.train))
        batch = (batch[0].numpy(), batch[1].numpy())
        med = paired_step_times(args, key, timed, batch, args.timing_rounds)
        for r in log.rows:
            if r["model"] == key and r["arm"] in med:
                r["paired_step_ms"] = med[r["arm"]]
                r["step_ratio_vs_plain"] = med[r["arm"]] / med["plain"]
    if args.only:
        print("lane done: rerun without --only for the step timing and tables")
        return
    summary = summarize(log.rows, args.seeds)
    notes = [
        *args.note,
        *verdicts(summary, args.seeds),
        "Step ratio: median paired train_on_batch time of the arm over "
        "plain's, same batch, interleaved (training cost only: the "
        "deployed model is the plain architecture).",
        f"Training time of the {len(log.rows)} runs (sum of their fits): "
        f"{sum(r['train_s'] for r in log.rows) / 60:.1f} min.",
    ]
    payload = write_results(
        args.name, summary, budget, notes=notes, columns=COLUMNS
    )
    # The individual runs go to the JSON file next to the summary.
    payload["runs"] = log.rows
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
