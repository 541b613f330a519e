"""`larq-dysign export`, `inspect` and `benchmark`: LCE export from the command line.

Examples:
    larq-dysign export DyResNet18 --weights ckpt.h5 --input-shape 28,28,1 --num-classes 10 \\
        -o dyresnet18.tflite
    larq-dysign inspect dyresnet18.tflite
    larq-dysign benchmark dyresnet18.tflite --threads 2 --runs 20

User errors (unknown model, missing file, a binary layer that would run in float with
`--strict`) print one message on stderr and exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..cli import parse_input_shape

_ERRORS = (ValueError, OSError)


def _fail(command: str, error: Exception) -> int:
    print(f"larq-dysign {command}: error: {error}", file=sys.stderr)
    return 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _export(args) -> int:
    from .. import zoo
    from . import inspect_tflite, to_tflite

    try:
        output = os.path.abspath(args.output)
        if os.path.isdir(output) or not os.path.isdir(os.path.dirname(output)):
            raise ValueError(
                f"Expected -o/--output to be a file in an existing directory, but got "
                f"{args.output!r}."
            )
        if args.weights is not None and not os.path.isfile(args.weights):
            raise ValueError(
                f"Expected --weights to be a checkpoint file, but {args.weights!r} does not exist."
            )
        kwargs = {"weights": args.weights}
        if args.input_shape is not None:
            kwargs["input_shape"] = args.input_shape
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        model = zoo.get_model(args.model, **kwargs)
        to_tflite(model, output, target=args.target, strict=args.strict, verbose=not args.quiet)
        report = inspect_tflite(output, model=model)
    except _ERRORS as error:
        return _fail("export", error)
    print(report)
    print(f"Wrote {output}")
    return 0


def _inspect(args) -> int:
    from . import inspect_tflite

    try:
        report = inspect_tflite(args.file)
    except _ERRORS as error:
        return _fail("inspect", error)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    return 0


def _benchmark(args) -> int:
    from . import benchmark

    try:
        latency = benchmark(args.file, threads=args.threads, runs=args.runs, warmup=args.warmup)
    except _ERRORS as error:
        return _fail("benchmark", error)
    print(json.dumps(latency.as_dict(), indent=2) if args.json else f"{args.file}: {latency}")
    return 0


def add_commands(subparsers) -> None:
    """Add `export`, `inspect` and `benchmark` to the `larq-dysign` command line."""
    from ..zoo import list_models

    export = subparsers.add_parser(
        "export",
        help="convert a zoo model to an LCE TFLite flatbuffer and report what it runs",
        description="Build a zoo model (optionally loading a checkpoint), convert it with "
        "Larq Compute Engine and print the file's report. Fails if a binary layer would run "
        "in float32, unless --no-strict.",
    )
    export.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(list_models())}")
    export.add_argument(
        "--weights",
        metavar="W",
        help="checkpoint to load (.h5 or TF checkpoint) or a registered dataset (imagenet)",
    )
    export.add_argument(
        "--input-shape",
        metavar="H,W,C",
        type=parse_input_shape,
        help="input shape (default: the model's, 224,224,3)",
    )
    export.add_argument(
        "--num-classes", metavar="N", type=_positive_int, help="classes (default 1000)"
    )
    export.add_argument("--target", choices=("arm", "xcore"), default="arm")
    export.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="warn instead of failing when a binary layer would run in float32",
    )
    export.add_argument("-o", "--output", required=True, metavar="OUT", help="the .tflite file")
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    export.set_defaults(func=_export)

    inspect = subparsers.add_parser(
        "inspect",
        help="report the ops, weight bytes and runtime needs of a .tflite file",
        description="Operator counts (LceBconv2d, float convs), weight bytes split binary / "
        "float, inputs and outputs, and warnings when the file is not binarized.",
    )
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.set_defaults(func=_inspect)

    bench = subparsers.add_parser(
        "benchmark",
        help="time a .tflite file with LCE's interpreter on this host (not ARM speed)",
        description="Latency of batch-1 inferences with LCE's Python interpreter. On x86 "
        "these are LCE's portable reference kernels: use them to compare files, not as "
        "Raspberry Pi numbers (see docs/raspberry-pi.md).",
    )
    bench.add_argument("file", metavar="FILE")
    bench.add_argument("--threads", type=_positive_int, default=1, metavar="N")
    bench.add_argument("--runs", type=_positive_int, default=20, metavar="R")
    bench.add_argument("--warmup", type=_non_negative_int, default=3, metavar="W")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(func=_benchmark)
