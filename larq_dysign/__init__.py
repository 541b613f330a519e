"""larq-dysign: binary neural networks with dynamic binarization thresholds.

Importing this package binds `tf.keras` to Keras 2 (tf-keras), which Larq and Larq Compute
Engine require; import it before tensorflow or larq.

Example:
    >>> from larq_dysign import DySign, zoo          # doctest: +SKIP
    >>> model = zoo.DyResNet18(input_shape=(28, 28, 1), num_classes=10)  # doctest: +SKIP
"""

from larq_dysign._keras2 import use_legacy_keras
from larq_dysign._logs import hide_tensorflow_logs_on_the_command_line

hide_tensorflow_logs_on_the_command_line()
use_legacy_keras()

from larq_dysign import zoo  # noqa: E402  (registers the zoo's layers for load_model)
from larq_dysign.layers import (  # noqa: E402  (must follow use_legacy_keras)
    BinaryDense,
    DyPReLU,
    DySign,
    PositionEmbedding,
    RPReLU,
    RSign,
    ScaledDotProductAttention,
    channel_statistics,
    dynamic_sign,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BinaryDense",
    "DyPReLU",
    "DySign",
    "PositionEmbedding",
    "RPReLU",
    "RSign",
    "ScaledDotProductAttention",
    "channel_statistics",
    "dynamic_sign",
    "zoo",
    "__version__",
]
