"""Which binary Keras layers became binary kernels (`LceBconv2d`) in a converted file.

A Keras layer is *binary* when both its kernel quantizer and its input are 1-bit: a larq
quantized layer whose kernel quantizer has `precision == 1`, and whose input quantizer has
`precision == 1` (or which has none and is fed only by 1-bit quantizer layers, as the zoo's
standalone DySign/RSign layers). Those are the layers a user expects LCE to run as binary
kernels.

Matching layers to operators: LCE's converter names each tensor after the TensorFlow ops it
came from, `<model>/<layer>/<op>` (several fused names joined with ";", cut at 50
characters). A binary conv's own name is usually lost (batch norm folds into the bconv, whose
output is then named after the batch norm), so a Keras layer is matched to an `LceBconv2d`
whose input or output tensor names contain, in order of preference: the layer's own name,
the name of a layer consuming its output, the name of a layer feeding it. A layer left over
is counted as converted only if enough unmatched `LceBconv2d` ops remain (names cut too
short to tell); otherwise it is reported as not converted.
"""

from __future__ import annotations

import dataclasses
import os

import larq as lq
import tensorflow as tf

from . import flatbuffer as fbs

_KERNEL_QUANTIZER_ATTRIBUTES = ("kernel_quantizer", "depthwise_quantizer", "pointwise_quantizer")
#: larq quantizers with 1-bit outputs in {0, 1} or more levels: LCE has no kernel for them.
_NON_SIGN_QUANTIZERS = ("DoReFa", "DoReFaQuantizer", "SteHeaviside", "SteTern")
NOT_MATCHED_REASON = (
    "no LceBconv2d matched this layer: the converter did not fuse its sign and conv, e.g. a "
    "reshape or transpose between the quantizer and the conv (larq/compute-engine#692), or an "
    "input that is not the output of a sign"
)


@dataclasses.dataclass(frozen=True)
class BinaryLayer:
    """A Keras layer with 1-bit kernel and 1-bit input, and why LCE cannot binarize it (if so).

    Attributes:
        name: the layer's name.
        layer_type: its class name, e.g. "QuantConv2D".
        kernel_quantizer: class name of its kernel quantizer.
        input_quantizer: class name of its input quantizer, or of the layer feeding it.
        weights: number of binary weights (the kernel's size).
        known_problem: why LCE is known not to binarize this layer, or None.
    """

    name: str
    layer_type: str
    kernel_quantizer: str
    input_quantizer: str
    weights: int
    known_problem: str | None = None


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How many of a Keras model's binary layers run as `LceBconv2d` in a converted file.

    Attributes:
        binary_layers: names of the Keras layers with 1-bit kernel and input.
        converted: those matched to an `LceBconv2d`.
        not_converted: `(name, reason)` of those that run in float (or not at all).
        matched_by_count: converted layers matched only by counting (names cut too short).
        lce_bconv2d: number of `LceBconv2d` ops in the file.
    """

    binary_layers: tuple[str, ...]
    converted: tuple[str, ...]
    not_converted: tuple[tuple[str, str], ...]
    matched_by_count: tuple[str, ...]
    lce_bconv2d: int

    @property
    def complete(self) -> bool:
        """True when every binary Keras layer runs as an `LceBconv2d`."""
        return not self.not_converted

    @property
    def fraction(self) -> float:
        """Share of binary Keras layers that run as `LceBconv2d` (1.0 if there are none)."""
        return len(self.converted) / len(self.binary_layers) if self.binary_layers else 1.0

    def as_dict(self) -> dict:
        return {
            "binary_layers": list(self.binary_layers),
            "converted": list(self.converted),
            "not_converted": [{"layer": n, "reason": r} for n, r in self.not_converted],
            "matched_by_count": list(self.matched_by_count),
            "lce_bconv2d": self.lce_bconv2d,
            "fraction": self.fraction,
        }

    def __str__(self) -> str:
        line = (
            f"Coverage: {len(self.converted)} / {len(self.binary_layers)} binary Keras layers "
            f"run as LceBconv2d ({self.lce_bconv2d} LceBconv2d ops in the file)"
        )
        if self.matched_by_count:
            line += f"; {len(self.matched_by_count)} matched by count, not by name"
        lines = [line]
        lines += [f"  NOT BINARIZED: {name}: {reason}" for name, reason in self.not_converted]
        return "\n".join(lines)


def _walk_layers(model: tf.keras.Model):
    """Every layer of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _walk_layers(layer)
        else:
            yield layer


def _precision(quantizer) -> int | None:
    precision = getattr(quantizer, "precision", None)
    return precision if isinstance(precision, int) else None


def _class_name(obj) -> str:
    if obj is None:
        return "None"
    return getattr(obj, "__name__", None) or type(obj).__name__


def _kernel_quantizers(layer) -> list:
    return [q for a in _KERNEL_QUANTIZER_ATTRIBUTES if (q := getattr(layer, a, None)) is not None]


def _inbound_layers(layer) -> list:
    layers = []
    for node in getattr(layer, "_inbound_nodes", []):
        inbound = node.inbound_layers
        layers += inbound if isinstance(inbound, list | tuple) else [inbound]
    return layers


def _outbound_layers(layer) -> list:
    return [node.outbound_layer for node in getattr(layer, "_outbound_nodes", [])]


