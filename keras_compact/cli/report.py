"""Tables and charts of the command line's comparisons."""

import numpy as np


def summarize(runs, key="arm"):
    """Groups runs by `key`: mean, spread and time per arm.

    Args:
        runs: list of dicts with `key`, `test_accuracy`, `seconds` and
            `median_step_ms`.
        key: the field naming each run's arm.

    Returns:
        A list of dicts, one per arm in order of first appearance: `arm`,
        `n`, `mean`, `std` (sample standard deviation, 0 for one run),
        `min`, `max`, `seconds` (mean fit time), `step_ms` (mean median
        step time).
    """
    arms = {}
    for r in runs:
        arms.setdefault(r[key], []).append(r)
    rows = []
    for arm, rs in arms.items():
        acc = np.array([r["test_accuracy"] for r in rs], float)
        rows.append(
            {
                "arm": arm,
                "n": len(rs),
                "mean": float(acc.mean()),
                "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "min": float(acc.min()),
                "max": float(acc.max()),
                "seconds": float(np.mean([r["seconds"] for r in rs])),
                "step_ms": _nanmean([r["median_step_ms"] for r in rs]),
            }
        )
    return rows


def _nanmean(values):
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def format_table(rows, baseline=None):
    """A plain-text table of `summarize` rows (accuracy in %).

    The spread columns (standard deviation, min..max) appear when some arm
    has more than one run.
    """
    width = max([len("arm")] + [len(r["arm"]) for r in rows])
    spread = any(r["n"] > 1 for r in rows)
    base = None
    if baseline is not None:
        base = next((r["mean"] for r in rows if r["arm"] == baseline), None)
    head = f"{'arm':<{width}}  "
    head += (
        f"{'n':>2}  {'accuracy %':>15}  {'min..max %':>13}"
        if spread
        else f"{'accuracy %':>10}"
    )
    head += f"  {'vs ' + (baseline or '-'):>10}  {'fit s':>6}  {'step ms':>7}"
    lines = [head]
    for r in rows:
        line = f"{r['arm']:<{width}}  "
        if spread:
            acc = f"{100 * r['mean']:6.2f} +- {100 * r['std']:5.2f}"
            rng = f"{100 * r['min']:5.1f}..{100 * r['max']:5.1f}"
            line += f"{r['n']:>2}  {acc:>15}  {rng:>13}"
        else:
            line += f"{100 * r['mean']:>10.2f}"
        delta = "" if base is None else f"{100 * (r['mean'] - base):+.2f}"
        line += f"  {delta:>10}  {r['seconds']:>6.0f}  {r['step_ms']:>7.1f}"
        lines.append(line)
    return "\n".join(lines)


def plot_accuracy_vs_time(runs, path, title=None, key="arm"):
    """Saves a PNG: test accuracy against training time, one colour per arm.

    Each run is a dot; each arm's mean is a larger marker with its spread
    (standard deviation) as an error bar.

    Args:
        runs: list of dicts with `key`, `test_accuracy` and `seconds`.
        path: the PNG's path.
        title: optional title.
        key: the field naming each run's arm.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for row in summarize(runs, key):
        rs = [r for r in runs if r[key] == row["arm"]]
        t = [r["seconds"] for r in rs]
        a = [100 * r["test_accuracy"] for r in rs]
        dots = ax.scatter(t, a, s=18, alpha=0.5)
        ax.errorbar(
            [row["seconds"]],
            [100 * row["mean"]],
            yerr=[100 * row["std"]],
            fmt="o",
            ms=8,
            capsize=4,
            color=dots.get_facecolor()[0][:3],
            label=f"{row['arm']} ({100 * row['mean']:.1f}%)",
        )
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
