"""Reading TFLite flatbuffers: which operators a converted model really runs, and its weights.

A file is checked whole before anything reads it, because LCE's interpreter trusts its input:
a truncated or garbled file makes it read outside the buffer and kills the process (issue
#13). `load` runs, in order:

1. TFLite's flatbuffer verifier (every table, vector and string offset within bounds,
   aligned, nesting limited) and TFLite's model builder (tensor, buffer and opcode indices,
   constant buffers as large as their tensors), both reached through `tf.lite.Interpreter`,
   which verifies bytes before building from them;
2. a full parse into TensorFlow's object API (`flatbuffer_utils.read_model_from_bytearray`),
   so every field this package reads is read once, here;
3. the checks the kernels leave to the file, each found by fuzzing a file that passed the
   above and crashed LCE's interpreter: a dataflow it can run (every operator reads
   inputs, constants or earlier outputs, and writes tensors nothing else writes); LCE
   operators with their inputs and output, and options that are a FlexBuffer map (read by
   LCE without bounds checks: accepted only if it re-encodes to the same bytes, as a
   canonical FlexBuffer cannot point outside itself); convolutions and poolings with their
   own options type, and strides, dilations and windows >= 1.

Any failure is a `ValueError` naming the file (docs/reliability.md). A corruption that leaves
a well-formed model with other numbers is not detectable from the file: a flipped bit in a
weight (`verify` against the Keras model finds those), or in a dimension, which then asks
the interpreter for as much memory as it says.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import warnings

import numpy as np
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

FILE_IDENTIFIER = b"TFL3"
_NUMPY_DTYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "UINT32": np.uint32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}
#: LCE operator -> (inputs, outputs). LceBconv2d: input, filter, post-activation multiplier
#: and bias, thresholds (-1 unless it writes bitpacked output). LCE checks the input count of
#: LceBconv2d but reads its output and optional inputs unchecked.
_LCE_ARITY = {
    "LceBconv2d": (5, 1),
    "LceQuantize": (1, 1),
    "LceDequantize": (1, 1),
    "LceBMaxPool2d": (1, 1),
}
_STRIDES = ("strideH", "strideW")
_DILATIONS = ("dilationHFactor", "dilationWFactor")
_FILTER = ("filterHeight", "filterWidth")
#: Sliding-window operators -> the type of their options and the fields that must be >= 1:
#: TFLite's and LCE's kernels divide by them or size buffers with them unchecked (a stride
#: of 0 or -127 aborts the process). LCE's options are FlexBuffer maps (dict).
_WINDOW_OPTIONS = {
    "CONV_2D": ("Conv2DOptionsT", _STRIDES + _DILATIONS),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptionsT", _STRIDES + _DILATIONS),
    "TRANSPOSE_CONV": ("TransposeConvOptionsT", _STRIDES),
    "AVERAGE_POOL_2D": ("Pool2DOptionsT", _STRIDES + _FILTER),
    "MAX_POOL_2D": ("Pool2DOptionsT", _STRIDES + _FILTER),
    "L2_POOL_2D": ("Pool2DOptionsT", _STRIDES + _FILTER),
    "LceBconv2d": (
        "dict",
        ("stride_height", "stride_width", "dilation_height_factor", "dilation_width_factor"),
    ),
    "LceBMaxPool2d": ("dict", ("filter_height", "filter_width", "stride_height", "stride_width")),
}
_LCE_PAD_VALUES = (0, 1)  # LceBconv2d pads with 0 or +1


def read_flatbuffer(flatbuffer_or_path: bytes | str | os.PathLike) -> bytes:
    """The flatbuffer's bytes, from bytes or a file path.

    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: neither bytes nor a path.
    """
    if isinstance(flatbuffer_or_path, bytes | bytearray):
        return bytes(flatbuffer_or_path)
    if isinstance(flatbuffer_or_path, str | os.PathLike):
        with open(flatbuffer_or_path, "rb") as f:
            return f.read()
    raise TypeError(
        "Expected flatbuffer_or_path to be bytes or a path to a .tflite file, but got "
        f"{type(flatbuffer_or_path).__name__}."
    )


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator of a subgraph: its name, the indices of its tensors (-1: absent), and
    for LCE operators their options (e.g. `channels_in` of an `LceBconv2d`)."""

    name: str
    subgraph: int
    index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A tensor's name, shape (-1 for a dynamic dimension, e.g. the batch), dtype, buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int


