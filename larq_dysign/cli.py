"""The `larq-dysign` command line: one sub-command family per module, one-line errors.

Each module in `COMMAND_MODULES` has `add_commands(subparsers)`, which adds its parsers and
sets `func` (called with the parsed arguments, returning an exit code).

Errors: a user mistake prints one line on stderr, `larq-dysign <command>: error: <what>`,
naming the argument, the value and what is allowed, and exits with status 2 (a bad
argument: argparse's usage errors, `ValueError`, `FileNotFoundError`, ...) or 1 (a failure
while working: a conversion that leaves binary layers in float, an I/O error, ...). `--debug`
shows the traceback instead. TensorFlow's C++ logs are hidden unless the user set
`TF_CPP_MIN_LOG_LEVEL` (`larq_dysign._logs`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

import larq_dysign  # noqa: F401  (Keras 2 before anything imports tensorflow)

COMMAND_MODULES = (
    "larq_dysign.zoo.commands",
    "larq_dysign.export.commands",
    "larq_dysign.training.commands",
    "larq_dysign.zoo.import_commands",
)
#: Exceptions that mean "the arguments were wrong" (exit 2); any other one is a failure (1).
ARGUMENT_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
)


class CommandError(Exception):
    """An error a command reports in one line: `status` 2 for a bad argument, 1 for a failure."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (`prog: error: message`), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """ "28,28,1" (or "28x28x1") -> (28, 28, 1); for argparse's `type=` in every command."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH,CHANNELS of positive integers (e.g. 224,224,3), got {text!r}"
        )
    return shape


def positive_int(text: str) -> int:
    """argparse `type=` for counts: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse `type=` for counts that may be 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="larq-dysign",
        description="Binary networks with dynamic thresholds: zoo, training, LCE export.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    for command in (parser, *subparsers.choices.values()):  # before or after the command
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and the libraries' warnings",
        )
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    return text or type(error).__name__


def _quiet_python_warnings() -> None:
    """The libraries' own deprecation notes are not the user's business on the command line."""
    warnings.filterwarnings("ignore", module=r"(tf_keras|tensorflow|keras|larq|absl|h5py)\b")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    if not debug:
        _quiet_python_warnings()
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"larq-dysign {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 (every error becomes one line; --debug shows it)
        if debug:
            raise
        if isinstance(error, CommandError):
            status = error.status
        else:
            status = 2 if isinstance(error, ARGUMENT_ERRORS) else 1
        print(f"larq-dysign {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
