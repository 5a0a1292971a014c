"""Graph walking and analysis shared by every technique."""

from keras_compact.graph.stats import count_macs, count_params, model_profile
from keras_compact.graph.walk import (
    GraphNode,
    ModelGraph,
    is_functional,
    iter_layers,
)

__all__ = [
    "GraphNode",
    "ModelGraph",
    "count_macs",
    "count_params",
    "is_functional",
    "iter_layers",
    "model_profile",
]
