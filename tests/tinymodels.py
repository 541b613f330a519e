"""Tiny models for the tests (the zoo's cost seconds per step or conversion).

`tiny_bnn`: a two-conv binary network with the zoo's blocks, for the training machinery;
importable as "tinymodels:tiny_bnn" by the CLI's "module:function" model argument (the
`tiny_models_env` fixture puts this folder on the subprocesses' PYTHONPATH). `tiny_model`:
a binary conv block with optional layers LCE cannot binarize, for the exporter."""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import larq as lq
import tensorflow as tf

from larq_dysign.layers import DySign, RSign
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


def _conv(name, input_quantizer=None, kernel_quantizer="magnitude_aware_sign", kernel_size=3):
    return lq.layers.QuantConv2D(
        32,
        kernel_size,
        padding="same",
        pad_values=1.0,
        use_bias=False,
        input_quantizer=input_quantizer or lq.quantizers.NoOp(precision=1),
        kernel_quantizer=kernel_quantizer,
        kernel_constraint="weight_clip",
        name=name,
    )


def tiny_model(kind: str = "plain") -> tf.keras.Model:
    """A binary conv block, plus one layer LCE cannot binarize for kind "dense" (QuantDense),
    "dorefa" (DoReFa quantizers) or "reshape" (a reshape between the sign and the conv)."""
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
    h = _conv("bconv")(RSign(name="sign")(x))
    x = tf.keras.layers.BatchNormalization(name="bn")(h)
    if kind == "dorefa":
        x = _conv(
            "dorefa_conv",
            input_quantizer=lq.quantizers.DoReFa(k_bit=1, mode="activations"),
            kernel_quantizer=lq.quantizers.DoReFa(k_bit=1, mode="weights"),
        )(x)
    if kind == "reshape":
        h = tf.keras.layers.Reshape((1, 64, 32), name="reshape")(DySign(name="dysign")(x))
        h = _conv("conv_after_reshape", kernel_size=1)(h)
        x = tf.keras.layers.Reshape((8, 8, 32), name="back")(h)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if kind == "dense":
        x = lq.layers.QuantDense(
            16, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="binary_dense"
        )(x)
    outputs = tf.keras.layers.Dense(4, name="head")(x)
    return tf.keras.Model(inputs, outputs, name=f"tiny_{kind}")
