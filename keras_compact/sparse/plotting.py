"""A plot of per-layer density over training (matplotlib, Agg)."""

import numpy as np

_PREFIX = "sparse/density/"


def _series(source):
    """`{key: [density per epoch]}` from a History, a dict or a technique."""
    if hasattr(source, "history") and isinstance(source.history, dict):
        source = source.history  # keras.callbacks.History
    if hasattr(source, "history") and isinstance(source.history, list):
        records = source.history  # SparseTraining
        keys = []
        for r in records:
            keys += [k for k in r if k.startswith(_PREFIX) and k not in keys]
        return {
            k[len(_PREFIX) :]: [r.get(k, np.nan) for r in records] for k in keys
        }
    if isinstance(source, dict):
        return {
            k[len(_PREFIX) :]: list(v)
            for k, v in source.items()
            if k.startswith(_PREFIX)
        }
    raise TypeError(
        "Expected a keras History, its `history` dict or a SparseTraining "
        f"technique. Received: {type(source).__name__}"
    )


def plot_density(source, path=None, sizes=None, title=None):
    """Plots the density of every sparse layer over training.

    Left: density per epoch, one line per layer, coloured from the first
    (light) to the last (dark) layer. Right, if `sizes` is given: final
    density against the layer's number of weights (DSR's finding: larger and
    deeper layers end up sparser).

    Args:
        source: the `History` returned by `fit`, its `.history` dict, or the
            `SparseTraining` technique (its own per-epoch records).
        path: optional file to save the figure to (PNG, PDF, ...).
        sizes: optional `{layer_key: number_of_weights}` (e.g. from
            `{r.item: r.values["size"] for r in technique.summary().applied}`).
        title: optional figure title.

    Returns:
        The matplotlib `Figure`.

    Raises:
        TypeError: for an unsupported `source`.
        ValueError: if `source` holds no per-layer density (was
            `log_layer_density` off?).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    series = _series(source)
    if not series:
        raise ValueError(
            "No per-layer density found (keys 'sparse/density/<layer>'); "
            "train with SparseTraining(log_layer_density=True)."
        )
    ncols = 2 if sizes else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    cmap = plt.get_cmap("viridis_r")
    n = len(series)
    for i, (key, values) in enumerate(series.items()):
        ax.plot(
            np.arange(1, len(values) + 1),
            values,
            label=key,
            color=cmap(0.15 + 0.8 * i / max(n - 1, 1)),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("density (fraction of non-zeros)")
    ax.set_title("per-layer density (light: first layer, dark: last)")
    if n <= 16:
        ax.legend(fontsize=7)
    if sizes:
        ax2 = axes[0, 1]
        keys = [k for k in series if k in sizes]
        x = [sizes[k] for k in keys]
        y = [series[k][-1] for k in keys]
        ax2.scatter(
            x,
            y,
            c=[
                cmap(0.15 + 0.8 * list(series).index(k) / max(n - 1, 1))
                for k in keys
            ],
        )
        ax2.set_xscale("log")
        ax2.set_xlabel("weights in layer")
        ax2.set_ylabel("final density")
        ax2.set_title("final density vs layer size")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
