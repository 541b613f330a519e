"""Read PyTorch checkpoints (`.pth`, `.pth.tar`) into NumPy arrays, without torch.

torch is never a dependency of this project (its PyPI wheel is a multi-gigabyte CUDA build),
yet the only trained ReActNet weights are PyTorch checkpoints. This module reads both of
`torch.save`'s formats:

- the **zip format** (torch >= 1.6): a zip archive holding `<root>/data.pkl`, the pickled
  object whose tensors refer to storages by key, and one record `<root>/data/<key>` of raw
  bytes per storage (byte order in `<root>/byteorder`, little-endian when absent);
- the **legacy format** (torch <= 1.5, or `_use_new_zipfile_serialization=False`): a
  stream of pickles (magic number, protocol version 1001, system info, the object, the list
  of storage keys) followed, for each key in that order, by an 8-byte little-endian element
  count and the storage's bytes.

Unpickling runs through a restricted unpickler that admits only the globals a tensor
checkpoint uses (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and its
relatives, the typed storage classes such as `torch.FloatStorage`, `torch.Size`,
`torch.device`), a subset of what `torch.load(weights_only=True)` allows. Any other global
(`builtins.eval`, `os.system`, a model class pickled whole with `torch.save(model)`) is
refused by name before anything is called. Every tensor is bounds-checked against its
storage, then copied into a C-contiguous `np.ndarray` (bfloat16 is widened to float32:
NumPy has no bfloat16).

`torch.sign(0) = 0` and similar semantics are the importer's business, not this module's:
here a tensor is only its numbers.

Example:
    ```python
    from larq_dysign.zoo.torch_checkpoint import read_checkpoint, read_state_dict
    state = read_state_dict("model_best.pth.tar")     # {"conv1.weight": ndarray, ...}
    everything = read_checkpoint("model_best.pth.tar")  # {"epoch": 255, "state_dict": ...}
    ```

References:
    - torch.save / torch.load: https://pytorch.org/docs/stable/generated/torch.save.html
    - The formats: `torch/serialization.py` (`_save`, `_legacy_save`, `_load`, `_legacy_load`).
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

__all__ = [
    "TorchCheckpointError",
    "read_checkpoint",
    "read_state_dict",
]

#: First pickle of a legacy-format file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: DataParallel / DistributedDataParallel prefix every key of a wrapped model's state dict.
DATA_PARALLEL_PREFIX = "module."

#: Storage class name -> NumPy dtype of its elements ("bfloat16" is read as uint16 bits).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}


class TorchCheckpointError(ValueError):
    """A file is not a PyTorch checkpoint this reader accepts (damaged, not a checkpoint, or
    a pickle that needs a global outside the allowed set)."""


class _StorageType:
    """Stands for `torch.FloatStorage` & co. in a pickle: knows only its element type."""

    def __init__(self, name: str):
        self.name = name
        dtype = STORAGE_DTYPES[name]
        self.bfloat16 = dtype == "bfloat16"
        self.dtype = np.dtype("<u2" if self.bfloat16 else dtype)


class _Storage:
    """A storage's flat array of elements, filled once its bytes have been read."""

    def __init__(self, storage_type: _StorageType, numel: int, key: str):
        self.type = storage_type
        self.numel = numel
        self.key = key
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes | memoryview, byteorder: str) -> None:
        nbytes = self.numel * self.type.dtype.itemsize
        if len(raw) < nbytes:
            raise TorchCheckpointError(
                f"storage {self.key!r} holds {len(raw)} bytes, but its {self.numel} elements "
                f"of {self.type.name} need {nbytes} (truncated file?)."
            )
        dtype = self.type.dtype if byteorder == "little" else self.type.dtype.newbyteorder(">")
        self.data = np.frombuffer(raw, dtype=dtype, count=self.numel).astype(self.type.dtype)


