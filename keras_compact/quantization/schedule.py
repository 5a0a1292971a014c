"""When quantization-aware training starts and when BN statistics freeze.

Plain functions of the technique's arguments: `check_start` validates
`start=`, `check_replicas` refuses a delayed start under several replicas,
`freeze_from` gives the step from which the BN statistics are
frozen. `NOT_STARTED` stands for "not started yet" (a fractional `start`
before its epoch is reached).
"""

import numbers

# `start_step` before the start epoch is reached (a fractional `start`).
NOT_STARTED = 2**62


def check_start(start):
    """`start` as an int step >= 0 or a float fraction in (0, 1).

    Raises:
        TypeError: for anything but a real number (bools included).
        ValueError: for a negative step or a fraction outside (0, 1).
    """
    if isinstance(start, bool) or not isinstance(start, numbers.Real):
        raise TypeError(
            "Expected `start` to be an int (a step) or a float in "
            f"(0, 1) (a fraction of the epochs). Received: start={start!r}"
        )
    if isinstance(start, numbers.Integral):
        if start < 0:
            raise ValueError(
                "Expected `start` to be a step >= 0 or a fraction in "
                f"(0, 1). Received: start={start!r}"
            )
        return int(start)
    if not 0.0 < float(start) < 1.0:
        raise ValueError(
            "Expected `start` to be a step >= 0 or a fraction in "
            f"(0, 1). Received: start={start!r}"
        )
    return float(start)


def freeze_from(start, freeze_bn_delay):
    """The step from which BN statistics are frozen: `start +
    freeze_bn_delay`, or `NOT_STARTED` (never, or not started yet)."""
    if freeze_bn_delay is None or start >= NOT_STARTED:
        return NOT_STARTED
    return start + freeze_bn_delay


def check_replicas(start, replicas):
    """Raises a ValueError for a delayed `start` under a tf.distribute
    strategy of several replicas.

    The switch from the float graph is a cond over the whole forward pass,
    and a cross-replica reduction (synchronized batch statistics, the
    activation ranges) cannot run inside it.
    """
    if start != 0 and replicas > 1:
        raise ValueError(
            "QuantizationAwareTraining under a tf.distribute strategy of "
            "several replicas starts at step 0 (a delayed start is not "
            "supported there yet). Received: "
            f"start={start!r}, num_replicas_in_sync={replicas}"
        )
