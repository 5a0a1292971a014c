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
