"""keras_compact: train tiny Keras models better, ship them unchanged."""

__version__ = "0.1.0"
