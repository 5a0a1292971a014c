"""The `keras-compact` command, run in-process with tiny budgets."""

import json

import keras
import pytest

from keras_compact.cli.main import main


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny_cnn", "mobilenet_v2_tiny", "resnet8", "wrn16_2"):
        assert name in out


def test_train_then_export_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "tiny_cnn",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    assert 0.0 <= history["test_accuracy"] <= 1.0
    model = keras.saving.load_model(out / "model.keras")
    assert model.input_shape[1:] == (8, 8, 1)
    tflite = tmp_path / "m.tflite"
    code = main(
        [
            "export",
            str(out / "model.keras"),
            "--output",
            str(tflite),
            "--quantization",
            "int8",
            "--dataset",
            "digits",
            "--n-verify",
            "50",
        ]
    )
    assert code == 0
    report = json.loads(tflite.with_suffix(".json").read_text())
    assert report["quantization"] == "int8"
    assert report["num_samples"] == 50


def test_demo_runs_end_to_end_on_real_data(tmp_path, data_dir, capsys):
    code = main(
        ["demo", "--quick", "--data-dir", data_dir, "--output", str(tmp_path)]
    )
    assert code == 0
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["teacher"]["arm"] == "teacher"
    assert [r["arm"] for r in summary["runs"]] == [
        "plain",
        "auxiliary",
        "netaug",
        "dsr 50%",
        "expandnets",
        "distillation",
        "distill+aux",
        "qat",
    ]
    # Every arm deploys the same tiny model; DSR's is half zeros.
    params = {r["params"] for r in summary["runs"]}
    assert len(params) == 1
    dsr = summary["runs"][3]
    assert (
        dsr["nonzero_kernel_weights"]
        < summary["runs"][0]["nonzero_kernel_weights"]
    )
    assert [r["quantization"] for r in summary["tflite"]] == ["float32", "int8"]
    assert summary["tflite"][1]["top1_agreement"] > 0.9
    # The QAT arm ships its int8 file, checked against its fake-quant model;
    # the plain arm's is quantized after training.
    ptq, qat = summary["int8"].values()
    assert ptq["reference"] == "keras" and qat["reference"] == "fake-quant"
    assert ptq["quantization"] == qat["quantization"] == "int8"
    assert qat["top1_agreement"] > 0.9
    assert (tmp_path / "demo.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "vs plain" in out and "distill+aux" in out
    assert "qat, int8 file: accuracy" in out
    assert "plain, post-training int8: accuracy" in out
    if summary["tflite"][1]["micro_arena_bytes"] is not None:
        # tflite-micro installed: the int8 file ran on it, and it says so.
        # Equal integers, or a requantization rounded one step apart on a
        # few outputs of a barely trained model (post-training files).
        verdict = summary["tflite"][1]["micro"]
        assert verdict == "equal" or verdict.startswith("1 step apart on ")
        assert f"int8 on the microcontroller runtime: {verdict}" in out
        assert qat["micro"] == "equal" or qat["micro"].startswith("1 step")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--dataset", "mnist_xl", "--epochs", "1"], "mnist_xl"),
        (
            ["train", "--model", "resnet9000", "--dataset", "digits"],
            "resnet9000",
        ),
    ],
)
def test_bad_input_gives_a_clear_error(argv, expected, tmp_path, capsys):
    argv = [*argv, "--output", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and expected in err


def test_export_path_must_end_in_tflite(tmp_path, capsys):
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.save(tmp_path / "m.keras")
    code = main(
        [
            "export",
            str(tmp_path / "m.keras"),
            "--output",
            str(tmp_path / "m.bin"),
            "--quantization",
            "float32",
            "--dataset",
            "digits",
            "--n-verify",
            "10",
        ]
    )
    assert code == 2
    assert "path=" in capsys.readouterr().err
