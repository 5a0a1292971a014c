"""`Untracked`: the one way keras_compact hides objects from Keras tracking.

A Keras layer tracks every layer, variable and metric assigned to one of its
attributes (directly or inside a list or dict) and saves them as its own. A
technique often needs references it must *not* own: the user's layers
(saved with the user's model), a training view that shares them, an
iterator, an optimizer, monitoring metrics. It keeps them in an `Untracked`
namespace: a plain Python object, which Keras does not look into.
"""


class Untracked:
    """A plain namespace whose attributes Keras does not track.

    Example:

    ```python
    self._private = Untracked(layer=user_layer, view=None)
    self._private.view = build_view()   # not saved, not in weights
    ```
    """

    def __init__(self, **attributes):
        self.__dict__.update(attributes)

    def __repr__(self):
        names = ", ".join(sorted(self.__dict__))
        return f"Untracked({names})"
