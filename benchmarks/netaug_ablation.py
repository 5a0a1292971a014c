"""Which part of NetAug costs the tiny CIFAR-10 MobileNetV2 its accuracy?
The student of `netaug_cifar10.py` trained plainly, with NetAug, with
NetAug augmenting only the width groups, and only the expand groups (same
data, optimizer and schedule; one seed). Further arms: the head kept at its
width (`exclude=["head_conv"]`), half the learning rate, and the paper's
label smoothing 0.1 on both loss terms (each with its own baseline); the
output guards (`guard_scale`, `guard_tiny`, `guard_none`) and the gradient
guard (`gradient_guard`, `gradient_guard_no_output_guard`).
`--epochs 40` asks whether a longer schedule closes the gap. `--cifar-stem`
trains the same student with CIFAR strides (input reduced 8 times, 32x32 ->
4x4 at the head, as the paper's 160x160 ImageNet input is reduced to 5x5)
instead of ImageNet strides (32x32 -> 1x1 from block 14 on); it costs about
7.5x more per step.

    python benchmarks/netaug_ablation.py [--epochs 8] [--seed 0]
        [--arms baseline netaug width_only expand_only] [--cifar-stem]
    python benchmarks/netaug_ablation.py --arms baseline guard_scale \
        guard_tiny guard_none gradient_guard [--cifar-stem]
        [--name netaug_ablation]

Writes benchmarks/results/<name>.{json,md}. Resumable: finished arms are
kept in <name>.partial.json and each arm checkpoints every epoch under
`--checkpoint-dir`, so rerunning the same command continues an interrupted
one.
"""

import argparse
import hashlib
import json

import harness  # first: it sets the environment
from harness import RunLog, write_results
from netaug_cifar10 import _train

from keras_compact import data, models
from keras_compact.netaug import NetAug

ARMS = {
    "baseline": None,
    # NetAug's defaults (each row records its full configuration); the
    # other NetAug arms run on these defaults but for their own settings.
    "netaug": {},
    # Output guard: classifier input scaled by sqrt(tiny / active) in the
    # augmented pass; groups feeding the classifier kept tiny; no guard.
    "guard_scale": {"output_guard": "scale"},
    "guard_tiny": {"output_guard": "tiny"},
    "guard_none": {"output_guard": None},
    # Augmented gradient of shared weights bounded by the tiny gradient,
    # with the default output guard and without one.
    "gradient_guard": {"gradient_guard": True},
    "gradient_guard_no_output_guard": {
        "output_guard": None,
        "gradient_guard": True,
    },
    # Width groups only (expand groups at their tiny width), augmented
    # throughout; expand groups only.
    "width_only": {"expand_multipliers": (1.0,), "stop_width_at": 1.0},
    "expand_only": {"width_multipliers": (1.0,)},
    "no_head": {"exclude": ("head_conv",)},
    # Groups on feature maps smaller than N x N kept at their tiny width
    # (the paper's heads are at 5x5 or more); 4 is the default since
    # `netaug_min_resolution_imagenet_s*`, None augments every group.
    "min_resolution_4": {"min_resolution": 4},
    "min_resolution_2": {"min_resolution": 2},
    "min_resolution_8": {"min_resolution": 8},
    "min_resolution_none": {"min_resolution": None},
    # The augmented pass only in part of the epochs (the tiny model trains
    # alone in the rest, at a plain step's cost): stopped after, started
    # after a fraction of them.
    "stop_at_0.5": {"stop_at": 0.5},
    "stop_at_0.75": {"stop_at": 0.75},
    # The full schedule (the default until `start_at="auto"`, which is
    # 0.5 where `min_resolution` keeps groups tiny, e.g. ImageNet strides).
    "start_at_0": {"start_at": 0.0},
    "start_at_0.25": {"start_at": 0.25},
    "start_at_0.5": {"start_at": 0.5},
    # The defaults with other random draws of the sampled widths and extra
    # channels (NetAug's own seed; same data, batches and tiny init): the
    # spread NetAug's sampling alone gives one run.
    "netaug_draws_1": {"seed": 101},
    "netaug_draws_2": {"seed": 102},
    # Extra channels cut from one draw at the largest layer's shape (the
    # released code's distribution for them; the default since 2026-12-05)
    # or drawn like the tiny channels (the default from 2026-12-03).
    "extra_init_wide": {"extra_init": "wide"},
    "extra_init_tiny": {"extra_init": "tiny"},
    # "wide" with the groups below 8x8 kept tiny (an ImageNet-stride
    # MobileNetV2 at 32x32 then augments its 16x16 and 8x8 stages only).
    "extra_init_wide_min_resolution_8": {
        "extra_init": "wide",
        "min_resolution": 8,
    },
    "width_only_no_head": {
        "expand_multipliers": (1.0,),
        "stop_width_at": 1.0,
        "exclude": ("head_conv",),
    },
    # Training settings rather than NetAug settings (keys `peak_lr`,
    # `label_smoothing`; `netaug: False` for the matching baseline).
    "baseline_lr_0.01": {"netaug": False, "peak_lr": 0.01},
    "netaug_lr_0.01": {"peak_lr": 0.01},
    "baseline_ls_0.1": {"netaug": False, "label_smoothing": 0.1},
    "netaug_ls_0.1": {"label_smoothing": 0.1, "netaug_label_smoothing": 0.1},
}
TRAINING_KEYS = ("peak_lr", "label_smoothing")
COLUMNS = [
    "arm",
    "seed",
    "epochs",
    "test_acc",
    "train_acc",
    "step_ms",
    "minus_baseline",
    "aug_tiny_loss_ratio",
]


