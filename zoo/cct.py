"""BinaryCCT and DyBinaryCCT: fully binarized Compact Convolutional Transformers.

A CCT (Hassani et al. 2021) is a convolutional tokenizer, a pre-norm transformer encoder and
a sequence-pooling head. Here every linear of the encoder and the tokenizer's second conv
are binary, in a layout Larq Compute Engine runs as binary kernels: tokens stay a
`[B, 1, N, D]` image through the encoder, so each sign layer feeds its `BinaryDense` (a 1x1
binary conv) directly; the attention heads are split and merged on the float side.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from ..checks import check_positive_int
from ..layers import BinaryDense, PositionEmbedding, ScaledDotProductAttention
from . import common
from .registry import register_model

MLP_ACTIVATIONS = ("prelu", "gelu")
#: CCT uses PyTorch's LayerNorm default.
LAYER_NORM_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class CCTVariant:
    """One CCT configuration, named `"<layers>/<kernel>x<tokenizer convs>"` as in the paper.

    The tokenizer's convs have `kernel_size` and stride `max(1, kernel_size // 2 - 1)`
    (CCT's rule: 2 for 7x7, 1 for 3x3), each followed by ReLU and max-pool 3x3/2; the
    intermediate convs have `tokenizer_width` filters and the last one `dim`.
    """

    num_layers: int
    kernel_size: int
    tokenizer_convs: int
    tokenizer_width: int
    num_heads: int
    dim: int
    mlp_ratio: int

    @property
    def tokenizer_strides(self) -> int:
        return max(1, self.kernel_size // 2 - 1)

    @property
    def mlp_units(self) -> int:
        return self.dim * self.mlp_ratio


_CCT_7_3X1 = CCTVariant(
    num_layers=7,
    kernel_size=3,
    tokenizer_convs=1,
    tokenizer_width=64,
    num_heads=4,
    dim=256,
    mlp_ratio=2,
)
VARIANTS = {
    "14/7x2": CCTVariant(
        num_layers=14,
        kernel_size=7,
        tokenizer_convs=2,
        tokenizer_width=64,
        num_heads=6,
        dim=384,
        mlp_ratio=3,
    ),
    "7/3x1": _CCT_7_3X1,
    # two 3x3 tokenizer convs, each with its max-pool 3x3/2: 49 tokens on 28x28 (7/3x1: 196)
    "7/3x2": dataclasses.replace(_CCT_7_3X1, tokenizer_convs=2),
}


def resolve_variant(variant: str | None, inputs: tf.Tensor) -> str:
    """None -> "7/3x1" when height or width is below `common.SMALL_INPUT_LIMIT` (112 px),
    else "14/7x2"; a variant name is returned unchanged."""
    if variant is not None:
        return variant
    height, width = inputs.shape[1], inputs.shape[2]
    small = any(d is not None and d < common.SMALL_INPUT_LIMIT for d in (height, width))
    return "7/3x1" if small else "14/7x2"


def _check_cct_arguments(*, variant, num_layers, mlp_activation, dyprelu) -> None:
    if variant is not None and variant not in VARIANTS:
        raise ValueError(
            f"Expected variant to be one of {', '.join(map(repr, VARIANTS))} or None (chosen "
            f"by input size), but got {variant!r}."
        )
    if num_layers is not None:  # None: the variant's
        check_positive_int("num_layers", num_layers)
    if mlp_activation not in MLP_ACTIVATIONS:
        raise ValueError(
            f"Expected mlp_activation to be one of {', '.join(map(repr, MLP_ACTIVATIONS))}, "
            f"but got {mlp_activation!r}."
        )
    if mlp_activation == "gelu" and dyprelu:
        raise ValueError(
            "Expected dyprelu=False with mlp_activation='gelu' (there is no PReLU to make "
            "dynamic), but got dyprelu=True."
        )


def _binary_dense(units: int, *, use_bias: bool, binary_weights: bool, name: str) -> BinaryDense:
    """A binary linear over `[B, 1, N, D]` tokens, fed by a sign layer (LCE: LceBconv2d)."""
    return BinaryDense(
        units,
        input_quantizer=common.binary_input(),
        kernel_quantizer="magnitude_aware_sign" if binary_weights else None,
        kernel_constraint="weight_clip" if binary_weights else None,
        use_bias=use_bias,
        name=name,
    )


def _tokenizer(x: tf.Tensor, config: CCTVariant, options: common.BlockOptions) -> tf.Tensor:
    """Convs (first FP, the others binary), each + ReLU + max-pool 3x3/2 -> `[B, 1, N, D]`."""
    widths = [config.tokenizer_width] * (config.tokenizer_convs - 1) + [config.dim]
    for index, filters in enumerate(widths, start=1):
        name = f"tokenizer{index}"
        if index == 1:
            x = tf.keras.layers.Conv2D(
                filters,
                config.kernel_size,
                strides=config.tokenizer_strides,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=f"{name}_conv",
            )(x)
        else:
            # ReLU + max-pool leave x >= 0, where a sign with its threshold at 0 would output
            # only +1: a BatchNorm centres the activations first (CCT has none here).
            x = common.batch_norm(f"{name}_bn")(x)
            x = options.sign(x, f"{name}_sign")
            x = options.binary_conv2d(
                filters, config.kernel_size, strides=config.tokenizer_strides, name=f"{name}_conv"
            )(x)
        x = tf.keras.layers.ReLU(name=f"{name}_relu")(x)
        x = tf.keras.layers.MaxPool2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(
            "CCT models need a known input height and width (the positional embedding has "
            f"one vector per token), but the tokenizer's output has shape {x.shape}."
        )
    return tf.keras.layers.Reshape((1, height * width, config.dim), name="tokens")(x)


def _encoder_layer(
    x: tf.Tensor,
    config: CCTVariant,
    *,
    name: str,
    options: common.BlockOptions,
    mlp_activation: str,
) -> tf.Tensor:
    """`x = x + MHSA(LN(x)); x = LN(x); x = x + MLP(x)` with binary linears.

    MHSA: `Proj(Attention(QKV(Sign(.)))` with `Proj` fed by its own sign; MLP:
    `FC2(Sign(Act(FC1(Sign(.)))))`. Each sign layer is directly followed by its
    `BinaryDense`, nothing in between, so LCE fuses them.
    """

    def sign(t, suffix):
        return options.sign(t, f"{name}_{suffix}")

    def linear(t, units, suffix, use_bias=True):
        return _binary_dense(
            units,
            use_bias=use_bias,
            binary_weights=options.binary_weights,
            name=f"{name}_{suffix}",
        )(t)

    norm = tf.keras.layers.LayerNormalization
    h = norm(epsilon=LAYER_NORM_EPSILON, name=f"{name}_attention_norm")(x)
    h = linear(sign(h, "qkv_sign"), 3 * config.dim, "qkv", use_bias=False)  # CCT: no qkv bias
    h = ScaledDotProductAttention(config.num_heads, name=f"{name}_attention")(h)
    h = linear(sign(h, "proj_sign"), config.dim, "proj")
    x = tf.keras.layers.add([x, h], name=f"{name}_attention_add")
    x = norm(epsilon=LAYER_NORM_EPSILON, name=f"{name}_norm")(x)

    h = linear(sign(x, "fc1_sign"), config.mlp_units, "fc1")
    if mlp_activation == "gelu":
        h = tf.keras.layers.Activation("gelu", name=f"{name}_mlp_activation")(h)
    else:
        h = options.activation(h, f"{name}_mlp_activation")
    h = linear(sign(h, "fc2_sign"), config.dim, "fc2")
    return tf.keras.layers.add([x, h], name=f"{name}_mlp_add")


def _sequence_pool(x: tf.Tensor) -> tf.Tensor:
    """CCT's SeqPool: `softmax_over_tokens(Dense_1(x))^T x`, `[B, 1, N, D]` -> `(B, D)`."""
    tokens, dim = x.shape[2], x.shape[3]
    scores = tf.keras.layers.Dense(1, name="seq_pool_attention")(x)
    weights = tf.keras.layers.Softmax(axis=2, name="seq_pool_softmax")(scores)
    weights = tf.keras.layers.Reshape((tokens, 1), name="seq_pool_weights")(weights)
    flat = tf.keras.layers.Reshape((tokens, dim), name="seq_pool_tokens")(x)
    pooled = tf.keras.layers.Dot(axes=1, name="seq_pool")([weights, flat])  # (B, 1, D)
    return tf.keras.layers.Reshape((dim,), name="pooled")(pooled)


def _cct(
    name: str,
    *,
    input_shape,
    input_tensor,
    weights,
    include_top: bool,
    num_classes: int,
    variant: str | None,
    num_layers: int | None,
    width_multiplier: float,
    mlp_activation: str,
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
        width_multiplier=width_multiplier,
    )
    _check_cct_arguments(
        variant=variant,
        num_layers=num_layers,
        mlp_activation=mlp_activation,
        dyprelu=options.dyprelu,
    )
    inputs = common.model_inputs(input_shape, input_tensor)
    config = VARIANTS[resolve_variant(variant, inputs)]
    if num_layers is not None:
        config = dataclasses.replace(config, num_layers=num_layers)
    if width_multiplier != 1:
        config = dataclasses.replace(
            config,
            # the embedding splits evenly into heads of a multiple of 8 channels
            dim=common.scaled_width(config.dim, width_multiplier, 8 * config.num_heads),
            tokenizer_width=common.scaled_width(config.tokenizer_width, width_multiplier),
        )

    x = _tokenizer(inputs, config, options)
    x = PositionEmbedding(name="position_embedding")(x)
    for index in range(1, config.num_layers + 1):
        x = _encoder_layer(
            x, config, name=f"layer{index}", options=options, mlp_activation=mlp_activation
        )
    x = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="final_norm")(x)
    x = _sequence_pool(x)

    return common.finish_model(
        inputs,
        x,
        input_tensor=input_tensor,
        name=name,
        weights=weights,
        include_top=include_top,
        num_classes=num_classes,
        pool=False,
    )


