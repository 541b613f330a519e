"""DySign, DyPReLU, their static ReActNet baselines, a binary linear layer for tokens, and the
weightless attention and positional-embedding layers of the binary CCT.

The maths lives in plain functions (`channel_statistics`, `dynamic_sign`); the layers only
own weights and call them, as larq's quantizers do.
"""

from __future__ import annotations

import math
import numbers

import larq as lq
import tensorflow as tf

from .checks import check_choice as _check_choice
from .checks import check_positive_int as _check_positive_int
from .checks import check_positive_number as _check_positive_number

__all__ = [
    "BinaryDense",
    "DyPReLU",
    "DySign",
    "PositionEmbedding",
    "RPReLU",
    "RSign",
    "ScaledDotProductAttention",
    "channel_moments",
    "channel_statistics",
    "dynamic_sign",
    "effective_groups",
    "scaled_dot_product_attention",
]

ESTIMATORS = ("approx_sign", "ste")
GRANULARITIES = ("channel", "layer")
STATISTICS = ("mean", "mean_std")
#: The hyper function's hidden activation: leaky, so no hidden unit can start dead
#: (docs/design.md, "The hyper function's size").
HIDDEN_ACTIVATIONS = ("leaky_relu", "relu")
MIN_HIDDEN_UNITS = 8
#: The hyper function's default hidden width: fixed, so its floats grow linearly with the
#: channels (docs/design.md, "The hyper function's size").
HIDDEN_UNITS = 2
_STD_EPSILON = 1e-5


class _PlainCall:
    """Mixin: Keras runs this layer's `call` as plain Python, not through AutoGraph.

    tf-keras converts the `call` of every layer defined outside Keras with AutoGraph at each
    model build and each trace (`Layer._should_use_autograph`), so that a `call` may branch
    on tensors. The layers here branch on Python values only (options, static ranks): the
    conversion is pure cost (measured, CPU time, median of 3 builds at width 0.25:
    DyMobileNet 4.0 -> 3.0 s, DyResNet18 2.0 -> 1.8 s, DyBinaryCCT 2.8 -> 2.4 s). A `call` that
    needs to branch on a tensor writes `tf.cond`."""

    def _should_use_autograph(self):
        return False


#: CCT initializes its positional embedding with trunc_normal_(std=0.2).
POSITION_EMBEDDING_STDDEV = 0.2


def _check_input_rank(layer: tf.keras.layers.Layer, input_shape) -> int:
    shape = tf.TensorShape(input_shape)
    if shape.rank is None or shape.rank < 3:
        raise ValueError(
            f"{type(layer).__name__} expects inputs of shape (batch, ..., channels) with rank "
            f">= 3 (NHWC feature maps or (batch, tokens, dim)), but got shape {shape}."
        )
    if shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} needs a known channel dimension, but got shape {shape}."
        )
    # Keras then refuses, by name, a call on another channel count or rank
    layer.input_spec = tf.keras.layers.InputSpec(min_ndim=3, axes={-1: int(shape[-1])})
    return int(shape[-1])


def _check_float(layer: tf.keras.layers.Layer, inputs) -> tf.Tensor:
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} expects floating-point inputs, but got "
            f"{inputs.dtype.name}; cast them first (e.g. images with zoo.preprocess_input)."
        )
    return inputs


def channel_statistics(x: tf.Tensor, statistics: str = "mean") -> tf.Tensor:
    """Per-sample channel statistics over every axis but the batch and the channel one.

    For NHWC feature maps that is the mean over H and W; for tokens `(B, N, D)` the mean over
    the N tokens (and over `1 x N` for the `[B, 1, N, D]` layout of `BinaryDense`).

    Args:
        x: tensor of rank >= 3, channels last.
        statistics: `"mean"` gives `(B, C)`; `"mean_std"` gives `(B, 2C)`, the means followed
            by the standard deviations `sqrt(var + 1e-5)`.

    Returns:
        A `(B, C)` or `(B, 2C)` tensor.
    """
    _check_choice("statistics", statistics, STATISTICS)
    x = tf.convert_to_tensor(x)
    if statistics == "mean":
        return tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)))
    return tf.concat(channel_moments(x), axis=-1)


