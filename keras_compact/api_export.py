"""The one decorator that publishes a keras_compact symbol.

Every public layer, model, schedule and technique is decorated with
`keras_compact_export`, which registers it as Keras-serializable under the
package name "keras_compact". Saved `.keras` files therefore reload with no
`custom_objects` as long as `keras_compact` has been imported.
"""

import keras

PACKAGE = "keras_compact"


def keras_compact_export(obj):
    """Registers `obj` under the "keras_compact" package and returns it."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(obj)
