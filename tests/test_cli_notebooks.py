"""Every notebook in examples/notebooks/ executes, against this checkout,
on tiny data (`KERAS_COMPACT_NOTEBOOK_QUICK=1`: a few images, one epoch).

The notebooks share one kernel (TensorFlow is imported once); each runs in
its own temporary folder."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def kernel():
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import KernelManager

    env = dict(os.environ)
    env["KERAS_COMPACT_NOTEBOOK_QUICK"] = "1"
    env["MPLBACKEND"] = "Agg"
    # The kernel imports this checkout, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    km = KernelManager(kernel_name="python3")
    km.kernel_cmd = [
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    km.start_kernel(env=env, cwd=str(ROOT))
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, kernel, tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, km=kernel, timeout=180)
    with client.setup_kernel():
        # Each notebook runs in its own folder.
        client.kc.execute_interactive(
            f"import os; os.chdir({str(tmp_path)!r})", timeout=60
        )
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    assert list(tmp_path.iterdir()) or "export" not in path.name


def _install_cell(path):
    import nbformat

    cell = nbformat.read(path, as_version=4).cells[1]
    assert "KERAS_COMPACT_SOURCE" in cell.source
    return cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_needs_a_source(path, monkeypatch):
    """Without keras_compact and KERAS_COMPACT_SOURCE the install cell
    fails with a clear message; with it, it pip-installs that source."""
    import importlib.util
    import subprocess

    source = _install_cell(path)
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "keras_compact" else real_find_spec(name, *a)
        ),
    )
    monkeypatch.setattr(subprocess, "check_call", calls.append)
    monkeypatch.delenv("KERAS_COMPACT_SOURCE", raising=False)
    with pytest.raises(RuntimeError, match="KERAS_COMPACT_SOURCE is empty"):
        exec(source, {})
    assert calls == []
    monkeypatch.setenv("KERAS_COMPACT_SOURCE", "/content/kc.whl")
    exec(source, {})
    assert calls and calls[0][-1] == "/content/kc.whl"
