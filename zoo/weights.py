"""Pretrained weights: loading a checkpoint into a zoo model.

Minimal for now (local files); the weights issue adds the registry, download and cache.
"""

from __future__ import annotations

import os

import tensorflow as tf


def load_pretrained(
    model: tf.keras.Model, weights: str | os.PathLike | None, *, model_name: str, include_top: bool
) -> None:
    """Load `weights` into `model` in place: None (nothing) or a path to a checkpoint.

    Raises:
        ValueError: `weights` is neither None nor an existing file.
    """
    if weights is None:
        return
    if os.path.isfile(weights):
        model.load_weights(os.fspath(weights), skip_mismatch=False, by_name=False)
        return
    raise ValueError(
        f"Expected weights for {model_name} to be None or the path to a checkpoint file, "
        f"but got {weights!r} (no such file)."
    )
