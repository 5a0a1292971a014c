"""Paired step times of every technique across two source trees.

Does a refactor make the train step slower? Each tree (a checkout of
keras_compact at some commit) runs in its own worker process, which builds
one trainer per arm and traces it once. The controller then asks the
workers in turn to time the same arm (tree A arm 1, tree B arm 1, tree A
arm 2, ...), for several rounds, so both trees see the same machine load
within seconds of each other; a worker waits idle while the other times.
Per arm it reports the median step time of each tree, the ratio to that
tree's plain arm, and the B/A ratio.

python benchmarks/step_time_paired.py --tree before=/path/to/old/checkout \
    --tree after=. [--arms plain distill aux netaug dsr rigl qat reparam]
    [--rounds 5] [--steps 20] [--name step_time_paired]

Writes benchmarks/results/<name>.{json,md}. An arm whose technique does
not exist in a tree (older commits) is reported as missing there.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ARMS = ("plain", "distill", "aux", "netaug", "dsr", "rigl", "qat", "reparam")


def _worker(arms, batch_size, seed):
    """Builds the arms' trainers, then times the arm named on each stdin
    line and answers a JSON line of step times in ms."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_compact as kc
    from keras_compact import models

    def factory(arm):
        if arm == "plain":
            return []
        if arm == "distill":
            keras.utils.set_random_seed(seed + 1)
            teacher = models.get_model("resnet8")
            return [kc.Distillation(teacher)]
        if arm == "aux":
            return [kc.AuxiliaryModule()]
        if arm == "netaug":
            return [kc.NetAug()]
        if arm == "dsr":
            return [kc.SparseTraining(0.9, policy="dsr")]
        if arm == "rigl":
            return [kc.SparseTraining(0.9, policy="rigl")]
        if arm == "qat":
            return [kc.QuantizationAwareTraining()]
        if arm == "reparam":
            return [kc.Reparameterize()]
        raise ValueError(f"Unknown arm {arm!r}")

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size * 8, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch_size * 8)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    data = data.repeat().prefetch(2)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ms.append(1000 * (time.perf_counter() - self.t0))

    trainers, ready = {}, {}
    for arm in arms:
        try:
            keras.utils.set_random_seed(seed)
            trainer = kc.Trainer(
                models.get_model("resnet8"), techniques=factory(arm)
            )
            trainer.compile(
                optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True
                ),
            )
            trainer.fit(data, epochs=1, steps_per_epoch=3, verbose=0)
            trainers[arm] = trainer
            ready[arm] = "ok"
        except Exception as e:  # an older tree without this technique
            ready[arm] = f"{type(e).__name__}: {e}"[:200]
    print(json.dumps({"ready": ready}), flush=True)
    for line in sys.stdin:
        arm, steps = line.split()
        timer = Timer()
        timer.ms = []
        trainers[arm].fit(
            data,
            epochs=1,
            steps_per_epoch=int(steps),
            verbose=0,
            callbacks=[timer],
        )
        print(json.dumps({"ms": timer.ms[1:]}), flush=True)


def _start(path, args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--batch-size",
        str(args.batch_size),
        "--arms",
        *args.arms,
    ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=os.path.abspath(path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc


def _ask(proc, line=None):
    if line is not None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    while True:
        out = proc.stdout.readline()
        if not out:
            raise RuntimeError("A worker stopped; see its stderr above.")
        if out.startswith("{"):
            return json.loads(out)


def _git_head(path):
    try:
        return subprocess.check_output(
            ["git", "-C", path, "rev-parse", "--short", "HEAD"], text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--tree",
        action="append",
        default=[],
        help="label=path of a keras_compact checkout (give two)",
    )
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--name", default="step_time_paired")
    args = p.parse_args()
    if args.worker:
        return _worker(args.arms, args.batch_size, seed=0)
    if len(args.tree) != 2 or any("=" not in t for t in args.tree):
        p.error(f"Expected two --tree label=path. Received: {args.tree}")
    trees = [t.split("=", 1) for t in args.tree]
    t_start = time.perf_counter()
    procs = {label: _start(path, args) for label, path in trees}
    ready = {label: _ask(proc)["ready"] for label, proc in procs.items()}
    times = {label: {arm: [] for arm in args.arms} for label, _ in trees}
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for arm in args.arms:
            for label, _ in order:
                if ready[label][arm] == "ok":
                    ms = _ask(procs[label], f"{arm} {args.steps}")["ms"]
                    times[label][arm].extend(ms)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()

    (a, path_a), (b, path_b) = trees
    rows = []
    for arm in args.arms:
        row = {"arm": arm}
        for label, _ in trees:
            ms = times[label][arm]
            row[f"{label}_ms"] = round(statistics.median(ms), 1) if ms else None
            plain = times[label].get("plain")
            row[f"{label}_vs_plain"] = (
                round(statistics.median(ms) / statistics.median(plain), 3)
                if ms and plain
                else None
            )
        if row[f"{a}_ms"] and row[f"{b}_ms"]:
            row[f"{b}/{a}"] = round(row[f"{b}_ms"] / row[f"{a}_ms"], 3)
        else:
            row[f"{b}/{a}"] = None
            missing = [label for label, _ in trees if ready[label][arm] != "ok"]
            row["note"] = "; ".join(
                f"not in {label}: {ready[label][arm]}" for label in missing
            )
        rows.append(row)
    budget = {
        "trees": {
            label: f"{path} ({_git_head(path)})" for label, path in trees
        },
        "model": "zoo resnet8, 32x32x3 random data, batch "
        f"{args.batch_size}, SGD-momentum",
        "protocol": f"{args.rounds} rounds x {args.steps} steps per arm and "
        "tree, trees alternating per arm (order swapped every round); "
        "median of the step times, the first step of each timed call left "
        "out; technique defaults (SparseTraining 0.9)",
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    os.makedirs(
        os.path.join(os.path.dirname(__file__), "results"), exist_ok=True
    )
    base = os.path.join(os.path.dirname(__file__), "results", args.name)
    with open(base + ".json", "w") as f:
        json.dump({"budget": budget, "rows": rows}, f, indent=1)
    cols = ["arm"] + [k for k in rows[0] if k != "arm" and k != "note"]
    lines = [f"# {args.name}", "", f"Budget: {json.dumps(budget)}", ""]
    lines.append(
        "Command: `python benchmarks/step_time_paired.py "
        + " ".join(f"--tree {t}" for t in args.tree)
        + f" --arms {' '.join(args.arms)} --rounds {args.rounds} "
        f"--steps {args.steps} --name {args.name}`"
    )
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(row.get(c, "")) for c in cols) + " |"
        )
    notes = [r for r in rows if r.get("note")]
    if notes:
        lines.append("")
        lines += [f"- {r['arm']}: {r['note']}" for r in notes]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
