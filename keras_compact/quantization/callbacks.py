"""The Keras callbacks of `QuantizationAwareTraining`."""

import keras

from keras_compact.quantization.schedule import NOT_STARTED


class StartAtEpoch(keras.callbacks.Callback):
    """Starts fake quantization after a fraction of the epochs of `fit`.

    Args:
        technique: the `QuantizationAwareTraining` technique (its `start`
            fraction, `start_step` and `set_start_step` are used).
    """

    def __init__(self, technique):
        super().__init__()
        self.technique = technique
        self.start_epoch = None

    def on_train_begin(self, logs=None):
        epochs = int(self.params.get("epochs") or 1)
        self.start_epoch = int(round(self.technique.start * epochs))

    def on_epoch_begin(self, epoch, logs=None):
        t = self.technique
        started = int(keras.ops.convert_to_numpy(t.start_step)) < NOT_STARTED
        if not started and epoch >= self.start_epoch:
            iterations = self.model.optimizer.iterations
            step = int(keras.ops.convert_to_numpy(iterations))
            t.set_start_step(step)
