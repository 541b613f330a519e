"""ReActNet-A (binary MobileNetV1) and DyMobileNet (DyBCNN on ReActNet-A)."""

from __future__ import annotations

import tensorflow as tf

from . import common, pytorch_padding
from .registry import register_model

WIDTHS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


def _block(x, out_channels: int, strides: int, *, name: str, options: common.BlockOptions):
    """One ReActNet-A block: a binary 3x3 conv and a binary 1x1 conv, each with a shortcut.

    ```
    h = PReLU(BN(BinConv3x3_s(Sign(x))) + (AvgPool2(x) if s == 2 else x))
    a = Sign(h)
    o = BN(BinConv1x1(a)) + h                                   if Cout == Cin
    o = concat[BN(BinConv1x1_A(a)) + h, BN(BinConv1x1_B(a)) + h] if Cout == 2 Cin
    out = PReLU(o)
    ```
    """
    in_channels = x.shape[-1]
    if out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(
            f"ReActNet-A blocks keep or double the width; got {in_channels} -> {out_channels}."
        )

    def conv_bn(t, filters, kernel_size, strides_, suffix):
        t = options.binary_conv2d(filters, kernel_size, strides=strides_, name=f"{name}_{suffix}")(
            t
        )
        return common.batch_norm(f"{name}_{suffix}_bn")(t)

    # padding="pytorch": a strided 3x3 conv and its shortcut work on the spatially reversed
    # map, the sum is reversed back: PyTorch's symmetric stride-2 padding (pytorch_padding)
    reflect = options.padding == "pytorch" and strides == 2
    if reflect:
        x = pytorch_padding.SpatialReverse(name=f"{name}_reverse")(x)
    shortcut = x
    if strides == 2:
        shortcut = tf.keras.layers.AveragePooling2D(2, padding="same", name=f"{name}_pool")(x)
    h = conv_bn(options.sign(x, f"{name}_sign_3x3"), in_channels, 3, strides, "conv_3x3")
    h = tf.keras.layers.add([h, shortcut], name=f"{name}_add_3x3")
    if reflect:
        h = pytorch_padding.SpatialReverse(name=f"{name}_unreverse")(h)
    h = options.activation(h, f"{name}_prelu_3x3")

    a = options.sign(h, f"{name}_sign_1x1")
    if out_channels == in_channels:
        o = tf.keras.layers.add(
            [conv_bn(a, in_channels, 1, 1, "conv_1x1"), h], name=f"{name}_add_1x1"
        )
    else:
        halves = [
            tf.keras.layers.add(
                [conv_bn(a, in_channels, 1, 1, f"conv_1x1_{part}"), h],
                name=f"{name}_add_1x1_{part}",
            )
            for part in ("a", "b")
        ]
        o = tf.keras.layers.concatenate(halves, name=f"{name}_concat")
    return options.activation(o, f"{name}_prelu_1x1")


