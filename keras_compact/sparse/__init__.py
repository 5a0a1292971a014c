"""Sparse training for Keras 3: DSR, SET, RigL, static sparse and gradual
magnitude pruning.

One role per module (as tensorflow-model-optimization and rigl):

- `registry` and `selection`: layer -> prunable weights (plus duck
  typing), and which layers stay dense;
- `algorithms`: the drop-and-grow step, written once (pure TensorFlow);
- `policies`: `DSR`, `SET`, `RigL`, `Static`, `GradualPruning` (counts
  and scores only);
- `distributions` and `schedules`: budget split and update schedules;
- `state`: masks and counters; `masks`: masked gradients and kernels and
  the update of all masks; `stats`: densities, regrowth and the report;
- `sparse_training`: the thin `SparseTraining` technique used through
  `keras_compact.Trainer(...).fit`; `callbacks`: its auto-installed
  `SparsityMonitor` (`monitor` keeps the old import path).
"""

from keras_compact.sparse.callbacks import SparsityMonitor
from keras_compact.sparse.distributions import (
    erk_densities,
    nonzero_counts,
    uniform_densities,
)
from keras_compact.sparse.plotting import plot_density
from keras_compact.sparse.policies import (
    DSR,
    SET,
    GradualPruning,
    RigL,
    SparsePolicy,
    Static,
)
from keras_compact.sparse.registry import prunable_weights, register_prunable
from keras_compact.sparse.schedules import (
    ConstantDropFraction,
    CosineDropFraction,
    PeriodSchedule,
)
from keras_compact.sparse.selection import default_dense_layers
from keras_compact.sparse.sparse_training import SparseTraining, optimizer_slots

__all__ = [
    "ConstantDropFraction",
    "CosineDropFraction",
    "DSR",
    "GradualPruning",
    "PeriodSchedule",
    "RigL",
    "SET",
    "SparsePolicy",
    "SparseTraining",
    "SparsityMonitor",
    "Static",
    "default_dense_layers",
    "erk_densities",
    "nonzero_counts",
    "optimizer_slots",
    "plot_density",
    "prunable_weights",
    "register_prunable",
    "uniform_densities",
]
