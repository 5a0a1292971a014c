"""Shared plumbing for every benchmark script: environment facts, result
files and Markdown tables. Each `benchmarks/<name>.py` trains, then calls
`write_results(name, rows, ...)`; nothing else is repeated between them."""

import datetime
import json
import os
import pathlib
import platform
import sys

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ROOT = pathlib.Path(__file__).resolve().parents[1]

# Every benchmark imports this module before keras: quieter TensorFlow logs,
# and the real datasets beside the repository when no data folder is set.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SHARED = ROOT.parent / "shared" / "datasets"
if "KERAS_COMPACT_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["KERAS_COMPACT_DATA_DIR"] = str(_SHARED)


def environment():
    """Versions and machine facts recorded with every result file."""
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        import ai_edge_litert

        litert = getattr(ai_edge_litert, "__version__", "installed")
    except ImportError:
        litert = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "ai_edge_litert": litert,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.system()} {platform.release()}",
        "processor": _cpu_model(),
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown_table(rows, columns=None):
    """Formats a list of dicts as a Markdown table (floats to 4 digits);
    the columns default to every key of the rows, in order of appearance."""
    if not rows:
        return "(no rows)\n"
    if not columns:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |"]
    out.append("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


def add_checkpoint_dir(parser, bench):
    """`--checkpoint-dir`: where each run of a benchmark backs up every
    epoch (outside the repository; default ~/.cache/keras_compact/<bench>),
    so that rerunning the same command resumes an interrupted run."""
    parser.add_argument(
        "--checkpoint-dir",
        default=f"~/.cache/keras_compact/{bench}",
        help="each run checkpoints every epoch under this folder (outside "
        "the repository): a rerun of the same command resumes an "
        "interrupted run from its last finished epoch",
    )


def run_backup(args, run):
    """The `BackupAndRestore` of run `run` of benchmark `args.name`, under
    `args.checkpoint_dir` (see `add_checkpoint_dir`)."""
    import keras

    folder = pathlib.Path(args.checkpoint_dir).expanduser() / args.name
    return keras.callbacks.BackupAndRestore(str(folder / run))


def budget_of(args, *names):
    """The budget dict of a run: the named argparse values (what a rerun
    must repeat for `RunLog` to resume)."""
    return {name: getattr(args, name) for name in names}


def write_results(name, rows, budget, notes=None, columns=None):
    """Writes `results/<name>.json` and `results/<name>.md` and prints the
    table. `budget` is a dict describing the fixed training budget."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {
        "benchmark": name,
        "budget": budget,
        "environment": env,
        "rows": rows,
        "notes": notes or [],
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    table = markdown_table(rows, columns)
    md = [
        f"# {name}",
        "",
        "Budget: " + json.dumps(budget),
        "",
        f"Command: `{env['command']}`",
        "",
        f"Environment: TF {env['tensorflow']}, Keras {env['keras']}, "
        f"numpy {env['numpy']}, {env['machine']} ({env['processor']}), "
        f"{env['date']}",
        "",
        table,
    ]
    if notes:
        md += ["", *[f"- {n}" for n in notes]]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print(table)
    return payload


# Where tf_keras and tensorflow-model-optimization live for the peers (they
# only work with legacy tf_keras, so they run in a process of their own):
#     pip install --target /work/peers-lib --no-deps "tf-keras==2.21.*" \
#         "tensorflow-model-optimization==0.8.*"
PEERS_LIB = os.environ.get("KERAS_COMPACT_PEERS_LIB", "/work/peers-lib")


def run_peer(script, *args):
    """Runs `benchmarks/<script>` (a tfmot peer) in its own process with
    legacy tf_keras; returns `(completed_process, None)` or `(None, why)`
    when the peer's packages are missing or it fails."""
    import subprocess

    if not os.path.isdir(os.path.join(PEERS_LIB, "tf_keras")):
        return None, (
            f"peer packages missing: no tf_keras in {PEERS_LIB} (set "
            "KERAS_COMPACT_PEERS_LIB; see benchmarks/harness.py)"
        )
    env = dict(
        os.environ,
        TF_USE_LEGACY_KERAS="1",
        PYTHONPATH=os.pathsep.join(
            [PEERS_LIB, str(ROOT / "benchmarks"), str(ROOT)]
        ),
    )
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (
            f"{script} failed (rc {proc.returncode}): {proc.stderr[-800:]}"
        )
    return proc, None


class RunLog:
    """Finished runs of a benchmark, appended as each one ends, so that an
    interrupted benchmark resumes where it stopped.

    Rows live in `results/<name>.partial.json` together with the budget
    they were measured under; a rerun with another budget starts afresh
    (the old file is moved aside, never mixed in). `done(**key)` returns
    the finished row with those values, or None. Two processes of the same
    benchmark and budget may share the file (parallel lanes training
    different runs): each reads the other's finished rows before it
    answers `done` or adds its own.

    Example:

        log = RunLog("sparse_cifar10_s0", budget)
        for arm in arms:
            if log.done(arm=arm) is None:
                log.add({"arm": arm, **train(arm)})
        rows = log.rows
    """

    def __init__(self, name, budget):
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path = RESULTS / f"{name}.partial.json"
        self.budget = json.loads(json.dumps(budget))
        self.rows = []
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("budget") == self.budget:
                self.rows = saved["rows"]
                print(f"resuming {self.path.name}: {len(self.rows)} runs done")
            else:
                self.path.rename(self.path.with_suffix(".stale.json"))

    def _merge_saved(self):
        # Another process of the same benchmark (a second lane running
        # other runs, `--only`) may have added rows since we read the file.
        if not self.path.exists():
            return
        saved = json.loads(self.path.read_text())
        if saved.get("budget") != self.budget:
            return
        # Compared as JSON text: a NaN (a run too short for a median) is
        # not equal to itself, so `in` would add such rows again.
        mine = {json.dumps(r, sort_keys=True) for r in self.rows}
        self.rows += [
            r
            for r in saved["rows"]
            if json.dumps(r, sort_keys=True) not in mine
        ]

    def done(self, **key):
        self._merge_saved()
        for row in self.rows:
            if all(row.get(k) == v for k, v in key.items()):
                return row
        return None

    def add(self, row):
        self._merge_saved()
        self.rows.append(row)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"budget": self.budget, "rows": self.rows}))
        tmp.replace(self.path)
        print(json.dumps(row), flush=True)
        return row
