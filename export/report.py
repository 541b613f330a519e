"""What a converted file holds: binary and float kernels, where its bytes go, what it needs.

`inspect_tflite` answers the two questions LCE users ask most, without running the model:
"is my model really binarized?" (LceBconv2d count, float convolutions whose weights are
binary values, coverage of the Keras model's binary layers) and "why is the file so large?"
(weight bytes split into bitpacked binary filters and float32 tensors, the largest ones
named). It also states that the file needs LCE's runtime.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from . import flatbuffer as fbs
from .coverage import Coverage, check_coverage

#: Float operators whose weights could have been binary.
FLOAT_KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
LCE_CUSTOM_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
#: Relative spread of |w| within an output channel below which the weights count as +-scale.
_BINARY_VALUED_RTOL = 1e-5
_FLOAT_DOMINANCE = 0.5


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape (-1 = any size) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class TFLiteReport:
    """What a TFLite flatbuffer runs and stores; `print(report)` shows it as a table.

    Attributes:
        source: the file's path, or "<bytes>".
        file_bytes: size of the flatbuffer.
        op_histogram: operator name -> count, over all subgraphs.
        lce_bconv2d, lce_quantize, conv_2d, depthwise_conv_2d, fully_connected: op counts.
        binary_weight_bytes: bytes of the `LceBconv2d` filters (bitpacked into int32).
        binary_weights: binary weights they hold (output x kernel x input channels).
        float_weight_bytes: bytes of every other float constant (float convs, dense
            layers, biases, batch-norm multipliers, hyper-function weights...).
        float_weights: values they hold.
        other_weight_bytes: bytes of non-float constants (shapes, indices, int8 data).
        inputs, outputs: the model's inputs and outputs.
        custom_ops: custom operators the file needs a runtime for.
        binary_valued_float_ops: float convs / dense ops whose weights are +-scale per
            output channel: binary layers that were not binarized.
        largest_float_tensors: `(op, bytes)` of the largest float weights.
        coverage: the Keras model's binary layers vs `LceBconv2d`, when a model was given.
        warnings: problems to fix (not binarized layers, no binary kernel at all).
        notes: facts worth knowing (runtime needed, float weights dominating the size).
    """

    source: str
    file_bytes: int
    op_histogram: dict[str, int]
    lce_bconv2d: int
    lce_quantize: int
    conv_2d: int
    depthwise_conv_2d: int
    fully_connected: int
    binary_weight_bytes: int
    binary_weights: int
    float_weight_bytes: int
    float_weights: int
    other_weight_bytes: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    custom_ops: tuple[str, ...]
    binary_valued_float_ops: tuple[str, ...]
    largest_float_tensors: tuple[tuple[str, int], ...]
    coverage: Coverage | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def weight_bytes(self) -> int:
        return self.binary_weight_bytes + self.float_weight_bytes + self.other_weight_bytes

    @property
    def needs_lce_runtime(self) -> bool:
        return any(op in LCE_CUSTOM_OPS for op in self.custom_ops)

    def as_dict(self) -> dict:
        """The report as plain JSON-serializable values."""
        data = dataclasses.asdict(self)
        data["coverage"] = self.coverage.as_dict() if self.coverage is not None else None
        data["largest_float_tensors"] = [
            {"op": name, "bytes": size} for name, size in self.largest_float_tensors
        ]
        data["weight_bytes"] = self.weight_bytes
        data["needs_lce_runtime"] = self.needs_lce_runtime
        return data

    def __str__(self) -> str:
        return format_report(self)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _tensor_line(t: TensorInfo) -> str:
    return f"{t.name}  [{', '.join(map(str, t.shape))}]  {t.dtype.lower()}"


def format_report(report: TFLiteReport) -> str:
    """The report as readable text: summary, weights table, warnings, operator table."""
    lines = [f"{report.source}: {_megabytes(report.file_bytes)} TFLite flatbuffer"]
    for warning in report.warnings:
        lines.append(f"WARNING: {warning}")
    lines += [f"  input:  {_tensor_line(t)}" for t in report.inputs]
    lines += [f"  output: {_tensor_line(t)}" for t in report.outputs]
    lines.append(
        f"  binary kernels: {report.lce_bconv2d} LceBconv2d, {report.lce_quantize} LceQuantize"
    )
    lines.append(
        f"  float kernels:  {report.conv_2d} CONV_2D, {report.depthwise_conv_2d} "
        f"DEPTHWISE_CONV_2D, {report.fully_connected} FULLY_CONNECTED"
    )
    if report.coverage is not None:
        lines += ["  " + line for line in str(report.coverage).splitlines()]

    total = max(report.weight_bytes, 1)
    rows = [
        ("binary (bitpacked)", report.binary_weight_bytes, f"{report.binary_weights:,} 1-bit"),
        ("float", report.float_weight_bytes, f"{report.float_weights:,} values"),
        ("other (int/shape)", report.other_weight_bytes, ""),
    ]
    lines.append(f"  {'weights':<20}{'bytes':>12}{'share':>8}  contents")
    for label, size, contents in rows:
        lines.append(f"  {label:<20}{_megabytes(size):>12}{size / total:>8.1%}  {contents}")
    lines.append(f"  {'file total':<20}{_megabytes(report.file_bytes):>12}")
    if report.largest_float_tensors:
        largest = ", ".join(f"{n} ({_megabytes(s)})" for n, s in report.largest_float_tensors)
        lines.append(f"  largest float weights: {largest}")

    for note in report.notes:
        lines.append(f"NOTE: {note}")
    lines.append(f"  {'operator':<28}{'count':>6}")
    for name, count in sorted(report.op_histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name:<28}{count:>6}")
    return "\n".join(lines)


def _op_label(tflite: fbs.TFLiteModel, op: fbs.Operator) -> str:
    """A readable name for an op: the first TensorFlow name of its output, without the model
    prefix when that leaves a layer name (e.g. "logits/MatMul")."""
    if not op.outputs or op.outputs[0] < 0:
        return f"{op.name}#{op.index}"
    name = tflite.tensor(op.subgraph, op.outputs[0]).name.split(";")[0]
    return name or f"{op.name}#{op.index}"


def _is_binary_valued(weights: np.ndarray, op_name: str) -> bool:
    """True if every output channel holds +-a for one a > 0 (binary weights kept in float)."""
    if weights.ndim < 2 or weights.size < 4:
        return False
    # CONV_2D [O, H, W, I] and FULLY_CONNECTED [O, I]: channel first; DEPTHWISE [1, H, W, O].
    axis = weights.ndim - 1 if op_name == "DEPTHWISE_CONV_2D" else 0
    channels = np.moveaxis(np.abs(weights.astype(np.float64)), axis, 0)
    channels = channels.reshape(channels.shape[0], -1)
    if channels.shape[1] < 2:
        return False
    high, low = channels.max(axis=1), channels.min(axis=1)
    return bool(np.all(low > 0) and np.all(high - low <= _BINARY_VALUED_RTOL * high))


def inspect_tflite(
    flatbuffer_or_path: bytes | str | os.PathLike, *, model: tf.keras.Model | None = None
) -> TFLiteReport:
    """Report what a TFLite flatbuffer runs and where its bytes go.

    Details: counts operators; splits constant bytes into binary weights (the `LceBconv2d`
    filter buffers, bitpacked 32 per int32) and float weights; finds float convs / dense
    ops whose weights are +-scale per output channel (binary layers that did not become
    binary kernels); and, given the Keras `model`, matches its binary layers to the
    `LceBconv2d` ops (`check_coverage`). Warnings: no `LceBconv2d` at all, binary-valued
    float ops, uncovered layers. Notes: LCE's runtime is needed (a stock TFLite runtime
    fails with "unresolved custom op"), float weights are most of the bytes.

    Example:
        ```python
        report = inspect_tflite("dyresnet18.tflite")
        print(report)                    # table
        report.as_dict()["lce_bconv2d"]  # 16
        ```

    Args:
        flatbuffer_or_path: the flatbuffer's bytes, or a path to a .tflite file.
        model: the Keras model it was converted from, to report coverage by layer name.

    Returns:
        A `TFLiteReport`.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: the data is not a valid TFLite flatbuffer (truncated, corrupted), named
            in the message.
    """
    tflite = fbs.load(flatbuffer_or_path)
    source = (
        os.fspath(flatbuffer_or_path)
        if isinstance(flatbuffer_or_path, str | os.PathLike)
        else "<bytes>"
    )
    ops, histogram = tflite.operators, tflite.histogram

    # Each buffer is counted once, under the first role found: binary filter, float, other.
    binary_buffers: dict[int, int] = {}
    binary_weights = 0
    for op in ops:
        if op.name == "LceBconv2d" and op.inputs[1] >= 0:
            filt = tflite.tensor(op.subgraph, op.inputs[1])
            if filt.buffer not in binary_buffers:
                binary_buffers[filt.buffer] = tflite.buffer_size(filt.buffer)
                channels_in = op.options.get("channels_in")
                per_filter = int(np.prod(filt.shape[:-1]))
                binary_weights += per_filter * (
                    channels_in if channels_in else 32 * filt.shape[-1]
                )

    consumer: dict[int, str] = {}  # buffer -> label of the op that uses it
    binary_valued: list[str] = []
    for op in ops:
        for position, t_index in enumerate(op.inputs):
            if t_index < 0:
                continue
            t = tflite.tensor(op.subgraph, t_index)
            if t.buffer > 0 and t.buffer not in consumer:
                consumer[t.buffer] = _op_label(tflite, op)
            if op.name in FLOAT_KERNEL_OPS and position == 1 and t.dtype == "FLOAT32":
                weights = tflite.constant(t)
                if weights is not None and _is_binary_valued(weights, op.name):
                    binary_valued.append(f"{op.name} {_op_label(tflite, op)}")

    float_bytes = float_values = other_bytes = 0
    float_sizes: dict[int, int] = {}
    seen: set[int] = set()
    for g, subgraph in enumerate(tflite.model.subgraphs):
        for i in range(len(subgraph.tensors or ())):
            t = tflite.tensor(g, i)
            if t.buffer <= 0 or t.buffer in seen or t.buffer in binary_buffers:
                continue
            size = tflite.buffer_size(t.buffer)
            if size == 0:
                continue
            seen.add(t.buffer)
            if t.dtype in ("FLOAT32", "FLOAT16", "FLOAT64"):
                float_bytes += size
                float_values += size // {"FLOAT32": 4, "FLOAT16": 2, "FLOAT64": 8}[t.dtype]
                float_sizes[t.buffer] = size
            else:
                other_bytes += size
    largest = sorted(float_sizes.items(), key=lambda kv: -kv[1])[:3]
    largest_float = tuple((consumer.get(b, f"buffer {b}"), size) for b, size in largest)

    custom_ops = tflite.custom_ops
    coverage = check_coverage(model, tflite) if model is not None else None
    binary_bytes = sum(binary_buffers.values())

    warnings = []
    if histogram.get("LceBconv2d", 0) == 0:
        warnings.append(
            "NOT BINARIZED: the file has no LceBconv2d op, so every convolution runs in "
            "float32. Binary layers need a sign input quantizer (or a sign layer right "
            "before them) and a binary kernel quantizer (e.g. magnitude_aware_sign)."
        )
    if binary_valued:
        warnings.append(
            f"{len(binary_valued)} float op(s) hold binary-valued weights (+-scale per "
            "output channel) stored as float32 and computed in float: these layers were "
            "not binarized (a QuantDense, a non-sign input, or a reshape between quantizer "
            f"and conv): {', '.join(binary_valued)}"
        )
    if coverage is not None and coverage.not_converted:
        warnings.append(
            f"NOT BINARIZED: {len(coverage.not_converted)} of {len(coverage.binary_layers)} "
            "binary Keras layers did not become LceBconv2d: "
            + "; ".join(f"{name} ({reason})" for name, reason in coverage.not_converted)
        )

    notes = []
    lce_ops = [op for op in custom_ops if op in LCE_CUSTOM_OPS]
    if lce_ops:
        notes.append(
            f"needs Larq Compute Engine's runtime (custom ops {', '.join(lce_ops)}): a stock "
            'TFLite runtime fails with "unresolved custom op". Run it with LCE\'s '
            "lce_benchmark_model or a program that calls "
            "compute_engine::tflite::RegisterLCECustomOps (docs/raspberry-pi.md)."
        )
    weight_total = binary_bytes + float_bytes + other_bytes
    if weight_total and float_bytes / weight_total > _FLOAT_DOMINANCE:
        notes.append(
            f"float32 weights are {float_bytes / weight_total:.0%} of the weight bytes "
            f"({_megabytes(float_bytes)}; binary {_megabytes(binary_bytes)}): see the largest "
            "float weights above (full-precision stem, shortcuts, head and hyper functions "
            "are float by design; a binary layer among them would be one that was not "
            "binarized, see the warnings)"
        )

    def info(tensors):
        return tuple(TensorInfo(t.name, t.shape, t.dtype) for t in tensors)

    return TFLiteReport(
        source=source,
        file_bytes=len(tflite.data),
        op_histogram=dict(sorted(histogram.items())),
        lce_bconv2d=histogram.get("LceBconv2d", 0),
        lce_quantize=histogram.get("LceQuantize", 0),
        conv_2d=histogram.get("CONV_2D", 0),
        depthwise_conv_2d=histogram.get("DEPTHWISE_CONV_2D", 0),
        fully_connected=histogram.get("FULLY_CONNECTED", 0),
        binary_weight_bytes=binary_bytes,
        binary_weights=binary_weights,
        float_weight_bytes=float_bytes,
        float_weights=float_values,
        other_weight_bytes=other_bytes,
        inputs=info(tflite.inputs()),
        outputs=info(tflite.outputs()),
        custom_ops=custom_ops,
        binary_valued_float_ops=tuple(binary_valued),
        largest_float_tensors=largest_float,
        coverage=coverage,
        warnings=tuple(warnings),
        notes=tuple(notes),
    )
