"""`SparsityMonitor`, now in `keras_compact.sparse.callbacks` (kept here
so that existing imports keep working)."""

from keras_compact.sparse.callbacks import (
    MAX_REGROWN_PRUNED,
    MIN_UPDATE_SPACING,
    SparsityMonitor,
)

__all__ = ["MAX_REGROWN_PRUNED", "MIN_UPDATE_SPACING", "SparsityMonitor"]
