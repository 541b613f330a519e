"""ReActNet-18 (Bi-Real ResNet-18 with RSign/RPReLU) and DyResNet18 (DyBCNN on ResNet-18)."""

from __future__ import annotations

import tensorflow as tf

from . import common, pytorch_padding
from .registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 4


def _basic_block(x, filters: int, strides: int, *, name: str, options: common.BlockOptions):
    """`out = PReLU(BN(BinConv3x3(Sign(x))) + shortcut)`; the shortcut is `x`, or
    AvgPool2 -> FP conv1x1 -> BN when the block downsamples or widens.

    With `padding="pytorch"` a downsampling block works on the spatially reversed map, its
    shortcut too (so the layers keep the default padding's order, which weights files rely
    on), and reverses the sum back: PyTorch's symmetric stride-2 padding (`pytorch_padding`).
    """
    reflect = options.padding == "pytorch" and strides != 1
    if reflect:
        x = pytorch_padding.SpatialReverse(name=f"{name}_reverse")(x)
    h = options.sign(x, f"{name}_sign")
    h = options.binary_conv2d(filters, 3, strides=strides, name=f"{name}_conv")(h)
    h = common.batch_norm(f"{name}_bn")(h)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        if strides != 1:
            shortcut = tf.keras.layers.AveragePooling2D(
                strides, padding="same", name=f"{name}_shortcut_pool"
            )(shortcut)
        shortcut = tf.keras.layers.Conv2D(
            filters, 1, use_bias=False, name=f"{name}_shortcut_conv"
        )(shortcut)
        shortcut = common.batch_norm(f"{name}_shortcut_bn")(shortcut)
    h = tf.keras.layers.add([h, shortcut], name=f"{name}_add")
    if reflect:
        h = pytorch_padding.SpatialReverse(name=f"{name}_unreverse")(h)
    return options.activation(h, f"{name}_prelu")


