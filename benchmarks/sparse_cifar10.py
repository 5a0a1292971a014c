"""Dynamic sparse training on real CIFAR-10, one fixed CPU budget.

CIFAR ResNet-8 (78k parameters) trained with the project's one recipe
(`keras_compact.training.train_classifier`: SGD-Nesterov 0.9, lr 0.05 with
cosine decay, decoupled weight decay 5e-5, batch 128, pad-crop + flip) on a
stratified subset of the real training set, the SAME epochs for every
method, evaluated on the full real test set (10,000 images):

- dense; thin dense (ResNet-8 narrowed to the sparse models' non-zero
  parameter count) at 80% and 90%;
- static sparse, SET, DSR and RigL at 80% and 90% sparsity (uniform
  initial distribution; stem conv and 1x1 shortcut convs kept dense, the
  paper's defaults);
- the peer: tensorflow-model-optimization gradual magnitude pruning on
  tf_keras, same architecture, data, recipe and budget, in a separate
  process and environment (`benchmarks/sparse_tfmot_peer.py`).

Step time: the sparse methods' training step is timed against dense in
ONE paired, interleaved run (`train_on_batch` on the same batch, models
alternated every 2 steps, medians), because this shared machine's speed
drifts by 2x between minutes. Size: the trained 90%-sparse models are
exported to float32 .tflite with sparse storage
(`export_tflite(..., sparsity=True)`) and gzip-compressed; compared with
the dense model's float32 .tflite.

    nice -n 5 python benchmarks/sparse_cifar10.py

Writes benchmarks/results/sparse_cifar10.{json,md} and
sparse_cifar10_density.png.
"""

import argparse
import gzip
import json
import math
import os
import sys
import tempfile
import time

import harness  # noqa: F401  (first: it sets the environment)
import keras
import numpy as np
from harness import RESULTS, RunLog, write_results

from keras_compact import data, models, training
from keras_compact.export import export_tflite, verify_tflite
from keras_compact.sparse import (
    DSR,
    SET,
    PeriodSchedule,
    RigL,
    SparseTraining,
    Static,
    plot_density,
)
from keras_compact.sparse.selection import (
    default_dense_layers,
    scan,
)


def sparse_layer_size(model):
    """Number of weights in the layers DSR's defaults make sparse."""
    prunable, _ = scan(model)
    dense = default_dense_layers(model)
    return sum(
        int(np.prod(v.shape))
        for layer, pairs in prunable
        if layer.name not in dense
        for _, v in pairs
    )


def nonzero_params(model):
    return int(
        sum(
            np.count_nonzero(keras.ops.convert_to_numpy(w))
            for w in model.weights
            if len(w.shape) > 0
        )
    )


def thin_width(name, target, widths=None, **kwargs):
    """`(width, params)`: the width multiplier (of `widths`, default 0.2 to
    0.74) whose dense parameter count is closest to `target`; `kwargs` go
    to `get_model`."""
    best = None
    for w in np.arange(0.2, 0.75, 0.01) if widths is None else widths:
        w = float(round(w, 3))
        n = models.get_model(name, width_multiplier=w, **kwargs).count_params()
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (w, n)
    return best


def policies(args, steps):
    """The four sparse methods with the references' schedules in
    iterations (RigL/SET: dT = 100; DSR: its CIFAR-10 period schedule,
    100 iterations from epoch 0), never below one epoch of updates."""
    dt = max(100, steps)
    stop = max(1, math.floor(190 / 200 * args.epochs))
    period = DSR().period
    if steps > 100:  # keep at least one epoch between DSR rounds
        period = PeriodSchedule(
            period.boundaries, [max(p, steps) for p in period.periods]
        )
    return {
        "static": lambda: Static(),
        "SET": lambda: SET(update_interval=dt),
        "DSR": lambda: DSR(period=period, stop_epoch=stop),
        "RigL": lambda: RigL(update_interval=dt),
    }, {
        "dT": dt,
        "dsr_period": period.get_config(),
        "dsr_stop_epoch": stop,
        "dsr_N_p": "default: 0.138 of the non-zeros",
    }


