"""The Keras callbacks of `Reparameterize`."""

import keras


class FoldForEvaluation(keras.callbacks.Callback):
    """Folds the branches for every validation pass of `fit`, so that what
    is evaluated is the model that ships (`Reparameterize.after_fit` folds
    them when `fit` ends, also when it raises).

    Args:
        technique: the `Reparameterize` technique (its `fold()` and
            `unfold()` are called).
    """

    def __init__(self, technique):
        super().__init__()
        self.technique = technique
        self._in_fit = False

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self.technique.unfold()

    def on_test_begin(self, logs=None):
        self.technique.fold()

    def on_test_end(self, logs=None):
        if self._in_fit:
            self.technique.unfold()

    def on_train_end(self, logs=None):
        self._in_fit = False