def netaug_config(technique):
    """A NetAug's settings as they read back from JSON (no layer keys)."""
    config = technique.get_config()
    for key in ("name", "trainable", "dtype"):
        config.pop(key, None)
    return json.loads(json.dumps(config))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--n-per-class", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cifar-stem",
        action="store_true",
        help="CIFAR strides (32x32 -> 4x4) instead of ImageNet strides",
    )
    p.add_argument("--name", default="netaug_ablation", help="results name")
    p.add_argument(
        "--note", action="append", default=[], help="a note for the results"
    )
    harness.add_checkpoint_dir(p, "netaug_bench")
    args = p.parse_args()

    def fresh_splits():
        # A new pipeline per arm: every arm sees the same batches.
        return data.load_dataset(
            "cifar10", n_per_class=args.n_per_class, seed=args.seed
        )

    splits = fresh_splits()

    def build():
        return models.get_model(
            "mobilenet_v2",
            input_shape=splits.info.input_shape,
            num_classes=splits.info.num_classes,
            alpha=0.35,
            cifar_stem=args.cifar_stem,
        )

    budget = {
        "dataset": "cifar10 (real), stratified subset; 10% val held "
        "out; full 10k test set",
        "n_per_class": args.n_per_class,
        "epochs": args.epochs,
        "student": "mobilenet_v2 alpha 0.35, 32x32, {} strides".format(
            "CIFAR (32x32 -> 4x4)" if args.cifar_stem else "ImageNet"
        ),
        "protocol": "as netaug_cifar10.py (SGD-Nesterov, 2 warm-up "
        "epochs to lr 0.02, cosine, wd 5e-5); each row's NetAug settings "
        "in full in its `netaug_config` (JSON), its training settings in "
        "`training`",
    }
    # Finished arms are kept as each one ends (a rerun of the same command
    # skips them, and another command under the same name reuses them:
    # a row is matched by arm, seed and its full NetAug configuration, so
    # a changed default retrains); `wall_s` counts its own process only.
    log = RunLog(args.name, budget)
    for arm in args.arms:
        kw = dict(ARMS[arm] or {})
        fit_kw = {k: kw.pop(k) for k in TRAINING_KEYS if k in kw}
        if "netaug_label_smoothing" in kw:
            kw["label_smoothing"] = kw.pop("netaug_label_smoothing")
        use = ARMS[arm] is not None and kw.pop("netaug", True)
        t = [NetAug(**{"seed": args.seed, **kw})] if use else None
        config = netaug_config(t[0]) if t else None
        key = {"arm": arm, "seed": args.seed, "training": fit_kw}
        if log.done(**key, netaug_config=config):
            continue
        # The checkpoint folder is named by the settings too: a run under
        # changed defaults must not resume another configuration's weights.
        digest = hashlib.sha1(json.dumps(key | {"c": config}).encode())
        backup = harness.run_backup(
            args, f"{arm}_s{args.seed}_{digest.hexdigest()[:8]}"
        )
        r = _train(
            build,
            fresh_splits(),
            args.epochs,
            args.seed,
            t,
            callbacks=[backup],
            **fit_kw,
        )
        log.add(
            {
                **key,
                "netaug_config": config,
                "epochs": args.epochs,
                "test_acc": r.test_accuracy,
                "train_acc": r.history["accuracy"][-1],
                "step_ms": r.median_step_ms,
                "aug_tiny_loss_ratio": (
                    r.history.get("netaug_loss_ratio") or [None]
                )[-1],
                "wall_s": round(r.wall_s, 1),
            }
        )
    rows = [dict(r) for r in log.rows]
    base = [x for x in rows if x["arm"] == "baseline"]
    for row in rows:
        if base and row is not base[0]:  # against the plain baseline
            row["minus_baseline"] = row["test_acc"] - base[0]["test_acc"]
    write_results(args.name, rows, budget, notes=args.note, columns=COLUMNS)


if __name__ == "__main__":
    main()