def paired_step_times(args, make_policy, sparsity, batch, rounds):
    """Median train_on_batch time of each method, interleaved with dense."""
    xb, yb = batch
    trainers = {}
    names = ["dense", "static", "SET", "DSR", "RigL"]
    for name in names:
        keras.utils.set_random_seed(0)
        techs = None
        if name != "dense":
            techs = [
                SparseTraining(sparsity, policy=make_policy[name](), seed=0)
            ]
        tr = training.Trainer(models.get_model(args.model), techniques=techs)
        tr.compile(
            optimizer=training.make_optimizer("sgd", 0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        for _ in range(3):
            tr.train_on_batch(xb, yb)
        trainers[name] = tr
    times = {n: [] for n in names}
    for _ in range(rounds):
        for name, tr in trainers.items():
            for _ in range(2):
                t0 = time.perf_counter()
                tr.train_on_batch(xb, yb)
                times[name].append(time.perf_counter() - t0)
    med = {n: float(np.median(t)) * 1e3 for n, t in times.items()}
    mean = {n: float(np.mean(t)) * 1e3 for n, t in times.items()}
    return med, mean


def gz_size(path):
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9))


def run_peer(args, out_json):
    _, error = harness.run_peer(
        "sparse_tfmot_peer.py",
        "--epochs",
        args.epochs,
        "--n-per-class",
        args.n_per_class,
        "--batch-size",
        args.batch_size,
        "--seed",
        args.seed,
        "--frequency",
        args.dt,
        "--sparsities",
        *args.sparsities,
        "--out",
        out_json,
    )
    if error:
        return None, error
    with open(out_json) as f:
        return json.load(f), None