@register_model("cct")
def BinaryCCT(
    *,
    input_shape: tuple[int, int, int] | None = None,
    input_tensor: tf.Tensor | None = None,
    weights: str | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
    binary_weights: bool = True,
    variant: str | None = None,
    num_layers: int | None = None,
    mlp_activation: str = "prelu",
    width_multiplier: float = 1.0,
) -> tf.keras.Model:
    """BinaryCCT: a Compact Convolutional Transformer with binary linears, RSign and RPReLU.

    The static-threshold baseline of `DyBinaryCCT`. Tokenizer: FP conv (no bias) + ReLU +
    max-pool 3x3/2; for "14/7x2" then BatchNorm + RSign + binary conv7x7/2 + ReLU + max-pool.
    The feature map becomes N tokens kept as a `[B, 1, N, D]` image, plus a learnable
    positional embedding. Each encoder layer is CCT's
    ```
    x = x + Proj(RSign(Attention(QKV(RSign(LN(x))))))    # Attention: softmax(QK^T/sqrt(d))V
    x = LN(x)
    x = x + FC2(RSign(RPReLU(FC1(RSign(x)))))
    ```
    with QKV, Proj, FC1, FC2 binary (`BinaryDense`: 1x1 binary convs, weights
    `magnitude_aware_sign`, scale mean|W| per output unit). The attention products stay
    float. Head: LN, SeqPool (softmax-weighted average of the tokens), FP dense + softmax.

    | variant | for | tokens | layers | heads | dim | MLP |
    | --- | --- | --- | --- | --- | --- | --- |
    | "14/7x2" | 224x224 | 196 | 14 | 6 | 384 | 1152 |
    | "7/3x1" | 32x32 | 256 | 7 | 4 | 256 | 512 |
    | "7/3x2" | 28x28-32x32 | 49-64 | 7 | 4 | 256 | 512 |

    "7/3x2" has two 3x3 tokenizer convs (the second binary), each with its max-pool: 49
    tokens on 28x28 instead of 7/3x1's 196, so attention costs 16x less.

    Measured (`count_params`; MACs are `lq.models.ModelProfile`'s `op_count("mac", 1)` and
    `op_count("mac", 32)` summed over layers):
    - "14/7x2" at 224x224x3, 1000 classes: 22,448,233 parameters (the FP CCT-14/7x2 has
      22,367,273, the paper's 22.4M; the rest is RSign thresholds, RPReLU and the tokenizer
      BatchNorm), 21.85M binary weights, 4.99e9 binary and 1.185e8 float MACs.
    - "7/3x1" at 32x32x3, 10 classes: 3,779,851 parameters (FP CCT-7/3x1: 3,760,139, the
      paper's 3.76M), 3.67M binary weights, 9.40e8 binary and 7.15e6 float MACs.
    larq's profile has no layer for the attention products QK^T and AV: they add
    `2 N^2 D` float MACs per layer, 4.13e8 for "14/7x2" and 2.35e8 for "7/3x1".

    ImageNet top-1 in the DySign paper: about 47% (DyBinaryCCT's 56.1% is about 9 points
    higher). No checkpoint is published.

    Choices where the papers are silent (configurable where cheap):
    - MLP activation RPReLU, so that the Dy model swaps it for DyPReLU (CCT: GELU;
      `mlp_activation="gelu"`).
    - One fused QKV linear behind one sign (CCT's `qkv`; with per-output scales it equals
      three separate binary linears) and CCT's biases (none on QKV, on Proj/FC1/FC2).
    - A BatchNorm before the tokenizer's binary conv: its input is ReLU + max-pool output,
      >= 0, on which a sign with its threshold at 0 would output only +1.
    - No dropout or stochastic depth (CCT: 0.1 each); LayerNorm epsilon 1e-5 and a
      truncated-normal(0.2) positional embedding, as CCT.

    LCE: each sign layer feeds its binary layer directly, so each becomes LceQuantize +
    LceBconv2d (4 per encoder layer, 1 in the "14/7x2" tokenizer); the float attention
    products become per-head FULLY_CONNECTED ops with run-time weights.

    Example:
        ```python
        model = zoo.BinaryCCT()                                            # "14/7x2", 224x224
        model = zoo.BinaryCCT(input_shape=(32, 32, 3), num_classes=10)     # "7/3x1"
        features = zoo.BinaryCCT(input_shape=(28, 28, 1), include_top=False)  # (B, 256)
        ```

    Args:
        input_shape: (height, width, channels) with known height and width (one positional
            embedding per token); default (224, 224, 3).
        input_tensor: a Keras tensor (or tensor) to build the model on.
        weights: None, a registered dataset name ("imagenet"), or a checkpoint path.
        include_top: False returns the pooled tokens (B, dim), before the dense head.
        num_classes: classes of the dense head.
        binary_weights: False keeps the binary layers' weights real (step 1 of two-step
            training); their inputs stay binary.
        variant: "14/7x2", "7/3x1", "7/3x2", or None: "7/3x1" when the input height or width
            is below 112 px, else "14/7x2".
        num_layers: encoder layers, default the variant's (14 or 7); fewer for quick tests.
        mlp_activation: "prelu" (RPReLU, default) or "gelu" (CCT's).
        width_multiplier: scales the embedding dim (rounded to a multiple of 8 x heads) and
            the tokenizer's intermediate width; 1.0 is the variant's.

    Returns:
        A `tf.keras.Model`.

    Raises:
        ValueError: an argument outside its allowed values (named in the message).

    References:
        - CCT: https://arxiv.org/abs/2104.05704
        - DySign: https://arxiv.org/abs/2211.02292
        - ReActNet (RSign, RPReLU): https://arxiv.org/abs/2003.03488
    """
    return _cct("BinaryCCT", **locals())


