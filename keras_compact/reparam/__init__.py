"""Structural re-parameterisation: train with linear branches, fold exactly.

- `Reparameterize`: the `Technique` to pass to `keras_compact.Trainer`
  (families "repvgg", "acnet", "expandnets", "dbb").
- `ReparamBranches`: the training-time branches of one user layer (built
  by the technique).
- `folding`: the NumPy algebra of the exact folds.
- `selection`: which layers get branches (and why others are skipped), and
  the branch graph; `weights`: writing and restoring the folded weights;
  `callbacks`: the fold-for-evaluation callback; `report`: `summary()`.

Example:

```python
from keras_compact import Trainer, models
from keras_compact.reparam import Reparameterize

model = models.get_model("resnet8")
trainer = Trainer(model, techniques=[Reparameterize("acnet")])
```
"""

from keras_compact.reparam import folding
from keras_compact.reparam.branches import ReparamBranches
from keras_compact.reparam.reparameterize import FAMILIES, Reparameterize

__all__ = ["FAMILIES", "ReparamBranches", "Reparameterize", "folding"]
