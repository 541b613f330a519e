"""Building blocks shared by the zoo's model families: inputs, binary convs, heads, weights."""

from __future__ import annotations

import dataclasses
import inspect
import numbers

import larq as lq
import tensorflow as tf

from ..checks import check_bool, check_choice, check_positive_int
from ..layers import DyPReLU, DySign, RPReLU, RSign
from . import weights as weights_module
from .pytorch_padding import PADDINGS, SpatialReverse, warn_small_maps

DEFAULT_INPUT_SHAPE = (224, 224, 3)
STEMS = ("auto", "imagenet", "small", "small_stride2")
#: Inputs smaller than this get the small-input stem when `stem="auto"`.
SMALL_INPUT_LIMIT = 112


def resolve_padding(padding: str | None, weights, *, model_name: str, include_top: bool) -> str:
    """`padding=None` -> the padding the weights were made for ("pytorch" for those imported
    from ReActNet's PyTorch checkpoints, see `weights.recorded_padding`), else "lce"."""
    if padding is not None:
        return padding
    recorded = weights_module.recorded_padding(
        weights, model_name=model_name, include_top=include_top
    )
    return recorded or "lce"


def validated_options(
    name: str,
    block_options: dict,
    *,
    input_shape,
    input_tensor,
    weights,
    include_top: bool,
    num_classes: int,
    stem: str = "auto",
    width_multiplier: float = 1.0,
) -> BlockOptions:
    """Validate the arguments every zoo constructor takes, before any work, and return the
    family builder's `BlockOptions` (from `block_options`) with the padding resolved from the
    weights of model `name` (`resolve_padding`).

    Raises:
        ValueError: naming the argument, the value received and what is allowed.
    """
    options = BlockOptions(**block_options)
    if input_shape is not None:
        shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else ()
        if len(shape) != 3 or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise ValueError(
                "Expected input_shape to be (height, width, channels) of positive integers, "
                f"but got {input_shape!r} of type {type(input_shape).__name__}."
            )
        if input_tensor is not None:
            tensor_shape = tuple(tf.keras.backend.int_shape(input_tensor)[1:])
            if len(tensor_shape) != 3 or any(
                t is not None and t != int(s) for t, s in zip(tensor_shape, shape)
            ):
                raise ValueError(
                    f"Expected input_shape to match input_tensor's shape {tensor_shape}, but "
                    f"got input_shape={tuple(int(d) for d in shape)}; give one of them."
                )
    check_positive_int("num_classes", num_classes)
    check_bool("include_top", include_top)
    check_choice("stem", stem, STEMS)
    if (
        isinstance(width_multiplier, bool)
        or not isinstance(width_multiplier, numbers.Real)
        or not 0 < width_multiplier <= 4
    ):
        raise ValueError(
            f"Expected width_multiplier to be a number in (0, 4], but got {width_multiplier!r}."
        )
    check_choice("padding", options.padding, (*PADDINGS, None))
    weights_module.validate_weights_argument(
        weights, include_top=include_top, num_classes=num_classes
    )
    padding = resolve_padding(options.padding, weights, model_name=name, include_top=include_top)
    return dataclasses.replace(options, padding=padding)


def _check_layer_options(argument: str, options, layer_class, enabled: bool, flag: str) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise ValueError(
            f"Expected {argument} to be a dict of {layer_class.__name__} arguments, but got "
            f"{options!r} of type {type(options).__name__}."
        )
    if not enabled:
        raise ValueError(
            f"Expected no {argument} with {flag}=False (there is no {layer_class.__name__} to "
            f"configure), but got {argument}={options!r}."
        )
    allowed = [
        name
        for name, p in inspect.signature(layer_class.__init__).parameters.items()
        if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Expected the keys of {argument} to be {layer_class.__name__} arguments "
            f"({', '.join(allowed)}), but got {', '.join(map(repr, unknown))}."
        )
    try:
        layer_class(**options)  # validates the values; nothing is built
    except (ValueError, TypeError) as error:
        raise ValueError(f"Invalid {argument} {options!r}: {error}") from error


def scaled_width(channels: int, width_multiplier: float, divisor: int = 8) -> int:
    """`channels * width_multiplier` rounded to a multiple of `divisor` (at least `divisor`),
    never more than 10% below the exact product: keras.applications' MobileNet rule.

    Multiples of 8 keep LCE's bitpacked channels aligned (its guide asks for outputs in
    multiples of 8).
    """
    exact = channels * width_multiplier
    width = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if width < 0.9 * exact:
        width += divisor
    return width


def model_inputs(input_shape=None, input_tensor=None) -> tf.Tensor:
    """The model's input: a new `Input(input_shape)`, or one wrapping `input_tensor`.

    `input_shape` defaults to the shape of `input_tensor`, else (224, 224, 3).
    """
    if input_tensor is None:
        return tf.keras.Input(tuple(int(d) for d in input_shape or DEFAULT_INPUT_SHAPE))
    if tf.keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return tf.keras.Input(tensor=input_tensor, shape=input_shape)


def resolve_stem(stem: str, inputs: tf.Tensor) -> str:
    """ "auto" -> "small" when height or width is below `SMALL_INPUT_LIMIT`, else "imagenet"."""
    if stem != "auto":
        return stem
    height, width = inputs.shape[1], inputs.shape[2]
    small = any(d is not None and d < SMALL_INPUT_LIMIT for d in (height, width))
    return "small" if small else "imagenet"


def binary_input() -> lq.quantizers.NoOp:
    """Input quantizer for convs fed by a DySign/RSign layer: passes +-1 values and their
    gradient through unchanged, and marks the input 1-bit for `lq.models.summary`."""
    return lq.quantizers.NoOp(precision=1)