class _StorageView:
    """A legacy-format storage view: `numel` elements of `root` from element `offset`."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root, self.offset, self.numel = root, offset, numel
        self.type = root.type
        self.key = root.key


class _TensorRef:
    """A tensor met while unpickling; materialized once every storage has its bytes."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage | _StorageView):
            raise TorchCheckpointError(
                f"a tensor refers to a {type(storage).__name__}, not to a storage."
            )
        self.storage = storage
        self.offset = _int(offset, "storage offset")
        self.size = tuple(_int(d, "size") for d in size)
        self.stride = tuple(_int(s, "stride") for s in stride)
        if len(self.size) != len(self.stride):
            raise TorchCheckpointError(
                f"a tensor has size {self.size} but stride {self.stride} (damaged file?)."
            )

    def to_numpy(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            if storage.offset + storage.numel > storage.root.numel:
                raise TorchCheckpointError(f"storage view of {storage.key!r} exceeds its root.")
            offset += storage.offset
            limit = storage.offset + storage.numel
            storage = storage.root
        else:
            limit = storage.numel
        if storage.data is None:
            raise TorchCheckpointError(f"storage {storage.key!r} has no data in the file.")
        if 0 in self.size:
            array = np.zeros(self.size, dtype=storage.data.dtype)
        else:
            last = offset + sum((d - 1) * s for d, s in zip(self.size, self.stride))
            if offset < 0 or last >= limit:
                raise TorchCheckpointError(
                    f"a tensor of size {self.size}, stride {self.stride} at offset {self.offset} "
                    f"reaches beyond its storage {storage.key!r} of {limit} elements."
                )
            itemsize = storage.data.dtype.itemsize
            array = np.lib.stride_tricks.as_strided(
                storage.data[offset:],
                shape=self.size,
                strides=tuple(s * itemsize for s in self.stride),
                writeable=False,
            ).copy()
        if storage.type.bfloat16:  # the high half of a float32
            array = (array.astype("<u4") << 16).view("<f4")
        return array


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TorchCheckpointError(f"a tensor has {what} {value!r} (damaged file?).")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, *_):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *_):
    return data


def _shape(*dims):  # torch.Size(...) -> a tuple
    return tuple(dims[0]) if len(dims) == 1 and not isinstance(dims[0], int) else tuple(dims)


def _device(*args):  # torch.device("cuda", 0) -> "cuda:0"; devices do not matter here
    return ":".join(str(a) for a in args)


