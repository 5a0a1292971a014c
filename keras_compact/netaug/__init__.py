"""NetAug: network augmentation for tiny models (Cai et al., ICLR 2022).

- `NetAug`: the `Technique` to pass to `keras_compact.Trainer`.
- `BNRecalibration` / `recalibrate_batch_norm`: the paper's re-estimation of
  BatchNorm statistics (optional with `NetAug`, whose augmented pass never
  writes the compact model's moving statistics).
- `Supernet`: the augmented model built around a functional compact model
  (channel groups, elastic layers sharing the user's weights).
- `permute_group`, `sort_expand_channels`: exact channel permutations.

The algorithm modules behind `NetAug`: `sampling` (width draws, schedule,
expected cost), `augmented_loss` (the loss of the augmented pass and the
gradient guard), `monitoring` (report and stability warning) and
`callbacks` (the per-epoch callbacks `NetAug` adds to `fit`).

Example:

```python
from keras_compact import Trainer, models
from keras_compact.netaug import NetAug

model = models.get_model("mobilenet_v2", alpha=0.35)
trainer = Trainer(model, techniques=[NetAug()])
```
"""

from keras_compact.netaug.bn_recalibration import (
    BNRecalibration,
    recalibrate_batch_norm,
)
from keras_compact.netaug.netaug import NetAug
from keras_compact.netaug.sorting import permute_group, sort_expand_channels
from keras_compact.netaug.supernet import Supernet

__all__ = [
    "BNRecalibration",
    "NetAug",
    "Supernet",
    "permute_group",
    "recalibrate_batch_norm",
    "sort_expand_channels",
]
