"""`StepContext`: what one train step hands to every technique hook."""


class StepContext:
    """The per-step context passed to a technique's step hooks.

    The train step creates one context per step, as a plain Python object
    inside the traced step function (under a `tf.distribute` strategy each
    replica's trace has its own), and passes it to `loss_terms(ctx)`,
    `transform_gradients(ctx, grads)` and `after_step(ctx)` of every
    technique. It fills in what each phase of the step knows:

    - before the forward pass: `trainer`, `x`, `y`, `sample_weight`,
      `step`, `optimizer` and `held_out`;
    - after the forward pass: `y_pred` and `tensors`;
    - while the loss is computed: `terms` (the task loss, then each
      technique's terms as they come);
    - after the gradient: `variables` and `grads` (updated after each
      technique's `transform_gradients`).

    Attributes:
        trainer: the `keras_compact.Trainer`.
        x, y, sample_weight: the batch (`y` and `sample_weight` may be
            None).
        step: the optimizer step of this batch (`optimizer.iterations`, a
            variable; read it before `after_step` for the step's index).
        optimizer: the trainer's compiled optimizer.
        y_pred: the compact model's training predictions (of the training
            graph when a technique replaces it).
        tensors: `{technique name: {key: tensor}}`, the intermediate
            tensors each technique declared in `tensors(trainer)`, computed
            in the same forward pass as `y_pred`.
        terms: `{name: scalar}`: `task_loss` and every loss term returned
            so far (unweighted by the replica count).
        variables: the trainable variables the gradients belong to.
        grads: the gradients, as transformed by the techniques so far.
        held_out: `{technique name: batch}`: the held-out batch of each
            technique that declared `held_out_data(trainer)`.
    """

    def __init__(
        self,
        trainer,
        x,
        y=None,
        sample_weight=None,
        step=None,
        held_out=None,
    ):
        self.trainer = trainer
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.optimizer = getattr(trainer, "optimizer", None)
        if step is None and self.optimizer is not None:
            step = self.optimizer.iterations
        self.step = step
        self.held_out = dict(held_out or {})
        self.y_pred = None
        self.tensors = {}
        self.terms = {}
        self.variables = None
        self.grads = None
        self._state = {}

    def state(self, technique):
        """A scratch dict private to `technique` for this step only.

        For values one hook passes to a later hook of the same step (e.g.
        dense gradients from `transform_gradients` to `after_step`).
        """
        return self._state.setdefault(technique.name, {})

    def dense_gradients(self, variables, grads=None):
        """Dense gradients of `variables`, summed over the replicas.

        Args:
            variables: variables among `self.variables`.
            grads: the gradients aligned with `self.variables` (default:
                `self.grads`, the gradients as transformed so far).

        Returns:
            A list aligned with `variables`: a dense tensor (a
            `tf.IndexedSlices` gradient made dense, all-reduced over the
            replicas of a `tf.distribute` strategy), or None where a
            variable has no gradient.
        """
        from keras_compact.training import tensorflow_step

        grads = self.grads if grads is None else grads
        index = {id(v): i for i, v in enumerate(self.variables or [])}
        dense = []
        for v in variables:
            i = index.get(id(v))
            g = None if i is None else grads[i]
            dense.append(None if g is None else tensorflow_step.densify(g))
        present = [j for j, g in enumerate(dense) if g is not None]
        reduced = tensorflow_step.all_reduce_sum([dense[j] for j in present])
        for j, g in zip(present, reduced):
            dense[j] = g
        return dense