class TFLiteModel:
    """A verified TFLite flatbuffer: its bytes, where they came from, and its contents.

    Attributes:
        data: the flatbuffer's bytes.
        source: the file's path in quotes, or "the given bytes", for messages.
        model: TensorFlow's object-API `ModelT` of the file.
        operators: every operator of every subgraph, in execution order.
        histogram: how many times each operator appears.
        custom_ops: custom operators the file needs a runtime for, e.g. "LceBconv2d".
    """

    def __init__(self, data: bytes, source: str, model: schema.ModelT):
        self.data, self.source, self.model = data, source, model
        names = _operator_names(model)
        self.operators = [
            Operator(
                name=names[op.opcodeIndex],
                subgraph=g,
                index=i,
                inputs=_indices(op.inputs),
                outputs=_indices(op.outputs),
                options=(_lce_options(op) if names[op.opcodeIndex] in _LCE_ARITY else None) or {},
            )
            for g, subgraph in enumerate(model.subgraphs)
            for i, op in enumerate(subgraph.operators or ())
        ]
        self.histogram = collections.Counter(op.name for op in self.operators)
        codes = model.operatorCodes or ()
        self.custom_ops = tuple(sorted({n for n, c in zip(names, codes) if c.customCode}))

    def tensor(self, subgraph: int, index: int) -> Tensor:
        """The tensor `index` of `subgraph`."""
        t = self.model.subgraphs[subgraph].tensors[index]
        shape = t.shapeSignature if t.shapeSignature is not None else t.shape
        return Tensor(
            name=(t.name or b"").decode(errors="replace"),
            shape=_indices(shape),
            dtype=flatbuffer_utils.type_to_name(t.type) or f"TYPE_{t.type}",
            buffer=t.buffer,
        )

    def inputs(self, subgraph: int = 0) -> list[Tensor]:
        """The input tensors of a subgraph (the model's inputs for subgraph 0)."""
        return [self.tensor(subgraph, i) for i in _indices(self.model.subgraphs[subgraph].inputs)]

    def outputs(self, subgraph: int = 0) -> list[Tensor]:
        """The output tensors of a subgraph (the model's outputs for subgraph 0)."""
        return [self.tensor(subgraph, i) for i in _indices(self.model.subgraphs[subgraph].outputs)]

    def input_shapes(self) -> list[tuple[int, ...]]:
        """The model's input shapes as an interpreter allocates them (no -1: the static
        shapes, not the signatures)."""
        subgraph = self.model.subgraphs[0]
        return [_indices(subgraph.tensors[i].shape) for i in _indices(subgraph.inputs)]

    def buffer_size(self, index: int) -> int:
        """Bytes held by buffer `index` (0 for tensors computed at run time)."""
        return len(self.model.buffers[index].data) if _has_data(self.model.buffers[index]) else 0

    def constant(self, t: Tensor) -> np.ndarray | None:
        """A constant tensor's values as a NumPy array of its shape, or None if it has none."""
        if not self.buffer_size(t.buffer) or t.dtype not in _NUMPY_DTYPES:
            return None
        raw = np.asarray(self.model.buffers[t.buffer].data, np.uint8)
        values = raw.view(_NUMPY_DTYPES[t.dtype])
        shape = tuple(max(d, 1) for d in t.shape)
        return values.reshape(shape) if int(np.prod(shape)) == values.size else values


def _operator_names(model: schema.ModelT) -> list[str]:
    """Each operator code's name: the builtin's, or the custom code (e.g. "LceBconv2d")."""
    return [
        code.customCode.decode(errors="replace")
        if code.customCode
        else flatbuffer_utils.opcode_to_name(model, i) or f"BUILTIN_{code.builtinCode}"
        for i, code in enumerate(model.operatorCodes or ())
    ]


