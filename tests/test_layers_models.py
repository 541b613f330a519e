"""The layers inside models: serialization round trips, LCE conversion, larq's summary."""

import os
import subprocess
import sys

import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

from larq_dysign import BinaryDense, DyPReLU, DySign, RPReLU, RSign
from larq_dysign.export import op_histogram

# one xdist group: its module fixture (the trained model) is built once, not per worker
pytestmark = pytest.mark.xdist_group("test_layers_models")

BINARY_INPUT = lq.quantizers.NoOp(precision=1)


def _binary_conv(filters, input_quantizer=BINARY_INPUT, **kwargs):
    return lq.layers.QuantConv2D(
        filters,
        3,
        padding="same",
        pad_values=1.0,
        use_bias=False,
        input_quantizer=input_quantizer,
        kernel_quantizer="magnitude_aware_sign",
        kernel_constraint="weight_clip",
        **kwargs,
    )


def small_binary_model(num_classes=10):
    """Every layer family once: DySign standalone and as input_quantizer, RSign, both PReLUs,
    a residual binary conv block, and a token block of BinaryDense layers."""
    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)  # 14x14x32
    # residual block with a standalone DySign
    h = DySign(name="dysign_standalone")(x)
    h = _binary_conv(32, name="bconv_1")(h)
    h = tf.keras.layers.BatchNormalization()(h)
    x = DyPReLU(name="dyprelu")(tf.keras.layers.add([h, x]))
    # residual block with DySign inside the conv
    h = _binary_conv(32, input_quantizer=DySign(granularity="layer"), name="bconv_2")(x)
    h = tf.keras.layers.BatchNormalization()(h)
    x = RPReLU(name="rprelu")(tf.keras.layers.add([h, x]))
    # RSign block
    h = _binary_conv(32, input_quantizer=RSign(), name="bconv_3")(x)
    x = tf.keras.layers.add([tf.keras.layers.BatchNormalization()(h), x])
    # tokens: 49 tokens of dim 32, then binary linears on (B, N, D) and on (B, 1, N, D)
    x = tf.keras.layers.MaxPool2D(2)(x)
    tokens = tf.keras.layers.Reshape((49, 32))(x)
    t = BinaryDense(64, input_quantizer=DySign(statistics="mean_std"), name="bdense_1")(tokens)
    t = tf.keras.layers.LayerNormalization()(t)
    t = tf.keras.layers.Reshape((1, 49, 64))(t)
    t = BinaryDense(32, input_quantizer=RSign(), name="bdense_2")(t)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(t)
    outputs = tf.keras.layers.Dense(num_classes, name="head")(pooled)
    return tf.keras.Model(inputs, outputs)


BINARY_LAYERS = {"bconv_1", "bconv_2", "bconv_3", "bdense_1", "bdense_2"}


def _randomize_dynamic_parts(model):
    rng = np.random.default_rng(0)
    for w in model.weights:
        if "hyper_kernel_2" in w.name or "hyper_bias_2" in w.name:
            w.assign(rng.normal(0, 0.3, w.shape))


@pytest.fixture(scope="module")
def trained(fashion_mnist_sample):
    """The small model after a short fit on real images, so BatchNorm statistics are real."""
    tf.keras.utils.set_random_seed(0)
    x, y = fashion_mnist_sample
    model = small_binary_model()
    _randomize_dynamic_parts(model)
    model.compile(
        tf.keras.optimizers.Adam(1e-3),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model, x[:64]


def test_get_config_from_config_gives_identical_outputs(trained):
    model, x = trained
    clone = tf.keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())
    config = clone.get_layer("bconv_2").get_config()["input_quantizer"]
    assert config["class_name"] == "DySign" and config["config"]["granularity"] == "layer"


@pytest.mark.parametrize("fmt", [".keras", ".h5", "savedmodel"])
def test_save_and_load_without_custom_objects(trained, tmp_path, fmt):
    model, x = trained
    path = str(tmp_path / ("model" + (fmt if fmt != "savedmodel" else "")))
    model.save(path, save_format="tf" if fmt == "savedmodel" else None)
    loaded = tf.keras.models.load_model(path)  # no custom_objects: the classes are registered
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert isinstance(loaded.get_layer("dysign_standalone"), DySign)
    assert isinstance(loaded.get_layer("bconv_2").input_quantizer, DySign)


