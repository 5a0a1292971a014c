"""The examples and notebooks run (tiny budgets) or at least compile."""

import json
import pathlib
import runpy
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_example(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")


def test_distill_example_runs(tmp_path, data_dir, monkeypatch, capsys):
    out = tmp_path / "s.tflite"
    _run_example(
        "distill_fashion_mnist.py",
        ["--epochs", "1", "--n-per-class", "20", "--output", str(out)],
        monkeypatch,
    )
    assert out.exists()
    assert "top-1 agreement" in capsys.readouterr().out


def test_netaug_example_runs(tmp_path, data_dir, monkeypatch, capsys):
    out = tmp_path / "tiny.tflite"
    _run_example(
        "netaug_mobilenet.py",
        ["--n-per-class", "10", "--epochs", "1", "--export", str(out)],
        monkeypatch,
    )
    assert out.exists()
    printed = capsys.readouterr().out
    assert "augmented channel groups" in printed
    from keras_compact import models

    plain = models.get_model(
        "mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35, cifar_stem=False
    )
    # The shipped model is the plain architecture, parameter for parameter.
    assert f"compact model: {plain.count_params()} params" in printed


def test_sparse_example_runs(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "out"
    _run_example(
        "sparse_dsr.py",
        ["--epochs", "1", "--n-per-class", "10", "--out", str(out)],
        monkeypatch,
    )
    assert any(out.iterdir())


@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "examples").rglob("*.ipynb")), ids=str
)
def test_notebook_code_compiles(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code
    for cell in code:
        src = "".join(
            line for line in cell["source"] if not line.startswith("!")
        )
        compile(src, str(notebook), "exec")