def _reactnet_a(
    name: str,
    *,
    input_shape,
    input_tensor,
    weights,
    include_top: bool,
    num_classes: int,
    stem: str,
    width_multiplier: float,
    **block_options,
) -> tf.keras.Model:
    """The family's builder; the public constructors pass it their arguments (`locals()`),
    those of `common.BlockOptions` gathered in `block_options`."""
    options = common.validated_options(
        name,
        block_options,
        input_shape=input_shape,
        input_tensor=input_tensor,
        weights=weights,
        include_top=include_top,
        num_classes=num_classes,
        stem=stem,
        width_multiplier=width_multiplier,
    )
    base = common.scaled_width(WIDTHS[0], width_multiplier)
    widths = [base * w // WIDTHS[0] for w in WIDTHS]  # blocks keep or double the width
    inputs = common.model_inputs(input_shape, input_tensor)
    stem_strides = 1 if common.resolve_stem(stem, inputs) == "small" else 2
    x = common.conv_stem(
        inputs,
        widths[0],
        kernel_size=3,
        strides=stem_strides,
        pool=False,
        reflect=stem_strides == 2 and options.padding == "pytorch",
    )

    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        strides = 2 if c_out != c_in and c_in != widths[0] else 1
        x = _block(x, c_out, strides, name=f"block{index}", options=options)

    return common.finish_model(
        inputs,
        x,
        input_tensor=input_tensor,
        name=name,
        weights=weights,
        include_top=include_top,
        num_classes=num_classes,
        padding=options.padding,
    )


@register_model("mobilenet")
def ReActNetA(
    *,
    input_shape: tuple[int, int, int] | None = None,
    input_tensor: tf.Tensor | None = None,
    weights: str | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
    binary_weights: bool = True,
    stem: str = "auto",
    width_multiplier: float = 1.0,
    padding: str | None = None,
) -> tf.keras.Model:
    """ReActNet-A: the binary MobileNetV1 of ReActNet, with RSign and RPReLU.

    The static-threshold baseline of `DyMobileNet`. Stem FP conv3x3/2 3->32 + BN; 13 blocks
    over widths 32-64-128-128-256-256-512x6-1024-1024 (stride 2 where the width changes,
    except 32->64), each a binary 3x3 conv (Cin->Cin) and a binary 1x1 conv (doubled by
    concatenating two when the width doubles), every conv with a shortcut; global average
    pool and a FP dense 1024->classes head with softmax.

    At 224x224x3 / 1000 classes: 4.82e9 binary and 1.2e7 float MACs (OPs 0.87e8), 28.3M
    binary weights, 29.3M parameters. ImageNet top-1 in the paper: 69.4%.

    `weights="imagenet"`: ReActNet's own trained weights, converted once from the official
    PyTorch checkpoint with `zoo.import_reactnet` / `larq-dysign import-reactnet --model
    ReActNetA` (69.5% top-1 in ReActNet's README; the model is then built with
    `padding="pytorch"` by itself).

    Example:
        ```python
        model = zoo.ReActNetA(input_shape=(32, 32, 3), num_classes=10)
        ```

    Args:
        input_shape: (height, width, channels); default (224, 224, 3).
        input_tensor: a Keras tensor (or tensor) to build the model on.
        weights: None, a registered dataset name ("imagenet", see above), or a checkpoint
            path.
        include_top: False returns the last feature map (B, H/32, W/32, 1024).
        num_classes: classes of the dense head.
        binary_weights: False keeps the conv weights real (step 1 of two-step training).
        stem: "imagenet" or "small_stride2" (the same: conv3x3 stride 2), "small"
            (stride 1), or "auto" (small below 112 px).
        width_multiplier: scales every width (the stem's 32 rounded to a multiple of 8, the
            blocks' in proportion), as MobileNet's alpha; 1.0 is the paper's network.
        padding: "lce" (binary convs pad with +1 under TF's "same": LCE's form for every
            target), "pytorch" (zero padding in the binary convs and PyTorch's symmetric
            padding of the stride-2 convs: what ReActNet's PyTorch-trained ImageNet
            weights need; still one `LceBconv2d` per binary conv, for LCE's "arm" target;
            see `larq_dysign.zoo.pytorch_padding`), or None (default): the padding the
            weights file records ("pytorch" for the ImageNet weights, imported by
            `import_reactnet`), else "lce".

    Returns:
        A `tf.keras.Model`.

    References:
        - ReActNet: https://arxiv.org/abs/2003.03488
    """
    return _reactnet_a("ReActNetA", **locals())


@register_model("mobilenet")
def DyMobileNet(
    *,
    input_shape: tuple[int, int, int] | None = None,
    input_tensor: tf.Tensor | None = None,
    weights: str | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
    binary_weights: bool = True,
    stem: str = "auto",
    width_multiplier: float = 1.0,
    padding: str | None = None,
    dysign: bool = True,
    dyprelu: bool = True,
    dysign_options: dict | None = None,
    dyprelu_options: dict | None = None,
) -> tf.keras.Model:
    """DyMobileNet: DyBCNN on ReActNet-A, every RSign -> DySign, every RPReLU -> DyPReLU.

    Same graph as `ReActNetA` plus the hyper functions (137,000 more parameters, 29.50M
    in all, at 224x224x3 / 1000 classes; 1.98M more with DY-ReLU's `reduction=16`).
    ImageNet top-1 in the paper: 71.2%.

    `weights="imagenet"`: ReActNet-A's trained tensors (`zoo.import_reactnet`), the hyper
    functions at their initial values, so the model computes exactly ReActNet-A: the
    starting point for fine-tuning the dynamic thresholds on ImageNet, not a trained
    DyMobileNet (no DySign ImageNet accuracy comes with it).

    Example:
        ```python
        model = zoo.DyMobileNet(input_shape=(32, 32, 3), num_classes=10)
        ```

    Args:
        input_shape, input_tensor, weights, include_top, num_classes, binary_weights, stem,
            width_multiplier, padding: as for `ReActNetA`.
        dysign: False keeps RSign (for ablations).
        dyprelu: False keeps RPReLU (for ablations).
        dysign_options: keyword arguments of every `DySign`.
        dyprelu_options: keyword arguments of every `DyPReLU`.

    Returns:
        A `tf.keras.Model`.

    References:
        - DySign: https://arxiv.org/abs/2211.02292
        - DyBNN: https://arxiv.org/abs/2110.05185
        - ReActNet: https://arxiv.org/abs/2003.03488
    """
    return _reactnet_a("DyMobileNet", **locals())
