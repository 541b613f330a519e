"""Knowledge distillation from a full-precision teacher (ReActNet's distributional loss).

ReActNet trains its binary student to match the softmax outputs of a real-valued teacher
(ResNet-34 on ImageNet) with a KL divergence, instead of the one-hot labels. The zoo's models
end with `Dense + Activation("softmax")`, so student and teacher both output probabilities.

Example:
    ```python
    teacher = tf.keras.models.load_model("teacher.h5", compile=False)
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(train_ds, epochs=1)   # accuracy measured against the labels
    ```

References:
    - ReActNet: https://arxiv.org/abs/2003.03488 (section 4.3, distributional loss)
"""

from __future__ import annotations

import importlib
import os

import tensorflow as tf

#: Probabilities are clipped to this before the logarithm (as Keras' KLDivergence).
EPSILON = 1e-7


def distillation_loss(teacher_probabilities, student_probabilities) -> tf.Tensor:
    """Per-example KL divergence between teacher and student softmax outputs.

    Details:
        `KL(p_T || p_S) = sum_c p_T(c) (log p_T(c) - log p_S(c))`, probabilities clipped to
        [1e-7, 1]. Its gradient for the student equals that of ReActNet's distributional
        loss `-sum_c p_T(c) log p_S(c)` (they differ by the teacher's entropy, a constant),
        and it is 0 when the student matches the teacher.

    Args:
        teacher_probabilities: `(B, classes)` softmax outputs of the teacher.
        student_probabilities: `(B, classes)` softmax outputs of the student.

    Returns:
        `(B,)` float32 losses.
    """
    teacher = tf.clip_by_value(tf.cast(teacher_probabilities, tf.float32), EPSILON, 1.0)
    student = tf.clip_by_value(tf.cast(student_probabilities, tf.float32), EPSILON, 1.0)
    return tf.reduce_sum(teacher * (tf.math.log(teacher) - tf.math.log(student)), axis=-1)


def keras_applications_teacher(
    name: str, *, input_shape: tuple[int, int, int], weights: str | None = "imagenet"
) -> tf.keras.Model:
    """A `tf.keras.applications` model as a teacher of zoo models, by name ("resnet50").

    The zoo's models take images scaled to [-1, 1] (`zoo.preprocess_input`); the teacher
    gets the same tensor, turns it back to [0, 255] and applies its own
    `preprocess_input` (caffe-style BGR and mean subtraction for ResNet50, [-1, 1] for
    MobileNetV2, ...), so student and teacher see the same images. ReActNet distils from a
    ResNet-34, which keras.applications does not have; "resnet50" is the nearest.

    Args:
        name: a `tf.keras.applications` model, case-insensitive ("resnet50", "ResNet101",
            "efficientnetb0", "mobilenetv2", ...).
        input_shape: the student's input shape.
        weights: "imagenet" (downloaded by Keras into ~/.keras/models on first use) or None
            (random weights, for tests).

    Returns:
        A model from [-1, 1] images to the teacher's 1000 ImageNet probabilities.

    Raises:
        ValueError: no such model (the known ones are listed).
    """
    constructors = {
        attribute.lower(): getattr(tf.keras.applications, attribute)
        for attribute in dir(tf.keras.applications)
        if attribute[0].isupper() and callable(getattr(tf.keras.applications, attribute))
    }
    if name.lower() not in constructors:
        raise ValueError(
            f"Expected teacher to be a saved model's path or a tf.keras.applications model "
            f"({', '.join(sorted(constructors))}), but got {name!r}."
        )
    constructor = constructors[name.lower()]
    preprocess = importlib.import_module(constructor.__module__).preprocess_input
    base = constructor(weights=weights, input_shape=tuple(input_shape))
    inputs = tf.keras.Input(tuple(input_shape))
    pixels = tf.keras.layers.Rescaling(127.5, offset=127.5, name="to_pixels")(inputs)
    return tf.keras.Model(inputs, base(preprocess(pixels)), name=f"{base.name}_teacher")