def add_peer_rows(args, rows, out_json):
    """Runs the tfmot peer and appends its rows; returns an error or None."""
    peer, error = run_peer(args, out_json)
    if peer:
        for r in peer["rows"]:
            rows.append(
                {
                    "method": r["method"],
                    "sparsity": r["sparsity"],
                    "nonzero_params": r["nonzero_params"],
                    "test_acc": r["test_acc"],
                    "train_s": r["train_s"],
                    "fit_median_step_ms": None,
                    "achieved_sparsity": r["achieved_sparsity"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return error


_TIMING_KEYS = (
    "paired_step_ms",
    "step_ratio_vs_dense",
    "mean_step_ratio_vs_dense",
)


def add_timing(args, rows, make_policy, splits, s_max):
    """Paired step times of dense and the sparse methods at `s_max`."""
    batch = next(iter(splits.train))
    batch = (batch[0].numpy(), batch[1].numpy())
    med, mean = paired_step_times(
        args, make_policy, s_max, batch, args.timing_rounds
    )
    for r in rows:
        for k in _TIMING_KEYS:
            r.pop(k, None)
        if r["sparsity"] == s_max and r["method"] in med:
            r["paired_step_ms"] = med[r["method"]]
            r["step_ratio_vs_dense"] = med[r["method"]] / med["dense"]
            r["mean_step_ratio_vs_dense"] = mean[r["method"]] / mean["dense"]
    rows[0]["paired_step_ms"] = med["dense"]
    rows[0]["step_ratio_vs_dense"] = 1.0


def update_only(args, make_policy, splits):
    """Re-measures only the peer and/or the paired timing of an existing
    results file, keeping every other row and note, and says so."""
    path = RESULTS / "sparse_cifar10.json"
    payload = json.loads(path.read_text())
    rows, budget, notes = payload["rows"], payload["budget"], payload["notes"]
    s_max = max(args.sparsities)
    stale = set(_verdicts(rows, s_max, None))
    notes = [n for n in notes if n not in stale]
    peer_error = None
    if "peer" in args.only:
        rows = [r for r in rows if not r["method"].startswith("tfmot")]
        peer_out = tempfile.NamedTemporaryFile(
            suffix=".json", delete=False
        ).name
        peer_error = add_peer_rows(args, rows, peer_out)
    if "timing" in args.only:
        add_timing(args, rows, make_policy, splits, s_max)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    notes = (
        _verdicts(rows, s_max, peer_error)
        + notes
        + [
            f"Re-measured on {date} with --only {' '.join(args.only)} (all "
            f"other rows from the full run): {args.reason}"
        ]
    )
    budget["rerun"] = f"--only {' '.join(args.only)} on {date}"
    write_results("sparse_cifar10", rows, budget, notes, columns=COLUMNS)


COLUMNS = [
    "method",
    "sparsity",
    "nonzero_params",
    "test_acc",
    "updates",
    "train_s",
    "paired_step_ms",
    "step_ratio_vs_dense",
    "mean_step_ratio_vs_dense",
    "tflite_bytes",
    "tflite_gzip_bytes",
    "gzip_ratio_vs_dense",
    "achieved_sparsity",
]


def fresh_splits(args, seed):
    """A new pipeline for each run: every arm of a seed sees the same
    batches, in the same order, with the same augmentation."""
    return data.load_dataset(
        "cifar10",
        batch_size=args.batch_size,
        n_per_class=args.n_per_class,
        seed=seed,
    )


def regrown_pruned(tech):
    """Mean fraction of the weights regrown in one update that the next
    update pruned again (None when there were fewer than two updates)."""
    value = getattr(tech, "regrown_pruned_fraction", None)
    if callable(value):
        value = value()
    if value is None:
        return None
    value = float(keras.ops.convert_to_numpy(value))
    return None if math.isnan(value) else value


def summarize(rows, seeds):
    """One row per (method, sparsity): mean, per-seed values and the paired
    deltas against static and dense, with their spread over seeds."""
    by = {}
    for r in rows:
        method = r["method"].split(" (")[0]
        by.setdefault((method, r["sparsity"]), {})[r["seed"]] = r
    out = []
    for (method, sparsity), per_seed in by.items():
        accs = [100 * per_seed[s]["test_acc"] for s in seeds if s in per_seed]

        def deltas(ref):
            refs = by.get(ref, {})
            return [
                100 * (per_seed[s]["test_acc"] - refs[s]["test_acc"])
                for s in seeds
                if s in per_seed and s in refs
            ]

        d_static = deltas(("static", sparsity))
        d_dense = deltas(("dense", 0.0))
        rp = [
            per_seed[s].get("regrown_pruned")
            for s in seeds
            if s in per_seed and per_seed[s].get("regrown_pruned") is not None
        ]
        out.append(
            {
                "method": method,
                "sparsity": sparsity,
                "test_acc_mean": float(np.mean(accs)),
                "test_acc_per_seed": " / ".join(f"{a:.2f}" for a in accs),
                "delta_vs_static": float(np.mean(d_static))
                if d_static and method != "static"
                else None,
                "delta_vs_static_per_seed": " / ".join(
                    f"{d:+.2f}" for d in d_static
                )
                if method != "static"
                else None,
                "delta_vs_dense": float(np.mean(d_dense))
                if d_dense and method != "dense"
                else None,
                "regrown_then_pruned": float(np.mean(rp)) if rp else None,
                "nonzero_params": per_seed[seeds[0]]["nonzero_params"]
                if seeds[0] in per_seed
                else None,
                "updates": per_seed[seeds[0]].get("updates")
                if seeds[0] in per_seed
                else None,
            }
        )
    return out


SUMMARY_COLUMNS = [
    "method",
    "sparsity",
    "test_acc_mean",
    "test_acc_per_seed",
    "delta_vs_static",
    "delta_vs_static_per_seed",
    "delta_vs_dense",
    "regrown_then_pruned",
    "nonzero_params",
    "updates",
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet8")
    p.add_argument("--n-per-class", type=int, default=500)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--timing-rounds", type=int, default=15)
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--skip-extras", action="store_true")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["dense", "static", "SET", "DSR", "RigL", "thin"],
        help="arms to run (finished runs of other arms are kept)",
    )
    p.add_argument("--name", default="sparse_cifar10")
    p.add_argument(
        "--only",
        nargs="+",
        choices=["peer", "timing"],
        help="re-measure only these parts of an existing "
        "results file (needs --reason)",
    )
    p.add_argument("--reason", default="")
    args = p.parse_args()
    if args.only and not args.reason:
        p.error("--only needs --reason (it is written into the notes)")
    args.seed = args.seeds[0]
    t_start = time.perf_counter()

    splits = fresh_splits(args, args.seed)
    steps = int(splits.train.cardinality())
    dense_model = models.get_model(args.model)
    n_sparse = sparse_layer_size(dense_model)
    make_policy, schedule = policies(args, steps)
    args.dt = schedule["dT"]
    if args.only:
        return update_only(args, make_policy, splits)

    budget = {
        "dataset": "CIFAR-10 (real): stratified subset of "
        f"{args.n_per_class}/class = {10 * args.n_per_class} "
        "train images (10% more held out for val), full 10,000 "
        "test images",
        "model": f"{args.model} ({dense_model.count_params()} params, "
        f"{n_sparse} in the sparse layers)",
        "epochs": args.epochs,
        "steps_per_epoch": steps,
        "batch_size": args.batch_size,
        "sparsities": args.sparsities,
        "seeds": args.seeds,
        "data": "a fresh seeded pipeline per run: within a seed every arm "
        "sees the same batches in the same order with the same "
        "augmentation",
        "recipe": "SGD-Nesterov 0.9, lr 0.05 cosine to 0, decoupled wd "
        "5e-5 (not on BN/bias), pad-crop+flip; same for all",
        "schedules": (
            f"the references' values in iterations: RigL/SET dT="
            f"{schedule['dT']} (google-research/rigl: 100), cosine drop "
            "fraction 0.3, end at 75% of training; DSR period "
            f"{schedule['dsr_period']} (IntelAI reference: 100/200/400/800 "
            f"from epochs 0/25/80/140), stop epoch "
            f"{schedule['dsr_stop_epoch']} (190/200 of the run), N_p "
            f"{schedule['dsr_N_p']}, delta 0.1, H0 1e-3"
        ),
    }
    log = RunLog(args.name, budget)
    peer_out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    trained = {}

    def record(seed, method, sparsity, res, extra=None):
        model = res.trainer.strip()
        row = {
            "seed": seed,
            "method": method,
            "sparsity": sparsity,
            "nonzero_params": nonzero_params(model),
            "test_acc": res.test_accuracy,
            "train_s": res.seconds,
            "fit_median_step_ms": res.median_step_ms,
        }
        row.update(extra or {})
        return log.add(row)

    def train(seed, model, techniques=None):
        return training.train_classifier(
            model,
            fresh_splits(args, seed),
            args.epochs,
            techniques=techniques,
            seed=seed,
            verbose=0,
        )

    for seed in args.seeds:
        if "dense" in args.methods and not log.done(seed=seed, method="dense"):
            res = train(seed, models.get_model(args.model))
            record(seed, "dense", 0.0, res)
            trained[(seed, "dense")] = res
        for s in args.sparsities:
            for name in ("static", "SET", "DSR", "RigL"):
                if name not in args.methods or log.done(
                    seed=seed, method=name, sparsity=s
                ):
                    continue
                tech = SparseTraining(s, policy=make_policy[name](), seed=seed)
                res = train(seed, models.get_model(args.model), [tech])
                updates = int(keras.ops.convert_to_numpy(tech.update_count))
                record(
                    seed,
                    name,
                    s,
                    res,
                    {
                        "updates": updates,
                        "regrown_pruned": regrown_pruned(tech),
                    },
                )
                trained[(seed, name, s)] = (res, tech)
            # Thin dense with the non-zero count of this sparsity (static's).
            if "thin" not in args.methods:
                continue
            target = log.done(seed=seed, method="static", sparsity=s)[
                "nonzero_params"
            ]
            width, n = thin_width(args.model, target)
            method = f"thin dense (width {width})"
            if not log.done(seed=seed, method=method, sparsity=s):
                res = train(
                    seed, models.get_model(args.model, width_multiplier=width)
                )
                record(seed, method, s, res)
    rows = [dict(r) for r in log.rows]
    summary = summarize(rows, args.seeds)
    s_max = max(args.sparsities)
    notes = [
        f"{len(args.seeds)} seeds; deltas are paired per seed (same initial "
        "seed, same batches). On 10,000 test images one standard error of "
        "an accuracy near 60% is 0.5 points.",
        "regrown_then_pruned: mean over updates of the fraction of the "
        "weights regrown in one update that the next update pruned again "
        "(weights regrown at zero that never grew).",
    ]
    notes += _verdicts(
        [r for r in summary],
        s_max,
        "skipped (--skip-peer)",
        key="test_acc_mean",
    )

    # Peer (separate process and venv), run alone on the machine.
    if not args.skip_peer:
        peer_rows = []
        peer_error = add_peer_rows(args, peer_rows, peer_out)
        for r in peer_rows:
            summary.append(
                {
                    "method": r["method"],
                    "sparsity": r["sparsity"],
                    "test_acc_mean": 100 * r["test_acc"],
                    "test_acc_per_seed": f"{100 * r['test_acc']:.2f} (seed "
                    f"{args.seed} only)",
                    "nonzero_params": r["nonzero_params"],
                }
            )
        notes.append(f"tfmot peer: {peer_error or 'ran (first seed only)'}")
    else:
        notes.append(
            "tfmot peer: not run (--skip-peer; it needs its own tf_keras "
            "environment, see sparse_tfmot_peer.py)"
        )

    # Paired step times and .tflite sizes: needs this process's trainers.
    first = args.seeds[0]
    if not args.skip_extras and all(
        (first, m, s_max) in trained for m in ("DSR", "RigL")
    ):
        timing = [dict(r) for r in rows if r["seed"] == first]
        add_timing(args, timing, make_policy, splits, s_max)
        for r in timing:
            if r.get("step_ratio_vs_dense") and r["method"] in ("DSR", "RigL"):
                notes.append(
                    f"{r['method']} step time ratio vs dense (paired, "
                    f"median) {r['step_ratio_vs_dense']:.3f}, mean "
                    f"{r['mean_step_ratio_vs_dense']:.3f} incl. update steps"
                )
        notes += export_sizes(trained, first, s_max, splits)
    else:
        notes.append(
            "paired step times and .tflite sizes: not measured in this run "
            "(resumed or --skip-extras)"
        )
    notes.append(
        f"wall time of this invocation: "
        f"{(time.perf_counter() - t_start) / 60:.1f} min"
    )
    write_results(args.name, summary, budget, notes, columns=SUMMARY_COLUMNS)
    write_results(f"{args.name}_runs", rows, budget)


def export_sizes(trained, seed, s_max, splits):
    """float32 .tflite of dense vs the sparse-storage DSR/RigL files."""
    tmp = tempfile.mkdtemp()
    x_test, y_test = next(iter(splits.test))
    x_test, y_test = x_test.numpy()[:64], y_test.numpy()[:64]
    notes = []
    dense = trained.get((seed, "dense"))
    if dense is None:
        return ["dense .tflite: not measured (dense run resumed)"]
    dense_path = os.path.join(tmp, "dense.tflite")
    export_tflite(dense.trainer, dense_path)
    dense_gz = gz_size(dense_path)
    for name in ("DSR", "RigL"):
        res, tech = trained[(seed, name, s_max)]
        path = os.path.join(tmp, f"{name}.tflite")
        export_tflite(res.trainer, path, sparsity=True)
        rep = verify_tflite(path, res.trainer, x_test, y_test, latency_runs=20)
        notes.append(
            f"{name} {s_max:.0%} .tflite (sparse storage): gzip "
            f"{gz_size(path)} B = {gz_size(path) / dense_gz:.3f} x dense; "
            f"max |diff| vs Keras {rep.max_abs_diff:.1e}"
        )
    res, tech = trained[(seed, "DSR", s_max)]
    layer_sizes = {r.item: r.values["size"] for r in tech.summary().applied}
    plot_density(
        tech,
        RESULTS / "sparse_cifar10_density.png",
        sizes=layer_sizes,
        title=f"DSR {s_max:.0%}, CIFAR-10 subset, seed {seed}",
    )
    return notes


def _verdicts(rows, s_max, peer_error, key="test_acc"):
    notes = []

    def acc(method, s):
        for r in rows:
            if r["method"].startswith(method) and r["sparsity"] == s:
                return r[key] / (100 if key == "test_acc_mean" else 1)
        return None

    for s in sorted({r["sparsity"] for r in rows if r["sparsity"] > 0}):
        static, thin, peer = (
            acc("static", s),
            acc("thin dense", s),
            acc("tfmot", s),
        )
        for m in ("DSR", "RigL"):
            a = acc(m, s)
            if a is None:
                continue
            parts = [f"{m} @ {s:.0%}: {100 * a:.2f}% (mean of seeds)"]
            if static is not None:  # not run with --methods DSR alone
                parts.append(
                    f"vs static {100 * static:.2f}% "
                    f"({'MET' if a >= static + 0.01 else 'NOT met'}: >= +1.0)"
                )
            if thin is not None:
                parts.append(
                    f"vs thin dense {100 * thin:.2f}% "
                    f"({'MET' if a > thin else 'NOT met'}: >)"
                )
            if peer is not None:
                parts.append(
                    f"vs tfmot {100 * peer:.2f}% "
                    f"({'MET' if a >= peer else 'NOT met'}: >=)"
                )
            notes.append("; ".join(parts))
    if peer_error:
        notes.append(f"tfmot peer: {peer_error}")
    for r in rows:
        if r.get("step_ratio_vs_dense") and r["method"] in ("DSR", "RigL"):
            ok = r["step_ratio_vs_dense"] <= 1.10
            notes.append(
                f"{r['method']} step time ratio vs dense "
                f"{r['step_ratio_vs_dense']:.3f} (median), mean "
                f"{r['mean_step_ratio_vs_dense']:.3f} incl. update steps "
                f"({'MET' if ok else 'NOT met'}: <= 1.10)"
            )
        if r.get("gzip_ratio_vs_dense") and r["method"] in ("DSR", "RigL"):
            ok = r["gzip_ratio_vs_dense"] <= 0.3
            notes.append(
                f"{r['method']} {s_max:.0%} gzip .tflite = "
                f"{r['gzip_ratio_vs_dense']:.3f} x dense "
                f"({'MET' if ok else 'NOT met'}: <= 0.3)"
            )
    return notes


if __name__ == "__main__":
    sys.exit(main())
