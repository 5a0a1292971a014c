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
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SHARED = _ROOT.parent / "shared" / "datasets"
if "KERAS_COMPACT_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["KERAS_COMPACT_DATA_DIR"] = str(_SHARED)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from harness import RESULTS, write_results  # noqa: E402

from keras_compact import data, models, training  # noqa: E402
from keras_compact.export import export_tflite, verify_tflite  # noqa: E402
from keras_compact.sparse import (  # noqa: E402
    DSR,
    SET,
    PeriodSchedule,
    RigL,
    SparseTraining,
    Static,
    plot_density,
)
from keras_compact.sparse.selection import (  # noqa: E402
    default_dense_layers,
    scan,
)

PEER_PYTHON = "/work/peers-venv/bin/python"


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


def thin_width(name, target):
    """The width multiplier whose dense param count is closest to target."""
    best = None
    for w in np.arange(0.2, 0.75, 0.01):
        n = models.get_model(name, width_multiplier=float(w)).count_params()
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (float(round(w, 2)), n)
    return best


def policies(args, steps, n_p):
    """The four sparse methods, their schedules scaled to the budget."""
    dt = max(2, round(100 * steps / 390))  # RigL CIFAR: dT=100 at 390 it/ep
    period = PeriodSchedule().scaled(
        args.epochs / 200, steps / 500, min_period=2
    )
    stop = max(1, math.floor(190 / 200 * args.epochs))
    return {
        "static": lambda: Static(),
        "SET": lambda: SET(update_interval=dt),
        "DSR": lambda: DSR(target_prunes=n_p, period=period, stop_epoch=stop),
        "RigL": lambda: RigL(update_interval=dt),
    }, {
        "dT": dt,
        "dsr_period": period.get_config(),
        "dsr_stop_epoch": stop,
        "dsr_N_p": n_p,
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
    if not os.path.exists(PEER_PYTHON):
        return None, f"peer venv missing: {PEER_PYTHON}"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(_ROOT))
    cmd = [
        PEER_PYTHON,
        str(_ROOT / "benchmarks" / "sparse_tfmot_peer.py"),
        "--epochs",
        str(args.epochs),
        "--n-per-class",
        str(args.n_per_class),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--frequency",
        str(args.dt),
        "--sparsities",
        *[str(s) for s in args.sparsities],
        "--out",
        out_json,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (
            f"tfmot peer failed (rc {proc.returncode}): {proc.stderr[-800:]}"
        )
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet8")
    p.add_argument("--n-per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing-rounds", type=int, default=15)
    p.add_argument("--skip-peer", action="store_true")
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
    t_start = time.perf_counter()

    splits = data.load_dataset(
        "cifar10",
        batch_size=args.batch_size,
        n_per_class=args.n_per_class,
        seed=args.seed,
    )
    steps = int(splits.train.cardinality())
    dense_model = models.get_model(args.model)
    n_sparse = sparse_layer_size(dense_model)
    # DSR's N_p = 20000 of WRN-28-2's sparse weights, as the same fraction.
    wrn = sparse_layer_size(models.get_model("wrn28_2"))
    n_p = max(1, round(20000 / wrn * n_sparse))
    make_policy, schedule = policies(args, steps, n_p)
    args.dt = schedule["dT"]
    if args.only:
        return update_only(args, make_policy, splits)

    peer_out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    rows = []
    trained = {}

    def record(method, sparsity, res, extra=None):
        model = res.trainer.strip()
        row = {
            "method": method,
            "sparsity": sparsity,
            "nonzero_params": nonzero_params(model),
            "test_acc": res.test_accuracy,
            "train_s": res.seconds,
            "fit_median_step_ms": res.median_step_ms,
        }
        row.update(extra or {})
        rows.append(row)
        print(json.dumps(row), flush=True)

    def train(model, techniques=None):
        return training.train_classifier(
            model,
            splits,
            args.epochs,
            techniques=techniques,
            seed=args.seed,
            verbose=0,
        )

    res = train(models.get_model(args.model))
    record("dense", 0.0, res)
    trained["dense"] = res
    for s in args.sparsities:
        for name in ("static", "SET", "DSR", "RigL"):
            tech = SparseTraining(s, policy=make_policy[name](), seed=args.seed)
            res = train(models.get_model(args.model), [tech])
            record(
                name,
                s,
                res,
                {"updates": int(keras.ops.convert_to_numpy(tech.update_count))},
            )
            trained[(name, s)] = (res, tech)
        # Thin dense with the non-zero count of this sparsity (from DSR).
        target = rows[-1]["nonzero_params"]
        width, n = thin_width(args.model, target)
        res = train(models.get_model(args.model, width_multiplier=width))
        record(f"thin dense (width {width})", s, res)

    # Peer (separate process and venv), run alone on the machine.
    peer_error = "skipped (--skip-peer)"
    if not args.skip_peer:
        peer_error = add_peer_rows(args, rows, peer_out)

    # Paired step times at the highest sparsity.
    s_max = max(args.sparsities)
    add_timing(args, rows, make_policy, splits, s_max)

    # TFLite size: dense vs the 90%-sparse models (sparse storage).
    tmp = tempfile.mkdtemp()
    x_test, y_test = next(iter(splits.test))
    x_test, y_test = x_test.numpy()[:64], y_test.numpy()[:64]
    sizes = {}
    dense_path = os.path.join(tmp, "dense.tflite")
    export_tflite(trained["dense"].trainer, dense_path)
    sizes["dense"] = (os.path.getsize(dense_path), gz_size(dense_path))
    export_notes = []
    for name in ("DSR", "RigL"):
        res, tech = trained[(name, s_max)]
        path = os.path.join(tmp, f"{name}.tflite")
        export_tflite(res.trainer, path, sparsity=True)
        rep = verify_tflite(path, res.trainer, x_test, y_test, latency_runs=20)
        sizes[name] = (os.path.getsize(path), gz_size(path))
        export_notes.append(
            f"{name} {s_max:.0%} .tflite (sparse storage): max |diff| vs "
            f"Keras {rep.max_abs_diff:.1e}; {rep.delegates}; latency "
            f"{rep.latency_ms_1_thread:.3f} ms (1 thread)"
        )
    dense_rep = verify_tflite(
        dense_path, trained["dense"].trainer, x_test, y_test, latency_runs=20
    )
    for r in rows:
        key = r["method"] if r["sparsity"] == s_max else None
        if r["method"] == "dense":
            key = "dense"
        if key in sizes:
            r["tflite_bytes"], r["tflite_gzip_bytes"] = sizes[key]
            r["gzip_ratio_vs_dense"] = sizes[key][1] / sizes["dense"][1]

    # Density plot of the 90%-sparse DSR run (emergent per-layer pattern).
    res, tech = trained[("DSR", s_max)]
    layer_sizes = {s["layer"]: s["size"] for s in tech.report()["sparse"]}
    plot_density(
        tech,
        RESULTS / "sparse_cifar10_density.png",
        sizes=layer_sizes,
        title=f"DSR {s_max:.0%} on {args.model}, CIFAR-10 subset",
    )
    final_density = tech.history[-1]

    notes = _verdicts(rows, s_max, peer_error)
    notes += export_notes
    notes.append(
        f"dense .tflite latency {dense_rep.latency_ms_1_thread:.3f} ms "
        "(1 thread, default delegates): sparse storage shrinks the file, "
        "it does not speed up inference (dense kernels are rebuilt or run "
        "without XNNPack)."
    )
    notes.append(
        "DSR final per-layer density: "
        + ", ".join(
            f"{k[len('sparse/density/') :]}={v:.3f}"
            for k, v in final_density.items()
            if k.startswith("sparse/density/")
        )
    )
    notes.append(
        f"whole benchmark wall time: "
        f"{(time.perf_counter() - t_start) / 60:.1f} min"
    )
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
        "recipe": "SGD-Nesterov 0.9, lr 0.05 cosine to 0, decoupled wd "
        "5e-5 (not on BN/bias), pad-crop+flip; same for all",
        "seed": args.seed,
        "schedules": (
            f"RigL/SET: dT={schedule['dT']} (RigL's dT=100 at 390 it/epoch, "
            "scaled by iterations/epoch), cosine drop fraction 0.3, end at "
            "75% of training. DSR: CIFAR period schedule scaled (epoch "
            f"boundaries x {args.epochs}/200, periods x {steps}/500, min 2) "
            f"= {schedule['dsr_period']}, stop epoch "
            f"{schedule['dsr_stop_epoch']} (190/200), N_p = "
            f"{schedule['dsr_N_p']} (20000 of WRN-28-2's {wrn} sparse "
            "weights, same fraction), delta 0.1, H0 1e-3. tfmot: cubic "
            f"schedule 0 -> s from step 0 to 75% of training, every "
            f"{schedule['dT']} steps."
        ),
        "step_time": "paired: train_on_batch alternated dense/sparse "
        f"every 2 steps, {args.timing_rounds} rounds, "
        f"sparsity {s_max}, median",
    }
    write_results("sparse_cifar10", rows, budget, notes, columns=COLUMNS)


def _verdicts(rows, s_max, peer_error):
    notes = [
        "Single seed; on a test set of 10,000 images one standard "
        "error of an accuracy near 50% is 0.5 points, and seed-to-seed "
        "spread of a short run is larger: differences under ~1.5 "
        "points are not significant."
    ]

    def acc(method, s):
        for r in rows:
            if r["method"].startswith(method) and r["sparsity"] == s:
                return r["test_acc"]
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
            parts = [f"{m} @ {s:.0%}: {100 * a:.2f}%"]
            parts.append(
                f"vs static {100 * static:.2f}% "
                f"({'MET' if a >= static + 0.01 else 'NOT met'}: >= +1.0)"
            )
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