def test_every_binary_layer_converts_to_a_binary_kernel(trained):
    model, x = trained
    flatbuffer = lce.convert_keras_model(model)
    ops = op_histogram(flatbuffer)
    assert ops["LceBconv2d"] == len(BINARY_LAYERS)
    assert ops["LceQuantize"] == len(BINARY_LAYERS)
    # the only float conv is the stem; the only FULLY_CONNECTED ops are the head and two per
    # hyper function (DySign x3 + DyPReLU): none stands in for a binary layer.
    assert ops["CONV_2D"] == 1
    assert ops["FULLY_CONNECTED"] == 1 + 2 * 4

    # Parity. Binarization turns tiny float differences at a sign boundary into flipped
    # bits, so compare logits with a tolerance relative to their scale and require the
    # predicted classes to agree.
    keras_out = model(x).numpy()
    tflite_out = Interpreter(flatbuffer).predict(x)
    scale = np.abs(keras_out).max()
    np.testing.assert_allclose(tflite_out, keras_out, atol=1e-3 * scale)
    assert (tflite_out.argmax(1) == keras_out.argmax(1)).mean() >= 0.98


def test_layers_with_every_hyper_function_option_convert_and_match(fashion_mnist_sample):
    """Groups, a bound, a learning-rate multiplier and a small hidden width: still one
    LceQuantize + LceBconv2d per binary layer, and the file computes what Keras does."""
    options = {"groups": 4, "bound": 1.0, "learning_rate_multiplier": 10.0, "min_hidden_units": 4}
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    h = _binary_conv(32, name="bconv_1")(DySign(**options, name="sign")(x))
    h = tf.keras.layers.BatchNormalization()(h)
    x = DyPReLU(**options, name="prelu")(tf.keras.layers.add([h, x]))
    h = _binary_conv(32, input_quantizer=DySign(**options, statistics="mean_std"), name="bconv_2")(
        x
    )
    x = tf.keras.layers.add([tf.keras.layers.BatchNormalization()(h), x])
    pooled = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10, name="head")(pooled))
    _randomize_dynamic_parts(model)
    images, labels = fashion_mnist_sample
    model.compile(
        tf.keras.optimizers.Adam(1e-3),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(images, labels, batch_size=64, epochs=1, verbose=0)

    flatbuffer = lce.convert_keras_model(model)
    ops = op_histogram(flatbuffer)
    assert ops["LceBconv2d"] == ops["LceQuantize"] == 2
    assert ops["CONV_2D"] == 1  # the stem: no binary conv fell back to float
    assert ops["FULLY_CONNECTED"] == 1 + 2 * 3  # the head and two per hyper function
    assert ops["LOGISTIC"] == 3  # the bounded outputs
    x = images[:64]
    keras_out = model(x).numpy()
    tflite_out = Interpreter(flatbuffer).predict(x)
    # as above: flipped bits at sign boundaries, so a tolerance relative to the logits
    np.testing.assert_allclose(tflite_out, keras_out, atol=1e-3 * np.abs(keras_out).max())
    assert (tflite_out.argmax(1) == keras_out.argmax(1)).mean() >= 0.98


def test_larq_summary_counts_binary_layers_as_one_bit(trained):
    model, _ = trained
    profile = lq.models.ModelProfile(model)
    by_name = {p.name: p for p in profile.layer_profiles}
    # 14x14 outputs, 3x3x32 kernels, 32 filters: every MAC of bconv_1 is 1-bit
    assert by_name["bconv_1"].op_count("mac", 1) == 14 * 14 * 9 * 32 * 32
    assert by_name["bconv_1"].op_count("mac", 32) == 0
    assert by_name["bdense_2"].op_count("mac", 1) == 49 * 64 * 32
    assert by_name["head"].op_count("mac", 32) == 32 * 10
    assert by_name["dysign_standalone"].input_precision is None  # a quantizer layer: no MACs
    lq.models.summary(model)  # prints; must not raise with the custom layers


def _python(code, legacy_keras_env):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if legacy_keras_env:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("touch_keras", [True, False])
def test_import_after_keras3_tensorflow_raises_the_documented_error(touch_keras):
    code = "import tensorflow as tf\n"
    code += "tf.keras.layers.Dense(1)\n" if touch_keras else ""  # binds tf.keras to Keras 3
    result = _python(code + "import larq_dysign\n", legacy_keras_env=False)
    assert result.returncode != 0
    assert "ImportError: larq_dysign needs Keras 2" in result.stderr
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr
    assert "import larq_dysign before tensorflow" in result.stderr


def test_tensorflow_first_works_when_the_variable_is_set():
    code = (
        "import tensorflow as tf\n"
        "import larq_dysign\n"
        "import tf_keras\n"
        "assert tf.keras.layers.Dense is tf_keras.layers.Dense, tf.keras.layers.Dense\n"
        "print('keras2')\n"
    )
    result = _python(code, legacy_keras_env=True)
    assert result.stdout.strip().endswith("keras2"), result.stderr[-2000:]
