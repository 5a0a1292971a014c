"""`AuxiliaryBooster`: the training-only hierarchical branch of one head."""

import math

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.auxiliary import structure as structure_lib
from keras_compact.training import tensorflow_step


class _ConvBN(keras.layers.Layer):
    """`BN(Conv1x1(x))` with its own BatchNormalization (never shared)."""

    def __init__(self, filters, strides=(1, 1), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = tuple(strides)
        self.conv = keras.layers.Conv2D(
            self.filters,
            1,
            strides=self.strides,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=seed),
            name=f"{self.name}_conv",
        )
        # Synchronized under a strategy of several replicas (as the compact
        # model's must be): every replica normalises with the global batch.
        self.bn = keras.layers.BatchNormalization(
            synchronized=tensorflow_step.synchronized(), name=f"{self.name}_bn"
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=False):
        return self.bn(self.conv(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


def _strides(src, dst, what):
    """Stride of a 'same' 1x1 conv mapping spatial size `src` to `dst`."""
    out = []
    for a, b in zip(src, dst):
        if a is None or b is None:
            raise ValueError(
                f"The auxiliary branch needs static spatial sizes; {what} has "
                f"{src} -> {dst}. Build the model with a fixed input shape."
            )
        s = max(1, round(a / b))
        if math.ceil(a / s) != b:
            raise ValueError(
                f"Cannot map a {src} feature map to {dst} with a strided 1x1 "
                f"convolution ({what}); only downsampling by an integer "
                "factor is supported. Choose the taps with `taps=`."
            )
        out.append(s)
    return tuple(out)


@keras_compact_export
class AuxiliaryBooster(keras.layers.Layer):
    """The hierarchical auxiliary branch ("booster") of one task head.

    Each tap `i` gets an adaptor `a_i = BN(Conv1x1(C_i -> m * C_i))`. Booster
    node `j` sits at tap `j` (its resolution, width `m * C_j`) and combines
    the adapted taps that feed it:

    `s_0 = in_0`, `s_j = ReLU(D_j(s_{j-1}) + in_j)`, where `D_j` is
    `BN(strided Conv1x1)` when resolution or width changes and the identity
    otherwise, and `in_j` is the sum of the adapted taps feeding node `j`
    (each brought to node `j`'s shape by its own `BN(strided Conv1x1)` when
    needed). In search mode node `j` always takes its own tap at weight 1
    and every extra candidate tap `i < j` (`structure.candidate_edges`) at
    weight `sigmoid(beta_ij)`, a gate that starts at 0.5; the architecture
    logits `beta` are held in a non-trainable weight (updated by the search,
    never by the model's optimizer). Every tap therefore always has an
    adaptor. The auxiliary head is global average pooling + Dense on the
    last node. Every BatchNormalization is the booster's own.

    Args:
        tap_shapes: list of `(H, W, C)`, one per tap, in graph order.
        tap_stages: list of resolution-stage indices, one per tap.
        units: output units of the auxiliary head (the task head's units).
        connections: `"search"`, or a list with, per node, its input tap
            indices (`structure.chain_structure(n)` is "connect all taps").
        width_mult: adaptor width multiplier `m` (> 0). Defaults to 1.0.
        activation: activation of the auxiliary head, that of the task head
            (e.g. `None` for logits, `"softmax"`). Defaults to `None`.
        seed: optional int seed of the initializers.
        **kwargs: layer arguments (`name`, ...).

    Call arguments:
        inputs: list of tap tensors, one per tap, in graph order.
        training: whether the BatchNormalization layers run in training
            mode.

    Returns:
        The auxiliary prediction, shaped like the task head's output.

    Example:

    ```python
    booster = AuxiliaryBooster(
        tap_shapes=[(16, 16, 8), (8, 8, 16)], tap_stages=[0, 1], units=10,
        connections=[[0], [1]],
    )
    y_aux = booster([t0, t1], training=True)
    ```

    Reference:
        Liu, Zhuang, Shen, Chen, Yin. "Training Compact Neural Networks via
        Auxiliary Overparameterization", arXiv:1909.02214, 2019.
        Zhuang, Liu, Tan, Shen, Reid. "Training Quantized Neural Networks
        with a Full-precision Auxiliary Module", CVPR 2020.
    """

    def __init__(
        self,
        tap_shapes,
        tap_stages,
        units,
        connections,
        width_mult=1.0,
        activation=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tap_shapes = [tuple(int(d) for d in s) for s in tap_shapes]
        self.tap_stages = [int(s) for s in tap_stages]
        n = len(self.tap_shapes)
        if n < 1 or len(self.tap_stages) != n:
            raise ValueError(
                "Expected one stage per tap and at least one tap. Received: "
                f"tap_shapes={tap_shapes}, tap_stages={tap_stages}"
            )
        if not float(width_mult) > 0:
            raise ValueError(
                f"Expected `width_mult` > 0. Received: width_mult={width_mult}"
            )
        self.units = int(units)
        self.width_mult = float(width_mult)
        self.activation = activation
        self.seed = seed
        self.search = connections == "search"
        self.candidates = structure_lib.candidate_edges(self.tap_stages)
        self.extras = structure_lib.extra_candidates(self.candidates)
        if self.search:
            self.connections = "search"
            self._inputs = self.candidates
        else:
            self.connections = structure_lib.validate_structure(connections, n)
            self._inputs = self.connections
        self.widths = [
            max(1, int(round(self.width_mult * s[2]))) for s in self.tap_shapes
        ]
        self._seed_count = 0
        used = sorted({i for srcs in self._inputs for i in srcs})
        self.adaptors = {
            str(i): _ConvBN(
                self.widths[i],
                seed=self._next_seed(),
                name=f"{self.name}_adaptor_{i}",
            )
            for i in used
        }
        self.downs = {}
        for j in range(1, n):
            if self._shape(j - 1) != self._shape(j):
                self.downs[str(j)] = _ConvBN(
                    self.widths[j],
                    strides=_strides(
                        self.tap_shapes[j - 1][:2],
                        self.tap_shapes[j][:2],
                        f"booster node {j - 1} -> {j}",
                    ),
                    seed=self._next_seed(),
                    name=f"{self.name}_down_{j}",
                )
        self.edges = {}
        for j, srcs in enumerate(self._inputs):
            for i in srcs:
                if self._shape(i) != self._shape(j):
                    self.edges[f"{i}_{j}"] = _ConvBN(
                        self.widths[j],
                        strides=_strides(
                            self.tap_shapes[i][:2],
                            self.tap_shapes[j][:2],
                            f"edge tap {i} -> node {j}",
                        ),
                        seed=self._next_seed(),
                        name=f"{self.name}_edge_{i}_{j}",
                    )
        self.pool = keras.layers.GlobalAveragePooling2D(name=f"{self.name}_gap")
        self.head = keras.layers.Dense(
            self.units,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(
                seed=self._next_seed()
            ),
            name=f"{self.name}_head",
        )
        self.arch_logits = None
        self._segments = []
        start = 0
        for extra in self.extras:
            self._segments.append((start, start + len(extra)))
            start += len(extra)
        self.num_edges = start

    def _next_seed(self):
        if self.seed is None:
            return None
        self._seed_count += 1
        return int(self.seed) * 1000 + self._seed_count

    def _shape(self, j):
        h, w, _ = self.tap_shapes[j]
        return (h, w, self.widths[j])

    def build(self, input_shape=None):
        for i, layer in self.adaptors.items():
            layer.build((None, *self.tap_shapes[int(i)]))
        for j, layer in self.downs.items():
            layer.build((None, *self._shape(int(j) - 1)))
        for key, layer in self.edges.items():
            i = int(key.split("_")[0])
            layer.build((None, *self._shape(i)))
        self.pool.build((None, *self._shape(len(self.tap_shapes) - 1)))
        self.head.build((None, self.widths[-1]))
        if self.search:
            self.arch_logits = self.add_weight(
                shape=(self.num_edges,),
                initializer="zeros",
                trainable=False,
                name="arch_logits",
            )
        self.built = True

    def node_logits(self):
        """Per node, the architecture logits of its extra edges (search)."""
        if not self.search:
            raise ValueError("Only a searching booster has edge logits.")
        return [self.arch_logits[a:b] for a, b in self._segments]

    def edge_gates(self):
        """Per node, the gates `sigmoid(beta)` of its extra edges (search).

        Aligned with `extras`; the node's own tap has no gate (weight 1).
        """
        return [keras.ops.sigmoid(v) for v in self.node_logits()]

    def call(self, inputs, training=False):
        inputs = list(inputs)
        if len(inputs) != len(self.tap_shapes):
            raise ValueError(
                f"Expected {len(self.tap_shapes)} tap tensors. Received: "
                f"{len(inputs)}"
            )
        adapted = {
            int(i): layer(inputs[int(i)], training=training)
            for i, layer in self.adaptors.items()
        }
        gates = self.edge_gates() if self.search else None
        state = None
        for j, srcs in enumerate(self._inputs):
            terms = []
            for i in srcs:
                x = adapted[i]
                key = f"{i}_{j}"
                if key in self.edges:
                    x = self.edges[key](x, training=training)
                if gates is not None and i != j:
                    gate = gates[j][self.extras[j].index(i)]
                    x = keras.ops.multiply(gate, x)
                terms.append(x)
            incoming = None
            for t in terms:
                incoming = t if incoming is None else keras.ops.add(incoming, t)
            if state is None:
                state = incoming
                continue
            if str(j) in self.downs:
                state = self.downs[str(j)](state, training=training)
            if incoming is not None:
                state = keras.ops.add(state, incoming)
            state = keras.ops.relu(state)
        return self.head(self.pool(state))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "tap_shapes": [list(s) for s in self.tap_shapes],
            "tap_stages": list(self.tap_stages),
            "units": self.units,
            "connections": self.connections,
            "width_mult": self.width_mult,
            "activation": self.activation,
            "seed": self.seed,
        }
