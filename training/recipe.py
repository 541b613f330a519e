"""ReActNet's two-step training recipe, with checkpoints that survive a kill, and scale-out.

The recipe (ReActNet; docs/design.md, "Training recipe"):

| step | activations | weights | weight decay | initialized from |
| --- | --- | --- | --- | --- |
| 1 | binary | real (`binary_weights=False`) | 1e-5 | scratch |
| 2 | binary | binary (`binary_weights=True`) | 0 | step 1's weights |

Both steps: Adam (lr 5e-4 by default, ReActNet's at batch 256), the learning rate decaying
linearly to 0 over the step's `epochs x steps_per_epoch` updates (`linear_decay`), and
optionally distillation from a full-precision teacher (`larq_dysign.training.Distiller`).
Step 2 reuses step 1's weights: the two models differ only in their kernel quantizers, so
their layers have the same names and weight shapes (`transfer_weights` checks it).

Decisions:
    - Weight decay is coupled L2, as `torch.optim.Adam(weight_decay=wd)` in ReActNet's code:
      `wd / 2 * sum(w**2)` over the kernels (every trainable weight with 2 or more
      dimensions: conv, dense and DySign/DyPReLU hyper-function kernels; not BatchNorm,
      biases, thresholds or PReLU slopes) is added to the loss, so each kernel's gradient
      gains `wd * w` (`add_weight_decay`).
    - Learning rate: *not* scaled with the batch size. Adam normalizes its updates, and
      ReActNet's 5e-4 was used at batch 256; pass `learning_rate` to change it (the linear
      scaling rule, `5e-4 * global_batch / 256`, is the usual starting point when the
      global batch grows a lot).
    - Batch: `batch_size` is per replica; the pipelines are batched with the global batch
      `batch_size x strategy.num_replicas_in_sync`.
    - Inputs: images normalized to [-1, 1] by `larq_dysign.zoo.normalize`.

Each step writes, under `out_dir/step<N>/`: `checkpoints/`, `history.csv` and
`settings.json` (`checkpoints.py`: a run started again with the same `out_dir` resumes from
the newest intact checkpoint, and is refused if its settings differ), `logs/` (TensorBoard,
with the learning rate), `<Model>_step<N>.keras` with `<Model>_step<N>.json` (the whole model
and how it was built: `zoo.load_saved_model`, and every `larq-dysign` command, take them) and
`<Model>_step<N>.h5` (its weights, for the zoo's `weights=` argument).

Example:
    ```python
    from larq_dysign import training
    results = training.train("DyResNet18", dataset="cifar10", epochs=120, batch_size=128,
                             out_dir="runs/dyresnet18_cifar10")
    results[2].model.evaluate(...)
    ```

References:
    - ReActNet: https://arxiv.org/abs/2003.03488
    - Real-to-Binary Net (two-step training): https://arxiv.org/abs/2003.11535
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import shutil
from collections.abc import Callable

import tensorflow as tf

from ..checks import check_choice, check_positive_int
from ..files import atomic_path, write_json
from ..layers import DyPReLU, DySign, RPReLU, RSign
from ..zoo import common as zoo_common
from ..zoo import presets as zoo_presets
from ..zoo import saved as zoo_saved
from ..zoo import weights as zoo_weights
from . import data as data_module
from . import distribute
from .checkpoints import (
    SETTINGS_FILE,
    EpochCheckpoint,
    check_settings,
    has_checkpoints,
    read_history,
    restore_latest_intact,
    truncate_history,
    weights_digest,
)
from .distill import Distiller, load_teacher

logger = logging.getLogger(__name__)

DEFAULT_LEARNING_RATE = 5e-4
STEPS = ("1", "2", "both")
#: "two-step": ReActNet's recipe (the table above); "one-step": step 2 alone, binary weights
#: from random initialization (docs/design.md, "Training recipe": better at budgets of a few
#: epochs, where two half-length steps leave each too short).
SCHEDULES = ("two-step", "one-step")


@dataclasses.dataclass(frozen=True)
class StepRecipe:
    """What changes between the two steps of the recipe."""

    binary_weights: bool
    weight_decay: float


RECIPE = {1: StepRecipe(binary_weights=False, weight_decay=1e-5), 2: StepRecipe(True, 0.0)}


@dataclasses.dataclass
class StepResult:
    """What one training step produced.

    Attributes:
        step: 1 or 2.
        model: the trained student.
        history: the CSV history, `{column: [value per epoch]}`, all epochs (resumed ones too).
        directory: the step's output directory.
        weights_path: the final weights (`<Model>_step<N>.h5`).
        model_path: the final model, whole (`<Model>_step<N>.keras`, described by the
            `.json` beside it).
        initial_epoch: the epoch training started from (> 0 after a resume).
        initial_iteration: the optimizer's iteration count when training started.
    """

    step: int
    model: tf.keras.Model
    history: dict[str, list[float]]
    directory: str
    weights_path: str
    model_path: str
    initial_epoch: int
    initial_iteration: int


# ---------------------------------------------------------------------------- recipe parts


def linear_decay(
    learning_rate: float, decay_steps: int
) -> tf.keras.optimizers.schedules.LearningRateSchedule:
    """`learning_rate` decaying linearly to 0 over `decay_steps` optimizer updates.

    `lr(i) = learning_rate * (1 - min(i, decay_steps) / decay_steps)`.

    Raises:
        ValueError: `learning_rate` <= 0 or `decay_steps` < 1.
    """
    if not learning_rate > 0:
        raise ValueError(f"Expected learning_rate > 0, but got {learning_rate!r}.")
    check_positive_int("decay_steps", decay_steps)
    return tf.keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps, end_learning_rate=0.0, power=1.0
    )


def decayed_weights(model: tf.keras.Model) -> list[tf.Variable]:
    """The weights weight decay applies to: trainable weights with 2 or more dimensions."""
    return [w for w in model.trainable_weights if w.shape.rank >= 2]


def add_weight_decay(model: tf.keras.Model, weight_decay: float) -> list[tf.Variable]:
    """Add coupled L2 weight decay to `model`'s losses (see the module docstring).

    Details:
        Adds the loss `weight_decay / 2 * sum(w**2)` over `decayed_weights(model)`, so
        each of their gradients gains `weight_decay * w`, as PyTorch Adam's `weight_decay`
        in ReActNet's code. Keras adds `model.losses` to the training loss (and
        `Distiller` does too). Nothing is added when `weight_decay` is 0.

    Returns:
        The decayed weights.

    Raises:
        ValueError: `weight_decay` < 0.
    """
    if not weight_decay >= 0:
        raise ValueError(f"Expected weight_decay >= 0, but got {weight_decay!r}.")
    weights = decayed_weights(model)
    if weight_decay > 0 and weights:
        model.add_loss(
            lambda: (weight_decay / 2) * tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights])
        )
    return weights


def transfer_weights(source: tf.keras.Model, target: tf.keras.Model) -> None:
    """Copy every weight of `source` into `target`, layer by layer, after checking they fit.

    Details:
        The zoo's one compatibility check (`larq_dysign.zoo.weights.check_compatible`, the
        one every checkpoint load makes): layers with weights are paired in order and must
        have the same names (ignoring the `_<n>` Keras appends when a model is built twice
        in a session) and weight shapes. Step 1 -> step 2 of the recipe always fits: the
        models differ only in their kernel quantizers.

    Raises:
        ValueError: naming the first layer whose name or shapes differ.
    """
    zoo_weights.check_compatible(target, source)
    source_layers = [layer for layer in source.layers if layer.weights]
    target_layers = [layer for layer in target.layers if layer.weights]
    for source_layer, target_layer in zip(source_layers, target_layers):
        target_layer.set_weights(source_layer.get_weights())


# ---------------------------------------------------------------------------- models


def resolve_model(model: str | Callable[..., tf.keras.Model]) -> tuple[str, Callable]:
    """The name and constructor of `model`: a zoo name, "module:function", or a callable.

    The constructor is called as the zoo's are: `fn(input_shape=..., num_classes=...,
    binary_weights=..., **model_kwargs)`.

    Raises:
        ValueError: an unknown zoo name (the known ones are listed) or an import path that
            does not resolve to a callable.
    """
    if callable(model):
        return getattr(model, "__name__", type(model).__name__), model
    if isinstance(model, str) and ":" in model:
        module_name, _, attribute = model.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f'Expected model "module:function" to name an importable callable, but got '
                f"{model!r} ({error})."
            ) from error
        if not callable(fn):
            raise ValueError(f"Expected {model!r} to be callable, but got {fn!r}.")
        return attribute, fn
    from .. import zoo

    return model, zoo.get_model_constructor(model)


def build_model(
    model: str | Callable[..., tf.keras.Model],
    *,
    step: int,
    input_shape: tuple[int, int, int],
    num_classes: int,
    model_kwargs: dict | None = None,
) -> tf.keras.Model:
    """The student of recipe step `step` (1: real weights, 2: binary weights).

    Call it inside `strategy.scope()` when training under a strategy.

    Raises:
        ValueError: `step` is not 1 or 2; see `resolve_model`.
    """
    if step not in RECIPE:
        raise ValueError(f"Expected step to be 1 or 2, but got {step!r}.")
    _, constructor = resolve_model(model)
    return constructor(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        binary_weights=RECIPE[step].binary_weights,
        **(model_kwargs or {}),
    )


#: `train(trainable=...)`: everything, or only the threshold layers and BatchNorm.
TRAINABLE = ("all", "thresholds")
THRESHOLD_LAYERS = (DySign, RSign, DyPReLU, RPReLU, tf.keras.layers.BatchNormalization)


def freeze_all_but_thresholds(model: tf.keras.Model) -> list[str]:
    """Freeze every layer but the threshold layers (DySign / RSign, DyPReLU / RPReLU: their
    hyper functions and static thresholds and shifts) and BatchNorm; call before compiling.

    Returns:
        The names of the layers left trainable.

    Raises:
        ValueError: the model has no threshold layer.
    """
    kept = []
    for layer in model.layers:
        layer.trainable = isinstance(layer, THRESHOLD_LAYERS)
        if layer.trainable and layer.weights:
            kept.append(layer.name)
    if not any(isinstance(model.get_layer(n), THRESHOLD_LAYERS[:-1]) for n in kept):
        raise ValueError(
            f'Expected a model with threshold layers for trainable="thresholds", but '
            f"{model.name} has none (DySign, RSign, DyPReLU, RPReLU)."
        )
    return kept


#: How a step that starts from random weights sets the sign thresholds: "zeros" (the
#: layers' own initializer, ReActNet's) or "data" (`initialize_thresholds`).
THRESHOLD_INITS = ("zeros", "data")
#: Training images `threshold_init="data"` averages over.
THRESHOLD_INIT_IMAGES = 256


def initialize_thresholds(model: tf.keras.Model, images) -> list[str]:
    """Set each sign layer's static threshold (RSign, DySign) to the mean of its input over
    `images`, per channel (one value for a `granularity="layer"` DySign), in the model's
    layer order, so each layer sees the inputs the thresholds before it produce.

    Why: a threshold starts at 0, but a sign layer's input need not be centred there. In
    ReActNet-A the real-valued path is never normalized (average-pool shortcuts, widths
    doubled by concatenation) and each RPReLU adds a positive mean, so at initialization
    the last blocks' signs see inputs of mean ~2.8 and output +1 for 92-96% of them, and
    only 13-20% of the inputs fall where the sign's gradient is not zero (docs/design.md,
    "Thresholds from data"). Learning the thresholds that far takes Adam thousands of
    updates. Training mode is used (BatchNorm normalizes with the batch's statistics, as in
    the first updates). The hyper functions are left as they are (their output starts at 0).

    Example:
        ```python
        model = zoo.ReActNetA(stem="small", width_multiplier=0.25, input_shape=(28, 28, 1),
                              num_classes=10)
        training.initialize_thresholds(model, images[:256])
        ```

    Returns:
        The names of the layers whose thresholds were set.
    """
    names = []
    for layer in model.layers:
        if isinstance(layer, RSign | DySign):
            inputs = tf.keras.Model(model.inputs, layer.input)(images, training=True)
            mean = tf.reduce_mean(inputs, axis=list(range(inputs.shape.rank - 1)))
            if layer.threshold.shape[0] != mean.shape[0]:  # one static threshold per layer
                mean = tf.reduce_mean(mean, keepdims=True)
            layer.threshold.assign(mean)
            names.append(layer.name)
    return names


def _threshold_images(dataset: tf.data.Dataset) -> tf.Tensor:
    """The first `THRESHOLD_INIT_IMAGES` images of a batched `(images, labels)` dataset."""
    sample = dataset.unbatch().take(THRESHOLD_INIT_IMAGES).batch(THRESHOLD_INIT_IMAGES)
    images, _ = next(iter(sample))
    return images


def metrics_for(num_classes: int) -> list:
    """Accuracy, plus top-5 accuracy when there are more than 10 classes."""
    metrics = [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if num_classes > 10:
        metrics.append(tf.keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
    return metrics


def compile_for_training(
    student: tf.keras.Model,
    *,
    optimizer: tf.keras.optimizers.Optimizer,
    num_classes: int,
    teacher: tf.keras.Model | None = None,
    label_weight: float = 0.0,
    jit_compile: bool = False,
) -> tf.keras.Model:
    """The model to `fit`: `student` with cross-entropy, or a `Distiller` with `teacher`.

    Call it inside the strategy's scope. `jit_compile=True` compiles the train step with
    XLA: on CPUs it avoids TensorFlow's slow `Conv2DBackpropInput` kernel for convs on 1x1
    to 2x2 maps (stage 4 of a ResNet on 28x28 inputs), where it took ~1 s per 128 images
    for a 512-channel 3x3 conv. The optimizer gets its slots for the student's trainable
    variables here: a checkpoint can restore them, and `fit` traces its train step once.
    """
    if teacher is None:
        student.compile(
            optimizer=optimizer,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=metrics_for(num_classes),
            jit_compile=jit_compile,
        )
        model = student
    else:
        model = Distiller(student, teacher, label_weight=label_weight)
        model.compile(
            optimizer=optimizer, metrics=metrics_for(num_classes), jit_compile=jit_compile
        )
    # The optimizer's slots now rather than in the first update: they must exist for a
    # checkpoint to restore them, and a tf.function that creates variables is traced twice,
    # so `fit` would build its whole train graph (forward, gradients, an Adam update per
    # variable) twice (measured: 35-40% of a first `fit`'s CPU time, DyResNet18 and
    # DyMobileNet at width 0.25).
    if isinstance(model.optimizer, tf.keras.optimizers.Optimizer):  # legacy ones build late
        model.optimizer.build(student.trainable_variables)
    return model


# ---------------------------------------------------------------------------- training


def _steps_per_epoch(steps_per_epoch, train_examples, info, global_batch) -> int:
    if steps_per_epoch is not None:
        check_positive_int("steps_per_epoch", steps_per_epoch)
        return steps_per_epoch
    examples = min(train_examples or info.train_examples, info.train_examples)
    if examples < global_batch:
        raise ValueError(
            f"Expected at least one global batch ({global_batch}) of training examples, but "
            f"the dataset has {examples}."
        )
    return examples // global_batch


def _teacher_name(teacher) -> str | None:
    """How the settings record the teacher: its path, a keras.applications name, a name."""
    if teacher is None:
        return None
    if isinstance(teacher, str | os.PathLike):
        path = os.path.expanduser(os.fspath(teacher))
        return os.path.abspath(path) if os.path.exists(path) else os.fspath(teacher)
    return getattr(teacher, "name", type(teacher).__name__)


def run_step(
    model: str | Callable[..., tf.keras.Model],
    *,
    step: int,
    pipelines: data_module.Pipelines,
    out_dir: str,
    epochs: int,
    steps_per_epoch: int,
    strategy: tf.distribute.Strategy,
    input_shape: tuple[int, int, int],
    num_classes: int,
    initial_model: tf.keras.Model | None = None,
    teacher: tf.keras.Model | None = None,
    label_weight: float = 0.0,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    weight_decay: float | None = None,
    validate: bool = True,
    validation_steps: int | None = None,
    model_kwargs: dict | None = None,
    callbacks: list | None = None,
    verbose: int | str = "auto",
    jit_compile: bool = False,
    trainable: str = "all",
    threshold_init: str = "zeros",
    settings: dict | None = None,
) -> StepResult:
    """Train one step of the recipe, resuming from `out_dir/step<N>/checkpoints` if any.

    Details:
        Builds the student (and compiles it, or a `Distiller` with `teacher`) inside
        `strategy.scope()`; copies `initial_model`'s weights into it (step 2: the step-1
        model) with `transfer_weights`; then restores model, optimizer (iteration count,
        Adam moments) and epoch from the newest intact checkpoint, if any, and continues
        from there. `settings` (the step's recipe, see `train`) are written to
        `step<N>/settings.json` on the first run and must match on a resumed one.
        `pipelines.train` must be batched with the global batch; it is repeated, and each
        epoch is `steps_per_epoch` updates. The chief worker writes the files listed in the
        module docstring; other workers write scratch copies.

    Returns:
        A `StepResult`.

    Raises:
        ValueError: the step directory was trained with other settings.
        RuntimeError: it holds checkpoints, none of them intact.
    """
    directory = os.path.join(out_dir, f"step{step}")
    checkpoint_dir = os.path.join(directory, "checkpoints")
    write_dir = distribute.worker_directory(directory, strategy)
    name, constructor = resolve_model(model)
    decay = RECIPE[step].weight_decay if weight_decay is None else weight_decay
    arguments = {
        "input_shape": tuple(input_shape),
        "num_classes": num_classes,
        "binary_weights": RECIPE[step].binary_weights,
        **(model_kwargs or {}),
    }

    with strategy.scope():
        student = build_model(
            model,
            step=step,
            input_shape=input_shape,
            num_classes=num_classes,
            model_kwargs=model_kwargs,
        )
        if initial_model is not None:
            transfer_weights(initial_model, student)
        elif threshold_init == "data" and not has_checkpoints(checkpoint_dir):
            initialize_thresholds(student, _threshold_images(pipelines.train))
        if trainable == "thresholds":
            freeze_all_but_thresholds(student)
        add_weight_decay(student, decay)
        schedule = linear_decay(learning_rate, epochs * steps_per_epoch)
        optimizer = tf.keras.optimizers.Adam(schedule)
        trainable = compile_for_training(
            student,
            optimizer=optimizer,
            num_classes=num_classes,
            teacher=teacher,
            label_weight=label_weight,
            jit_compile=jit_compile,
        )
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=student, optimizer=optimizer, epoch=epoch)
    settings = dict(settings or {})
    if initial_model is not None:
        settings["initial_weights_sha256"] = weights_digest(initial_model)
    check_settings(directory, settings, has_checkpoints=has_checkpoints(checkpoint_dir))
    latest, skipped = restore_latest_intact(checkpoint, checkpoint_dir)
    os.makedirs(write_dir, exist_ok=True)
    if write_dir == directory:
        write_json(os.path.join(directory, SETTINGS_FILE), settings)
    manager = tf.train.CheckpointManager(
        checkpoint,
        os.path.join(write_dir, "checkpoints"),
        max_to_keep=3 if write_dir == directory else 1,
    )
    initial_epoch = int(epoch.numpy())
    initial_iteration = int(optimizer.iterations.numpy())
    for prefix, reason in skipped:
        logger.warning("Step %d: skipped damaged checkpoint %s (%s).", step, prefix, reason)
        if verbose:
            print(f"Step {step}: skipped damaged checkpoint {prefix} ({reason}).")
    if latest:
        logger.info(
            "Step %d: resuming from %s (epoch %d, optimizer iteration %d).",
            step,
            latest,
            initial_epoch,
            initial_iteration,
        )
        if verbose:
            finished = " (finished: nothing to train)" if initial_epoch >= epochs else ""
            print(
                f"Step {step}: resuming from {latest} at epoch {initial_epoch}, "
                f"optimizer iteration {initial_iteration}.{finished}"
            )

    history_path = os.path.join(write_dir, "history.csv")
    truncate_history(history_path, initial_epoch)
    step_callbacks = [
        tf.keras.callbacks.CSVLogger(history_path, append=True),
        EpochCheckpoint(manager, epoch),
        # logs the learning rate too (its `epoch_learning_rate` scalar)
        tf.keras.callbacks.TensorBoard(
            os.path.join(write_dir, "logs"), write_graph=False, profile_batch=0
        ),
        *(callbacks or []),
    ]
    if initial_epoch < epochs:
        trainable.fit(
            pipelines.train.repeat(),
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=pipelines.eval if validate else None,
            validation_steps=validation_steps if validate else None,
            callbacks=step_callbacks,
            verbose=verbose,
        )

    weights_path = os.path.join(write_dir, f"{name}_step{step}.h5")
    with atomic_path(weights_path) as tmp:
        student.save_weights(tmp, save_format="h5")
    history = read_history(history_path)
    zoo_saved.save_model(
        student,
        os.path.join(write_dir, f"{name}_step{step}.keras"),
        model_name=name,
        constructor=constructor,
        arguments=arguments,
        dataset=settings.get("dataset"),
        step=step,
        recipe=settings,
        final_metrics={key: values[-1] for key, values in history.items() if values},
    )
    distribute.remove_worker_directory(directory, strategy)
    return StepResult(
        step=step,
        model=student,
        history=read_history(os.path.join(directory, "history.csv")),
        directory=directory,
        weights_path=os.path.join(directory, f"{name}_step{step}.h5"),
        model_path=os.path.join(directory, f"{name}_step{step}.keras"),
        initial_epoch=initial_epoch,
        initial_iteration=initial_iteration,
    )


def with_preset(
    preset: str,
    model,
    *,
    model_kwargs: dict | None,
    epochs: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    jit_compile: bool | None,
    threshold_init: str | None,
    init=None,
    dataset: str = "fashion_mnist",
    data_kwargs: dict | None = None,
) -> tuple[dict, int, int, float, bool, str | None, dict]:
    """`train`'s arguments completed from the zoo preset `preset` for `model`: the user's
    model arguments over the preset's, the preset's budget where a value is None, its
    `threshold_init` only for a run from scratch (without `init`), and its `augment` for the
    small datasets where `data_kwargs` does not say.

    Returns:
        `(model_kwargs, epochs, batch_size, learning_rate, jit_compile, threshold_init,
        data_kwargs)`.
    """
    chosen = zoo_presets.get_preset(preset, resolve_model(model)[0])
    if threshold_init is None and init is None:  # a preset's is for training from scratch
        threshold_init = chosen.threshold_init
    data_kwargs = dict(data_kwargs or {})
    if not chosen.augment and data_module.takes_augment(dataset):
        data_kwargs.setdefault("augment", False)
    return (
        {**chosen.model_kwargs, **(model_kwargs or {})},
        chosen.epochs if epochs is None else epochs,
        chosen.batch_size if batch_size is None else batch_size,
        chosen.learning_rate if learning_rate is None else learning_rate,
        chosen.jit_compile if jit_compile is None else jit_compile,
        threshold_init,
        data_kwargs,
    )


def _step_list(step) -> list[int]:
    step = str(step)
    if step not in STEPS:
        raise ValueError(f"Expected step to be one of {STEPS}, but got {step!r}.")
    return [1, 2] if step == "both" else [int(step)]


def train(
    model: str | Callable[..., tf.keras.Model],
    *,
    dataset: str,
    out_dir: str,
    epochs: int | None = None,
    batch_size: int | None = None,
    preset: str | None = None,
    step: str | int = "both",
    schedule: str = "two-step",
    steps_per_epoch: int | None = None,
    teacher: tf.keras.Model | str | None = None,
    label_weight: float = 0.0,
    strategy: str | tf.distribute.Strategy = "default",
    learning_rate: float | None = None,
    weight_decay: float | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
    data_kwargs: dict | None = None,
    init: str | None = None,
    trainable: str = "all",
    teacher_weights: str | None = "imagenet",
    validate: bool = True,
    validation_steps: int | None = None,
    callbacks: list | None = None,
    verbose: int | str = "auto",
    jit_compile: bool | None = None,
    threshold_init: str | None = None,
    fresh: bool = False,
) -> dict[int, StepResult]:
    """Train a zoo model with ReActNet's two-step recipe (see the module docstring).

    Details:
        Step 1 trains with real weights, step 2 with binary weights starting from step 1's
        (in memory when step 1 ran or was restored in this call; else from
        `out_dir/step1/<Model>_step1.h5`). `init` starts the first step run from other
        weights instead: `init="imagenet"` fine-tunes from the ImageNet weights the zoo has
        (ReActNet's, imported with `larq-dysign import-reactnet`; a Dy model starts from them
        with its hyper functions at zero, computing exactly ReActNet, and is built with the
        padding the weights were made for), and `trainable="thresholds"` trains only the
        threshold layers (DySign / RSign, DyPReLU / RPReLU: the hyper functions and the
        static thresholds and shifts) and BatchNorm, everything else frozen; a second run
        with `init=<the first run's saved model>` then fine-tunes everything. Each step runs
        `epochs` epochs and resumes from its own newest intact checkpoint, so running the
        same call again after a crash continues where it stopped (a finished step is
        restored, not retrained).
        Each step directory records its settings (`step<N>/settings.json`: model and every
        constructor argument, dataset and data options, epochs, steps per epoch, global
        batch, learning rate, weight decay, teacher, the digest of its initial weights);
        running it again with other settings raises, naming the differences, unless
        `fresh=True`, which deletes the directories of the steps to run first. Each step
        ends by saving the whole model as `<Model>_step<N>.keras` beside
        `<Model>_step<N>.json` (`larq_dysign.zoo.load_saved_model` reads both), and its
        weights as `<Model>_step<N>.h5`.

    Example:
        ```python
        results = train("ReActNet18", dataset="fashion_mnist", epochs=3, batch_size=64,
                        out_dir="runs/fm", model_kwargs={"stem": "imagenet"})
        results[2].history["val_accuracy"][-1]
        ```

    Args:
        model: a zoo model name, "module:function", or a constructor taking
            `input_shape`, `num_classes`, `binary_weights` (and `model_kwargs`).
        dataset: "imagenet2012", "cifar10" or "fashion_mnist" (`larq_dysign.training.data`).
        out_dir: output directory (checkpoints, logs, CSV history, saved models per step).
        epochs: epochs of each step (default: the preset's).
        batch_size: per-replica batch size; the global batch is this times the replicas
            (default: the preset's).
        preset: a zoo preset (`zoo.PRESETS`, e.g. "small-input"): its model arguments under
            `model_kwargs`, and its epochs, batch size, learning rate, XLA setting, threshold
            initialization and augmentation (`data_kwargs["augment"]`) where those are not
            given.
        step: 1, 2 or "both".
        schedule: "two-step" (the recipe above), or "one-step": step 2 only, binary weights
            from random initialization (or from `init`), for short budgets; `step` must then
            be "both" (the default).
        steps_per_epoch: updates per epoch; default one pass over the train split.
        teacher: a full-precision `tf.keras.Model` or saved-model path; distils both steps.
        label_weight: weight of the label cross-entropy next to distillation (0: KL only).
        strategy: a `tf.distribute.Strategy`, or a name for `distribute.make_strategy`.
        learning_rate: Adam's initial learning rate (not scaled with the batch; see above;
            default the preset's, else 5e-4).
        weight_decay: overrides the recipe's (1e-5 for step 1, 0 for step 2).
        input_shape, num_classes: default to the dataset's.
        model_kwargs: more constructor arguments, e.g. `{"stem": "small"}`.
        data_kwargs: more dataset arguments, e.g. `{"train_examples": 2048}`.
        init: the weights the first step run starts from: a registered dataset ("imagenet"),
            a checkpoint or a saved model (anything the zoo's `weights=` takes); default
            none for step 1, and step 1's weights in `out_dir` for `step=2`.
        trainable: "all", or "thresholds": only the threshold layers and BatchNorm train.
        teacher_weights: for a `teacher` given by keras.applications name, "imagenet" or
            None (random, for tests).
        validate: evaluate on the eval split after each epoch.
        validation_steps: batches per evaluation; default the whole split.
        callbacks: more Keras callbacks, given to both steps.
        verbose: Keras' `fit` verbosity ("auto", 0, 1 = progress bar, 2 = one line).
        jit_compile: compile the train step with XLA (see `compile_for_training`); about
            2x faster for ResNets on 28x28 inputs on CPU, after a longer first step (default
            the preset's, else False).
        threshold_init: "zeros" (ReActNet's), or "data": before the first update of a step
            that starts from random weights (step 1, or the one-step schedule, without
            `init`), every RSign / DySign threshold is set to the mean of its input over
            256 training images (`initialize_thresholds`); default the preset's (without
            `init`), else "zeros". Not with `init`, nor with the multiworker or TPU
            strategies.
        fresh: delete the step directories of an earlier run in `out_dir` and start over.

    Returns:
        `{step: StepResult}` for the steps run.

    Raises:
        ValueError: a bad argument (unknown model, dataset, step or strategy, ...), or an
            `out_dir` trained with other settings.
        FileNotFoundError: `step=2` without step-1 weights, or `init` not found.
        RuntimeError: a step directory holds checkpoints, none of them intact.
    """
    steps = _step_list(step)
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "one-step":
        if str(step) != "both":
            raise ValueError(
                "Expected step to be 'both' (the default) with schedule='one-step', which "
                f"trains one step, binary weights from the start; but got {step!r}."
            )
        steps = [2]
    if preset is not None:
        (
            model_kwargs,
            epochs,
            batch_size,
            learning_rate,
            jit_compile,
            threshold_init,
            data_kwargs,
        ) = with_preset(
            preset,
            model,
            model_kwargs=model_kwargs,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            jit_compile=jit_compile,
            threshold_init=threshold_init,
            init=init,
            dataset=dataset,
            data_kwargs=data_kwargs,
        )
    learning_rate = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
    threshold_init = "zeros" if threshold_init is None else threshold_init
    check_choice("threshold_init", threshold_init, THRESHOLD_INITS)
    jit_compile = bool(jit_compile)
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if not isinstance(fresh, bool):
        raise ValueError(f"Expected fresh to be True or False, but got {fresh!r}.")
    info = data_module.dataset_info(dataset)
    name, constructor = resolve_model(model)
    if threshold_init == "data" and init is not None:
        raise ValueError(
            f"Expected threshold_init='zeros' with init={init!r}: thresholds are set from data "
            "for a model that starts from random weights, and init starts from trained ones."
        )
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)
    if threshold_init == "data" and isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy | tf.distribute.TPUStrategy
    ):
        raise ValueError(
            "Expected threshold_init='zeros' with a multiworker or TPU strategy, but got "
            f"'data' with {type(strategy).__name__}: each worker would set the thresholds "
            "from its own images (one machine: the default or mirrored strategy)."
        )
    input_shape = tuple(input_shape or info.input_shape)
    num_classes = num_classes or info.num_classes
    global_batch = batch_size * strategy.num_replicas_in_sync
    data_kwargs = dict(data_kwargs or {})
    steps_per_epoch = _steps_per_epoch(
        steps_per_epoch, data_kwargs.get("train_examples"), info, global_batch
    )
    check_choice("trainable", trainable, TRAINABLE)
    model_kwargs = dict(model_kwargs or {})
    zoo_saved.constructor_arguments(constructor, **model_kwargs)
    zoo_model = isinstance(model, str) and ":" not in model
    if init is not None and zoo_model and "padding" not in model_kwargs:
        if "padding" in inspect.signature(constructor).parameters:
            # the padding the weights were made for, recorded so a rebuild gets it too
            model_kwargs["padding"] = zoo_common.resolve_padding(
                None, init, model_name=name, include_top=True
            )
    source = init
    if source is None and steps == [2] and schedule == "two-step":
        source = os.path.join(out_dir, "step1", f"{name}_step1.h5")
        if not os.path.exists(source):
            raise FileNotFoundError(
                f"Step 2 starts from step 1's weights, but {source} does not exist: run "
                "step 1 first (same out_dir), or pass init."
            )
    # every argument is checked before anything is written or deleted: the constructor
    # validates its own (the initial model, or a throwaway build: seconds even at 224)
    with strategy.scope():
        initial_model = build_model(
            model,
            step=1 if source is not None else steps[0],
            input_shape=input_shape,
            num_classes=num_classes,
            model_kwargs={**model_kwargs, **({"weights": source} if zoo_model and source else {})},
        )
        if source is not None and not zoo_model:
            initial_model.load_weights(source)
    if source is None:
        initial_model = None
    if fresh:
        for current in steps:
            directory = os.path.join(out_dir, f"step{current}")
            if os.path.isdir(directory) and distribute.is_chief(strategy):
                if verbose:
                    print(f"Starting over (fresh): removing {directory}.")
                shutil.rmtree(directory)

    pipelines = data_module.load(dataset, batch_size=global_batch, **data_kwargs)
    teacher_name = _teacher_name(teacher)
    teacher_by_name = isinstance(teacher, str) and not os.path.exists(os.path.expanduser(teacher))
    if teacher is not None:
        with strategy.scope():
            teacher = load_teacher(teacher, input_shape=input_shape, weights=teacher_weights)
        if teacher.output_shape[-1] != num_classes:
            raise ValueError(
                f"Expected teacher to output {num_classes} classes (the student's), but "
                f"{teacher.name} outputs {teacher.output_shape[-1]}."
            )

    results = {}
    for current in steps:
        if verbose:
            print(
                f"Step {current}: {name} on {dataset}, {strategy.num_replicas_in_sync} "
                f"replica(s), global batch {global_batch}, {steps_per_epoch} steps per epoch, "
                f"{epochs} epochs, binary weights {RECIPE[current].binary_weights}"
                + (" (one-step schedule)." if schedule == "one-step" else ".")
            )
        decay = RECIPE[current].weight_decay if weight_decay is None else weight_decay
        data_init = threshold_init == "data" and initial_model is None
        settings = {
            "model": name,
            "arguments": zoo_saved.constructor_arguments(
                constructor,
                input_shape=input_shape,
                num_classes=num_classes,
                binary_weights=RECIPE[current].binary_weights,
                **(model_kwargs or {}),
            ),
            "dataset": dataset,
            "data": {k: v for k, v in data_kwargs.items() if k in _RESULT_DATA_OPTIONS},
            "step": current,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "global_batch_size": global_batch,
            "learning_rate": learning_rate,
            "weight_decay": decay,
            "teacher": teacher_name,
            "teacher_weights": teacher_weights if teacher_by_name else None,
            "label_weight": label_weight if teacher is not None else None,
            "init": init if current == steps[0] else None,
            "trainable": trainable,
            "jit_compile": jit_compile,
            # recorded for one-step runs only: two-step directories written before the option
            # existed still resume
            **({"schedule": schedule} if schedule != "two-step" else {}),
            # recorded where applied only, as "schedule"
            **({"threshold_init": "data"} if data_init else {}),
        }
        result = run_step(
            model,
            step=current,
            pipelines=pipelines,
            out_dir=out_dir,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            strategy=strategy,
            input_shape=input_shape,
            num_classes=num_classes,
            initial_model=initial_model,
            teacher=teacher,
            label_weight=label_weight,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            validate=validate,
            validation_steps=validation_steps,
            model_kwargs=model_kwargs,
            callbacks=callbacks,
            verbose=verbose,
            jit_compile=jit_compile,
            trainable=trainable,
            threshold_init="data" if data_init else "zeros",
            settings=settings,
        )
        results[current] = result
        initial_model = result.model
    return results


#: Data options that change what a step computes (recorded in its settings); the others
#: (directories) only say where the same data is.
_RESULT_DATA_OPTIONS = ("train_examples", "augment", "eval_examples")


def evaluate(
    model: str | Callable[..., tf.keras.Model],
    *,
    weights: str | None = None,
    dataset: str | None = None,
    batch_size: int = 64,
    step: int = 2,
    strategy: str | tf.distribute.Strategy = "default",
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
    data_kwargs: dict | None = None,
    steps: int | None = None,
    verbose: int | str = "auto",
) -> dict[str, float]:
    """Loss and accuracy of a trained model on the dataset's eval split.

    Example:
        ```python
        evaluate("runs/fm")                      # a saved model or run directory of `train`
        evaluate("ReActNet18", weights="runs/fm/step2/ReActNet18_step2.h5",
                 dataset="fashion_mnist")        # {"loss": ..., "accuracy": ...}
        ```

    Args:
        model: a saved model written by `train` (`.keras`, its `.json`, or a run directory:
            built as saved, `dataset` defaults to the one it was trained on), or as for
            `train` with `weights`.
        weights: for a zoo model, a checkpoint (anything the zoo's `weights=` takes).
        dataset: "imagenet2012", "cifar10" or "fashion_mnist".
        batch_size: per-replica batch size.
        step: for a zoo model, 2 (binary weights, the final model) or 1 (real weights).
        strategy, input_shape, num_classes, model_kwargs, data_kwargs: as for `train`.
        steps: batches to evaluate; default the whole split.
        verbose: Keras' `evaluate` verbosity.

    Returns:
        `{"loss": ..., "accuracy": ...}` (and "top5" for more than 10 classes).

    Raises:
        ValueError: a bad argument.
        FileNotFoundError: `weights` or the saved model does not exist.
    """
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)
    saved = isinstance(model, str) and zoo_saved.looks_like_saved_model(model)
    if saved:
        building = {"weights": weights, "input_shape": input_shape, "num_classes": num_classes}
        given = [key for key, value in building.items() if value is not None]
        given += ["model_kwargs"] if model_kwargs else []
        if given:
            raise ValueError(
                f"A saved model is evaluated as it was saved: {', '.join(given)} cannot be "
                f"given with {model!r}."
            )
        description = zoo_saved.read_description(model)
        dataset = dataset or description.get("dataset")
    info = data_module.dataset_info(dataset)
    with strategy.scope():
        if saved:
            net, _ = zoo_saved.load_saved_model(model)
        else:
            if weights is None:
                raise ValueError(
                    "Expected weights (a checkpoint) for a zoo model name, or a saved model "
                    f"written by `train` instead of {model!r}."
                )
            zoo_model = isinstance(model, str) and ":" not in model
            net = build_model(
                model,
                step=step,
                input_shape=tuple(input_shape or info.input_shape),
                num_classes=num_classes or info.num_classes,
                # zoo constructors load (and check) any checkpoint format themselves
                model_kwargs={
                    **(model_kwargs or {}),
                    **({"weights": weights} if zoo_model else {}),
                },
            )
            if not zoo_model:
                if not os.path.exists(weights) and not os.path.exists(f"{weights}.index"):
                    raise FileNotFoundError(
                        f"Expected weights to be a checkpoint file, but {weights} does not exist."
                    )
                net.load_weights(weights)
        net.compile(
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=metrics_for(int(net.output_shape[-1])),
        )
    pipelines = data_module.load(
        dataset, batch_size=batch_size * strategy.num_replicas_in_sync, **(data_kwargs or {})
    )
    return net.evaluate(pipelines.eval, steps=steps, verbose=verbose, return_dict=True)
