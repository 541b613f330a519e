"""Reading TFLite flatbuffers: which operators a converted model really runs, and its weights.

Thin accessors over TensorFlow's generated schema (`tensorflow.lite.python.schema_py_generated`):
operator names, tensors (name, shape, dtype), constant buffers as NumPy arrays, and LCE's
custom options (a FlexBuffer map, e.g. `channels_in` of an `LceBconv2d`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator

import numpy as np
from flatbuffers import flexbuffers
from tensorflow.lite.python import schema_py_generated as schema

_BUILTIN_NAMES = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}
TENSOR_TYPES = {
    code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")
}
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
FILE_IDENTIFIER = b"TFL3"


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


def load_model(flatbuffer_or_path: bytes | str | os.PathLike) -> tuple[bytes, schema.Model]:
    """The flatbuffer's bytes and its parsed root `Model`, after checking it is a TFLite file.

    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: neither bytes nor a path.
        ValueError: the data is not a TFLite flatbuffer (no "TFL3" file identifier).
    """
    buffer = read_flatbuffer(flatbuffer_or_path)
    if len(buffer) < 8 or buffer[4:8] != FILE_IDENTIFIER:
        source = (
            repr(os.fspath(flatbuffer_or_path))
            if isinstance(flatbuffer_or_path, str | os.PathLike)
            else "the given bytes"
        )
        raise ValueError(
            f"Expected a TFLite flatbuffer (file identifier {FILE_IDENTIFIER.decode()!r} at "
            f"bytes 4-8), but {source} has {buffer[4:8]!r} ({len(buffer)} bytes)."
        )
    return buffer, schema.Model.GetRootAsModel(buffer, 0)


def operator_names(model: schema.Model) -> list[str]:
    """Names of the model's operator codes: builtin names, or the custom code (`LceBconv2d`)."""
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        if code.CustomCode():
            names.append(code.CustomCode().decode())
        else:
            # Codes above 127 live only in BuiltinCode; older files only in the deprecated one.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            names.append(_BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    return names


def op_histogram(flatbuffer_or_path: bytes | str | os.PathLike) -> collections.Counter:
    """How many times each operator appears, over all subgraphs, e.g. `{"LceBconv2d": 16}`."""
    _, model = load_model(flatbuffer_or_path)
    return collections.Counter(op.name for op in operators(model))


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator of a subgraph: its name and the indices of its tensors (-1: absent)."""

    name: str
    subgraph: int
    index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom_options: bytes


def operators(model: schema.Model) -> Iterator[Operator]:
    """Every operator of every subgraph, in execution order."""
    names = operator_names(model)
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            options = op.CustomOptionsAsNumpy()
            yield Operator(
                name=names[op.OpcodeIndex()],
                subgraph=g,
                index=i,
                inputs=tuple(int(t) for t in _as_array(op.InputsAsNumpy())),
                outputs=tuple(int(t) for t in _as_array(op.OutputsAsNumpy())),
                custom_options=bytes(_as_array(options).astype(np.uint8)),
            )


def _as_array(value) -> np.ndarray:
    # The generated accessors return the int 0 instead of an empty array for absent vectors.
    return value if isinstance(value, np.ndarray) else np.zeros((0,), np.int32)


def custom_options(op: Operator) -> dict:
    """An LCE custom operator's options (a FlexBuffer map), or {} if it has none."""
    if not op.custom_options:
        return {}
    value = flexbuffers.Loads(op.custom_options)
    return value if isinstance(value, dict) else {}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A tensor's name, shape (-1 for a dynamic dimension, e.g. the batch), dtype, buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int


def tensor(model: schema.Model, subgraph: int, index: int) -> Tensor:
    """The tensor `index` of `subgraph`."""
    t = model.Subgraphs(subgraph).Tensors(index)
    signature = _as_array(t.ShapeSignatureAsNumpy())
    shape = signature if len(signature) else _as_array(t.ShapeAsNumpy())
    return Tensor(
        name=(t.Name() or b"").decode(errors="replace"),
        shape=tuple(int(d) for d in shape),
        dtype=TENSOR_TYPES.get(t.Type(), f"TYPE_{t.Type()}"),
        buffer=int(t.Buffer()),
    )


def subgraph_inputs(model: schema.Model, subgraph: int = 0) -> list[Tensor]:
    """The input tensors of a subgraph (the model's inputs for subgraph 0)."""
    indices = _as_array(model.Subgraphs(subgraph).InputsAsNumpy())
    return [tensor(model, subgraph, int(i)) for i in indices]


def subgraph_outputs(model: schema.Model, subgraph: int = 0) -> list[Tensor]:
    """The output tensors of a subgraph (the model's outputs for subgraph 0)."""
    indices = _as_array(model.Subgraphs(subgraph).OutputsAsNumpy())
    return [tensor(model, subgraph, int(i)) for i in indices]


def buffer_size(model: schema.Model, buffer: bytes, index: int) -> int:
    """Bytes held by buffer `index` (0 for tensors computed at run time)."""
    if index <= 0 or index >= model.BuffersLength():
        return 0
    b = model.Buffers(index)
    # Files over 2 GB keep data after the flatbuffer, addressed by offset and size.
    if b.Offset() > 1:
        return int(b.Size())
    return int(b.DataLength())


def buffer_array(model: schema.Model, buffer: bytes, t: Tensor) -> np.ndarray | None:
    """A constant tensor's values as a NumPy array of its shape, or None if it has no data."""
    if t.buffer <= 0 or t.buffer >= model.BuffersLength() or t.dtype not in _NUMPY_DTYPES:
        return None
    b = model.Buffers(t.buffer)
    if b.Offset() > 1:
        raw = np.frombuffer(buffer, np.uint8, count=b.Size(), offset=b.Offset())
    else:
        raw = _as_array(b.DataAsNumpy()).astype(np.uint8, copy=False)
    if raw.size == 0:
        return None
    values = raw.view(_NUMPY_DTYPES[t.dtype])
    shape = tuple(max(d, 1) for d in t.shape)
    return values.reshape(shape) if int(np.prod(shape)) == values.size else values