def load_teacher(
    teacher: tf.keras.Model | str | os.PathLike,
    *,
    input_shape: tuple[int, int, int] | None = None,
    weights: str | None = "imagenet",
) -> tf.keras.Model:
    """A teacher model: a Keras model as is, a whole model saved by `model.save`, or a
    `tf.keras.applications` model by name (`keras_applications_teacher`).

    The teacher must take the student's inputs (images normalized by `zoo.preprocess_input`)
    and output softmax probabilities over the same classes.

    Args:
        teacher: a `tf.keras.Model`, the path of a saved model (`.h5`, `.keras` or a
            SavedModel directory, loaded with `compile=False`), or a keras.applications name.
        input_shape: the student's input shape (for a teacher by name).
        weights: a teacher by name's weights, "imagenet" or None.

    Returns:
        The teacher, frozen (`trainable = False`).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: `teacher` is neither a model, a path nor a known name.
    """
    if isinstance(teacher, str | os.PathLike):
        path = os.path.expanduser(os.fspath(teacher))
        if os.path.exists(path):
            teacher = tf.keras.models.load_model(path, compile=False)
        elif isinstance(teacher, str) and os.sep not in teacher and "." not in teacher:
            teacher = keras_applications_teacher(
                teacher, input_shape=input_shape or (224, 224, 3), weights=weights
            )
        else:
            raise FileNotFoundError(
                f"Expected teacher to be a Keras model, the path of a saved model or a "
                f"tf.keras.applications name, but got {os.fspath(teacher)!r}: no such file or "
                "directory."
            )
    if not isinstance(teacher, tf.keras.Model):
        raise ValueError(
            "Expected teacher to be a tf.keras.Model or the path of a saved model, but got "
            f"{teacher!r} of type {type(teacher).__name__}."
        )
    teacher.trainable = False
    return teacher


class Distiller(tf.keras.Model):
    """Trains `student` to match `teacher`'s softmax outputs; the teacher stays frozen.

    Details:
        Loss per example: `(1 - label_weight) * KL(p_T || p_S) + label_weight *
        CE(labels, p_S)` (`distillation_loss`; ReActNet uses `label_weight = 0`), averaged
        over the global batch with `tf.nn.compute_average_loss`, plus the student's own
        losses (weight decay) scaled by `tf.nn.scale_regularization_loss`, so that the
        gradients summed over replicas under a `tf.distribute` strategy equal those of one
        device. The teacher runs in inference mode. Compiled metrics (e.g. "accuracy")
        compare the student's outputs with the labels. `call` is the student's, and
        checkpoints should hold `distiller.student` (the teacher is not trained).

    Example:
        ```python
        distiller = Distiller(student, teacher)
        distiller.compile(optimizer=tf.keras.optimizers.Adam(5e-4), metrics=["accuracy"])
        distiller.fit(train_ds, validation_data=eval_ds, epochs=2)
        student.save_weights("student.h5")
        ```

    Args:
        student: the model being trained (outputs softmax probabilities).
        teacher: a frozen model with the same inputs and classes.
        label_weight: weight in [0, 1] of the cross-entropy with the labels.

    Raises:
        ValueError: `label_weight` outside [0, 1]; teacher and student outputs differ in
            shape.

    References:
        - ReActNet: https://arxiv.org/abs/2003.03488
    """

    def __init__(
        self,
        student: tf.keras.Model,
        teacher: tf.keras.Model,
        *,
        label_weight: float = 0.0,
        name: str = "distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_weight <= 1.0:
            raise ValueError(f"Expected label_weight in [0, 1], but got {label_weight!r}.")
        if tuple(teacher.output_shape) != tuple(student.output_shape):
            raise ValueError(
                f"Expected the teacher's output shape to equal the student's "
                f"{tuple(student.output_shape)}, but got {tuple(teacher.output_shape)}."
            )
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        self.label_weight = float(label_weight)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.distillation_tracker = tf.keras.metrics.Mean(name="distillation_loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _per_example_losses(self, x, y, student_probabilities):
        distill = distillation_loss(self.teacher(x, training=False), student_probabilities)
        loss = distill
        if self.label_weight:
            labels = tf.keras.losses.sparse_categorical_crossentropy(y, student_probabilities)
            loss = (1.0 - self.label_weight) * distill + self.label_weight * labels
        return loss, distill

    def _track(self, loss, distill, regularization, x, y, student_probabilities):
        batch = tf.shape(loss)[0]
        self.loss_tracker.update_state(tf.reduce_mean(loss) + regularization, batch)
        self.distillation_tracker.update_state(tf.reduce_mean(distill), batch)
        return self.compute_metrics(x, y, student_probabilities, None)

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            student_probabilities = self.student(x, training=True)
            loss, distill = self._per_example_losses(x, y, student_probabilities)
            regularization = tf.add_n(self.student.losses) if self.student.losses else 0.0
            scaled = tf.nn.compute_average_loss(loss)
            if self.student.losses:
                scaled += tf.nn.scale_regularization_loss(regularization)
        self.optimizer.minimize(scaled, self.student.trainable_variables, tape=tape)
        return self._track(loss, distill, regularization, x, y, student_probabilities)

    def test_step(self, data):
        x, y = data[0], data[1]
        student_probabilities = self.student(x, training=False)
        loss, distill = self._per_example_losses(x, y, student_probabilities)
        regularization = tf.add_n(self.student.losses) if self.student.losses else 0.0
        return self._track(loss, distill, regularization, x, y, student_probabilities)
