"""ImageNet helpers that work offline: input preprocessing and decoding of predictions."""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import tensorflow as tf

CLASS_INDEX_PATH = os.path.join(os.path.dirname(__file__), "imagenet_class_index.json")


def normalize(images) -> tf.Tensor:
    """Scale images from [0, 255] to [-1, 1]: `images / 127.5 - 1` (larq-zoo's convention).

    The one normalization of the package: every pipeline here applies it, and
    `zoo.preprocess_input` does the same to user images, so models trained here and images
    prepared for inference agree.

    Example:
        ```python
        normalize(tf.constant([0, 127.5, 255]))   # [-1., 0., 1.]
        ```

    Args:
        images: uint8 or float values in [0, 255], any shape.

    Returns:
        A float32 tensor of the same shape, values in [-1, 1].
    """
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def preprocess_input(x):
    """Scale images from [0, 255] to [-1, 1] (`x / 127.5 - 1`), as larq-zoo's models expect.

    The same function as `normalize`, which every data pipeline applies.

    Example:
        ```python
        probabilities = model.predict(zoo.preprocess_input(images_uint8))
        ```

    Args:
        x: images (NumPy array or tensor), any shape, values in [0, 255].

    Returns:
        float32 values in [-1, 1], a NumPy array for NumPy input, else a tensor.
    """
    outputs = normalize(x)
    return outputs.numpy() if isinstance(x, np.ndarray) else outputs


@functools.lru_cache(maxsize=1)
def _class_index() -> dict[int, tuple[str, str]]:
    with open(CLASS_INDEX_PATH) as f:
        return {int(k): (v[0], v[1]) for k, v in json.load(f).items()}


def decode_predictions(predictions, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """The `top` ImageNet classes of each prediction, as `(wordnet_id, name, score)`.

    Works offline: the class index (Keras's, rebuilt from WordNet by
    `scripts/make_imagenet_class_index.py`) ships with the package.

    Example:
        ```python
        zoo.decode_predictions(model.predict(x), top=3)[0]
        # [('n02123045', 'tabby', 0.41), ('n02124075', 'Egyptian_cat', 0.22), ...]
        ```

    Args:
        predictions: array of shape `(N, 1000)`.
        top: how many classes per sample, 1 to 1000.

    Returns:
        One list per sample of `(wordnet_id, class_name, score)`, highest score first.

    Raises:
        ValueError: `predictions` is not `(N, 1000)`, or `top` is out of range.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[1] != 1000:
        raise ValueError(
            "Expected predictions of shape (samples, 1000) (ImageNet classes), but got "
            f"shape {predictions.shape}."
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValueError(f"Expected top to be an integer in [1, 1000], but got {top!r}.")
    index = _class_index()
    decoded = []
    for row in predictions:
        best = np.argsort(row)[::-1][:top]
        decoded.append([(*index[int(i)], float(row[i])) for i in best])
    return decoded
