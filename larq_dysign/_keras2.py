"""Bind `tf.keras` to Keras 2 (tf-keras) before TensorFlow is imported.

Larq and Larq Compute Engine only work with legacy Keras. With TensorFlow >= 2.16,
`import tensorflow` reads `TF_USE_LEGACY_KERAS` and routes `tf.keras.*` submodules to
Keras 3 or tf-keras for good (its lazy `tf.keras` object reads the variable again later, but
the submodule routing is already fixed, and larq then fails deep inside). So the variable
must be set before tensorflow is imported; if it was imported without it, raise clearly.
"""

import os
import sys

KERAS3_ERROR = (
    "larq_dysign needs Keras 2 (tf-keras), but `tf.keras` is already bound to Keras 3: "
    "tensorflow was imported before larq_dysign without TF_USE_LEGACY_KERAS=1, and "
    "TensorFlow fixes its Keras when it is imported. Fix: import larq_dysign before "
    "tensorflow and larq, or set the environment variable TF_USE_LEGACY_KERAS=1 before "
    "starting Python "
    "(e.g. `export TF_USE_LEGACY_KERAS=1`, or os.environ in a notebook's first cell)."
)


def _tensorflow_uses_keras3(tf_module) -> bool:
    """Whether an imported tensorflow module routes `tf.keras` to Keras 3."""
    if hasattr(tf_module, "_tf_uses_legacy_keras"):  # TF >= 2.16: decided at import
        return not tf_module._tf_uses_legacy_keras
    keras = vars(tf_module).get("keras")  # older TF: tf.keras is Keras 2 unless rebound
    return str(getattr(keras, "__version__", "2")).startswith("3")


def use_legacy_keras() -> None:
    """Set `TF_USE_LEGACY_KERAS=1`, or raise if tensorflow already chose Keras 3.

    Raises:
        ImportError: tensorflow was imported before this call without the variable.
    """
    tf_module = sys.modules.get("tensorflow")
    if tf_module is not None and _tensorflow_uses_keras3(tf_module):
        raise ImportError(KERAS3_ERROR)
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