@register_model("cct")
def DyBinaryCCT(
    *,
    input_shape: tuple[int, int, int] | None = None,
    input_tensor: tf.Tensor | None = None,
    weights: str | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
    binary_weights: bool = True,
    variant: str | None = None,
    num_layers: int | None = None,
    mlp_activation: str = "prelu",
    width_multiplier: float = 1.0,
    dysign: bool = True,
    dyprelu: bool = True,
    dysign_options: dict | None = None,
    dyprelu_options: dict | None = None,
) -> tf.keras.Model:
    """DyBinaryCCT: BinaryCCT with every RSign -> DySign and every RPReLU -> DyPReLU.

    The DySign paper's fully binarized CCT; same graph and layer names as `BinaryCCT` plus
    the hyper functions (per encoder layer: DySign on the QKV, Proj and FC1 inputs (dim
    channels) and on the FC2 input (MLP channels), DyPReLU in the MLP; one DySign in the
    "14/7x2" tokenizer). With the default hidden width 2:
    - "14/7x2" at 224x224x3, 1000 classes: 22,738,999 parameters (290,766 in hyper
      functions); MACs as `BinaryCCT` (4.99e9 binary, 1.185e8 float, plus 4.13e8 float in the
      attention products) plus about 0.3e6 float MACs in the hyper functions, which larq's
      profile does not count (their layers are no Dense/Conv).
    - "7/3x1" at 32x32x3, 10 classes: 3,853,393 parameters (73,542 in hyper functions).
    DY-ReLU's rule (`reduction=16` in the options) makes them 23x larger at "14/7x2"
    (6,648,856 floats: the MLP's 1152 channels squared / 16).

    ImageNet top-1 in the DySign paper: 56.1% (about 9 points above BinaryCCT). No
    checkpoint is published.

    Example:
        ```python
        model = zoo.DyBinaryCCT(input_shape=(32, 32, 3), num_classes=10)
        ablation = zoo.DyBinaryCCT(dyprelu=False)       # DySign alone, RPReLU kept
        ```

    Args:
        input_shape, input_tensor, weights, include_top, num_classes, binary_weights,
            variant, num_layers, mlp_activation, width_multiplier: as for `BinaryCCT`.
        dysign: False keeps RSign (for ablations).
        dyprelu: False keeps RPReLU (for ablations); must be False with
            `mlp_activation="gelu"`, which has no PReLU.
        dysign_options: keyword arguments of every `DySign` (reduction, granularity,
            statistics, estimator).
        dyprelu_options: keyword arguments of every `DyPReLU` (reduction, statistics).

    Returns:
        A `tf.keras.Model`.

    Raises:
        ValueError: an argument outside its allowed values (named in the message).

    References:
        - DySign: https://arxiv.org/abs/2211.02292
        - DyBNN (DyPReLU): https://arxiv.org/abs/2110.05185
        - CCT: https://arxiv.org/abs/2104.05704
    """
    return _cct("DyBinaryCCT", **locals())
