"""Callbacks for coarse training events (timing, phase switches, logging)."""

from keras_compact.callbacks.step_timer import StepTimer
from keras_compact.callbacks.technique_scalars import TechniqueScalars

__all__ = ["StepTimer", "TechniqueScalars"]
