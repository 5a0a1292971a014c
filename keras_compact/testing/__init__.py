"""Test utilities shared by every keras_compact technique."""

from keras_compact.testing.technique_test import run_technique_test

__all__ = ["run_technique_test"]