def channel_moments(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-sample channel means and standard deviations `sqrt(var + 1e-5)`, each `(B, C)`,
    over every axis but the batch and the channel one (as `channel_statistics`)."""
    x = tf.convert_to_tensor(x)
    mean, variance = tf.nn.moments(x, axes=list(range(1, x.shape.rank - 1)))
    return mean, tf.sqrt(variance + _STD_EPSILON)


def dynamic_sign(x: tf.Tensor, threshold: tf.Tensor, estimator: str = "approx_sign") -> tf.Tensor:
    """`sign(x - threshold)` with outputs in {-1, +1} (sign(0) = +1) and a surrogate gradient.

    The threshold broadcasts against `x`; the gradient reaches it through the chain rule,
    `d sign(x - t) / d t = -d sign(x - t) / d x`.

    Args:
        x: input tensor.
        threshold: tensor broadcastable to `x`.
        estimator: `"approx_sign"` (ReActNet / Bi-Real's piecewise polynomial,
            `2 - 2|z|` for `|z| <= 1`, else 0) or `"ste"` (straight-through, 1 for `|z| <= 1`).

    Returns:
        A tensor of the shape of `x` holding -1.0 and +1.0.
    """
    _check_choice("estimator", estimator, ESTIMATORS)
    shifted = x - threshold
    if estimator == "approx_sign":
        return lq.quantizers.approx_sign(shifted)
    return lq.quantizers.ste_sign(shifted, clip_value=1.0)


def _expand_to_rank(values: tf.Tensor, rank: int) -> tf.Tensor:
    """(B, C) -> (B, 1, ..., 1, C) so per-sample values broadcast over space or tokens."""
    return tf.reshape(values, [-1] + [1] * (rank - 2) + [values.shape[-1]])


def effective_groups(channels: int, groups: int | None) -> int:
    """How many dynamic values a layer with `channels` channels and `groups` emits per
    sample (and per output kind): `channels` for None, else `gcd(groups, channels)`, the
    largest count up to `groups` that splits the channels into equal consecutive groups
    (`min(groups, channels)` for the zoo's widths, multiples of 8 and powers of 2 times 8)."""
    return channels if groups is None else math.gcd(groups, channels)


def _expand_groups(values: tf.Tensor, channels: int) -> tf.Tensor:
    """(B, G) -> (B, C): each group's value repeated over its C / G consecutive channels."""
    groups = values.shape[-1]
    if groups in (1, channels):
        return values  # (B, 1) broadcasts; (B, C) is already per channel
    return tf.repeat(values, channels // groups, axis=-1)


class _HyperFunction:
    """Mixin: the DY-ReLU "hyper function" statistics -> FC -> ReLU -> FC, owned by a layer.

    ```
    s = stat(x)                                   # (B, C), or (B, 2C) for "mean_std"
    z = W2 . act(W1 . s + b1) + b2                # (B, G): one value per group of channels
    offset = z                                    # bound=None
    offset = bound * std_c(x) * (2 sigmoid(z) - 1)   # bound given: |offset| < bound * std
    ```
    `W1: C -> hidden_units`, or `C -> max(C // reduction, min_hidden_units)` when a
    `reduction` is given (DY-ReLU's rule); `act` leaky ReLU (slope 0.2) or ReLU
    (`hidden_activation`). The weights are created with the
    owning layer's `add_weight`, so they save, load and train as that layer's own
    (`hyper_kernel_1`, `hyper_bias_1`, `hyper_kernel_2`, `hyper_bias_2`); with a
    `learning_rate_multiplier` m they are stored divided by m and used times m, which
    multiplies their learning rate by m under Adam (invariant to gradient scale, so a
    gradient multiplier would do nothing). The second FC starts at zero, and
    `2 sigmoid(0) - 1 = 0`: a fresh layer outputs exactly its static part.
    """

    @classmethod
    def from_config(cls, config):
        # configs saved before `hidden_activation` existed computed ReLU (docs/design.md)
        return cls(**{"hidden_activation": "relu", **config})

    def _hidden_units(self, channels: int) -> int:
        if self.reduction is None:
            return self.hidden_units
        return max(channels // self.reduction, self.min_hidden_units)

    def _build_hyper_function(self, channels: int, outputs: int) -> None:
        inputs = channels * (2 if self.statistics == "mean_std" else 1)
        hidden = self._hidden_units(channels)
        m = float(self.learning_rate_multiplier)
        self.hyper_kernel_1 = self.add_weight(
            name="hyper_kernel_1",
            shape=(inputs, hidden),
            # he_normal for the used kernel m * stored: the stored one has 1/m its std
            initializer=tf.keras.initializers.VarianceScaling(
                2.0 / m**2, mode="fan_in", distribution="truncated_normal"
            ),
        )
        self.hyper_bias_1 = self.add_weight(
            name="hyper_bias_1", shape=(hidden,), initializer="zeros"
        )
        self.hyper_kernel_2 = self.add_weight(
            name="hyper_kernel_2", shape=(hidden, outputs), initializer="zeros"
        )
        self.hyper_bias_2 = self.add_weight(
            name="hyper_bias_2", shape=(outputs,), initializer="zeros"
        )

    def _hyper_options(self) -> dict:
        return {
            "hidden_units": self.hidden_units,
            "hidden_activation": self.hidden_activation,
            "reduction": self.reduction,
            "min_hidden_units": self.min_hidden_units,
            "statistics": self.statistics,
            "groups": self.groups,
            "bound": self.bound,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }

    def _set_hyper_options(
        self,
        *,
        hidden_units,
        hidden_activation,
        reduction,
        min_hidden_units,
        statistics,
        groups,
        bound,
        learning_rate_multiplier,
    ) -> None:
        _check_positive_int("hidden_units", hidden_units)
        _check_positive_int("reduction", reduction, allow_none=True)
        if reduction is not None and hidden_units != HIDDEN_UNITS:
            raise ValueError(
                f"Expected either hidden_units (a fixed hidden width) or reduction (the width "
                f"C // reduction), but got hidden_units={hidden_units!r} and "
                f"reduction={reduction!r}."
            )
        _check_positive_int("min_hidden_units", min_hidden_units)
        _check_choice("statistics", statistics, STATISTICS)
        _check_positive_int("groups", groups, allow_none=True)
        _check_positive_number("bound", bound, allow_none=True)
        _check_positive_number("learning_rate_multiplier", learning_rate_multiplier)
        _check_choice("hidden_activation", hidden_activation, HIDDEN_ACTIVATIONS)
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.reduction = reduction
        self.min_hidden_units = min_hidden_units
        self.statistics = statistics
        self.groups = groups
        self.bound = None if bound is None else float(bound)
        self.learning_rate_multiplier = float(learning_rate_multiplier)

    def _hyper_function(self, inputs: tf.Tensor, kinds: int = 1) -> list[tf.Tensor]:
        """(B, ..., C) -> `kinds` dynamic offsets, each (B, C), or (B, 1) when the layer
        emits one value per sample and no bound scales it per channel."""
        channels = inputs.shape[-1]
        if self.statistics == "mean" and self.bound is None:
            stats, spread = channel_statistics(inputs, "mean"), None
        else:
            mean, spread = channel_moments(inputs)
            stats = tf.concat([mean, spread], axis=-1) if self.statistics == "mean_std" else mean
        m = self.learning_rate_multiplier
        hidden = tf.matmul(stats, m * self.hyper_kernel_1) + m * self.hyper_bias_1
        if self.hidden_activation == "relu":
            hidden = tf.nn.relu(hidden)
        else:
            hidden = tf.maximum(hidden, 0.2 * hidden)  # leaky ReLU, exact in float64 too
        z = tf.matmul(hidden, m * self.hyper_kernel_2) + m * self.hyper_bias_2
        if self.bound is not None:
            z = 2.0 * tf.sigmoid(z) - 1.0
            # the spread only sets the scale; no gradient into the input through it
            scale = self.bound * tf.stop_gradient(spread)
        offsets = []
        for part in tf.split(z, kinds, axis=-1) if kinds > 1 else [z]:
            part = _expand_groups(part, channels)
            offsets.append(part if self.bound is None else scale * part)
        return offsets


@lq.utils.register_alias("rsign")
@lq.utils.register_keras_custom_object
class RSign(_PlainCall, lq.quantizers.Quantizer):
    r"""ReActNet's RSign: binarization with a learnable static per-channel threshold.

    `RSign(x) = sign(x - b)`, `b` of shape `(C,)`, zero-initialized; outputs in {-1, +1} with
    sign(0) = +1.

    Example:
        ```python
        x = RSign()(feature_map)  # then QuantConv2D(..., input_quantizer=NoOp(precision=1))
        conv = lq.layers.QuantConv2D(64, 3, input_quantizer=RSign(), ...)  # or inside
        ```

    Args:
        estimator: surrogate gradient of sign, `"approx_sign"` (default) or `"ste"`.
        **kwargs: Keras layer arguments (`name`, `dtype`, ...).

    References:
        - ReActNet: https://arxiv.org/abs/2003.03488
    """

    precision = 1

    def __init__(self, estimator: str = "approx_sign", **kwargs):
        _check_choice("estimator", estimator, ESTIMATORS)
        self.estimator = estimator
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = _check_input_rank(self, input_shape)
        self.threshold = self.add_weight(name="threshold", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        return dynamic_sign(_check_float(self, inputs), self.threshold, self.estimator)

    def get_config(self):
        return {**super().get_config(), "estimator": self.estimator}


@lq.utils.register_alias("dysign")
@lq.utils.register_keras_custom_object
class DySign(_PlainCall, _HyperFunction, lq.quantizers.Quantizer):
    r"""DySign: sign with per-sample, per-channel thresholds computed from the input itself.

    ```
    s      = mean of x over H, W (or tokens)            # (B, C); "mean_std" appends the stds
    z      = W2 . lrelu(W1 . s + b1) + b2               # (B, G), G = groups (default C)
    d      = z                                          # bound=None
    d      = bound * std_c(x) * (2 sigmoid(z) - 1)      # bound=lambda, Dynamic ReLU's form
    tau(x) = b + d, d of a group for each of its channels   # (B, C), or (B, 1) for "layer"
    DySign(x) = sign(x - tau(x))                        # in {-1, +1}, sign(0) = +1
    ```
    `b` is RSign's static per-channel threshold; `W1: C -> hidden_units` (2, or
    `max(C // reduction, min_hidden_units)` given a `reduction`); `W2`, `b2` start at
    zero (and `2 sigmoid(0) - 1 = 0`), so a fresh
    DySign equals an RSign with the same `b`. `std_c(x)` is each sample's standard
    deviation of channel c over H, W (no gradient flows through it): a bounded threshold
    moves at most `bound` of its channel's spread. Gradients reach `x`, `b` and the hyper
    function (`d/d tau = -d/dx` of the sign estimator).

    Size: the hyper function has `C h + h + h G + G` floats (`h` its hidden width, `2G`
    outputs for DyPReLU). The default `h = 2` keeps that linear in `C`, small next to the
    `C x C_out x k x k / 8` bytes of the binary conv it serves: every Dy model of the zoo
    stays within 1.3x of its baseline's .tflite (docs/design.md). DY-ReLU's rule
    (`reduction=16`, at least 8 hidden units) grows with `C^2 / 16`.

    Use it as the `input_quantizer` of a `QuantConv2D` / `BinaryDense`, or as a layer right
    before a `QuantConv2D` whose `input_quantizer` passes +-1 values and their gradient
    through (`lq.quantizers.NoOp(precision=1)`, which keeps `lq.models.summary` counting
    binary MACs; `"approx_sign"` there would zero the gradient, its derivative is 0 at +-1).
    Either way LCE converts it to MEAN + FULLY_CONNECTED + SUB + LceQuantize + LceBconv2d.

    Example:
        ```python
        x = DySign()(feature_map)                         # (B, H, W, C) -> +-1
        x = lq.layers.QuantConv2D(
            128, 3, padding="same", use_bias=False,
            input_quantizer=lq.quantizers.NoOp(precision=1),
            kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip",
        )(x)
        x = DySign(groups=16, hidden_units=1, bound=1.0)(feature_map)   # smaller
        x = DySign(reduction=16)(feature_map)  # DY-ReLU's rule: hidden C // 16, >= 8
        ```

    Args:
        hidden_units: the hyper function's hidden width. Default 2.
        hidden_activation: `"leaky_relu"` (default, slope 0.2: every hidden unit passes
            a gradient from the first step) or `"relu"` (Dynamic ReLU's).
        reduction: None (default) or a ratio `r`: the hidden width is then
            `max(C // r, min_hidden_units)` instead of `hidden_units`.
        min_hidden_units: with a `reduction`, the smallest hidden width. Default 8.
        granularity: `"channel"` (one threshold per sample and channel, default) or
            `"layer"` (one dynamic value per sample; `b` is then a scalar too).
        statistics: `"mean"` (default) or `"mean_std"` (means and standard deviations).
        estimator: surrogate gradient of sign, `"approx_sign"` (default) or `"ste"`.
        groups: None (default: one dynamic value per channel) or `G`: one per group of
            `C / gcd(G, C)` consecutive channels (`effective_groups`); `b` stays per
            channel. Only with `granularity="channel"`.
        bound: None (default: the dynamic part is `z`, unbounded) or `lambda > 0`: it is
            `lambda * std_c(x) * (2 sigmoid(z) - 1)`, within `lambda` channel stds.
        learning_rate_multiplier: `m > 0`, default 1: the hyper function's weights are
            stored divided by `m` and used times `m`, so Adam moves them `m` times faster
            (the static threshold `b` is not affected).
        **kwargs: Keras layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: an option outside the allowed values, or an input of rank < 3.

    References:
        - DySign: https://arxiv.org/abs/2211.02292
        - DyBNN: https://arxiv.org/abs/2110.05185
        - Dynamic ReLU (hyper function, bounded output): https://arxiv.org/abs/2003.10027
        - ReActNet (RSign): https://arxiv.org/abs/2003.03488
    """

    precision = 1

    def __init__(
        self,
        reduction: int | None = None,
        granularity: str = "channel",
        statistics: str = "mean",
        estimator: str = "approx_sign",
        min_hidden_units: int = MIN_HIDDEN_UNITS,
        groups: int | None = None,
        bound: float | None = None,
        learning_rate_multiplier: float = 1.0,
        hidden_units: int = HIDDEN_UNITS,
        hidden_activation: str = "leaky_relu",
        **kwargs,
    ):
        _check_choice("granularity", granularity, GRANULARITIES)
        _check_choice("estimator", estimator, ESTIMATORS)
        self._set_hyper_options(
            hidden_units=hidden_units,
            hidden_activation=hidden_activation,
            reduction=reduction,
            min_hidden_units=min_hidden_units,
            statistics=statistics,
            groups=groups,
            bound=bound,
            learning_rate_multiplier=learning_rate_multiplier,
        )
        if granularity == "layer" and groups is not None:
            raise ValueError(
                f"Expected groups=None with granularity='layer' (one dynamic value per "
                f"sample already), but got groups={groups!r}."
            )
        self.granularity = granularity
        self.estimator = estimator
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = _check_input_rank(self, input_shape)
        static = channels if self.granularity == "channel" else 1
        outputs = effective_groups(channels, self.groups) if self.granularity == "channel" else 1
        self.threshold = self.add_weight(name="threshold", shape=(static,), initializer="zeros")
        self._build_hyper_function(channels, outputs)
        super().build(input_shape)

    def thresholds(self, inputs: tf.Tensor) -> tf.Tensor:
        """The per-sample thresholds `tau(x)`, shape `(B, C)` (or `(B, 1)` for "layer"
        without a bound)."""
        (dynamic,) = self._hyper_function(tf.convert_to_tensor(inputs))
        return self.threshold + dynamic

    def call(self, inputs):
        inputs = _check_float(self, inputs)
        tau = _expand_to_rank(self.thresholds(inputs), inputs.shape.rank)
        return dynamic_sign(inputs, tau, self.estimator)

    def get_config(self):
        return {
            **super().get_config(),
            **self._hyper_options(),
            "granularity": self.granularity,
            "estimator": self.estimator,
        }


def _shifted_prelu(x: tf.Tensor, shift_in, slope, shift_out) -> tf.Tensor:
    """`PReLU_slope(x - shift_in) + shift_out`."""
    shifted = x - shift_in
    return tf.maximum(shifted, 0.0) + slope * tf.minimum(shifted, 0.0) + shift_out


@lq.utils.register_keras_custom_object
class RPReLU(_PlainCall, tf.keras.layers.Layer):
    r"""ReActNet's RPReLU: `y = PReLU(x - gamma) + zeta`, all three per channel.

    `gamma` and `zeta` start at 0, the PReLU slope at 0.25; the slope is shared over space
    (NHWC) or tokens.

    Example:
        ```python
        y = RPReLU()(tf.keras.layers.BatchNormalization()(x))
        ```

    Args:
        slope_initializer: initial negative slope, 0.25 as in ReActNet.
        **kwargs: Keras layer arguments.

    References:
        - ReActNet: https://arxiv.org/abs/2003.03488
    """

    def __init__(self, slope_initializer: float = 0.25, **kwargs):
        if isinstance(slope_initializer, bool) or not isinstance(slope_initializer, numbers.Real):
            raise ValueError(
                f"Expected slope_initializer to be a number (the initial negative slope, "
                f"ReActNet's 0.25), but got {slope_initializer!r}."
            )
        self.slope_initializer = float(slope_initializer)
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = _check_input_rank(self, input_shape)
        self.shift_in = self.add_weight(name="shift_in", shape=(channels,), initializer="zeros")
        self.slope = self.add_weight(
            name="slope",
            shape=(channels,),
            initializer=tf.keras.initializers.Constant(self.slope_initializer),
        )
        self.shift_out = self.add_weight(name="shift_out", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        inputs = _check_float(self, inputs)
        return _shifted_prelu(inputs, self.shift_in, self.slope, self.shift_out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "slope_initializer": self.slope_initializer}


@lq.utils.register_keras_custom_object
class DyPReLU(_HyperFunction, RPReLU):
    r"""DyPReLU: RPReLU whose two shifts are produced per sample by a hyper function.

    ```
    [z_g, z_z] = W2 . lrelu(W1 . mean_hw(x) + b1) + b2  # (B, 2G), one hyper function
    g, z = z_g, z_z                                     # bound=None
    g, z = bound * std_c(x) * (2 sigmoid(z_.) - 1)      # bound=lambda
    y = PReLU_c(x - (gamma + g)) + (zeta + z)           # g, z of a group for its channels
    ```
    `gamma`, `zeta` and the PReLU slope (0.25) are RPReLU's static weights; `W2`, `b2` start
    at zero, so a fresh DyPReLU equals RPReLU. One hyper function emits both shifts (as
    Dynamic ReLU emits all its coefficients from one), which halves its first FC. The
    hyper-function options are DySign's (see there).

    Example:
        ```python
        y = DyPReLU()(tf.keras.layers.BatchNormalization()(x))
        ```

    Args:
        reduction: None (default) or a ratio `r`: the hidden width is then
            `max(C // r, min_hidden_units)` instead of `hidden_units`.
        statistics: `"mean"` (default) or `"mean_std"`.
        slope_initializer: initial negative slope, 0.25.
        min_hidden_units: with a `reduction`, the smallest hidden width. Default 8.
        groups: None (one pair of shifts per channel) or `G`: one pair per group of
            `C / gcd(G, C)` consecutive channels.
        bound: None (unbounded shifts) or `lambda > 0`: each shift within `lambda`
            channel stds, `lambda * std_c(x) * (2 sigmoid(.) - 1)`.
        learning_rate_multiplier: `m`, default 1: hyper-function weights stored divided
            by `m` and used times `m` (`m` times their learning rate under Adam).
        hidden_units: the hyper function's hidden width. Default 2.
        hidden_activation: `"leaky_relu"` (default) or `"relu"`.
        **kwargs: Keras layer arguments.

    References:
        - DyBNN: https://arxiv.org/abs/2110.05185
        - DySign: https://arxiv.org/abs/2211.02292
        - Dynamic ReLU: https://arxiv.org/abs/2003.10027
    """

    def __init__(
        self,
        reduction: int | None = None,
        statistics: str = "mean",
        slope_initializer: float = 0.25,
        min_hidden_units: int = MIN_HIDDEN_UNITS,
        groups: int | None = None,
        bound: float | None = None,
        learning_rate_multiplier: float = 1.0,
        hidden_units: int = HIDDEN_UNITS,
        hidden_activation: str = "leaky_relu",
        **kwargs,
    ):
        self._set_hyper_options(
            hidden_units=hidden_units,
            hidden_activation=hidden_activation,
            reduction=reduction,
            min_hidden_units=min_hidden_units,
            statistics=statistics,
            groups=groups,
            bound=bound,
            learning_rate_multiplier=learning_rate_multiplier,
        )
        super().__init__(slope_initializer=slope_initializer, **kwargs)

    def build(self, input_shape):
        channels = _check_input_rank(self, input_shape)
        self._build_hyper_function(channels, 2 * effective_groups(channels, self.groups))
        super().build(input_shape)

    def shifts(self, inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The per-sample shifts `(gamma(x), zeta(x))`, each of shape `(B, C)`."""
        dynamic_in, dynamic_out = self._hyper_function(tf.convert_to_tensor(inputs), kinds=2)
        return self.shift_in + dynamic_in, self.shift_out + dynamic_out

    def call(self, inputs):
        inputs = _check_float(self, inputs)
        shift_in, shift_out = self.shifts(inputs)
        rank = inputs.shape.rank
        return _shifted_prelu(
            inputs, _expand_to_rank(shift_in, rank), self.slope, _expand_to_rank(shift_out, rank)
        )

    def get_config(self):
        return {**super().get_config(), **self._hyper_options()}


_FIXED_CONV_ARGUMENTS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
    "pad_values",
)


_TOKEN_INPUT_SPEC = tf.keras.layers.InputSpec(min_ndim=3, max_ndim=4)


@lq.utils.register_keras_custom_object
class BinaryDense(_PlainCall, lq.layers.QuantConv2D):
    r"""Binary linear layer over tokens that LCE runs as a binary kernel.

    LCE has no binary fully-connected kernel (a `QuantDense` runs in float), so this is a
    1x1 `QuantConv2D`: `(B, N, D)` tokens are viewed as a `[B, 1, N, D]` image *before* the
    input quantizer (a reshape between quantizer and conv breaks LCE's pattern), giving
    `(B, N, units)`. Rank-4 inputs (tokens already kept as `[B, 1, N, D]`) go straight to the
    conv. `y = Q_in(x) . (mean|W| * sign(W))`, the scale per output unit.

    Example:
        ```python
        y = BinaryDense(384, input_quantizer=DySign())(tokens)   # (B, 196, 384)
        ```

    Args:
        units: output features.
        input_quantizer: quantizer of the inputs, default `"approx_sign"`; a `DySign()` or
            `RSign()` instance for thresholds.
        kernel_quantizer: default `"magnitude_aware_sign"` (binary, scale mean|W|);
            `None` gives real weights (step 1 of two-step training).
        kernel_constraint: default `"weight_clip"` (larq), as for any binary kernel.
        use_bias: default False.
        **kwargs: other `QuantConv2D` arguments (initializers, regularizers, name, ...).

    References:
        - LCE issues #669 (no binary FC) and #692 (reshape breaks the pattern).
    """

    def __init__(
        self,
        units: int,
        input_quantizer="approx_sign",
        kernel_quantizer="magnitude_aware_sign",
        kernel_constraint="weight_clip",
        use_bias: bool = False,
        **kwargs,
    ):
        _check_positive_int("units", units)
        fixed = sorted(set(kwargs) & set(_FIXED_CONV_ARGUMENTS))
        if fixed:
            raise ValueError(
                f"BinaryDense is a 1x1 convolution and does not take {fixed}; "
                f"got {', '.join(f'{k}={kwargs[k]!r}' for k in fixed)}."
            )
        for argument, value in (
            ("input_quantizer", input_quantizer),
            ("kernel_quantizer", kernel_quantizer),
        ):
            try:
                lq.quantizers.get(value)
            except ValueError as error:
                raise ValueError(
                    f"Expected {argument} to be None, a larq quantizer or its registered name "
                    f'(e.g. "approx_sign", "ste_sign", "magnitude_aware_sign"), but got '
                    f"{value!r}."
                ) from error
        self.units = units
        super().__init__(
            filters=units,
            kernel_size=1,
            input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer,
            kernel_constraint=kernel_constraint,
            use_bias=use_bias,
            **kwargs,
        )
        self.input_spec = _TOKEN_INPUT_SPEC

    def _as_image_shape(self, input_shape) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        if shape.rank not in (3, 4):
            raise ValueError(
                "BinaryDense expects tokens (batch, tokens, dim) or (batch, 1, tokens, dim), "
                f"but got shape {shape}."
            )
        return tf.TensorShape([shape[0], 1, *shape[1:]]) if shape.rank == 3 else shape

    def build(self, input_shape):
        super().build(self._as_image_shape(input_shape))
        # Conv2D's spec demands rank 4; tokens of rank 3 are reshaped in `call`.
        self.input_spec = _TOKEN_INPUT_SPEC

    def call(self, inputs):
        if inputs.shape.rank == 4:
            return super().call(inputs)
        outputs = super().call(tf.expand_dims(inputs, axis=1))
        return tf.squeeze(outputs, axis=1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return shape[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        for key in _FIXED_CONV_ARGUMENTS:
            config.pop(key, None)
        return {**config, "units": self.units}


# ---------------------------------------------------------------------------- transformer parts


@lq.utils.register_keras_custom_object
class PositionEmbedding(_PlainCall, tf.keras.layers.Layer):
    """Adds a learnable embedding, one vector per token position: `y = x + E`.

    `E` has the input's shape without the batch axis (`(1, N, D)` for `[B, 1, N, D]`
    tokens) and starts from a truncated normal of standard deviation `stddev` (CCT: 0.2).

    Example:
        ```python
        tokens = PositionEmbedding()(tokens)   # (B, 1, 196, 384) -> same shape
        ```

    Args:
        stddev: standard deviation of the truncated-normal initializer.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, stddev: float = POSITION_EMBEDDING_STDDEV, **kwargs):
        self.stddev = float(stddev)
        super().__init__(**kwargs)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if not shape[1:].is_fully_defined():
            raise ValueError(
                f"PositionEmbedding needs a fully known token shape, but got shape {shape}."
            )
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, *shape[1:]),
            initializer=tf.keras.initializers.TruncatedNormal(stddev=self.stddev),
        )
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.embedding

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


def scaled_dot_product_attention(qkv: tf.Tensor, num_heads: int) -> tf.Tensor:
    """Multi-head attention products of fused projections, in the `[B, 1, N, D]` layout.

    ```
    Q, K, V = split(qkv, 3)                          # each (B, 1, N, D), heads of D / h
    head_i  = softmax(Q_i K_i^T / sqrt(D / h)) V_i   # (B, N, D / h)
    out     = concat_i head_i                        # (B, 1, N, D)
    ```

    Args:
        qkv: `(B, 1, N, 3D)`, the queries, keys and values side by side (CCT's fused qkv).
        num_heads: `h`, dividing `D`.

    Returns:
        A `(B, 1, N, D)` tensor.
    """
    tokens, width = qkv.shape[2], qkv.shape[3]
    dim = width // 3
    head_dim = dim // num_heads

    def heads(t):  # (B, 1, N, D) -> (B, h, N, D / h)
        return tf.transpose(tf.reshape(t, [-1, tokens, num_heads, head_dim]), [0, 2, 1, 3])

    query, key, value = (heads(t) for t in tf.split(qkv, 3, axis=-1))
    scores = tf.matmul(query * head_dim**-0.5, key, transpose_b=True)
    attended = tf.matmul(tf.nn.softmax(scores, axis=-1), value)
    return tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [-1, 1, tokens, dim])


@lq.utils.register_keras_custom_object
class ScaledDotProductAttention(_PlainCall, tf.keras.layers.Layer):
    """The weightless, float part of multi-head self-attention (`scaled_dot_product_attention`).

    Takes the fused Q/K/V projections `(B, 1, N, 3D)` and returns the merged heads
    `(B, 1, N, D)`. The projections around it are separate (binary) layers, so a sign layer
    can sit right before each of them.

    Example:
        ```python
        qkv = BinaryDense(3 * 256, input_quantizer=binary_input())(RSign()(tokens))
        out = ScaledDotProductAttention(num_heads=4)(qkv)
        ```

    Args:
        num_heads: number of heads; must divide `D`.
        **kwargs: Keras layer arguments.

    Raises:
        ValueError: `num_heads` not a positive integer, or the input width not `3 * h * k`.
    """

    def __init__(self, num_heads: int, **kwargs):
        _check_positive_int("num_heads", num_heads)
        self.num_heads = num_heads
        super().__init__(**kwargs)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank != 4 or shape[1] != 1 or shape[2] is None or shape[3] is None:
            raise ValueError(
                "ScaledDotProductAttention expects fused projections (batch, 1, tokens, 3 * dim), "
                f"but got shape {shape}."
            )
        if shape[3] % (3 * self.num_heads):
            raise ValueError(
                f"Expected the input width {shape[3]} to be 3 * num_heads * head_dim with "
                f"num_heads={self.num_heads}."
            )
        super().build(input_shape)

    def call(self, inputs):
        return scaled_dot_product_attention(inputs, self.num_heads)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return shape[:-1].concatenate([shape[-1] // 3])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}
