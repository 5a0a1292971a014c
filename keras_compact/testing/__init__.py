"""Test utilities shared by every keras_compact technique."""

from keras_compact.testing.technique_test import (
    run_distributed_test,
    run_technique_test,
    synchronized_batch_norm,
)

__all__ = [
    "run_distributed_test",
    "run_technique_test",
    "synchronized_batch_norm",
]
