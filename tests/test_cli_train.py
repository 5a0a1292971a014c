"""`keras-compact train`: every technique flag, resume, TensorBoard scalars
and clear errors. Tiny budgets: 8x8 digits, one or two epochs."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compact import models
from keras_compact.cli.main import build_parser, main
from keras_compact.cli.run import train_run
from keras_compact.cli.techniques import TECHNIQUES, check_technique_arguments

DIGITS = ["--dataset", "digits", "--batch-size", "64", "--verbose", "0"]


def read_scalars(log_dir):
    """Every scalar tag and its values in the TensorBoard event files."""
    tags = {}
    for path in log_dir.rglob("events.out.tfevents.*"):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                number = tf.make_ndarray(value.tensor)
                tags.setdefault(value.tag, []).append(float(number))
    return tags


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    models.get_model(
        "tiny_cnn", input_shape=(8, 8, 1), width_multiplier=2.0
    ).save(path)
    return str(path)


# Each technique flag, and the scalars its run must write to TensorBoard.
FLAG_CASES = {
    "distill": (
        ["--distill", "TEACHER", "--distill-alpha", "0.5"],
        ["epoch_distillation_loss", "epoch_task_loss"],
    ),
    "aux-search": (
        ["--aux", "--aux-connections", "search", "--aux-lambda", "0.5"],
        ["epoch_aux_loss", "epoch_auxiliary/search_steps"],
    ),
    "netaug": (
        # On this 8x8 model start_at="auto" is 0.5: a 1-epoch fit would
        # never run the augmented pass without --netaug-start-at 0.
        ["--netaug", "--netaug-widths", "1,2", "--netaug-start-at", "0"],
        [
            "epoch_netaug_loss",
            "epoch_netaug_aug_loss",
            "epoch_netaug_loss_ratio",
        ],
    ),
    "sparse-set": (
        ["--sparse", "0.5", "--sparse-policy", "set"],
        ["epoch_sparse/density", "epoch_sparse/density/conv2"],
    ),
    "reparam-acnet": (["--reparam", "acnet"], ["epoch_task_loss"]),
    "qat": (["--qat"], ["epoch_task_loss"]),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_each_technique_flag_trains_and_logs(case, teacher_file, tmp_path):
    flags, scalars = FLAG_CASES[case]
    flags = [teacher_file if f == "TEACHER" else f for f in flags]
    out = tmp_path / "run"
    argv = ["train", *DIGITS, "--epochs", "1", "--output", str(out), *flags]
    assert main(argv) == 0
    summary = json.loads((out / "history.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["recipe"] == case.split("-")[0]
    model = keras.saving.load_model(out / "model.keras")
    plain = models.get_model("tiny_cnn", input_shape=(8, 8, 1))
    assert model.count_params() == plain.count_params()
    assert (out / "history.csv").exists()
    tags = read_scalars(out / "logs")
    for tag in scalars:
        assert tag in tags, sorted(tags)
    if case == "aux-search":
        gates = [t for t in tags if t.startswith("epoch_auxiliary/gate/")]
        assert gates and all(0 < tags[g][0] < 1 for g in gates)
    if case == "sparse-set":
        assert tags["epoch_sparse/density"][0] == pytest.approx(0.5, abs=0.01)
    if case == "qat":
        from keras_compact.export import run_tflite

        x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1))
        logits = run_tflite(str(out / "model_int8.tflite"), x.astype("f4"))
        assert logits.shape == (4, 10)
    else:
        assert not (out / "model_int8.tflite").exists()


def test_combined_recipe_with_a_zoo_teacher(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        *DIGITS,
        "--epochs",
        "1",
        "--n-per-class",
        "20",
        "--output",
        str(out),
        "--distill",
        "tiny_cnn",
        "--teacher-epochs",
        "1",
        "--aux",
        "--netaug",
        "--netaug-start-at",
        "0",  # the augmented pass runs in this 1-epoch fit
        "--sparse",
        "0.5",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "history.json").read_text())
    assert summary["recipe"] == "distill+aux+netaug+sparse"
    assert (out / "teacher.keras").exists()
    for key in ("distillation_loss", "aux_loss", "netaug_aug_loss"):
        assert np.isfinite(summary["history"][key][-1])
    # A rerun of a finished run does not train again.
    assert main(argv) == 0
    assert "already holds this finished run" in capsys.readouterr().out


def test_qat_composes_with_aux_and_netaug(tmp_path):
    # The fake-quant graph trains with the auxiliary branches on its fused
    # layers and NetAug's float augmented pass; the int8 file ships.
    out = tmp_path / "run"
    argv = ["train", *DIGITS, "--epochs", "1", "--output", str(out)]
    argv += ["--aux", "--netaug", "--netaug-start-at", "0", "--qat"]
    assert main(argv) == 0
    summary = json.loads((out / "history.json").read_text())
    assert summary["recipe"] == "aux+netaug+qat"
    for key in ("aux_loss", "netaug_aug_loss"):
        assert np.isfinite(summary["history"][key][-1])
    from keras_compact.export import run_tflite

    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype("f4")
    assert run_tflite(str(out / "model_int8.tflite"), x).shape == (4, 10)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt("simulated interruption")


def test_rerun_resumes_an_interrupted_run(tmp_path):
    argv = ["train", *DIGITS, "--epochs", "2", "--n-per-class", "30"]
    argv += ["--sparse", "0.5"]
    # Uninterrupted reference.
    assert main([*argv, "--output", str(tmp_path / "ref")]) == 0
    ref = json.loads((tmp_path / "ref" / "history.json").read_text())
    out = tmp_path / "run"
    args = build_parser().parse_args([*argv, "--output", str(out)])
    on = check_technique_arguments(args)
    with pytest.raises(KeyboardInterrupt):
        train_run(args, on, out, extra_callbacks=[_Interrupt()])
    assert (out / "backup").exists()
    assert main([*argv, "--output", str(out)]) == 0
    summary = json.loads((out / "history.json").read_text())
    assert summary["resumed"] is True
    assert not (out / "backup").exists()
    assert summary["history"]["epoch"] == [0.0, 1.0]
    # Same batches, same state: the resumed run ends where the reference
    # does.
    np.testing.assert_allclose(
        summary["history"]["loss"], ref["history"]["loss"], rtol=1e-3
    )
    assert summary["test_accuracy"] == pytest.approx(
        ref["test_accuracy"], abs=0.01
    )


def test_the_flag_table_has_one_entry_per_technique():
    import keras_compact

    names = {type(t).__name__ for t in TECHNIQUES}
    assert len(names) == len(TECHNIQUES)
    flags = [t.flag for t in TECHNIQUES]
    assert len(set(flags)) == len(flags)
    assert {"--distill", "--aux", "--netaug", "--sparse"} <= set(flags)
    for t in TECHNIQUES:
        assert t.title.split("(")[-1].rstrip(")") in keras_compact.__all__


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--sparse", "0.5", "--sparse-policy", "snip"], "--sparse-policy"),
        (["--sparse", "1.5"], "--sparse=1.5"),
        (["--sparse-policy", "rigl"], "--sparse-policy=rigl without --sparse"),
        (["--aux-lambda", "2"], "without --aux"),
        (["--model", "missing.keras"], "--model=missing.keras"),
        (["--distill", "nowhere/t.keras"], "--distill=nowhere/t.keras"),
        (["--distill", "resnet9000"], "--distill=resnet9000"),
        (["--dataset", "mnist_xl"], "--dataset=mnist_xl"),
        (["--netaug", "--netaug-widths", "2,3"], "--netaug-widths=2,3"),
        (["--netaug", "--netaug-widths", "1,x"], "--netaug-widths"),
        (["--netaug", "--netaug-start-at", "1"], "--netaug-start-at=1"),
        (["--netaug", "--netaug-start-at", "soon"], "--netaug-start-at"),
        (["--netaug-start-at", "0.5"], "--netaug-start-at=0.5 without"),
        (
            ["--aux", "--aux-connections", "search", "--validation-split", "0"],
            "--validation-split=0",
        ),
        (["--distill-alpha", "2", "--distill", "tiny_cnn"], "alpha=2"),
        # Re-parameterisation and QAT each replace the training graph.
        (["--reparam", "acnet", "--qat"], "--reparam and --qat not to be"),
        (["--reparam", "dbb", "--netaug"], "--reparam and --netaug not to"),
        (["--width", "2", "--model", "TEACHER"], "--width"),
    ],
)
def test_clear_errors(argv, expected, teacher_file, tmp_path, capsys):
    argv = [teacher_file if a == "TEACHER" else a for a in argv]
    code = main(["train", *DIGITS, *argv, "--output", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and expected in err, err
    assert not (tmp_path / "o" / "model.keras").exists()


def test_a_user_model_that_does_not_fit_the_data(tmp_path, capsys):
    path = tmp_path / "m.keras"
    models.get_model("tiny_cnn", input_shape=(28, 28, 1)).save(path)
    argv = ["train", *DIGITS, "--model", str(path)]
    assert main([*argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Expected --model to take the dataset's images" in err


def test_a_conflict_in_the_table_is_a_clear_error(
    monkeypatch, tmp_path, capsys
):
    # Any entry's conflicts are refused by name (here a made-up one).
    sparse = next(t for t in TECHNIQUES if t.name == "sparse")
    monkeypatch.setattr(type(sparse), "conflicts", ("netaug",))
    argv = ["train", *DIGITS, "--netaug", "--sparse", "0.5"]
    assert main([*argv, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--sparse and --netaug not to be combined" in err
