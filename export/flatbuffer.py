"""Reading TFLite flatbuffers: which operators a converted model really runs."""

from __future__ import annotations

import collections
import os

from tensorflow.lite.python import schema_py_generated as schema

_BUILTIN_NAMES = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}


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
    buffer = read_flatbuffer(flatbuffer_or_path)
    model = schema.Model.GetRootAsModel(buffer, 0)
    names = operator_names(model)
    histogram = collections.Counter()
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            histogram[names[subgraph.Operators(i).OpcodeIndex()]] += 1
    return histogram
