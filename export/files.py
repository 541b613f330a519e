"""The files an export writes: the output file, and a temporary SavedModel directory.

- The output path is checked before converting (a conversion takes seconds to minutes) and
  written atomically: readers see the old file or the whole new one.
- The SavedModel goes to `<tmp>/larq_dysign_export_<pid>_*` (tens of MB at 224 px). It is
  removed when the export ends, fails, or receives SIGTERM (`sigterm_unwinds`). A process
  killed with SIGKILL cannot clean up: the next export removes the directories whose process
  is gone, or that are older than `STALE_AFTER_S` (a live pid may be a reused one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator

EXPORT_DIRECTORY_PREFIX = "larq_dysign_export_"
#: Age after which a temporary export directory is removed even if its pid is alive.
STALE_AFTER_S = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_export_directories(parent: str | None = None) -> list[str]:
    """Remove the temporary export directories left by killed exports, and return them.

    A directory `larq_dysign_export_<pid>_*` is stale when process `pid` no longer exists,
    or when it is older than `STALE_AFTER_S` (directories without a pid: by age only).
    """
    parent = parent or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith(EXPORT_DIRECTORY_PREFIX):
                continue
            pid = entry.name[len(EXPORT_DIRECTORY_PREFIX) :].split("_", 1)[0]
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
            except OSError:  # removed meanwhile
                continue
            if (pid.isdigit() and not _alive(int(pid))) or age > STALE_AFTER_S:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


@contextlib.contextmanager
def export_directory() -> Iterator[str]:
    """A new temporary directory named after this process, removed on exit; stale ones of
    killed exports are removed first."""
    remove_stale_export_directories()
    with tempfile.TemporaryDirectory(prefix=f"{EXPORT_DIRECTORY_PREFIX}{os.getpid()}_") as path:
        yield path


class _Terminated(BaseException):
    """SIGTERM arrived during an export (a BaseException, as KeyboardInterrupt)."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within this block SIGTERM raises, so `with` and `finally` blocks remove temporary files;
    then the previous handler is restored and the signal delivered to it again: with the
    default one the process ends with SIGTERM's status, as it would have.

    Python runs the handler between bytecodes: a SIGTERM during LCE's converter (C++) takes
    effect when that call returns. Only the main thread can set handlers: elsewhere, and
    when SIGTERM is ignored or handled outside Python, the block leaves SIGTERM alone.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)
        # The previous handler returned instead of ending the process.
        raise InterruptedError("The export was interrupted by SIGTERM.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
