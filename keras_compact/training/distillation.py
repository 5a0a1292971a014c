"""Knowledge distillation (Hinton et al., 2015) as a `Technique`."""

import keras

from keras_compact.api_export import keras_compact_export
from keras_compact.graph import outputs
from keras_compact.training import arguments as args
from keras_compact.training.technique import Technique


@keras_compact_export
class Distillation(Technique):
    """Distils a frozen teacher's soft predictions into the compact model.

    The training loss becomes
    `(1 - alpha) * task_loss + alpha * T**2 * KL(p_teacher || p_student)`,
    with `p = softmax(logits / T)` (Hinton, Vinyals and Dean, 2015). The
    `T**2` factor keeps the soft-target gradients on the scale of the hard
    ones. The teacher runs in inference mode and is never trained. Models
    with several outputs are distilled output by output.

    Args:
        teacher: a trained `keras.Model` whose outputs have the shapes of the
            student's outputs.
        temperature: softmax temperature `T`, a float > 0. Defaults to 4.0.
        alpha: weight of the distillation term, in [0, 1]; the task loss gets
            `1 - alpha`. Defaults to 0.9.
        from_logits: `"auto"` (the default) looks at the last layer of each
            model, teacher and student separately, output by output: a
            softmax output (a `Softmax` layer or a softmax activation) is
            distilled through its log-probabilities, any other output as
            logits. `True`: every output of both models is logits; `False`:
            every output is probabilities. A subclassed model's outputs
            cannot be inspected and count as logits under `"auto"`.
        **kwargs: `Technique` (layer) arguments such as `name`.

    Raises:
        TypeError: if `teacher` is not a Keras model.
        ValueError: for an out-of-range `temperature` or `alpha`, or (at
            attach time) teacher and student outputs of different shapes.

    Example:

    ```python
    trainer = keras_compact.Trainer(
        student, techniques=[keras_compact.Distillation(teacher)]
    )
    ```

    Reference:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural
        Network", arXiv:1503.02531, 2015.
    """

    term_names = ("distillation_loss",)

    def __init__(
        self, teacher, temperature=4.0, alpha=0.9, from_logits="auto", **kwargs
    ):
        kwargs.setdefault("name", "distillation")
        super().__init__(**kwargs)
        if not isinstance(teacher, keras.Model):
            raise TypeError(
                "Expected `teacher` to be a `keras.Model`. Received: "
                f"teacher={teacher!r} of type {type(teacher).__name__}"
            )
        args.check_float(temperature, "temperature", low=0.0, low_open=True)
        args.check_float(alpha, "alpha", 0.0, 1.0)
        args.check_choice(from_logits, ("auto", True, False), "from_logits")
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.from_logits = from_logits

    @property
    def task_loss_weight(self):
        return 1.0 - self.alpha

    def _probabilities(self, model, n):
        """One bool per output of `model`: whether it is probabilities."""
        if self.from_logits == "auto":
            return outputs.softmax_outputs(model)
        return [not self.from_logits] * n

    def attach(self, trainer):
        student_shapes = (
            [
                tuple(t.shape[1:])
                for t in keras.tree.flatten(trainer.compact_model.outputs)
            ]
            if hasattr(trainer.compact_model, "outputs")
            else None
        )
        teacher_shapes = (
            [
                tuple(t.shape[1:])
                for t in keras.tree.flatten(self.teacher.outputs)
            ]
            if hasattr(self.teacher, "outputs")
            else None
        )
        if (
            student_shapes
            and teacher_shapes
            and (student_shapes != teacher_shapes)
        ):
            raise ValueError(
                "The teacher's outputs must have the student's shapes. "
                f"Received: teacher outputs {teacher_shapes}, student "
                f"outputs {student_shapes}"
            )

    def loss_terms(self, ctx):
        trainer, y_pred = ctx.trainer, ctx.y_pred
        t_pred = self.teacher(ctx.x, training=False)
        t_pred = [
            keras.ops.stop_gradient(t) for t in keras.tree.flatten(t_pred)
        ]
        y_pred = keras.tree.flatten(y_pred)
        t_pred = outputs.to_logits(
            t_pred, self._probabilities(self.teacher, len(t_pred))
        )
        y_pred = outputs.to_logits(
            y_pred, self._probabilities(trainer.compact_model, len(y_pred))
        )
        total = 0.0
        for s, t in zip(y_pred, t_pred):
            total = keras.ops.add(
                total, outputs.soft_target_kl(t, s, self.temperature)
            )
        return {"distillation_loss": keras.ops.multiply(self.alpha, total)}

    def get_config(self):
        return {
            **super().get_config(),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "from_logits": self.from_logits,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(
            config["teacher"]
        )
        return cls(**config)