def _resnet18(
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
    base = common.scaled_width(STAGE_WIDTHS[0], width_multiplier)
    widths = [base * w // STAGE_WIDTHS[0] for w in STAGE_WIDTHS]  # keep the 1:2:4:8 ratios
    inputs = common.model_inputs(input_shape, input_tensor)
    stem = common.resolve_stem(stem, inputs)
    # "imagenet": the paper's conv7x7/2 + max-pool3x3/2; "small" and "small_stride2": a
    # conv3x3 (stride 1 or 2) without pool; a stride-2 stem is reflected for padding="pytorch"
    stem_strides = 1 if stem == "small" else 2
    x = common.conv_stem(
        inputs,
        widths[0],
        kernel_size=7 if stem == "imagenet" else 3,
        strides=stem_strides,
        pool=stem == "imagenet",
        reflect=stem_strides == 2 and options.padding == "pytorch",
    )

    for stage, filters in enumerate(widths, start=1):
        for block in range(1, BLOCKS_PER_STAGE + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(
                x,
                filters,
                strides,
                name=f"stage{stage}_block{block}",
                options=options,
            )

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


@register_model("resnet")
def ReActNet18(
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
    """ReActNet-18: Bi-Real Net's ResNet-18 with RSign and RPReLU (static thresholds).

    The static-threshold baseline of `DyResNet18`. Stem: FP conv7x7/2 + BN + max-pool3x3/2;
    four stages of 4 blocks (64/128/256/512 channels, stride 2 opening stages 2-4), each
    `RPReLU(BN(BinConv3x3(RSign(x))) + shortcut)`, the downsampling shortcut AvgPool2 ->
    FP conv1x1 -> BN; global average pool and a FP dense head with softmax.

    At 224x224x3 / 1000 classes: 16 binary convs (11.0M binary weights), 1.68e9 binary and
    1.39e8 float MACs (OPs = 1.68e9 / 64 + 1.39e8 = 1.63e8); 11.7M parameters in all.
    ImageNet top-1 in the paper: 65.9% (ReActNet's ResNet-18 variant).

    `weights="imagenet"`: ReActNet's own trained weights, converted once from the official
    PyTorch checkpoint with `zoo.import_reactnet` / `larq-dysign import-reactnet` (65.9% top-1
    in ReActNet's README; the model is then built with `padding="pytorch"` by itself).

    Example:
        ```python
        model = zoo.ReActNet18(input_shape=(28, 28, 1), num_classes=10)
        ```

    Args:
        input_shape: (height, width, channels); default (224, 224, 3).
        input_tensor: a Keras tensor (or tensor) to build the model on.
        weights: None, a registered dataset name ("imagenet", see above), or a checkpoint
            path.
        include_top: False returns the last feature map (B, H/32, W/32, 512).
        num_classes: classes of the dense head.
        binary_weights: False keeps the conv weights real (step 1 of two-step training).
        stem: "imagenet" (the paper's), "small" (FP conv3x3/1, no pool, for 28-64 px
            inputs), "small_stride2" (FP conv3x3/2, no pool: half the resolution of
            "small", about half its training cost), or "auto" (small below 112 px).
        width_multiplier: scales every width (stem and stages, rounded to multiples of 8),
            as MobileNet's alpha; 1.0 is the paper's network, smaller ones are for quick
            experiments on small machines.
        padding: "lce" (binary convs pad with +1 under TF's "same": LCE's form for every
            target), "pytorch" (zero padding in the binary convs and PyTorch's symmetric
            padding of the stride-2 convs and the stem's max-pool: what ReActNet's
            PyTorch-trained ImageNet weights need; still one `LceBconv2d` per binary conv,
            for LCE's "arm" target; see `larq_dysign.zoo.pytorch_padding`), or None
            (default): the padding the weights file records ("pytorch" for the ImageNet
            weights, imported by `import_reactnet`), else "lce".

    Returns:
        A `tf.keras.Model`.

    References:
        - ReActNet: https://arxiv.org/abs/2003.03488
        - Bi-Real Net: https://arxiv.org/abs/1808.00278
    """
    return _resnet18("ReActNet18", **locals())


@register_model("resnet")
def DyResNet18(
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
    """DyResNet18: DyBCNN on ReActNet-18, every RSign -> DySign, every RPReLU -> DyPReLU.

    Same graph as `ReActNet18` plus the hyper functions (at 224x224x3 / 1000 classes:
    47,744 more parameters (11.76M in all) and about as many more float MACs; 0.42M with
    DY-ReLU's `reduction=16`).
    ImageNet top-1 in the paper: 67.4%.

    `weights="imagenet"`: ReActNet-18's trained tensors (`zoo.import_reactnet`), the hyper
    functions at their initial values, so the model computes exactly ReActNet-18: the
    starting point for fine-tuning the dynamic thresholds on ImageNet, not a trained
    DyResNet18 (no DySign ImageNet accuracy comes with it).

    Example:
        ```python
        model = zoo.DyResNet18(input_shape=(28, 28, 1), num_classes=10)
        ablation = zoo.DyResNet18(dyprelu=False)   # DySign alone
        ```

    Args:
        input_shape, input_tensor, weights, include_top, num_classes, binary_weights, stem,
            width_multiplier, padding: as for `ReActNet18`.
        dysign: False keeps RSign (for ablations).
        dyprelu: False keeps RPReLU (for ablations).
        dysign_options: keyword arguments of every `DySign` (reduction, granularity,
            statistics, estimator).
        dyprelu_options: keyword arguments of every `DyPReLU` (reduction, statistics).

    Returns:
        A `tf.keras.Model`.

    References:
        - DySign: https://arxiv.org/abs/2211.02292
        - DyBNN: https://arxiv.org/abs/2110.05185
        - ReActNet: https://arxiv.org/abs/2003.03488
    """
    return _resnet18("DyResNet18", **locals())
