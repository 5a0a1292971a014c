"""The shared argument checks: TypeError for a type, ValueError for a value."""

import numpy as np
import pytest

import keras_compact as kc
from keras_compact.training import arguments as args


def test_checks_return_normalised_values():
    assert args.check_int(np.int64(3), "n", minimum=1) == 3
    assert args.check_float(1, "x", 0.0, 1.0) == 1.0
    assert args.check_names(("a", "b"), "layers") == ["a", "b"]
    assert args.check_choice("dsr", ("dsr", "set"), "policy") == "dsr"
    assert args.check_seed(None) is None
    assert args.check_bool(False, "flag") is False


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: args.check_int(1.5, "n"),
            TypeError,
            "Expected `n` to be an int. Received: n=1.5",
        ),
        (lambda: args.check_int(True, "n"), TypeError, "Received: n=True"),
        (
            lambda: args.check_int(0, "n", minimum=1),
            ValueError,
            "an int >= 1. Received: n=0",
        ),
        (lambda: args.check_float("1", "x"), TypeError, "Received: x='1'"),
        (
            lambda: args.check_float(1.5, "x", 0, 1),
            ValueError,
            "a float in [0, 1]. Received: x=1.5",
        ),
        (
            lambda: args.check_float(1.0, "x", 0, 1, high_open=True),
            ValueError,
            "[0, 1)",
        ),
        (
            lambda: args.check_float(0.0, "x", low=0, low_open=True),
            ValueError,
            "a number > 0",
        ),
        (lambda: args.check_float(float("nan"), "x"), ValueError, "x=nan"),
        (lambda: args.check_bool(1, "flag"), TypeError, "Received: flag=1"),
        (
            lambda: args.check_choice("x", ("a", "b"), "c"),
            ValueError,
            "one of ['a', 'b']. Received: c='x'",
        ),
        (
            lambda: args.check_choice(3, ("a", None), "c"),
            TypeError,
            "Received: c=3",
        ),
        (
            lambda: args.check_names("conv", "layers"),
            TypeError,
            "Received: layers='conv'",
        ),
        (lambda: args.check_names([1], "layers"), TypeError, "layers=[1]"),
        (
            lambda: args.check_names([], "layers", allow_empty=False),
            ValueError,
            "layers=[]",
        ),
        (lambda: args.check_seed(-1), ValueError, "seed=-1"),
    ],
)
def test_wrong_type_is_type_error_wrong_value_is_value_error(
    call, error, message
):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: kc.SparseTraining(seed=seed),
        lambda seed: kc.NetAug(seed=seed),
        lambda seed: kc.Reparameterize(seed=seed),
        lambda seed: kc.AuxiliaryModule(seed=seed),
    ],
    ids=["sparse", "netaug", "reparam", "auxiliary"],
)
def test_the_same_wrong_argument_raises_the_same_error_everywhere(make):
    with pytest.raises(TypeError, match="Received: seed=1.5"):
        make(1.5)
    with pytest.raises(TypeError, match="Received: seed='1'"):
        make("1")
