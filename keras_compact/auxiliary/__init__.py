"""Auxiliary over-parameterisation: training-only hierarchical branches.

`AuxiliaryModule` (a `Technique`) adds, around a compact model, an adaptor
per tap, a hierarchical booster stream and an auxiliary head per task head;
`search_connections` searches which extra taps feed each booster node
(every node always keeps its own tap) and falls back to connect-all when
the search does not separate the candidates. Nothing of it reaches the
deployed model.
"""

from keras_compact.auxiliary.auxiliary_module import AuxiliaryModule
from keras_compact.auxiliary.booster import AuxiliaryBooster
from keras_compact.auxiliary.search import search_connections

__all__ = ["AuxiliaryBooster", "AuxiliaryModule", "search_connections"]
