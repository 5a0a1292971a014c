"""`keras-compact compare`: plain training against a recipe, N seeds."""

import copy
import csv
import json
import pathlib

from keras_compact.cli import report
from keras_compact.cli.run import check_args, load_splits, train_run
from keras_compact.cli.techniques import CliError


def run_compare(args):
    """Trains the plain arm and the recipe arm for `args.seeds` seeds.

    Every run lives in `<output>/<arm>/seed<k>/` (so a rerun resumes or
    skips it, as `train` does); both arms of a seed read the same batches.
    Writes `compare.json`, `compare.csv` and `compare.png` into `output`.

    Returns:
        0.
    """
    recipe = check_args(args)
    if not recipe:
        raise CliError(
            "Expected at least one technique flag (the recipe compared "
            "with plain training), e.g. --aux. Received: none"
        )
    if args.seeds < 1:
        raise CliError(f"Expected --seeds >= 1. Received: --seeds={args.seeds}")
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    label = "+".join(t.name for t in recipe)
    arms = [("plain", []), (label, recipe)]
    runs, teachers = [], {}
    for k in range(args.seeds):
        seed = args.seed + k
        splits = None
        for arm, techniques in arms:
            run_args = copy.copy(args)
            run_args.seed = seed
            folder = out / arm / f"seed{seed}"
            if splits is None:
                splits = load_splits(run_args)
            summary = train_run(
                run_args,
                techniques,
                folder,
                splits=splits,
                teachers=teachers,
                teacher_dir=out,
            )
            runs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "test_accuracy": summary["test_accuracy"],
                    "seconds": summary["seconds"],
                    "median_step_ms": summary["median_step_ms"],
                    "params": summary["params"],
                    "folder": str(folder),
                }
            )
    rows = report.summarize(runs)
    table = report.format_table(rows, baseline="plain")
    print(
        f"\n== {args.model} on {args.dataset}: plain vs {label}, "
        f"{args.seeds} seed(s), {args.epochs} epochs (test accuracy)"
    )
    print(table)
    (out / "compare.json").write_text(
        json.dumps({"arms": rows, "runs": runs}, indent=2)
    )
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    report.plot_accuracy_vs_time(
        runs,
        out / "compare.png",
        title=f"{args.model}: plain vs {label} ({args.seeds} seeds)",
    )
    print(f"Saved {out}/compare.json, compare.csv and compare.png")
    return 0