def _has_data(buffer: schema.BufferT) -> bool:
    return buffer.data is not None and len(buffer.data) > 0


def _indices(values) -> tuple[int, ...]:
    return () if values is None else tuple(int(v) for v in values)


def _source(flatbuffer_or_path) -> str:
    if isinstance(flatbuffer_or_path, str | os.PathLike):
        return repr(os.fspath(flatbuffer_or_path))
    return "the given bytes"


def _tflite_verifier_error(data: bytes) -> str | None:
    """TFLite's verifier and model builder on `data`: None if they accept it, else why not.

    `tf.lite.Interpreter(model_content=...)` verifies the flatbuffer (`VerifyAndBuildFromBuffer`)
    before building; it only builds (no tensors allocated, unresolved custom ops allowed until
    `allocate_tensors`), which takes about 1 ms for a 5 MB file.
    """
    interpreter = getattr(tf.lite, "Interpreter", None)
    if interpreter is None:  # a TensorFlow without it: the checks below still run
        return None
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated"
            interpreter(model_content=data, experimental_op_resolver_type=resolver)
    except (ValueError, UnicodeDecodeError) as error:
        return " ".join(str(error).split())
    return None


def _check_contents(data: bytes, model: schema.ModelT) -> str | None:
    """What this package reads and LCE's kernels take on trust. None if all is well, else
    what is wrong."""
    if not model.subgraphs:
        return "it has no subgraph"
    root = schema.Model.GetRootAs(data, 0)  # offsets of files over 2 GB, before resolution
    for b in (root.Buffers(i) for i in range(root.BuffersLength())):
        if b.Offset() > 1 and b.Offset() + b.Size() > len(data):
            return f"a buffer ends at byte {b.Offset() + b.Size()}, after the end of the file"
    names = _operator_names(model)
    for g, subgraph in enumerate(model.subgraphs):
        problem = _check_subgraph(model, subgraph, names)
        if problem:
            return f"subgraph {g}: {problem}"
    return None


def _check_subgraph(model: schema.ModelT, subgraph: schema.SubGraphT, names) -> str | None:
    """Indices within range, and a dataflow an interpreter can run: each operator reads
    inputs, constants or earlier outputs, and writes tensors nothing else writes (a
    redirected output leaves its readers with unallocated memory: a segfault)."""
    tensors, buffers = subgraph.tensors or (), model.buffers or ()
    if any(not 0 <= t.buffer < len(buffers) for t in tensors):
        return "a tensor's buffer index is out of range"
    inputs, outputs = _indices(subgraph.inputs), _indices(subgraph.outputs)
    if any(not 0 <= i < len(tensors) for i in inputs + outputs):
        return "an input or output index is out of range"
    written = set(inputs) | {
        i for i, t in enumerate(tensors) if t.isVariable or _has_data(buffers[t.buffer])
    }
    for k, op in enumerate(subgraph.operators or ()):
        if not 0 <= op.opcodeIndex < len(names):
            return f"operator {k} has opcode index {op.opcodeIndex} of {len(names)}"
        where = f"operator {k} ({names[op.opcodeIndex]})"
        op_inputs, op_outputs = _indices(op.inputs), _indices(op.outputs)
        if any(not -1 <= i < len(tensors) for i in op_inputs + op_outputs):
            return f"{where} has a tensor index out of range"
        unwritten = [i for i in op_inputs if i >= 0 and i not in written]
        if unwritten:
            return f"{where} reads tensor {unwritten[0]} before anything writes it"
        rewritten = [i for i in op_outputs if i in written and not tensors[i].isVariable]
        if rewritten:
            return f"{where} writes tensor {rewritten[0]}, already an input, constant or output"
        written.update(op_outputs)
        problem = _check_operator(names[op.opcodeIndex], op, op_inputs, op_outputs, tensors)
        if problem:
            return f"{where}: {problem}"
    missing = [i for i in outputs if i not in written]
    return f"output tensor {missing[0]} is never written" if missing else None


