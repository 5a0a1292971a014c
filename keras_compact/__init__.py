"""keras_compact: train tiny Keras models better, ship them unchanged.

Training-time techniques wrap the user's compact model in a `Trainer` and
are stripped exactly for deployment:

- `Distillation`: knowledge distillation from a wider teacher.
- `SparseTraining`: dynamic sparse training (DSR, SET, RigL, static) and
  gradual magnitude pruning (`GradualPruning`).
- `AuxiliaryModule`: auxiliary over-parameterisation (searched
  hierarchical auxiliary branches, dropped at inference).
- `NetAug`: network augmentation (the tiny model trained inside wider ones
  that share its weights).
- `QuantizationAwareTraining`: int8 fake quantization in training, exported
  to an int8 TFLite file that runs on microcontrollers.
- `Reparameterize`: structural re-parameterisation (RepVGG, ACNet,
  ExpandNets branches trained, then folded exactly into the user's layers).

Subpackages: `data` (offline-first datasets), `models` (tiny model zoo),
`graph` (the graph-walking core, params and MACs), `training` (the trainer
and the standard recipe), `export` (verified TFLite export), `callbacks`.

Importing `keras_compact` registers every public class with Keras, so saved
`.keras` files load with `keras.saving.load_model` and no `custom_objects`.
"""

from keras_compact import (
    auxiliary,
    callbacks,
    data,
    export,
    graph,
    models,
    netaug,
    quantization,
    reparam,
    sparse,
    training,
)
from keras_compact.auxiliary import AuxiliaryModule
from keras_compact.netaug import NetAug
from keras_compact.quantization import QuantizationAwareTraining
from keras_compact.reparam import Reparameterize
from keras_compact.sparse import SparseTraining
from keras_compact.training import (
    Distillation,
    NonFiniteTrainingError,
    StepContext,
    Technique,
    Trainer,
)
from keras_compact.training.report import TechniqueReport

__version__ = "0.1.0"

__all__ = [
    "AuxiliaryModule",
    "Distillation",
    "NetAug",
    "NonFiniteTrainingError",
    "QuantizationAwareTraining",
    "Reparameterize",
    "SparseTraining",
    "StepContext",
    "Technique",
    "TechniqueReport",
    "Trainer",
    "auxiliary",
    "callbacks",
    "data",
    "export",
    "graph",
    "models",
    "netaug",
    "quantization",
    "reparam",
    "sparse",
    "training",
]
