"""Shared test set-up: Keras 2 before TensorFlow, quiet logs, deterministic seeds."""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import larq_dysign  # noqa: E402,F401  (binds tf.keras to Keras 2 before tensorflow loads)
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from larq_dysign.training.data import load_fashion_mnist_arrays  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def tiny_models_env() -> dict:
    """The environment of a subprocess that imports "tinymodels:tiny_bnn" (tests/tinymodels.py)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="session")
def fashion_mnist_sample():
    """512 real Fashion-MNIST training images (N, 28, 28, 1) in [-1, 1] and their labels."""
    images, labels = load_fashion_mnist_arrays("train")
    return images[:512].astype("float32") / 127.5 - 1.0, labels[:512]


def pytest_collection_modifyitems(items):
    """Tests marked `slow` (conversions at 224, end-to-end subprocess runs, training) first:
    pytest-xdist hands tests out in this order, so the long ones start on both workers at
    once instead of one of them ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
