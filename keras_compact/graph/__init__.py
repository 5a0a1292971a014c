"""Graph walking and analysis shared by every technique."""

from keras_compact.graph.walk import GraphNode, ModelGraph, is_functional
from keras_compact.graph.walk import iter_layers

__all__ = ["GraphNode", "ModelGraph", "is_functional", "iter_layers"]