def _check_operator(name: str, op: schema.OperatorT, inputs, outputs, tensors) -> str | None:
    """LCE operators' inputs and outputs, and sliding-window options."""
    options = op.builtinOptions
    if name in _LCE_ARITY:
        n_in, n_out = _LCE_ARITY[name]
        if len(inputs) != n_in or len(outputs) != n_out or min(inputs[:1] + outputs) < 0:
            return f"expected {n_in} input(s) and {n_out} output, got {inputs} and {outputs}"
        if name == "LceBconv2d":
            bitpacked_output = tensors[outputs[0]].type == schema.TensorType.INT32
            if any(inputs[i] < 0 for i in ((0, 1, 4) if bitpacked_output else (0, 1, 2, 3))):
                return f"a required input is missing: {inputs}"
        if name in _WINDOW_OPTIONS:
            options = _lce_options(op)
            if options is None:
                return "its options are not a FlexBuffer map"
            if options.get("pad_values", 0) not in _LCE_PAD_VALUES:
                return f"pad_values is {options['pad_values']!r}, expected 0 or 1"
    if name not in _WINDOW_OPTIONS:
        return None
    expected, fields = _WINDOW_OPTIONS[name]
    if type(options).__name__ != expected:
        return f"expected {expected} options, got {type(options).__name__}"

    def get(field):
        return options.get(field) if isinstance(options, dict) else getattr(options, field)

    bad = [f"{f}={get(f)!r}" for f in fields if not (isinstance(get(f), int) and get(f) >= 1)]
    if bad:
        return f"expected strides, dilations and window sizes >= 1, got {', '.join(bad)}"
    if get("padding") not in (schema.Padding.SAME, schema.Padding.VALID):
        return f"padding is {get('padding')!r}, expected SAME (0) or VALID (1)"
    return None


def _lce_options(op: schema.OperatorT) -> dict | None:
    """An LCE operator's options, a FlexBuffer map, or None if they are not one. LCE reads
    them without bounds checks, so a map is accepted only if it re-encodes to the same
    bytes: a canonical FlexBuffer cannot point outside itself."""
    raw = bytes(np.asarray(op.customOptions if op.customOptions is not None else (), np.uint8))
    try:
        value = flexbuffers.Loads(raw)
        canonical = bytes(flexbuffers.Dumps(value)) == raw
    except Exception:  # noqa: BLE001 (the FlexBuffer reader fails many ways on bad bytes)
        return None
    return value if canonical and isinstance(value, dict) else None


def load(flatbuffer_or_path: bytes | str | os.PathLike | TFLiteModel) -> TFLiteModel:
    """Read a TFLite flatbuffer after checking it whole (see the module's docstring); a
    `TFLiteModel` is returned as it is.

    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: neither bytes nor a path.
        ValueError: the data is not a valid TFLite flatbuffer (wrong file identifier,
            truncated, garbled), naming the file and what is wrong.
    """
    if isinstance(flatbuffer_or_path, TFLiteModel):
        return flatbuffer_or_path
    data = read_flatbuffer(flatbuffer_or_path)
    source = _source(flatbuffer_or_path)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError(
            f"Expected a TFLite flatbuffer (file identifier {FILE_IDENTIFIER.decode()!r} at "
            f"bytes 4-8), but {source} has {data[4:8]!r} ({len(data)} bytes)."
        )
    problem = _tflite_verifier_error(data)
    if problem is None:
        try:
            model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
            problem = _check_contents(data, model)
        except Exception as error:  # noqa: BLE001 (the generated parser fails many ways)
            problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        raise ValueError(
            f"{source} is not a valid TFLite flatbuffer ({len(data)} bytes, truncated or "
            f"corrupted?): {problem}"
        )
    return TFLiteModel(data, source, model)


def op_histogram(flatbuffer_or_path: bytes | str | os.PathLike) -> collections.Counter:
    """How many times each operator appears, over all subgraphs, e.g. `{"LceBconv2d": 16}`."""
    return load(flatbuffer_or_path).histogram
