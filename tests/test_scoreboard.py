"""The scoreboard campaign's bookkeeping (`benchmarks/scoreboard.py`): which
runs a selection plans, how long the wall-clock arm trains, which finished
runs are stale, and how the runs file keeps replaced rows. Nothing trains."""

import json
import pathlib
import sys
import types

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import scoreboard  # noqa: E402


def _args(tasks, arms, seeds=(0, 1)):
    return types.SimpleNamespace(tasks=tasks, arms=arms, seeds=list(seeds))


def test_planned_seeds_and_arms_per_task():
    sb = scoreboard
    plan = sb.planned(_args(list(sb.ALL_TASKS), list(sb.ARMS)))
    assert len(plan) == len(set(plan))
    by_task = {}
    for task, arm, seed in plan:
        by_task.setdefault(task, set()).add((arm, seed))
    r8 = by_task["cifar10_resnet8"]
    # plain and the combined recipe on both seeds, techniques on the first.
    assert {("plain", 0), ("plain", 1), ("combined", 1)} <= r8
    assert ("netaug", 0) in r8 and ("netaug", 1) not in r8
    # the tfmot peer runs on resnet8 tasks only.
    assert ("tfmot_gmp90", 0) in r8
    assert not any(a == "tfmot_gmp90" for a, _ in by_task["fmnist_tiny_cnn"])
    # MobileNetV2 and the width sweep: plain and combined, first seed; the
    # widest plain model alone (the reference for the recipe below it).
    widest = f"cifar10_resnet8_w{max(sb.SWEEP_WIDTHS)}"
    for task in (*sb.SWEEP, "cifar10_mbv2_035"):
        expected = (
            {("plain", 0)}
            if task == widest
            else {
                ("plain", 0),
                ("combined", 0),
            }
        )
        assert by_task[task] == expected, task


def test_planned_respects_the_selection():
    plan = scoreboard.planned(
        _args(["fmnist_tiny_cnn"], ["plain", "aux"], seeds=(3, 4))
    )
    assert plan == [
        ("fmnist_tiny_cnn", "plain", 3),
        ("fmnist_tiny_cnn", "plain", 4),
        ("fmnist_tiny_cnn", "aux", 3),
    ]


def _row(arm, step_ms, task="fmnist_tiny_cnn"):
    return {"task": task, "arm": arm, "median_step_ms": step_ms}


def test_wallclock_epochs_follow_the_costliest_technique():
    sb = scoreboard
    runs = [_row("plain", 100.0), _row("plain", 120.0)]
    assert sb.wallclock_epochs("x", "fmnist_tiny_cnn", 15, runs) is None
    runs += [
        _row("aux", 165.0),
        _row("netaug", 330.0),
        # not techniques to match: itself, a smaller model, the recipe.
        _row("plain_wallclock", 900.0),
        _row("thin90", 900.0),
        _row("combined", 900.0),
        # another task's runs do not count.
        _row("netaug", 9000.0, task="cifar10_resnet8"),
    ]
    # 330 ms against plain's median 110 ms: three times the epochs.
    assert sb.wallclock_epochs("x", "fmnist_tiny_cnn", 15, runs) == 45
    # never fewer epochs than plain's.
    cheap = [_row("plain", 100.0), _row("aux", 50.0)]
    assert sb.wallclock_epochs("x", "fmnist_tiny_cnn", 15, cheap) == 15


def test_stale_runs_are_those_of_another_teacher():
    sb = scoreboard
    current = sb.teacher_label("fashion_mnist")
    row = {"task": "fmnist_tiny_cnn", "arm": "distill", "teacher": current}
    assert not sb.stale(row)
    assert sb.stale({**row, "teacher": "tiny_cnn {'width_multiplier': 2.0}"})
    assert sb.stale({**row, "arm": "combined", "teacher": None})
    # arms without a teacher are never stale.
    assert not sb.stale({"task": "fmnist_tiny_cnn", "arm": "plain"})


def test_save_run_appends_and_keeps_replaced_rows(tmp_path, monkeypatch):
    sb = scoreboard
    monkeypatch.setattr(sb, "RESULTS", tmp_path)
    first = {"run": "t/distill/s0", "float_acc": 0.90, "teacher": "a"}
    other = {"run": "t/plain/s0", "float_acc": 0.89}
    sb.save_run("camp", first)
    sb.save_run("camp", other)
    assert sb.load_runs("camp") == [first, other]
    again = {**first, "float_acc": 0.91, "teacher": "b"}
    sb.save_run("camp", again)
    saved = json.loads((tmp_path / "camp_runs.json").read_text())
    assert saved["runs"] == [other, again]
    assert saved["superseded"] == [first]
    assert not list(tmp_path.glob("*.tmp"))
    assert sb.load_runs("missing") == []