#: `(module, name) -> object`: every global the unpickler admits.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _shape,
    ("torch", "device"): _device,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """`find_class` admits `ALLOWED_GLOBALS` only; `persistent_load` makes storages."""

    def __init__(self, file, path: str, make_storage):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._make_storage = make_storage

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        raise TorchCheckpointError(
            f"{self._path} needs the Python global '{module}.{name}', which a PyTorch "
            "checkpoint of tensors never contains; refusing to unpickle it. (A whole model "
            "saved with torch.save(model)? Save its state_dict() instead.)"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
            raise TorchCheckpointError(
                f"{self._path} holds a persistent reference {pid!r} that is not a storage."
            )
        return self._make_storage(pid[1:])


def _ascii(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _storage_type(value, path: str) -> _StorageType:
    if not isinstance(value, _StorageType):
        raise TorchCheckpointError(f"{path}: a storage of type {value!r} is not supported.")
    return value


def _materialize(obj, seen: dict):
    """Replace every `_TensorRef` in nested dicts / lists / tuples by its array."""
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, dict):
        result = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        seen[id(obj)] = result
        for key, value in obj.items():
            result[key] = _materialize(value, seen)
        return result
    if isinstance(obj, list):
        result = []
        seen[id(obj)] = result
        result.extend(_materialize(value, seen) for value in obj)
        return result
    if isinstance(obj, tuple):
        return tuple(_materialize(value, seen) for value in obj)
    if isinstance(obj, _Storage | _StorageView | _StorageType):
        raise TorchCheckpointError("a bare storage outside a tensor is not supported.")
    return obj


def _read_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchCheckpointError(
                f"{path} is a zip archive but not a torch.save checkpoint (no single "
                "'<root>/data.pkl'; a TorchScript archive or a Keras .keras file?)."
            )
        root = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{root}byteorder" in names:
            byteorder = archive.read(f"{root}byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise TorchCheckpointError(f"{path}: unknown byte order {byteorder!r}.")
        storages: dict[str, _Storage] = {}

        def make_storage(args):
            if len(args) != 4:
                raise TorchCheckpointError(f"{path}: unexpected storage reference {args!r}.")
            storage_type, key, _location, numel = args
            key = _ascii(key)
            if key not in storages:
                storage = _Storage(_storage_type(storage_type, path), _int(numel, "numel"), key)
                record = f"{root}data/{key}"
                if record not in names:
                    raise TorchCheckpointError(f"{path} lacks the storage record {record!r}.")
                storage.fill(archive.read(record), byteorder)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as file:
            obj = _RestrictedUnpickler(file, path, make_storage).load()
    return obj


def _read_legacy(path: str):
    storages: dict[str, _Storage] = {}
    views: dict[str, _StorageView] = {}

    def make_storage(args):
        if len(args) != 5:
            raise TorchCheckpointError(f"{path}: unexpected storage reference {args!r}.")
        storage_type, key, _location, numel, view = args
        key = _ascii(key)
        if key not in storages:
            storages[key] = _Storage(_storage_type(storage_type, path), _int(numel, "numel"), key)
        if view is None:
            return storages[key]
        view_key, offset, view_numel = view
        view_key = _ascii(view_key)
        if view_key not in views:
            views[view_key] = _StorageView(
                storages[key], _int(offset, "view offset"), _int(view_numel, "view size")
            )
        return views[view_key]

    size = os.path.getsize(path)
    with open(path, "rb") as file:

        def plain_pickle():
            return _RestrictedUnpickler(file, path, make_storage).load()

        try:
            magic = plain_pickle()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            if isinstance(error, TorchCheckpointError):
                raise
            raise TorchCheckpointError(
                f"{path} is neither a zip-format nor a legacy-format PyTorch checkpoint "
                f"({type(error).__name__}: {error})."
            ) from error
        if magic != LEGACY_MAGIC_NUMBER:
            raise TorchCheckpointError(
                f"{path} is not a PyTorch checkpoint (a pickle, but without torch.save's magic "
                "number; torch < 0.4 tar archives are not supported either)."
            )
        protocol = plain_pickle()
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise TorchCheckpointError(f"{path}: unsupported legacy protocol {protocol!r}.")
        sys_info = plain_pickle()
        byteorder = "little"
        if isinstance(sys_info, Mapping) and sys_info.get("little_endian") is False:
            byteorder = "big"
        obj = plain_pickle()
        keys = plain_pickle()
        if not isinstance(keys, list):
            raise TorchCheckpointError(f"{path}: the storage key list is missing (damaged?).")
        for key in keys:
            storage = storages.get(_ascii(key))
            if storage is None:
                raise TorchCheckpointError(f"{path}: data for an unknown storage {key!r}.")
            header = file.read(8)
            if len(header) != 8:
                raise TorchCheckpointError(f"{path} ends inside storage {key!r} (truncated).")
            (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", header)
            if numel != storage.numel:
                raise TorchCheckpointError(
                    f"{path}: storage {key!r} has {numel} elements in the data, "
                    f"{storage.numel} in the pickle (damaged file?)."
                )
            nbytes = numel * storage.type.dtype.itemsize
            if nbytes > size - file.tell():
                raise TorchCheckpointError(f"{path} ends inside storage {key!r} (truncated).")
            storage.fill(file.read(nbytes), byteorder)
    return obj


def read_checkpoint(path: str | os.PathLike):
    """Unpickle a `torch.save` file with every tensor as a NumPy array.

    Details:
        Dicts, OrderedDicts, lists, tuples, numbers and strings come back as themselves,
        tensors and `nn.Parameter`s as C-contiguous arrays of their values (views, offsets
        and strides resolved; bfloat16 widened to float32). The storage's device (e.g.
        "cuda:0") is ignored.

    Example:
        ```python
        checkpoint = read_checkpoint("checkpoint.pth.tar")
        checkpoint["epoch"], checkpoint["state_dict"]["module.fc.bias"].shape
        ```

    Args:
        path: the checkpoint file (zip or legacy format).

    Returns:
        The saved object.

    Raises:
        FileNotFoundError: no such file.
        TorchCheckpointError: not a checkpoint, damaged, or a pickle needing a global that
            is not a tensor building block (named in the message).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such checkpoint file: {path!r}.")
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except TorchCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error) as error:
        raise TorchCheckpointError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error})."
        ) from error
    return _materialize(obj, {})


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch checkpoint: `{parameter or buffer name: array}`.

    Details:
        The state dict is the checkpoint itself when all its values are tensors, else its
        `"state_dict"` entry (what ReActNet's and most training scripts save, next to
        `"epoch"` and `"optimizer"`). When every key starts with `module.` (a model wrapped
        in `nn.DataParallel` / `DistributedDataParallel`), the prefix is removed.

    Example:
        ```python
        state = read_state_dict("checkpoint.pth.tar")
        state["fc.weight"].shape        # (1000, 512)
        ```

    Args:
        path: the checkpoint file.

    Returns:
        An ordered `dict` of arrays, in the file's order.

    Raises:
        FileNotFoundError: no such file.
        TorchCheckpointError: see `read_checkpoint`; or no state dict in the file (the
            top-level keys are listed).
    """
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise TorchCheckpointError(
            f"{os.fspath(path)} holds a {type(obj).__name__}, not a state dict of tensors."
        )
    not_arrays = [str(k) for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise TorchCheckpointError(
            f"{os.fspath(path)} has no 'state_dict' entry and its top level is not a state "
            f"dict: {', '.join(not_arrays[:8])} are not tensors."
        )
    keys = [str(k) for k in obj]
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys):
        keys = [k[len(DATA_PARALLEL_PREFIX) :] for k in keys]
    return dict(zip(keys, obj.values()))
