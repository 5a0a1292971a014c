"""Callbacks for coarse training events (timing, phase switches, logging)."""

from keras_compact.callbacks.step_timer import StepTimer

__all__ = ["StepTimer"]
