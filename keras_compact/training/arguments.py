"""Argument checks shared by every `__init__` of keras_compact.

One rule everywhere, as in Keras: a value of the wrong type raises
`TypeError`, a value of the right type but out of range or not one of the
choices raises `ValueError`. Messages name the argument, the expectation
and the received value: "Expected `alpha` to be a float in [0, 1].
Received: alpha=1.5". Each check returns the value, normalised (`int`,
`float`, `list`).
"""

import math
import numbers


def _received(arg, value):
    return f"Received: {arg}={value!r}"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(value, arg):
    """`value` must be a bool (TypeError otherwise)."""
    if not isinstance(value, bool):
        raise TypeError(
            f"Expected `{arg}` to be a bool. {_received(arg, value)}"
        )
    return value


def check_int(value, arg, minimum=None, allow_none=False):
    """`value` must be an int (not a bool): TypeError otherwise; ValueError
    when it is below `minimum`. None passes through when `allow_none`."""
    if value is None and allow_none:
        return None
    expected = "an int" + (f" >= {minimum}" if minimum is not None else "")
    if allow_none:
        expected += " or None"
    if not _is_int(value):
        raise TypeError(
            f"Expected `{arg}` to be {expected}. " + _received(arg, value)
        )
    if minimum is not None and value < minimum:
        raise ValueError(
            f"Expected `{arg}` to be {expected}. " + _received(arg, value)
        )
    return int(value)


def check_float(
    value,
    arg,
    low=None,
    high=None,
    low_open=False,
    high_open=False,
    allow_none=False,
):
    """`value` must be a real number (not a bool): TypeError otherwise;
    ValueError when it is not finite or lies outside `low`..`high` (each
    bound closed unless `low_open` / `high_open`; None for no bound)."""
    if value is None and allow_none:
        return None
    if low is not None and high is not None:
        expected = (
            f"a float in {'(' if low_open else '['}{low}, "
            f"{high}{')' if high_open else ']'}"
        )
    elif low is not None:
        expected = f"a number {'>' if low_open else '>='} {low}"
    elif high is not None:
        expected = f"a number {'<' if high_open else '<='} {high}"
    else:
        expected = "a number"
    if allow_none:
        expected += " or None"
    message = f"Expected `{arg}` to be {expected}. " + _received(arg, value)
    if not _is_number(value):
        raise TypeError(message)
    if not math.isfinite(value):
        raise ValueError(message)
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(message)
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(message)
    return float(value)


def check_choice(value, choices, arg):
    """`value` must be one of `choices` (ValueError otherwise; TypeError for
    a value of a type none of the choices has)."""
    choices = tuple(choices)
    message = f"Expected `{arg}` to be one of {list(choices)}. " + _received(
        arg, value
    )
    if not any(isinstance(value, type(c)) for c in choices):
        raise TypeError(message)
    if value not in choices:
        raise ValueError(message)
    return value


def check_names(value, arg, allow_none=False, allow_empty=True):
    """`value` must be a list or tuple of strings (layer names): TypeError
    otherwise (a lone string included); ValueError for an empty list when
    not `allow_empty`. Returns a list."""
    if value is None and allow_none:
        return None
    expected = "a list of layer names" + (" or None" if allow_none else "")
    message = f"Expected `{arg}` to be {expected}. " + _received(arg, value)
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(message)
    if not all(isinstance(n, str) for n in value):
        raise TypeError(message)
    if not value and not allow_empty:
        raise ValueError(
            f"Expected `{arg}` to name at least one layer. "
            + _received(arg, value)
        )
    return list(value)


def check_seed(seed, arg="seed"):
    """A seed: None or an int >= 0."""
    return check_int(seed, arg, minimum=0, allow_none=True)
