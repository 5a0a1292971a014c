"""The trainer model and the technique extension point."""

from keras_compact.training.distillation import Distillation
from keras_compact.training.technique import Technique
from keras_compact.training.trainer import Trainer

__all__ = ["Distillation", "Technique", "Trainer"]
