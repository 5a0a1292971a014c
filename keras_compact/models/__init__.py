"""The tiny model zoo, registered by name.

Every model is a plain functional `keras.Model` of standard Keras layers (no
custom layers, no `Lambda`), so it saves, reloads without `custom_objects`,
exports to TFLite and is rewritten by `keras_compact.graph` like any user
model. Every model outputs logits: compile with a `from_logits=True` loss.

Example:

```python
from keras_compact import models

print([m["name"] for m in models.list_models()])
model = models.get_model("mobilenet_v2_tiny", input_shape=(28, 28, 1))
```
"""

from keras_compact.models.mobilenet_v2 import mobilenet_v2, mobilenet_v2_tiny
from keras_compact.models.model_utils import make_divisible
from keras_compact.models.registry import (
    ModelSpec,
    get_model,
    get_model_spec,
    list_models,
    register_model,
)
from keras_compact.models.resnet import cifar_resnet, resnet8, resnet20
from keras_compact.models.tiny_cnn import tiny_cnn
from keras_compact.models.wide_resnet import wide_resnet, wrn16_2, wrn28_2

__all__ = [
    "ModelSpec",
    "cifar_resnet",
    "get_model",
    "get_model_spec",
    "list_models",
    "make_divisible",
    "mobilenet_v2",
    "mobilenet_v2_tiny",
    "register_model",
    "resnet8",
    "resnet20",
    "tiny_cnn",
    "wide_resnet",
    "wrn16_2",
    "wrn28_2",
]