def test_campaign_hours_count_each_teacher_training_once():
    teacher = {"teacher": "resnet20 {}", "teacher_hours": 2.0}
    saved = {
        "runs": [
            {"task": "cifar10_resnet8", "train_hours": 1.0},
            {"task": "cifar10_resnet8", "train_hours": 1.5, **teacher},
            {
                "task": "cifar10_resnet8",
                "train_hours": 1.5,
                "qat_hours": 0.25,
                **teacher,
            },
            {"task": "fmnist_tiny_cnn", "train_hours": 0.5, **teacher},
            # The CIFAR-10 teacher trained again (a lost checkpoint).
            {
                "task": "cifar10_resnet8_w0.5",
                "train_hours": 0.5,
                "teacher": "resnet20 {}",
                "teacher_hours": 2.5,
            },
        ],
        "superseded": [
            {
                "task": "fmnist_tiny_cnn",
                "train_hours": 0.5,
                "teacher": "tiny_cnn {}",
                "teacher_hours": 0.25,
            }
        ],
    }
    hours = scoreboard.campaign_hours(saved)
    assert hours["runs"] == pytest.approx(5.75)
    # resnet20 for CIFAR-10 twice, resnet20 and the tiny CNN for
    # Fashion-MNIST: the runs sharing one training count it once.
    assert hours["n_teachers"] == 4
    assert hours["teachers"] == pytest.approx(6.75)
    assert hours["total"] == pytest.approx(12.5)
    assert (hours["n_runs"], hours["n_superseded"]) == (6, 1)


def test_verdict_compares_the_recipe_with_the_best_single_on_its_seed():
    def run(arm, seed, acc):
        return {
            "task": "fmnist_tiny_cnn",
            "arm": arm,
            "seed": seed,
            "float_acc": acc,
            "epochs": 15,
            "train_hours": 0.1,
        }

    runs = [
        run("plain", 0, 0.900),
        run("plain", 1, 0.905),
        run("reparam", 0, 0.915),
        run("distill", 0, 0.911),
        # sparse arms are not the recipe's rivals.
        run("dsr90", 0, 0.990),
        run("combined", 0, 0.913),
        run("combined", 1, 0.950),
    ]
    summary = scoreboard.summarize(runs)
    notes = scoreboard.verdicts(summary, {}, runs)
    [line] = [n for n in notes if "best single" in n]
    assert "(seed 0): 91.30 vs reparam 91.50 (-0.20): NOT met" in line
    runs[-2] = run("combined", 0, 0.920)
    notes = scoreboard.verdicts(scoreboard.summarize(runs), {}, runs)
    [line] = [n for n in notes if "best single" in n]
    assert line.endswith("91.50 (+0.50): MET")


def test_sparse_verdict_per_initial_split():
    def run(arm, acc, seed=0):
        return {
            "task": "cifar10_resnet8",
            "arm": arm,
            "seed": seed,
            "float_acc": acc,
            "epochs": 30,
            "train_hours": 0.1,
        }

    runs = [
        run("plain", 0.82),
        run("dsr90", 0.73),
        run("dsr90", 0.74, seed=1),
        run("static90", 0.71),
        run("static90", 0.70, seed=1),
        run("thin90", 0.72),
        # Seed 1 of thin has no ERK DSR beside it: not in that comparison.
        run("thin90", 0.60, seed=1),
        run("tfmot_gmp90", 0.76),
        run("dsr90_erk", 0.755),
        run("static90_erk", 0.75),
    ]
    notes = scoreboard.verdicts(scoreboard.summarize(runs), {}, runs)
    sparse = [n for n in notes if "DSR 90%" in n]
    assert sparse == [
        "cifar10_resnet8 DSR 90%: +3.00 vs static (seeds 0, 1; goal >= "
        "+1.0), +7.50 vs thin (seeds 0, 1), -3.00 vs tfmot (seed 0)",
        "cifar10_resnet8 DSR 90% ERK: +0.50 vs static ERK (seed 0; goal >= "
        "+1.0), +3.50 vs thin (seed 0), -0.50 vs tfmot (seed 0)",
    ]
    # The ERK arms are probes: planned only when named, with ERK masks.
    plan = scoreboard.planned(_args(["cifar10_resnet8"], ["dsr90_erk"]))
    assert plan == [("cifar10_resnet8", "dsr90_erk", 0)]
    assert "dsr90_erk" in scoreboard.PROBE_ARMS


def test_sweep_verdict_per_width():
    def run(width, arm, acc, macs):
        task = "cifar10_resnet8" if width == 1 else f"cifar10_resnet8_w{width}"
        return {
            "task": task,
            "arm": arm,
            "seed": 0,
            "float_acc": acc,
            "epochs": 30,
            "train_hours": 0.1,
            "macs": macs,
        }

    runs = [
        run(0.5, "plain", 0.75, 3.0e6),
        run(0.75, "plain", 0.80, 7.0e6),
        run(1, "plain", 0.82, 12.0e6),
        run(1.25, "plain", 0.84, 19.0e6),
        run(0.5, "combined", 0.79, 3.0e6),
        run(0.75, "combined", 0.83, 7.0e6),
        run(1.25, "combined", 0.86, 19.0e6),
    ]
    summary = scoreboard.summarize(runs)
    notes = scoreboard.verdicts(summary, scoreboard.sweep_points(summary), runs)
    sweep = {n.split(":")[0]: n for n in notes if n.startswith("sweep")}
    # 0.5 matches only itself; 0.75 matches width 1 (1.71x).
    assert sweep["sweep cifar10_resnet8_w0.5"].endswith(
        "3.00M MACs (1.00x; goal >= 1.5x: NOT met)"
    )
    assert sweep["sweep cifar10_resnet8_w0.75"].endswith(
        "12.00M MACs (1.71x; goal >= 1.5x: MET)"
    )
    # 1.25 beats every plain width, but none has 1.5x its MACs.
    assert sweep["sweep cifar10_resnet8_w1.25"].endswith(
        "19.00M MACs (1.00x, the widest plain model swept; "
        "goal >= 1.5x: untested)"
    )
