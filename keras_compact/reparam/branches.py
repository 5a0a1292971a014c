"""`ReparamBranches`: the training-time branches of one user layer.

The layer computes `activation(main(x) + bias + sum(branches(x)))`, where
`main` is the user's own kernel (its variable, not a copy) applied with the
user's layer geometry, and each branch is linear up to its own batch
normalization, so that `fold()` gives one kernel and one per-channel
constant that reproduce the inference output exactly.

Branches are computed as small convolutions on a window of the input that
is cut so that each small kernel reads exactly the pixels of the taps it
folds into (TensorFlow's 'same' padding is asymmetric for even kernels and
for strides > 1: the window is padded the same way, then sliced at the
branch's offset inside the full kernel). When the padding cannot be known
(a strided 'same' convolution on inputs of unknown size), the branch kernel
is zero-padded to the full size and applied with the user's own
convolution, which is exact by construction.

The families in detail:

- RepVGG: a 1x1 branch at the kernel's centre tap (`(k - 1) // 2` along
  each axis) and the identity branch where the shapes allow it (stride 1,
  'same' padding, as many outputs as inputs, depthwise multiplier 1).
- ACNet: 1xk and kx1 branches folded into the centre row and column.
- ExpandNets: the chain `1x1 -> kxk -> 1x1` per group, no non-linearity and
  no bias (padding the chain's input then pads the expanded features with
  zeros, so the fold is exact), computed as the product of its kernels
  at every step: the function and gradients of the three layers for the
  cost of one convolution. Dense layers get `m -> h -> h -> n`,
  `h = r * min(m, n)` (bounded for wide features feeding few classes),
  the first two factors orthogonal and the last zero (the chain starts
  as no change to the logits, which no normalization follows, and a step
  on it moves them no more than a step on the plain layer).
- DBB: a 1x1 branch, `1x1 -> BN -> kxk` (internal width: the input's, its
  1x1 initialised to the identity; twice the input's for depthwise-like
  layers) and `1x1 -> BN -> average pooling` (pooling alone for depthwise
  layers with multiplier 1, which get no 1x1 branch). As in DBB's released
  code the inner BN's output is padded with that BN's own zero-input value
  (`beta - mean * gamma / sqrt(var + eps)`, moving statistics, no
  gradient), which makes the fold exact at the borders.
"""

import dataclasses

import keras
import numpy as np

