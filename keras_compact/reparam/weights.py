"""Swapping the user's weights between trained and folded values.

`Reparameterize` trains the user's kernels as the main branch; outside of
training the user's layers hold the folded kernels (main branch plus every
branch). `fold_blocks` writes the folded values and keeps the trained ones
in each block's non-trainable backups; `unfold_blocks` restores them.
Eager only (not inside a compiled function).
"""

import keras


def fold_blocks(blocks):
    """Writes each block's folded kernel and constant into the user's
    layer (and the following BatchNormalization's moving mean when the
    constant goes there), saving the replaced values in the block's
    `backup_kernel` and `backup_shift`."""
    for block in blocks:
        layer, shift = block.layer, block._ref.shift
        kernel, constant = block.folded()
        block.backup_kernel.assign(layer.kernel)
        layer.kernel.assign(kernel.astype(layer.kernel.dtype))
        if shift == "bias":
            block.backup_shift.assign(layer.bias)
            bias = keras.ops.convert_to_numpy(layer.bias) + constant
            layer.bias.assign(bias.astype(layer.bias.dtype))
        elif shift == "batch_norm":
            mean = block._ref.bn.moving_mean
            block.backup_shift.assign(mean)
            value = keras.ops.convert_to_numpy(mean) - constant
            mean.assign(value.astype(mean.dtype))


def unfold_blocks(blocks):
    """Restores the values saved by `fold_blocks`."""
    for block in blocks:
        layer, shift = block.layer, block._ref.shift
        layer.kernel.assign(block.backup_kernel)
        if shift == "bias":
            layer.bias.assign(block.backup_shift)
        elif shift == "batch_norm":
            block._ref.bn.moving_mean.assign(block.backup_shift)
