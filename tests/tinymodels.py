"""A two-conv binary network with the zoo's blocks, for tests of the training machinery (the
zoo's ResNet-18 costs seconds per step). Importable as "tinymodels:tiny_bnn" by the CLI's
"module:function" model argument: the `tiny_models_env` fixture puts this folder on the
subprocesses' PYTHONPATH."""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import tensorflow as tf

from larq_dysign.layers import RSign
from larq_dysign.zoo import common


def tiny_bnn(*, input_shape, num_classes, binary_weights=True, batch_norm=True):
    inputs = tf.keras.Input(input_shape)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(
        inputs
    )
    if batch_norm:
        x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
    x = RSign(name="sign")(x)
    x = common.binary_conv2d(16, 3, strides=2, binary_weights=binary_weights, name="bconv")(x)
    if batch_norm:
        x = tf.keras.layers.BatchNormalization(name="bconv_bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = tf.keras.layers.Dense(num_classes, name="logits")(x)
    outputs = tf.keras.layers.Activation("softmax", name="predictions")(x)
    return tf.keras.Model(inputs, outputs, name="tiny_bnn")
