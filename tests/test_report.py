"""One report type for every technique: `summary(print_fn=None)`."""

import keras
import pytest

import keras_compact as kc
from keras_compact.training.report import TechniqueReport


def test_report_rows_table_and_dict():
    report = TechniqueReport("Demo", "a title")
    report.add("conv", "applied", density=0.25)
    report.add("head", "kept", "first layer")
    report.add("lstm", "skipped", "no kernel")
    report.totals["sparsity"] = 0.75
    report.note("a note")
    assert [r.item for r in report.applied] == ["conv"]
    assert [r.reason for r in report.kept] == ["first layer"]
    assert [r.item for r in report.skipped] == ["lstm"]
    text = str(report)
    assert text.splitlines()[0] == "Demo: a title"
    assert "applied  conv  density=0.25" in text
    assert "skipped  lstm  no kernel" in text
    assert "sparsity: 0.75" in text and text.endswith("a note")
    data = report.to_dict()
    assert data["rows"][0] == {
        "item": "conv",
        "status": "applied",
        "reason": "",
        "density": 0.25,
    }
    assert data["totals"] == {"sparsity": 0.75}
    assert repr(report) == (
        "<TechniqueReport Demo: applied=1, kept=1, skipped=1>"
    )
    with pytest.raises(ValueError, match="Received: status='done'"):
        report.add("x", "done")
    with pytest.raises(TypeError, match="Received: technique=3"):
        TechniqueReport(3)


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="body")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: kc.SparseTraining(0.5, policy="static", seed=0),
        lambda: kc.Reparameterize("acnet", seed=0),
        lambda: kc.NetAug(),
        lambda: kc.Distillation(_model()),
    ],
    ids=["sparse", "reparam", "netaug", "distillation"],
)
def test_every_technique_summary_prints_and_returns_one_report(make):
    technique = make()
    kc.Trainer(_model(), techniques=[technique])
    lines = []
    report = technique.summary(print_fn=lines.append)
    assert isinstance(report, TechniqueReport)
    assert report.technique == type(technique).__name__
    assert lines == str(report).split("\n")
    if not isinstance(technique, kc.Distillation):
        assert report.applied
    # The old per-technique methods are gone.
    assert not hasattr(technique, "report")
    assert not hasattr(technique, "describe")