from keras_compact.reparam import folding
from keras_compact.training import tensorflow_step
from keras_compact.training.untracked import Untracked


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What the branches need to know about a user layer.

    Attributes:
        kind: `"conv"`, `"depthwise"` or `"dense"`.
        kernel_size: `(kh, kw)` (`(1, 1)` for dense).
        strides: `(sh, sw)`.
        padding: `"same"` or `"valid"`.
        groups: number of groups (`channels` for depthwise).
        in_channels, out_channels: channel counts (units for dense).
        in_size: static `(height, width)` of the input (entries may be
            None).
    """

    kind: str
    kernel_size: tuple
    strides: tuple
    padding: str
    groups: int
    in_channels: int
    out_channels: int
    in_size: tuple

    @property
    def in_per_group(self):
        return self.in_channels // self.groups

    @property
    def out_per_group(self):
        return self.out_channels // self.groups

    @property
    def centre(self):
        """The tap of the full kernel that reads the output's own position
        for a stride-1 'same' convolution (the kernel centre for odd
        sizes)."""
        return tuple((k - 1) // 2 for k in self.kernel_size)

    @property
    def identity_allowed(self):
        """Whether `y = x` is a convolution of this geometry."""
        same_size = self.padding == "same" or self.kernel_size == (1, 1)
        return (
            self.kind != "dense"
            and self.strides == (1, 1)
            and same_size
            and self.in_channels == self.out_channels
            and self.in_per_group == self.out_per_group
        )


@dataclasses.dataclass
class _Branch:
    name: str
    # "window", "identity", "chain" (ExpandNets), "dbb_kxk" (1x1 -> BN ->
    # kxk), "dbb_avg" (1x1 -> BN -> average) or "avg" (average)
    kind: str
    kernels: tuple = ()
    offset: tuple = (0, 0)
    norm: object = None
    scale: object = None
    inner_norm: object = None


class ReparamBranches(keras.layers.Layer):
    """Training-time linear branches around one user conv or dense layer.

    Built by `keras_compact.Reparameterize`; the user never creates one.
    The user's layer is referenced, not tracked: its variables stay the
    user's model's, and they are the main branch.

    Args:
        layer: the user's `Conv2D`, `DepthwiseConv2D` or `Dense` layer.
        geometry: its `Geometry`.
        family: `"repvgg"`, `"acnet"`, `"expandnets"` or `"dbb"`.
        expansion: the ExpandNets expansion rate `r`.
        identity: whether RepVGG adds the identity branch where allowed.
        main_norm: whether the main branch (the user's kernel) gets its
            own batch normalization, as every branch has in the RepVGG,
            ACNet and DBB papers (ignored by ExpandNets and when `constant`
            is False).
        constant: whether the branches may add a per-channel constant (the
            user's layer has a bias, or a batch normalization follows it);
            when False the branches have no normalization and no bias.
        norm_kwargs: `momentum` / `epsilon` of the branch normalizations.
        seed: int seed of the branch kernels' initializers, or None.
        **kwargs: `keras.layers.Layer` arguments (`name`).

    Call arguments:
        inputs: the input of the user's layer.
        training: whether the branch normalizations use batch statistics.
    """

    def __init__(
        self,
        layer,
        geometry,
        family,
        expansion=4,
        identity=True,
        main_norm=True,
        constant=True,
        norm_kwargs=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._ref = Untracked(layer=layer, geometry=geometry, branches=[])
        self.family = family
        self.expansion = int(expansion)
        self.constant = bool(constant)
        self._norm_kwargs = dict(norm_kwargs or {})
        self._seed = seed
        self._count = 0
        g = geometry
        kh, kw = g.kernel_size
        # Built before the branches: the main branch's BN, folded into the
        # user's kernel like the branches' ones.
        self.main_bn = (
            self._norm("main") if main_norm and family != "expandnets" else None
        )
        if family == "repvgg":
            if (kh, kw) != (1, 1):
                self._window("conv1x1", (1, 1), g.centre)
            if identity and g.identity_allowed:
                self._identity()
        elif family == "acnet":
            self._window("hor", (1, kw), ((kh - 1) // 2, 0))
            self._window("ver", (kh, 1), (0, (kw - 1) // 2))
        elif family == "expandnets":
            self._chain()
        elif family == "dbb":
            self._diverse_branches()
        else:
            raise ValueError(f"Unknown family. Received: family={family!r}")
        # Copies of the user's weights while they hold the folded values.
        self.backup_kernel = self.add_weight(
            shape=tuple(layer.kernel.shape),
            initializer="zeros",
            trainable=False,
            name="backup_kernel",
        )
        self.backup_shift = self.add_weight(
            shape=(g.out_channels,),
            initializer="zeros",
            trainable=False,
            name="backup_shift",
        )
        self.built = True

    # ------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------
    @property
    def layer(self):
        """The user's layer (the main branch)."""
        return self._ref.layer

    @property
    def geometry(self):
        return self._ref.geometry

    @property
    def branch_names(self):
        return [b.name for b in self._ref.branches]

    def _initializer(self, kind="glorot"):
        self._count += 1
        seed = None if self._seed is None else self._seed * 1009 + self._count
        if kind == "orthogonal":
            return keras.initializers.Orthogonal(seed=seed)
        return keras.initializers.GlorotUniform(seed=seed)

    def _kernel(self, name, shape, initializer=None):
        return self.add_weight(
            shape=shape,
            initializer=initializer or self._initializer(),
            trainable=True,
            name=name,
        )

    def _norm(self, name, channels=None):
        if not self.constant:
            return None
        # Synchronized under a strategy of several replicas (as the
        # user's must be): every replica normalises with the global batch.
        bn = keras.layers.BatchNormalization(
            axis=-1,
            synchronized=tensorflow_step.synchronized(),
            name=f"{name}_bn",
            **self._norm_kwargs,
        )
        rank = 2 if self.geometry.kind == "dense" else 4
        channels = channels or self.geometry.out_channels
        bn.build((None,) * (rank - 1) + (channels,))
        setattr(self, f"{name}_bn", bn)
        return bn

    def _small_shape(self, size):
        g = self.geometry
        if g.kind == "depthwise":
            return tuple(size) + (g.in_channels, g.out_per_group)
        return tuple(size) + (g.in_per_group, g.out_channels)

    def _window(self, name, size, offset):
        kernel = self._kernel(f"{name}_kernel", self._small_shape(size))
        branch = _Branch(name, "window", (kernel,), tuple(offset))
        branch.norm = self._norm(name)
        self._ref.branches.append(branch)

    def _identity(self):
        branch = _Branch("identity", "identity", (), self.geometry.centre)
        branch.norm = self._norm("identity")
        if branch.norm is None:
            branch.scale = self.add_weight(
                shape=(self.geometry.out_channels,),
                initializer="ones",
                trainable=True,
                name="identity_scale",
            )
        self._ref.branches.append(branch)

    def _chain(self):
        g, r = self.geometry, self.expansion
        if g.kind == "dense":
            m, n = g.in_channels, g.out_channels
            h = r * min(m, n)
            shapes = [(m, h), (h, h), (h, n)]
        else:
            m, n, groups = g.in_per_group, g.out_per_group, g.groups
            kh, kw = g.kernel_size
            shapes = [
                (1, 1, m, groups * r * m),
                (kh, kw, r * m, groups * r * n),
                (1, 1, r * n, groups * n),
            ]
        # A Dense chain adds to logits that no normalization follows, so
        # its factors set the classifier's effective step: with the last
        # factor C at zero and the first two A, B, a step on C moves the
        # product by A B (A B)^T times the plain layer's step. Glorot A, B
        # give that up to about 8x on MobileNetV2's 1,280-feature head,
        # which diverged at lr 0.1 (step 7) and at 0.05 with distillation
        # (step 21) where plain trains at 0.2. Orthogonal A, B make A B an
        # isometry (1x, the chain's step in its subspace equal to the
        # plain layer's): stable at 0.1 (reparam_dense_init.md). C starts
        # at zero, so the chain adds nothing at the start.
        inits = [None] * 3  # glorot, seeded in order
        if g.kind == "dense":
            orthogonal = [self._initializer("orthogonal") for _ in range(2)]
            inits = [*orthogonal, "zeros"]
        kernels = [
            self._kernel(f"expand{i}_kernel", s, init)
            for i, (s, init) in enumerate(zip(shapes, inits))
        ]
        self._ref.branches.append(_Branch("expand", "chain", tuple(kernels)))

    def _diverse_branches(self):
        """DBB: 1x1, 1x1 -> BN -> kxk, 1x1 -> BN -> average (or average
        alone for a depthwise layer with multiplier 1), each + BN."""
        g = self.geometry
        kh, kw = g.kernel_size
        m, n, groups = g.in_per_group, g.out_per_group, g.groups
        plain_avg = g.kind == "depthwise" and n == 1
        if not plain_avg:
            self._window("conv1x1", (1, 1), g.centre)
        # Internal width of the 1x1 -> kxk branch (DBB's rule): the input
        # width, or twice it for depthwise-like layers.
        e = m if groups < g.out_channels else 2 * m
        if e == m:
            # DBB's identity-based 1x1: start as the identity.
            eye = np.tile(np.eye(m, dtype="float32"), (1, groups))
            init = keras.initializers.Constant(eye.reshape(1, 1, m, -1))
            first = self._kernel(
                "dbb_kxk_first_kernel", (1, 1, m, groups * e), init
            )
        else:
            first = self._kernel("dbb_kxk_first_kernel", (1, 1, m, groups * e))
        second = self._kernel("dbb_kxk_second_kernel", (kh, kw, e, groups * n))
        branch = _Branch("1x1_kxk", "dbb_kxk", (first, second))
        branch.inner_norm = self._norm("dbb_kxk_inner", groups * e)
        branch.norm = self._norm("dbb_kxk")
        self._ref.branches.append(branch)
        if plain_avg:
            branch = _Branch("avg", "avg")
        else:
            kernel = self._kernel("dbb_avg_kernel", (1, 1, m, groups * n))
            branch = _Branch("1x1_avg", "dbb_avg", (kernel,))
            branch.inner_norm = self._norm("dbb_avg_inner")
        branch.norm = self._norm("dbb_avg")
        self._ref.branches.append(branch)

    # ------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------
    def _main(self, x, kernel):
        layer, g = self.layer, self.geometry
        if g.kind == "dense":
            return keras.ops.matmul(x, kernel)
        if g.kind == "depthwise":
            return keras.ops.depthwise_conv(
                x,
                kernel,
                strides=g.strides,
                padding=g.padding,
                data_format="channels_last",
            )
        return layer.convolution_op(x, kernel)

    @staticmethod
    def _conv(x, kernel, strides, padding, depthwise):
        if depthwise:
            return keras.ops.depthwise_conv(
                x, kernel, strides=strides, padding=padding
            )
        kh, kw, m, out = kernel.shape
        groups = x.shape[-1] // m
        if groups == 1 or m > 4:
            return keras.ops.conv(x, kernel, strides=strides, padding=padding)
        # Grouped with few inputs per group: TensorFlow's grouped
        # convolution is slow on CPU; a depthwise convolution (multiplier
        # n) followed by a sum over each group's m inputs is the same map.
        n = out // groups
        dw = keras.ops.reshape(kernel, (kh, kw, m, groups, n))
        dw = keras.ops.transpose(dw, (0, 1, 3, 2, 4))
        dw = keras.ops.reshape(dw, (kh, kw, groups * m, n))
        y = keras.ops.depthwise_conv(x, dw, strides=strides, padding=padding)
        shape = keras.ops.shape(y)
        y = keras.ops.reshape(y, (shape[0], shape[1], shape[2], groups, m, n))
        return keras.ops.reshape(
            keras.ops.sum(y, axis=4), (shape[0], shape[1], shape[2], out)
        )

    @staticmethod
    def _pad_value(bn):
        """What a BN outputs for a zero input, from its moving statistics
        (DBB pads the BN's output with it, so that the fold is exact at
        the borders); no gradient flows through it."""
        scale = keras.ops.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.gamma is not None:
            scale = scale * bn.gamma
        value = -bn.moving_mean * scale
        if bn.beta is not None:
            value = value + bn.beta
        return keras.ops.stop_gradient(value)

    def _padded_with(self, u, kernel, pad, depthwise):
        """`kernel` applied with the layer's geometry to `u` padded with the
        per-channel value `pad` (None: zeros): the zero-padded convolution
        of `u - pad`, plus the convolution of the constant image `pad`."""
        if pad is None:
            return self._window_output(u, kernel, (0, 0), depthwise)
        out = self._window_output(u - pad, kernel, (0, 0), depthwise)
        kh, kw = kernel.shape[:2]
        if depthwise:
            const = keras.ops.sum(kernel, axis=(0, 1)) * pad[:, None]
            const = keras.ops.reshape(const, (-1,))
        else:
            e, total = kernel.shape[2], kernel.shape[3]
            groups = pad.shape[0] // e
            k = keras.ops.reshape(kernel, (kh * kw, e, groups, total // groups))
            t = keras.ops.reshape(pad, (groups, e))
            const = keras.ops.reshape(
                keras.ops.einsum("kagn,ga->gn", k, t), (-1,)
            )
        return out + const

    def _avg_kernel(self, channels):
        kh, kw = self.geometry.kernel_size
        return keras.ops.full((kh, kw, channels, 1), 1.0 / (kh * kw))

    def _dbb_output(self, x, branch, training):
        first = branch.kernels[0]
        u = self._conv(x, first, 1, "valid", False)
        pad = None
        if branch.inner_norm is not None:
            u = branch.inner_norm(u, training=training)
            pad = self._pad_value(branch.inner_norm)
        if branch.kind == "dbb_kxk":
            return self._padded_with(u, branch.kernels[1], pad, False)
        avg = self._avg_kernel(u.shape[-1])
        return self._padded_with(u, avg, pad, True)

    def _window_output(self, x, kernel, offset, depthwise=None):
        g = self.geometry
        if depthwise is None:
            depthwise = g.kind == "depthwise"
        size = tuple(kernel.shape[:2])
        pads = []
        for axis in range(2):
            if g.padding == "same":
                pad = folding.same_padding(
                    g.in_size[axis], g.kernel_size[axis], g.strides[axis]
                )
            else:
                pad = (0, 0)
            pads.append(pad)
        if any(p is None for p in pads):
            # Padding unknown until run time: the full-size kernel with the
            # user's own convolution is exact whatever the input size.
            widths = [
                (offset[a], g.kernel_size[a] - offset[a] - size[a])
                for a in range(2)
            ]
            full = keras.ops.pad(kernel, widths + [(0, 0), (0, 0)])
            return self._conv(x, full, g.strides, g.padding, depthwise)
        if any(p != (0, 0) for p in pads):
            x = keras.ops.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
        ends = []
        for axis in range(2):
            cut = g.kernel_size[axis] - offset[axis] - size[axis]
            ends.append(-cut if cut > 0 else None)
        x = x[:, offset[0] : ends[0], offset[1] : ends[1], :]
        return self._conv(x, kernel, g.strides, "valid", depthwise)

    def _chain_kernel(self, kernels):
        """The ExpandNets chain as one kernel of the user's layout, built
        in the graph: the same function of the input and the same
        gradients for each factor as running the chain (it is linear, with
        no bias, and padded at its input), for the cost of one
        convolution."""
        g = self.geometry
        first, middle, last = kernels
        if g.kind == "dense":
            return keras.ops.matmul(keras.ops.matmul(first, middle), last)
        groups, m, n = g.groups, g.in_per_group, g.out_per_group
        kh, kw = g.kernel_size
        a, b = first.shape[-1] // groups, middle.shape[-1] // groups
        f = keras.ops.reshape(first, (m, groups, a))
        mid = keras.ops.reshape(middle, (kh, kw, a, groups, b))
        last = keras.ops.reshape(last, (b, groups, n))
        k = keras.ops.einsum("iga,hwagb,bgn->hwign", f, mid, last)
        if g.kind == "depthwise":
            return keras.ops.reshape(k, (kh, kw, groups, n))
        return keras.ops.reshape(k, (kh, kw, m, groups * n))

    def call(self, inputs, training=None):
        layer = self.layer
        kernel = layer.kernel
        for branch in self._ref.branches:
            if branch.kind == "chain":
                kernel = keras.ops.add(
                    kernel, self._chain_kernel(branch.kernels)
                )
        y = self._main(inputs, kernel)
        if self.main_bn is not None:
            y = self.main_bn(y, training=training)
        for branch in self._ref.branches:
            if branch.kind == "chain":
                continue
            if branch.kind == "identity":
                out = inputs
            elif branch.kind == "window":
                out = self._window_output(
                    inputs, branch.kernels[0], branch.offset
                )
            elif branch.kind in ("dbb_kxk", "dbb_avg"):
                out = self._dbb_output(inputs, branch, training)
            else:  # "avg"
                avg = self._avg_kernel(inputs.shape[-1])
                out = self._window_output(inputs, avg, (0, 0), True)
            if branch.norm is not None:
                out = branch.norm(out, training=training)
            elif branch.scale is not None:
                out = keras.ops.multiply(out, branch.scale)
            y = keras.ops.add(y, out)
        if layer.use_bias:
            y = keras.ops.add(y, layer.bias)
        return layer.activation(y)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ------------------------------------------------------------------
    # Folding
    # ------------------------------------------------------------------
    def folded(self):
        """The main kernel with every branch folded in, and the constant.

        Branch normalizations are folded with their moving statistics.

        Returns:
            `(kernel, constant)`: a float64 kernel of the user's layer's
            shape, and the float64 per-output-channel constant that the
            branches add (zero when `constant` is False).
        """
        g = self.geometry
        kind = g.kind
        kernel = np.asarray(
            keras.ops.convert_to_numpy(self.layer.kernel), np.float64
        )
        constant = np.zeros((g.out_channels,), np.float64)
        if self.main_bn is not None:
            scale, shift = _affine(self.main_bn)
            kernel = folding.scale_output_channels(kernel, scale, kind)
            constant = constant + shift
        for branch in self._ref.branches:
            values = [
                np.asarray(keras.ops.convert_to_numpy(k), np.float64)
                for k in branch.kernels
            ]
            if branch.kind == "identity":
                part = folding.identity_kernel(
                    g.kernel_size,
                    branch.offset,
                    g.out_channels,
                    g.in_per_group,
                    kind,
                )
            elif branch.kind == "window":
                part = folding.embed(values[0], branch.offset, g.kernel_size)
            elif branch.kind in ("dbb_kxk", "dbb_avg", "avg"):
                part, inner = self._fold_dbb(branch, values)
                constant = constant + inner
            elif kind == "dense":
                part = values[0] @ values[1] @ values[2]
            else:
                part = folding.chain_kernel(*values, g.groups, kind)
            if branch.norm is not None:
                scale, shift = _affine(branch.norm)
                part = folding.scale_output_channels(part, scale, kind)
                constant = constant + shift
            elif branch.scale is not None:
                scale = keras.ops.convert_to_numpy(branch.scale)
                part = folding.scale_output_channels(part, scale, kind)
            kernel = kernel + part
        return kernel, constant

    def _fold_dbb(self, branch, values):
        """The `(kernel, constant)` of a DBB branch before its outer BN
        (the constant is already multiplied by the outer BN's scale)."""
        g = self.geometry
        kh, kw = g.kernel_size
        groups, n = g.groups, g.out_per_group
        outer = (
            np.ones(g.out_channels)
            if branch.norm is None
            else _affine(branch.norm)[0]
        )
        if branch.kind == "avg":
            part = np.full((kh, kw, g.in_channels, 1), 1.0 / (kh * kw))
            return part, np.zeros(g.out_channels)
        first = values[0]
        scale = shift = None
        if branch.inner_norm is not None:
            scale, shift = _affine(branch.inner_norm)
            first = first * scale
        if branch.kind == "dbb_kxk":
            second = values[1]
            eye = np.tile(np.eye(n), (1, groups)).reshape(1, 1, n, -1)
            part = folding.chain_kernel(first, second, eye, groups, g.kind)
            inner = np.zeros(g.out_channels)
            if shift is not None:
                e = second.shape[2]
                k = second.reshape(kh * kw, e, groups, n)
                inner = np.einsum("kagn,ga->gn", k, shift.reshape(groups, e))
                inner = inner.reshape(-1)
        else:  # 1x1 -> BN -> average: every tap gets the 1x1 / (kh * kw)
            part = np.broadcast_to(
                first / (kh * kw), (kh, kw) + first.shape[2:]
            ).copy()
            if g.kind == "depthwise":
                part = part.reshape(kh, kw, g.in_channels, n)
            inner = np.zeros(g.out_channels) if shift is None else shift
        return part, inner * outer

    def extra_params(self):
        """Number of training-only parameters (kernels and BN affine)."""
        total = 0
        for w in self.trainable_weights:
            total += int(np.prod(w.shape))
        return total


def _affine(bn):
    """`folding.batch_norm_affine` of a Keras BatchNormalization."""
    values = [
        None if v is None else keras.ops.convert_to_numpy(v)
        for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    ]
    return folding.batch_norm_affine(*values, bn.epsilon)
