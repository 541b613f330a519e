"""Write a state dict of NumPy arrays as a `torch.save` zip-format checkpoint, without torch.

For tests that need a full-size checkpoint (tens of megabytes, too large to commit): the
pickle is assembled opcode by opcode as torch writes it (`collections.OrderedDict` of
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, each
storage a persistent id `("storage", torch.FloatStorage, key, "cpu", numel)` whose bytes are
the record `<root>/data/<key>`). That the reader understands torch's real files is tested on
fixtures written by torch itself (tests/fixtures/torch); this writer was checked once against
`torch.load(..., weights_only=True)` of torch 2.13.
"""

from __future__ import annotations

import pickle
import struct
import zipfile

import numpy as np

_STORAGES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("int64"): "LongStorage",
}


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _int_tuple(values) -> bytes:
    return pickle.MARK + b"".join(_int(v) for v in values) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _tensor(key: str, array: np.ndarray) -> bytes:
    storage = (
        pickle.MARK
        + _string("storage")
        + _global("torch", _STORAGES[array.dtype])
        + _string(key)
        + _string("cpu")
        + _int(array.size)
        + pickle.TUPLE
        + pickle.BINPERSID
    )
    strides = [s // array.itemsize for s in array.strides]
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + pickle.MARK
        + storage
        + _int(0)
        + _int_tuple(array.shape)
        + _int_tuple(strides)
        + pickle.NEWFALSE
        + _ordered_dict()
        + pickle.TUPLE
        + pickle.REDUCE
    )


def write_checkpoint(
    path, state: dict[str, np.ndarray], *, prefix: str = "module.", epoch: int | None = 255
) -> None:
    """Write `state` as ReActNet's train.py saves it: `{"epoch": ..., "state_dict": ...}`
    with DataParallel's `module.` prefix (`epoch=None` writes the bare state dict)."""
    arrays = {f"{prefix}{key}": np.array(value, order="C") for key, value in state.items()}
    body = _ordered_dict() + pickle.MARK
    for index, (key, array) in enumerate(arrays.items()):
        body += _string(key) + _tensor(str(index), array)
    body += pickle.SETITEMS
    if epoch is not None:
        body = (
            pickle.EMPTY_DICT
            + pickle.MARK
            + _string("epoch")
            + _int(epoch)
            + _string("state_dict")
            + body
            + pickle.SETITEMS
        )
    data = pickle.PROTO + bytes([2]) + body + pickle.STOP
    root = "archive"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", data)
        archive.writestr(f"{root}/byteorder", "little")
        for index, array in enumerate(arrays.values()):
            archive.writestr(
                f"{root}/data/{index}", array.astype(array.dtype.newbyteorder("<")).tobytes()
            )
        archive.writestr(f"{root}/version", "3\n")
