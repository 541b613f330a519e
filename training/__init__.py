"""Training wing: ReActNet's two-step recipe, data pipelines, distillation, tf.distribute.

`larq_dysign.training` is the recipe (`train`, `evaluate` and their parts, from `recipe.py`);
its modules `data` (pipelines), `distill` (KL distillation from a teacher), `distribute`
(strategies) and `commands` (`larq-dysign train` / `evaluate`) sit beside it. The training
wing imports the core and the zoo, never the other way round (docs/design.md, "Layout").

Example:
    ```python
    from larq_dysign import training
    results = training.train("DyResNet18", dataset="fashion_mnist", epochs=3, batch_size=128,
                             out_dir="runs/fm")
    ```
"""

from .checkpoints import (
    EpochCheckpoint,
    read_history,
    restore_latest_intact,
    truncate_history,
)
from .distill import Distiller, distillation_loss, load_teacher
from .recipe import (
    DEFAULT_LEARNING_RATE,
    RECIPE,
    SCHEDULES,
    STEPS,
    THRESHOLD_INITS,
    StepRecipe,
    StepResult,
    add_weight_decay,
    build_model,
    compile_for_training,
    decayed_weights,
    evaluate,
    initialize_thresholds,
    linear_decay,
    metrics_for,
    resolve_model,
    run_step,
    train,
    transfer_weights,
)

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "RECIPE",
    "SCHEDULES",
    "STEPS",
    "THRESHOLD_INITS",
    "Distiller",
    "EpochCheckpoint",
    "StepRecipe",
    "StepResult",
    "add_weight_decay",
    "build_model",
    "compile_for_training",
    "decayed_weights",
    "distillation_loss",
    "evaluate",
    "initialize_thresholds",
    "linear_decay",
    "load_teacher",
    "metrics_for",
    "read_history",
    "resolve_model",
    "restore_latest_intact",
    "run_step",
    "train",
    "transfer_weights",
    "truncate_history",
]
