"""Every access to Keras' private API, in one place.

keras_compact uses Keras' public API everywhere else. The few things Keras
does not expose publicly (a functional model's call graph, the compiled
loss, `fit`'s own loss tracker, an optimizer's per-variable state) are read
here, each through one small function that checks what it reads and fails
with a clear `RuntimeError` naming the Keras version when a Keras upgrade
has changed it. `tests/test_compat.py` pins each one, so such an upgrade
fails one named test instead of training silently wrong.
"""

import keras


def _changed(what, error=None):
    return RuntimeError(
        f"keras_compact relies on {what}, which this Keras version "
        f"({keras.__version__}) no longer provides. Please report it, with "
        "your Keras version, to the keras_compact issue tracker."
        + (f" Original error: {error!r}" if error is not None else "")
    )


# ----------------------------------------------------------------------
# Functional models: the call graph
# ----------------------------------------------------------------------
def has_call_graph(model):
    """True for a model whose layers are connected by a recorded call graph
    (functional models; not subclassed ones)."""
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")


def nodes_by_depth(model):
    """`{depth: [Node]}` of a functional model, deepest (inputs) first when
    sorted in reverse.

    Each node is a Keras `Node` with the public attributes `operation`,
    `input_tensors`, `output_tensors`, `is_input`, `parent_nodes` and
    `arguments` (`.args`, `.kwargs`).
    """
    try:
        nodes = model._nodes_by_depth
    except AttributeError as error:
        raise _changed("`Functional._nodes_by_depth`", error) from None
    if not isinstance(nodes, dict):
        raise _changed("`Functional._nodes_by_depth` being a dict")
    return nodes


def node_arguments(node):
    """`(args, kwargs)` with which a graph node's operation was called."""
    try:
        arguments = node.arguments
        return arguments.args, arguments.kwargs
    except AttributeError as error:
        raise _changed("`Node.arguments.args/kwargs`", error) from None


# ----------------------------------------------------------------------
# Trainers: the compiled loss and fit's loss tracker
# ----------------------------------------------------------------------
def compiled_loss(model):
    """The `CompileLoss` built by `model.compile(loss=...)`, or None."""
    if not hasattr(model, "_compile_loss"):
        raise _changed("`Trainer._compile_loss`")
    return model._compile_loss


def untracked_loss_copy(compile_loss):
    """A new `CompileLoss` with the same losses, loss weights and output
    names as `compile_loss`, whose per-output loss metrics are its own
    (so an extra prediction scored with it does not pollute the logs)."""
    try:
        from keras.src.trainers.compile_utils import CompileLoss

        return CompileLoss(
            compile_loss._user_loss,
            compile_loss._user_loss_weights,
            output_names=compile_loss.output_names,
        )
    except (ImportError, AttributeError, TypeError) as error:
        raise _changed("`keras.src.trainers.compile_utils.CompileLoss`", error)


def loss_tracker(model):
    """The `Mean` metric that `fit` logs as `loss` (None before
    `compile`)."""
    if not hasattr(model, "_loss_tracker"):
        raise _changed("`Trainer._loss_tracker`")
    return model._loss_tracker


def symbolic_build(model, data_batch):
    """Creates a compiled model's metric variables from a batch spec, as
    `fit` does on its first step (so they exist before tracing)."""
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        raise _changed("`Trainer._symbolic_build`")
    build(data_batch=data_batch)


# ----------------------------------------------------------------------
# Layers and optimizers: per-variable state
# ----------------------------------------------------------------------
def own_trainable_variables(layer):
    """The trainable variables a layer created itself (not its sublayers')."""
    if not hasattr(layer, "_trainable_variables"):
        raise _changed("`Layer._trainable_variables`")
    return list(layer._trainable_variables)


def optimizer_slots(optimizer, variable):
    """The optimizer state variables that mirror `variable` element-wise.

    Works for every Keras optimizer (SGD momentums, Adam momentums and
    velocities, RMSprop, Adagrad, Lion, EMA copies, gradient accumulators,
    a `LossScaleOptimizer`'s inner optimizer): any list attribute aligned
    with the optimizer's trainable variables whose entry has the variable's
    shape. The order is the same for every variable of one optimizer, so
    the i-th slot of two variables is the same kind of state.

    Args:
        optimizer: a built `keras.optimizers.Optimizer` (or `None`).
        variable: one of its trainable variables.

    Returns:
        A list of `keras.Variable` (empty if the optimizer is not built).
    """
    found, seen = [], set()
    stack = [optimizer]
    while stack:
        opt = stack.pop()
        if opt is None or id(opt) in seen:
            continue
        seen.add(id(opt))
        inner = getattr(opt, "inner_optimizer", None)
        if inner is not None:
            stack.append(inner)
        if not getattr(opt, "built", False):
            continue
        if not hasattr(opt, "_get_variable_index") or not hasattr(
            opt, "_trainable_variables"
        ):
            raise _changed("`Optimizer._get_variable_index`")
        try:
            index = opt._get_variable_index(variable)
        except KeyError:
            continue
        n = len(opt._trainable_variables)
        for value in list(vars(opt).values()):
            if not isinstance(value, (list, tuple)) or len(value) != n:
                continue
            slot = value[index]
            if (
                isinstance(slot, keras.Variable)
                and slot is not variable
                and tuple(slot.shape) == tuple(variable.shape)
                and id(slot) not in seen
            ):
                seen.add(id(slot))
                found.append(slot)
    return found