def _binary_input(layer) -> tuple[bool, object]:
    """Whether the layer's input is 1-bit, and the quantizer that makes it so."""
    input_quantizer = getattr(layer, "input_quantizer", None)
    if input_quantizer is not None:
        return _precision(input_quantizer) == 1, input_quantizer
    producers = _inbound_layers(layer)
    if producers and all(
        isinstance(p, lq.quantizers.Quantizer) and _precision(p) == 1 for p in producers
    ):
        return True, producers[0]
    return False, None


def _known_problem(layer, quantizers: list) -> str | None:
    if isinstance(layer, lq.layers.QuantDense):
        return (
            "QuantDense: LCE has no binary fully-connected kernel (larq/compute-engine#669), "
            "it runs in float32; use larq_dysign.BinaryDense (a 1x1 QuantConv2D) instead"
        )
    if isinstance(layer, lq.layers.QuantDepthwiseConv2D):
        return "QuantDepthwiseConv2D: LCE has no binary depthwise kernel, it runs in float32"
    for q in quantizers:
        if type(q).__name__ in _NON_SIGN_QUANTIZERS:
            return (
                f"{type(q).__name__} quantizer: LCE binarizes only sign quantizers (values "
                "-1/+1); {0, 1} (DoReFa, SteHeaviside) and ternary values run in float32"
            )
    return None


def binary_layers(model: tf.keras.Model) -> list[BinaryLayer]:
    """The Keras layers with a 1-bit kernel and a 1-bit input, in model order.

    Example:
        ```python
        [layer.name for layer in binary_layers(zoo.ReActNet18())][:2]
        # ['stage1_block1_conv', 'stage1_block2_conv']
        ```

    Args:
        model: a Keras model (nested models are searched too).

    Returns:
        A `BinaryLayer` per binary layer, with `known_problem` set when LCE is known not
        to binarize it (QuantDense, QuantDepthwiseConv2D, DoReFa and other non-sign
        quantizers).
    """
    found = []
    for layer in _walk_layers(model):
        kernel_quantizers = _kernel_quantizers(layer)
        if not kernel_quantizers or any(_precision(q) != 1 for q in kernel_quantizers):
            continue
        is_binary_input, input_quantizer = _binary_input(layer)
        if not is_binary_input:
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            kernel = getattr(layer, "depthwise_kernel", None)
        found.append(
            BinaryLayer(
                name=layer.name,
                layer_type=type(layer).__name__,
                kernel_quantizer=_class_name(kernel_quantizers[0]),
                input_quantizer=_class_name(input_quantizer),
                weights=int(kernel.shape.num_elements()) if kernel is not None else 0,
                known_problem=_known_problem(layer, [*kernel_quantizers, input_quantizer]),
            )
        )
    return found


def _name_tokens(tensor_name: str, layer_names: set[str]) -> set[str]:
    parts = {p for segment in tensor_name.split(";") for p in segment.split("/")}
    return parts & layer_names


def check_coverage(
    model: tf.keras.Model, flatbuffer_or_path: bytes | str | os.PathLike
) -> Coverage:
    """Match the model's binary layers to the `LceBconv2d` ops of its converted file.

    Example:
        ```python
        coverage = check_coverage(model, to_tflite(model, strict=False))
        coverage.not_converted   # (("dense_1", "QuantDense: LCE has no binary ..."),)
        ```

    Args:
        model: the Keras model that was converted.
        flatbuffer_or_path: its converted flatbuffer, bytes or a path.

    Returns:
        A `Coverage`.

    Raises:
        ValueError: the data is not a valid TFLite flatbuffer.
    """
    tflite = fbs.load(flatbuffer_or_path)
    layers = binary_layers(model)
    keras_layers = {layer.name: layer for layer in _walk_layers(model)}
    layer_names = set(keras_layers)

    bconvs = []
    for op in tflite.operators:
        if op.name != "LceBconv2d":
            continue
        names = [tflite.tensor(op.subgraph, t).name for t in (op.inputs[0], *op.outputs)]
        bconvs.append(set().union(*(_name_tokens(n, layer_names) for n in names)))

    def candidates(name: str) -> list[set[str]]:
        layer = keras_layers[name]
        return [
            {name},
            {o.name for o in _outbound_layers(layer)},
            {i.name for i in _inbound_layers(layer)},
        ]

    levels = {layer.name: candidates(layer.name) for layer in layers}
    taken: set[int] = set()
    matched: set[str] = set()
    for level in range(3):
        for layer in layers:
            if layer.name in matched:
                continue
            wanted = levels[layer.name][level]
            for index, tokens in enumerate(bconvs):
                if index not in taken and tokens & wanted:
                    taken.add(index)
                    matched.add(layer.name)
                    break

    unmatched = [layer for layer in layers if layer.name not in matched]
    spare = len(bconvs) - len(taken)
    by_count: list[str] = []
    if unmatched and spare >= len(unmatched):
        by_count = [layer.name for layer in unmatched]
        unmatched = []
    converted = [layer.name for layer in layers if layer.name in matched or layer.name in by_count]
    return Coverage(
        binary_layers=tuple(layer.name for layer in layers),
        converted=tuple(converted),
        not_converted=tuple(
            (layer.name, layer.known_problem or NOT_MATCHED_REASON) for layer in unmatched
        ),
        matched_by_count=tuple(by_count),
        lce_bconv2d=len(bconvs),
    )
