"""NetAug's width sampler, width schedule and expected training cost.

Each augmented channel group draws its width independently and uniformly
among its choices (`round(size * multiplier)` of its tiny width, integer
rounding as in the released code) at every step. An expand multiplier
scales the block's middle width itself, independently of the width drawn
for the block's input (the released code scales the expand ratio of the
active input width; the set of sub-models differs slightly).

The draws are tensors, a pure function of a seed and the optimizer step
(`keras_compact.training.tensorflow_step.stateless_uniform`), so a resumed
run samples the widths an uninterrupted one would have, and the train step
is traced once for every sub-model. Once the width schedule stops (after
`stop_width_at` of the epochs, as the released code does: width for 80 of
155 epochs), the width groups stay at their tiny width and only the expand
groups are augmented.
"""

import numpy as np
from keras import ops

from keras_compact.training import tensorflow_step


class WidthSampler:
    """The choice table of a `Supernet`'s augmented groups.

    Args:
        net: the `Supernet`.

    Attributes:
        table: int32 array `(groups, k)`: each group's choices, padded with
            its last choice to the longest list `k`.
        num_choices: int32 array: each group's number of choices.
        is_width: bool array: which groups are width (not expand) groups.
    """

    def __init__(self, net):
        groups = net.augmented
        k = max([len(c) for c in net.choices] or [1])
        self.table = np.array(
            [c + [c[-1]] * (k - len(c)) for c in net.choices], dtype="int32"
        ).reshape(len(groups), k)
        self.num_choices = np.array(
            [len(c) for c in net.choices], dtype="int32"
        )
        self.is_width = np.array(
            [g.kind == "width" for g in groups], dtype=bool
        )

    def sample(self, width_enabled, seed, step):
        """An int32 tensor of active widths, one per augmented group.

        Args:
            width_enabled: int scalar (variable): 0 keeps the width groups
                at their tiny width.
            seed: int scalar (variable) of the stateless draw.
            step: the optimizer step (an integer scalar).
        """
        n = ops.convert_to_tensor(self.num_choices)
        stopped = ops.logical_and(
            ops.convert_to_tensor(self.is_width),
            ops.equal(width_enabled, 0),
        )
        n = ops.where(stopped, ops.ones_like(n), n)
        u = tensorflow_step.stateless_uniform(
            (len(self.num_choices),), seed, step
        )
        idx = ops.cast(ops.floor(u * ops.cast(n, u.dtype)), "int32")
        idx = ops.minimum(idx, n - 1)
        table = ops.convert_to_tensor(self.table)
        return ops.take_along_axis(table, idx[:, None], axis=1)[:, 0]

    def expected_macs(self, net, width_phase=True, samples=20000, seed=0):
        """`(mean MACs of sampled sub-models, tiny MACs)` of `net`, by
        Monte Carlo with a numpy `seed` (see `NetAug.expected_macs`)."""
        tiny = net.macs(net.min_widths())
        if not net.num_groups:
            return tiny, tiny
        rng = np.random.default_rng(seed)
        n = self.num_choices.copy()
        if not width_phase:
            n[self.is_width] = 1
        idx = np.minimum(
            (rng.random((samples, len(n))) * n).astype("int32"), n - 1
        )
        widths = np.take_along_axis(self.table, idx.T, axis=1).T
        return float(np.mean(net.macs(widths))), tiny


AUTO_START_AT = 0.5


def start_at(value, net):
    """The fraction of the epochs before which there is no augmented pass:
    `value`, or for "auto" `AUTO_START_AT` (0.5) when `min_resolution` kept
    some of `net`'s groups (None before attach) at their tiny width (the
    model has feature maps smaller than any in the paper, e.g. an
    ImageNet-stride model at 32x32 with its head at 1x1), and 0.0 otherwise.

    Measured at 1,000 images/class x 15 epochs: on the ImageNet-stride
    MobileNetV2-w0.35 the full schedule gave +1.15 / +0.17 / -4.11 / -5.99
    points on seeds 0-3 and 0.5 gave +0.32 / +0.88 / +0.85 / +0.56 (on
    seeds 4 / 5, run after this rule was chosen: -0.51 / +1.34, the full
    schedule -9.56 on seed 4); on models without such maps the full
    schedule gains more (resnet8 +3.86 / +3.70 against +0.56 / +0.92 with
    0.5)."""
    if value != "auto":
        return value
    small = net is not None and bool(net.small_maps)
    return AUTO_START_AT if small else 0.0


def stop_width_at(value, net):
    """The fraction of the epochs after which width augmentation stops:
    `value`, or for "auto" 0.5 when `net` (None before attach) has expand
    groups and 1.0 otherwise."""
    if value != "auto":
        return value
    has_expand = net is not None and any(
        g.kind == "expand" for g in net.augmented
    )
    return 0.5 if has_expand else 1.0
