"""Hide TensorFlow's C++ start-up logs from the `larq-dysign` command line.

TensorFlow 2.21 logs through absl before absl's logging is initialized, so those lines
("oneDNN custom operations are on", "Could not find cuda drivers", XLA's service lines)
reach stderr whatever `TF_CPP_MIN_LOG_LEVEL` says. For the command line (and `make demo`),
unless the user set `TF_CPP_MIN_LOG_LEVEL` or passed `--debug`, file descriptor 2 is
replaced by a pipe whose reader drops lines in absl's format (`I0000 00:00:...`) and passes
everything else through; Python's own `sys.stderr` (tqdm progress, warnings, errors) keeps
writing to the real stderr directly. Fatal (`F`) lines are kept.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: Entry points whose users see TensorFlow's C++ logs as noise.
COMMAND_LINE_MODULES = ("larq_dysign.cli", "larq_dysign.training.demo")
#: absl's C++ log line (info, warning, error; fatal lines are kept), and its preamble.
_LOG_LINE = re.compile(
    rb"[IWE]\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
)


def is_command_line() -> bool:
    """Whether this process is `larq-dysign` (or `python -m` one of `COMMAND_LINE_MODULES`)."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == "larq-dysign":
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(
        flag == "-m" and module in COMMAND_LINE_MODULES for flag, module in zip(argv, argv[1:])
    )


def _pump(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not _LOG_LINE.match(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not _LOG_LINE.match(pending):
            os.write(write_fd, pending)


def hide_tensorflow_logs_on_the_command_line() -> None:
    """Install the stderr filter (see the module docstring) if this is the command line.

    Must run before tensorflow is imported. Does nothing in notebooks and user programs,
    when `TF_CPP_MIN_LOG_LEVEL` is set (the user's choice wins), or with `--debug`.
    """
    if not is_command_line() or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "--debug" in sys.argv:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # what TensorFlow does honour, after start-up
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = os.fdopen(os.dup(real_stderr), "w", buffering=1, errors="backslashreplace")
    pump = threading.Thread(target=_pump, args=(read_fd, real_stderr), daemon=True)
    pump.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last writer: the pump drains and ends
        pump.join(timeout=5)

    atexit.register(restore)
