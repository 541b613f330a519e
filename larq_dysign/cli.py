"""The `larq-dysign` command line: one sub-command family per module.

Each module in `COMMAND_MODULES` has `add_commands(subparsers)`, which adds its parsers and
sets `func` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

import larq_dysign  # noqa: F401  (Keras 2 before anything imports tensorflow)

COMMAND_MODULES = (
    "larq_dysign.zoo.commands",
    "larq_dysign.export.commands",
    "larq_dysign.training.commands",
    "larq_dysign.zoo.import_commands",
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larq-dysign",
        description="Binary networks with dynamic thresholds: zoo, training, LCE export.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a command family not written yet
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
