"""The trainer model, the technique extension point and the standard recipe."""

from keras_compact.training.distillation import Distillation
from keras_compact.training.recipe import (
    TrainResult,
    make_optimizer,
    train_classifier,
)
from keras_compact.training.step_context import StepContext
from keras_compact.training.technique import Technique
from keras_compact.training.trainer import NonFiniteTrainingError, Trainer

__all__ = [
    "Distillation",
    "NonFiniteTrainingError",
    "StepContext",
    "Technique",
    "TrainResult",
    "Trainer",
    "make_optimizer",
    "train_classifier",
]
