"""Scale-out through `tf.distribute`: strategies by name, and who writes files.

Training code builds the model and optimizer inside `strategy.scope()` and batches data
with the global batch size, `per-replica batch x strategy.num_replicas_in_sync`; Keras
splits each global batch across the replicas and all-reduces the gradients.

| name | strategy | where the replicas come from |
| --- | --- | --- |
| `default` | the default (no-op) strategy | one device |
| `mirrored` | `MirroredStrategy` | every local GPU (else the CPU) |
| `multiworker` | `MultiWorkerMirroredStrategy` | every worker's devices (`TF_CONFIG`) |
| `tpu` | `TPUStrategy` | the TPU named by `tpu` (or `$TPU_NAME`, or the local one) |

`MultiWorkerMirroredStrategy` must be created before TensorFlow runs any op: create the
strategy first in a program (the CLI does).

Example:
    ```python
    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = zoo.DyResNet18()
    ```
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def make_strategy(name: str = "default", *, tpu: str | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (see the module docstring).

    Args:
        name: "default", "mirrored", "multiworker" or "tpu".
        tpu: for "tpu", the TPU's name or `grpc://` address (default: `$TPU_NAME`, else
            the TPU attached to this host).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: unknown `name`; `tpu` given for another strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Expected strategy to be one of {STRATEGIES}, but got {name!r}.")
    if tpu is not None and name != "tpu":
        raise ValueError(f'Expected tpu only with strategy="tpu", but got strategy={name!r}.')
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=tpu if tpu is not None else os.environ.get("TPU_NAME", "")
    )
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _task(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None, dict]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, {}
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (checkpoints, logs, weights).

    True without a cluster, for the "chief" task, and for worker 0 of a cluster that has no
    chief (Keras' convention for `MultiWorkerMirroredStrategy`).
    """
    task_type, task_id, cluster = _task(strategy)
    if not cluster or task_type in (None, "chief"):
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_directory(directory: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes what belongs in `directory`.

    The chief writes in `directory`; every other worker must still save (saving may run
    collective ops) but into its own `directory/.worker-<id>`, removed by
    `remove_worker_directory`.
    """
    if is_chief(strategy):
        return directory
    _, task_id, _ = _task(strategy)
    return os.path.join(directory, f".worker-{task_id}")


def remove_worker_directory(directory: str, strategy: tf.distribute.Strategy) -> None:
    """Delete a non-chief worker's scratch copy made under `worker_directory`."""
    if not is_chief(strategy):
        shutil.rmtree(worker_directory(directory, strategy), ignore_errors=True)