def binary_conv2d(
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    binary_weights: bool = True,
    pad_values: float = 1.0,
    name: str | None = None,
) -> lq.layers.QuantConv2D:
    """A binary conv as ReActNet's HardBinaryConv, fed by a sign layer.

    Weights: `magnitude_aware_sign` (per-output-channel scale mean|W|) with larq's weight
    clip; `binary_weights=False` keeps them real (step 1 of two-step training). Padding is
    "same" with +1 pad values by default, which LCE converts for every target and which
    keeps the padded activations binary (zero is not a binary value); `pad_values=0.0` is
    PyTorch's zero padding (LCE: `target="arm"` only; docs/design.md, Padding).
    """
    return lq.layers.QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        pad_values=pad_values,
        use_bias=False,
        input_quantizer=binary_input(),
        kernel_quantizer="magnitude_aware_sign" if binary_weights else None,
        kernel_constraint="weight_clip" if binary_weights else None,
        kernel_initializer="glorot_normal",
        name=name,
    )


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """What every block builder needs beyond shapes: the kind of thresholds and activations,
    and whether the binary convs have binary weights. One frozen object per model, passed
    to every block, so that a new option is added in one place.

    Attributes:
        binary_weights: False keeps binary layers' weights real (step 1 of two-step training).
        dysign: DySign (dynamic thresholds) instead of RSign.
        dyprelu: DyPReLU (dynamic shifts) instead of RPReLU.
        dysign_options: keyword arguments of every `DySign`.
        dyprelu_options: keyword arguments of every `DyPReLU`.
        padding: "lce" (+1 pad values) or "pytorch" (zero pad values, PyTorch's symmetric
            padding of strided binary convs; `pytorch_padding`); None until the builder
            resolves it from the weights (`resolve_padding`).
    """

    binary_weights: bool = True
    dysign: bool = False
    dyprelu: bool = False
    dysign_options: dict | None = None
    dyprelu_options: dict | None = None
    padding: str | None = "lce"

    def __post_init__(self):
        for name in ("binary_weights", "dysign", "dyprelu"):
            check_bool(name, getattr(self, name))
        _check_layer_options("dysign_options", self.dysign_options, DySign, self.dysign, "dysign")
        _check_layer_options(
            "dyprelu_options", self.dyprelu_options, DyPReLU, self.dyprelu, "dyprelu"
        )

    def sign(self, x: tf.Tensor, name: str) -> tf.Tensor:
        """DySign (dynamic thresholds) or RSign (ReActNet's static ones)."""
        if self.dysign:
            return DySign(**(self.dysign_options or {}), name=name)(x)
        return RSign(name=name)(x)

    def activation(self, x: tf.Tensor, name: str) -> tf.Tensor:
        """DyPReLU (dynamic shifts) or RPReLU (ReActNet's static ones)."""
        if self.dyprelu:
            return DyPReLU(**(self.dyprelu_options or {}), name=name)(x)
        return RPReLU(name=name)(x)

    def binary_conv2d(
        self, filters: int, kernel_size: int, *, strides: int = 1, name: str
    ) -> lq.layers.QuantConv2D:
        """`binary_conv2d` with this model's `binary_weights` and pad values."""
        return binary_conv2d(
            filters,
            kernel_size,
            strides=strides,
            binary_weights=self.binary_weights,
            pad_values=0.0 if self.padding == "pytorch" else 1.0,
            name=name,
        )


def batch_norm(name: str) -> tf.keras.layers.BatchNormalization:
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def conv_stem(
    inputs: tf.Tensor,
    filters: int,
    *,
    kernel_size: int,
    strides: int,
    pool: bool,
    reflect: bool,
) -> tf.Tensor:
    """The ResNet and ReActNet-A stem: FP conv (no bias, "same") + BN, then max-pool 3x3/2
    with `pool`; layers `stem_conv`, `stem_bn`, `stem_pool`.

    `reflect` (for `padding="pytorch"`): PyTorch's symmetric padding of the stride-2 conv and
    pool by one reflection around both (`pytorch_padding`; the kernel is stored rotated),
    layers `stem_reverse` and `stem_unreverse`.
    """
    x = SpatialReverse(name="stem_reverse")(inputs) if reflect else inputs
    x = tf.keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = batch_norm("stem_bn")(x)
    if pool:
        x = tf.keras.layers.MaxPool2D(3, strides=2, padding="same", name="stem_pool")(x)
    if reflect:
        x = SpatialReverse(name="stem_unreverse")(x)
    return x


def classification_head(x: tf.Tensor, num_classes: int, *, pool: bool = True) -> tf.Tensor:
    """Global average pool (for feature maps), full-precision dense, softmax (as larq-zoo)."""
    if pool:
        x = tf.keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = tf.keras.layers.Dense(num_classes, name="logits")(x)
    return tf.keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)


def finish_model(
    inputs: tf.Tensor,
    features: tf.Tensor,
    *,
    input_tensor,
    name: str,
    weights,
    include_top: bool,
    num_classes: int,
    padding: str = "lce",
    pool: bool = True,
) -> tf.keras.Model:
    """Add the `classification_head` (with `include_top`; `pool` as there), wrap the graph in
    a `Model` (from `input_tensor`'s sources if one was given) and load `weights`; with
    `padding="pytorch"`, warn about the maps LCE pads wrongly (`warn_small_maps`)."""
    outputs = classification_head(features, num_classes, pool=pool) if include_top else features
    model_inputs_ = (
        tf.keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    )
    model = tf.keras.Model(model_inputs_, outputs, name=name)
    weights_module.load_pretrained(model, weights, model_name=name, include_top=include_top)
    if padding == "pytorch":
        warn_small_maps(model)
    return model
