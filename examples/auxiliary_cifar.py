"""Train a tiny CIFAR-10 model with a hierarchical auxiliary branch.

The auxiliary module (adaptors, booster stream, auxiliary head) exists only
during training; `trainer.strip()` returns the plain model, ready to export.

    python examples/auxiliary_cifar.py [--search] [--epochs 3]
        [--n-per-class 500]
"""

import argparse

import keras

import keras_compact
from keras_compact.auxiliary import AuxiliaryModule, search_connections

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--search", action="store_true")
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--n-per-class", type=int, default=500)
args = p.parse_args()

data = keras_compact.data.load_dataset(
    "cifar10", batch_size=64, n_per_class=args.n_per_class
)
model = keras_compact.models.get_model("resnet8", input_shape=(32, 32, 3))
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

if args.search:
    # Which taps feed which booster node, searched on a held-out split of
    # the training data (first-order DARTS); then the fixed structure.
    aux = search_connections(model, data.train, data.val, loss=loss)
    print(aux.search_description)
else:
    aux = AuxiliaryModule()  # "connect all taps", the zero-cost default

trainer = keras_compact.Trainer(model, techniques=[aux])
trainer.compile("adam", loss, metrics=["accuracy"])
aux.summary()
trainer.fit(data.train, validation_data=data.val, epochs=args.epochs)
deployable = trainer.strip()  # the same model object, unchanged structure
deployable.compile(loss=loss, metrics=["accuracy"])
print("test accuracy:", deployable.evaluate(data.test, verbose=0)[1])
