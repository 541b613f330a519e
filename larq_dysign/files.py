"""Writing files whole or not at all: readers see the old file or the complete new one.

Every file the package writes for users (exports, saved models, their descriptions, weights,
histories) goes through `atomic_path` or `write_atomically`: the data is written to a
temporary name in the destination's directory (same file system, so `os.replace` is atomic),
flushed, then renamed. A failure or a kill leaves no file under the final name, and the
temporary one is removed on any Python-level failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path to write `path` through; renamed to `path` when the block succeeds.

    The temporary name keeps `path`'s suffix (tf-keras chooses the format by suffix, e.g.
    `.keras`) and starts with a dot. It may be a file or a directory.

    Example:
        ```python
        with atomic_path("model.keras") as tmp:
            model.save(tmp)
        ```
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1]
    if name.endswith(".weights.h5"):
        suffix = ".weights.h5"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    os.unlink(tmp)  # the writer creates it (some writers refuse an existing file)
    try:
        yield tmp
        if os.path.isfile(tmp):
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> a regular file's permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(tmp)
        raise


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` (bytes, or text as UTF-8) to `path` through `atomic_path`, fsynced."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, value) -> None:
    """`value` as indented, key-sorted JSON, written atomically."""
    write_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def check_output_path(path) -> None:
    """Raise a ValueError naming `path` unless a file can be written there.

    Accepts a path to a new or existing file in an existing, writable directory; refuses an
    empty path, a directory, a path ending in a separator, a missing or unwritable directory.
    """
    if not isinstance(path, str | os.PathLike):
        raise ValueError(
            f"Expected path to be None or a file path, but got {type(path).__name__}."
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"Expected path to be a file path, but got {path!r}.")
    if text.endswith((os.sep, "/")):
        raise ValueError(f"Expected path to be a file path, but {text!r} ends with a separator.")
    if os.path.isdir(text):
        raise ValueError(f"Expected path to be a file path, but {text!r} is a directory.")
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise ValueError(
            f"Expected path to be in an existing directory, but {directory!r} (of path "
            f"{text!r}) does not exist."
        )
    try:  # the real test: permissions, read-only mounts, root, ACLs
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise ValueError(
            f"Expected path to be in a writable directory, but {directory!r} (of path {text!r}) "
            f"is not writable: {error.strerror}."
        ) from None
