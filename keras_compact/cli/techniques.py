"""The technique flags of `keras-compact train` and `compare`: one table.

Each training-time technique is one `TechniqueFlags` entry in `TECHNIQUES`:
its switch flag, its options, how to build the `Technique` from parsed
arguments, and which other techniques it cannot be combined with. Adding a
technique to the command line is adding one entry; `train`, `compare`,
the argument checks and the help text all read the table.
"""

import argparse
import os


class CliError(ValueError):
    """A command-line error that names the flag and the value received."""


def _float_list(text):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 1.0,1.8,2.6; got {text!r}"
        )
    return values


def _start_at(text):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in [0, 1) or auto; got {text!r}"
        )


class TechniqueFlags:
    """One technique on the command line.

    Subclasses set the class attributes and implement `add_arguments` and
    `build`.

    Attributes:
        name: short name (the run label, e.g. `"aux"`).
        flag: the switch, e.g. `"--aux"`; its `dest` is `self.dest`.
        title: the help group's title.
        options: `dest`s of the options that only make sense with the
            switch (an error names them when the switch is missing).
        conflicts: names of techniques it cannot be combined with.
    """

    name = None
    flag = None
    title = None
    options = ()
    conflicts = ()

    @property
    def dest(self):
        return self.flag.lstrip("-").replace("-", "_")

    def add_arguments(self, group):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `add_arguments(group)`: "
            "its flags on the argparse group."
        )

    def enabled(self, args):
        return getattr(args, self.dest, None) not in (None, False)

    def check(self, args):
        """Raises `CliError` for an out-of-range value of its own flags."""

    def build(self, args, context):
        """Returns the `keras_compact.Technique` for the parsed `args`.

        Args:
            args: the parsed `argparse.Namespace`.
            context: a `RunContext` (splits, model, seed, output folder).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `build(args, context)`: "
            "the technique of its parsed flags."
        )


def _in_range(value, flag, low, high, low_open=False, high_open=False):
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise CliError(
            f"Expected {flag} in {lo}{low}, {high}{hi}. "
            f"Received: {flag}={value}"
        )


class Distill(TechniqueFlags):
    name = "distill"
    flag = "--distill"
    title = "knowledge distillation (Distillation)"
    options = (
        "distill_alpha",
        "distill_temperature",
        "teacher_width",
        "teacher_epochs",
    )

    def add_arguments(self, group):
        group.add_argument(
            "--distill",
            "--teacher",
            dest="distill",
            metavar="TEACHER",
            default=None,
            help="distil from TEACHER: a trained .keras file, or a zoo "
            "name trained first (see --teacher-width, --teacher-epochs) "
            "and saved as teacher.keras in the output folder",
        )
        group.add_argument(
            "--distill-alpha",
            "--kd-alpha",
            dest="distill_alpha",
            type=float,
            default=None,
            help="weight of the distillation loss in [0, 1] (default 0.9)",
        )
        group.add_argument(
            "--distill-temperature",
            "--kd-temperature",
            dest="distill_temperature",
            type=float,
            default=None,
            help="softmax temperature > 0 (default 4)",
        )
        group.add_argument(
            "--teacher-width",
            type=float,
            default=None,
            help="width_multiplier of a zoo teacher (default 2)",
        )
        group.add_argument(
            "--teacher-epochs",
            type=int,
            default=None,
            help="epochs of a zoo teacher (default: --epochs)",
        )

    def check(self, args):
        if args.distill_alpha is not None:
            _in_range(args.distill_alpha, "--distill-alpha", 0, 1)
        if args.distill_temperature is not None:
            _in_range(
                args.distill_temperature,
                "--distill-temperature",
                0,
                float("inf"),
                low_open=True,
            )
        if args.teacher_epochs is not None and args.teacher_epochs < 1:
            raise CliError(
                "Expected --teacher-epochs >= 1. "
                f"Received: --teacher-epochs={args.teacher_epochs}"
            )
        if args.teacher_width is not None and not args.teacher_width > 0:
            raise CliError(
                "Expected --teacher-width > 0. "
                f"Received: --teacher-width={args.teacher_width}"
            )
        teacher = args.distill
        if teacher.endswith(".keras") or os.sep in teacher:
            if not os.path.isfile(teacher):
                raise CliError(
                    "Expected --distill to be a zoo model name or an "
                    "existing .keras file. "
                    f"Received: --distill={teacher} (file not found)"
                )
        else:
            from keras_compact import models

            names = [m["name"] for m in models.list_models()]
            if teacher not in names:
                raise CliError(
                    "Expected --distill to be a zoo model name "
                    f"({', '.join(names)}) or an existing .keras file. "
                    f"Received: --distill={teacher}"
                )
        if (args.teacher_width or args.teacher_epochs) and teacher.endswith(
            ".keras"
        ):
            raise CliError(
                "Expected --teacher-width and --teacher-epochs only with a "
                f"zoo teacher. Received: --distill={teacher}"
            )

    def build(self, args, context):
        from keras_compact import training

        teacher = context.teacher(args.distill)
        kwargs = {}
        if args.distill_alpha is not None:
            kwargs["alpha"] = args.distill_alpha
        if args.distill_temperature is not None:
            kwargs["temperature"] = args.distill_temperature
        return training.Distillation(teacher, **kwargs)


class Aux(TechniqueFlags):
    name = "aux"
    flag = "--aux"
    title = "auxiliary over-parameterisation (AuxiliaryModule)"
    options = ("aux_connections", "aux_lambda", "aux_mutual", "aux_width")

    def add_arguments(self, group):
        group.add_argument(
            "--aux",
            action="store_true",
            help="train with a hierarchical auxiliary branch (dropped at "
            "export)",
        )
        group.add_argument(
            "--aux-connections",
            choices=["all", "search"],
            default=None,
            help="'all' (default) or 'search' the extra edges on the "
            "validation split",
        )
        group.add_argument(
            "--aux-lambda",
            type=float,
            default=None,
            help="weight of the auxiliary loss >= 0 (default 1)",
        )
        group.add_argument(
            "--aux-mutual",
            type=float,
            default=None,
            help="weight of mutual learning >= 0 (default 0)",
        )
        group.add_argument(
            "--aux-width",
            type=float,
            default=None,
            help="adaptor width multiplier > 0 (default 1)",
        )

    def check(self, args):
        for flag, value, strict in (
            ("--aux-lambda", args.aux_lambda, False),
            ("--aux-mutual", args.aux_mutual, False),
            ("--aux-width", args.aux_width, True),
        ):
            if value is not None:
                _in_range(value, flag, 0, float("inf"), low_open=strict)
        if args.aux_connections == "search" and not args.validation_split:
            raise CliError(
                "Expected a validation split for --aux-connections=search "
                "(it searches on held-out data). "
                f"Received: --validation-split={args.validation_split}"
            )

    def build(self, args, context):
        from keras_compact import auxiliary

        kwargs = {"seed": args.seed}
        if args.aux_connections == "search":
            kwargs["connections"] = "search"
            kwargs["search_data"] = context.splits.val.repeat()
        if args.aux_lambda is not None:
            kwargs["lambda_aux"] = args.aux_lambda
        if args.aux_mutual is not None:
            kwargs["lambda_mut"] = args.aux_mutual
        if args.aux_width is not None:
            kwargs["aux_width_mult"] = args.aux_width
        return auxiliary.AuxiliaryModule(**kwargs)


class NetAugFlags(TechniqueFlags):
    name = "netaug"
    flag = "--netaug"
    title = "network augmentation (NetAug)"
    options = ("netaug_widths", "netaug_alpha", "netaug_start_at")

    def add_arguments(self, group):
        group.add_argument(
            "--netaug",
            action="store_true",
            help="train the model inside wider ones sharing its weights",
        )
        group.add_argument(
            "--netaug-widths",
            type=_float_list,
            default=None,
            metavar="W1,W2,...",
            help="width multipliers of the augmented models, starting at "
            "1 (default 1.0,1.8,2.6)",
        )
        group.add_argument(
            "--netaug-alpha",
            type=float,
            default=None,
            help="weight of the augmented loss >= 0 (default 1)",
        )
        group.add_argument(
            "--netaug-start-at",
            type=_start_at,
            default=None,
            metavar="FRACTION|auto",
            help="fraction of the epochs before the augmented pass starts, "
            "in [0, 1), or auto (default: half of them on a model with "
            "feature maps below 4x4, else 0)",
        )

    def check(self, args):
        if args.netaug_start_at not in (None, "auto"):
            _in_range(
                args.netaug_start_at, "--netaug-start-at", 0, 1, high_open=True
            )
        if args.netaug_alpha is not None:
            _in_range(args.netaug_alpha, "--netaug-alpha", 0, float("inf"))
        widths = args.netaug_widths
        if widths is not None and (widths[0] != 1.0 or min(widths) < 1.0):
            text = ",".join(f"{w:g}" for w in widths)
            raise CliError(
                "Expected --netaug-widths to start at 1 and hold numbers "
                f">= 1. Received: --netaug-widths={text}"
            )

    def build(self, args, context):
        from keras_compact import netaug

        kwargs = {"seed": args.seed}
        if args.netaug_widths is not None:
            kwargs["width_multipliers"] = args.netaug_widths
        if args.netaug_alpha is not None:
            kwargs["alpha"] = args.netaug_alpha
        if args.netaug_start_at is not None:
            kwargs["start_at"] = args.netaug_start_at
        return netaug.NetAug(**kwargs)


SPARSE_POLICIES = ("dsr", "set", "rigl", "static", "gmp")


class Sparse(TechniqueFlags):
    name = "sparse"
    flag = "--sparse"
    title = "sparse training (SparseTraining)"
    options = ("sparse_policy", "sparse_distribution")

    def add_arguments(self, group):
        group.add_argument(
            "--sparse",
            type=float,
            default=None,
            metavar="SPARSITY",
            help="train with this fraction of zero weights, in [0, 1), "
            "e.g. 0.8",
        )
        group.add_argument(
            "--sparse-policy",
            choices=SPARSE_POLICIES,
            default=None,
            help="how the masks change: dsr (default), set, rigl, static, "
            "gmp (gradual magnitude pruning from dense)",
        )
        group.add_argument(
            "--sparse-distribution",
            choices=["uniform", "erk"],
            default=None,
            help="initial split of the budget (default uniform)",
        )

    def check(self, args):
        _in_range(args.sparse, "--sparse", 0, 1, high_open=True)

    def build(self, args, context):
        from keras_compact import sparse

        return sparse.SparseTraining(
            sparsity=args.sparse,
            policy=args.sparse_policy or "dsr",
            distribution=args.sparse_distribution or "uniform",
            seed=args.seed,
        )


REPARAM_FAMILIES = ("repvgg", "acnet", "expandnets", "dbb")


class Reparam(TechniqueFlags):
    name = "reparam"
    flag = "--reparam"
    title = "structural re-parameterisation (Reparameterize)"
    options = ()
    conflicts = ("netaug", "qat")

    def add_arguments(self, group):
        group.add_argument(
            "--reparam",
            choices=REPARAM_FAMILIES,
            default=None,
            help="train extra linear branches, folded exactly into your "
            "layers: repvgg, acnet, expandnets or dbb",
        )

    def build(self, args, context):
        from keras_compact import reparam

        return reparam.Reparameterize(family=args.reparam, seed=args.seed)


class Qat(TechniqueFlags):
    name = "qat"
    flag = "--qat"
    title = "quantization-aware training (QuantizationAwareTraining)"
    options = ("qat_start",)
    conflicts = ("reparam",)

    def add_arguments(self, group):
        group.add_argument(
            "--qat",
            action="store_true",
            help="train with int8 fake quantization; writes model_int8."
            "tflite with the trained ranges",
        )
        group.add_argument(
            "--qat-start",
            type=float,
            default=None,
            help="fraction of the epochs trained in float before QAT "
            "starts, in [0, 1) (default 0)",
        )

    def check(self, args):
        if args.qat_start is not None:
            _in_range(args.qat_start, "--qat-start", 0, 1, high_open=True)

    def build(self, args, context):
        from keras_compact import quantization

        start = args.qat_start or 0
        return quantization.QuantizationAwareTraining(
            start=float(start) if start else 0
        )


# The table: a new technique is one more `TechniqueFlags` subclass and one
# more entry here.
TECHNIQUES = (Distill(), Aux(), NetAugFlags(), Sparse(), Reparam(), Qat())


def add_technique_arguments(parser):
    """Adds every technique's flag group to `parser`."""
    for t in TECHNIQUES:
        t.add_arguments(parser.add_argument_group(t.title))


def check_technique_arguments(args):
    """Checks the technique flags of parsed `args`.

    Raises:
        CliError: for an option without its technique's switch, a value out
            of range, a missing file, or two techniques that do not combine.
    """
    on = [t for t in TECHNIQUES if t.enabled(args)]
    for t in TECHNIQUES:
        if t in on:
            continue
        given = [o for o in t.options if getattr(args, o, None) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            value = getattr(args, given[0])
            raise CliError(
                f"Expected {flag} only together with {t.flag}. "
                f"Received: {flag}={value} without {t.flag}"
            )
    for t in on:
        t.check(args)
    names = {t.name for t in on}
    for t in on:
        for other in t.conflicts:
            if other in names:
                o = next(x for x in TECHNIQUES if x.name == other)
                raise CliError(
                    f"Expected {t.flag} and {o.flag} not to be combined. "
                    f"Received: {t.flag} with {o.flag}"
                )
    return on


def recipe_label(args):
    """A short label of the enabled techniques, e.g. `"distill+aux"`."""
    on = [t.name for t in TECHNIQUES if t.enabled(args)]
    return "+".join(on) or "plain"
