"""What makes a training run survive: per-epoch checkpoints, resume from the newest intact
one, a history kept consistent with it, and the settings a step directory was trained with.

A step directory (`<out>/step<N>/`) holds `checkpoints/ckpt-<n>` (model, optimizer, epoch
after epoch n; the last three kept), `history.csv` (one row per epoch), `settings.json` (what
the step computes with; a run with other settings is refused), and, once finished, the
saved model. docs/reliability.md lists the faults this survives and their tests.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re

import numpy as np
import tensorflow as tf

from ..files import write_atomically


def read_history(path: str) -> dict[str, list[float]]:
    """A `CSVLogger` file as `{column: [float per epoch]}` (empty if there is no file).

    Columns with no value in any row (the "NA" `val_*` columns of a run without validation)
    are left out.
    """
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in (rows[0].keys() if rows else []) if any(r[c] != "NA" for r in rows)]
    return {c: [float("nan") if r[c] == "NA" else float(r[c]) for r in rows] for c in columns}


def truncate_history(path: str, epochs: int) -> None:
    """Keep only the complete rows of epochs `< epochs` in a `CSVLogger` file (on resume).

    A run killed after writing an epoch's row but before that epoch's checkpoint would
    otherwise repeat the row; a row cut short by the kill is dropped too.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        text = f.read()
    rows = list(csv.reader(text.splitlines()))
    if rows and not text.endswith("\n"):
        rows = rows[:-1]  # CSVLogger ends every row with a newline: this one was cut
    if not rows:
        os.remove(path)  # not even a complete header: CSVLogger starts a new file
        return

    def keep(row) -> bool:
        try:
            return len(row) == len(rows[0]) and int(float(row[0])) < epochs
        except ValueError:
            return False

    kept = [rows[0]] + [row for row in rows[1:] if keep(row)]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(kept)
    write_atomically(path, buffer.getvalue())


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves a `tf.train.Checkpoint` (model, optimizer, epoch) after every epoch.

    Checkpoint `n` holds the state after `n` epochs; `epoch` records `n`, the epoch to
    resume from. Keras' `BackupAndRestore` keeps one checkpoint and deletes it when training
    ends; this keeps the last three, so a damaged newest one falls back to an older one
    (`restore_latest_intact`), and the last one marks a finished step. Place it after
    `CSVLogger`: every checkpointed epoch then has its CSV row, and a row written just before
    a kill, without its checkpoint, is removed on resume by `truncate_history`.
    """

    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self.manager = manager
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


_CHECKPOINT_NUMBER = re.compile(r"ckpt-(\d+)\.index$")


def has_checkpoints(directory: str) -> bool:
    """Whether `directory` holds any `ckpt-<n>` checkpoint (intact or not)."""
    return os.path.isdir(directory) and any(
        _CHECKPOINT_NUMBER.fullmatch(name) for name in os.listdir(directory)
    )


def restore_latest_intact(
    checkpoint: tf.train.Checkpoint, directory: str
) -> tuple[str | None, list[tuple[str, str]]]:
    """Restore the newest checkpoint in `directory` that reads back whole.

    Checkpoints are found by their `ckpt-<n>.index` files, not by the `checkpoint` state
    file (which a crash or a user can damage), and tried newest first; one whose index or
    data is missing, truncated or fails TensorFlow's checksums is skipped.

    Returns:
        The restored prefix (None when the directory holds no checkpoint), and the skipped
        ones as `(prefix, reason)`.

    Raises:
        RuntimeError: checkpoints exist but none is intact (naming the directory).
    """
    if not os.path.isdir(directory):
        return None, []
    numbered = [
        (int(match.group(1)), os.path.join(directory, name[: -len(".index")]))
        for name in os.listdir(directory)
        if (match := _CHECKPOINT_NUMBER.fullmatch(name))
    ]
    skipped = []
    for _, prefix in sorted(numbered, reverse=True):
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except Exception as error:  # noqa: BLE001 (TF raises OpError, IndexError, ... on damage)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            skipped.append((prefix, f"{type(error).__name__}: {reason}"))
            continue
        return prefix, skipped
    if skipped:
        raise RuntimeError(
            f"No intact checkpoint in {directory}: "
            + "; ".join(f"{os.path.basename(p)} ({reason})" for p, reason in skipped)
            + ". Nothing was changed; pass fresh=True (--fresh) to start this step over."
        )
    return None, []


def weights_digest(model: tf.keras.Model) -> str:
    """sha256 of every weight's values, in the model's order: identifies the exact state a
    recipe step started from (step 2's record of the step-1 weights it was given)."""
    digest = hashlib.sha256()
    for value in model.get_weights():
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


SETTINGS_FILE = "settings.json"
#: Settings that do not change what a step computes: a resumed run may change them.
_FREE_SETTINGS = ("jit_compile",)


def json_round_trip(value):
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _differences(key: str, recorded, current) -> list[str]:
    """ "key recorded (now current)" for each differing leaf, nested keys joined by dots."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return [
            difference
            for name in sorted(set(recorded) | set(current))
            for difference in _differences(f"{key}.{name}", recorded.get(name), current.get(name))
        ]
    return [] if recorded == current else [f"{key} {recorded!r} (now {current!r})"]


def check_settings(directory: str, settings: dict, *, has_checkpoints: bool) -> None:
    """Refuse to continue a step directory that was trained with other settings."""
    path = os.path.join(directory, SETTINGS_FILE)
    if not os.path.exists(path):
        if has_checkpoints:
            raise ValueError(
                f"{directory} holds checkpoints but no {SETTINGS_FILE}: it was not written by "
                "this version of larq-dysign. Pass fresh=True (--fresh) to start this step "
                "over, or choose another output directory."
            )
        return
    with open(path) as f:
        try:
            recorded = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is damaged ({error}); pass fresh=True (--fresh) to start over."
            ) from error
    differences = [
        difference
        for key in sorted(set(recorded) | set(settings))
        if key not in _FREE_SETTINGS
        for difference in _differences(key, recorded.get(key), json_round_trip(settings.get(key)))
    ]
    if differences:
        raise ValueError(
            f"{directory} was trained with other settings: {'; '.join(differences)}. Pass "
            "fresh=True (--fresh) to start over, or choose another output directory."
        )
