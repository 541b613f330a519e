"""`larq-dysign export`, `inspect` and `benchmark`: LCE export from the command line.

Examples:
    larq-dysign export runs/fm/step2/DyResNet18_step2.keras -o dyresnet18.tflite  # as trained
    larq-dysign export DyResNet18 --weights ckpt.h5 --input-shape 28,28,1 --num-classes 10 \\
        -o dyresnet18.tflite
    larq-dysign inspect dyresnet18.tflite
    larq-dysign benchmark dyresnet18.tflite --threads 2 --runs 20

Errors are one line on stderr (`larq_dysign.cli`): exit status 2 for a bad argument (unknown
model, a flag the model does not take, a missing file), 1 for a failure (a binary layer that
would run in float with strict export, an unreadable .tflite).
"""

from __future__ import annotations

import json
import os

from ..cli import CommandError, non_negative_int, positive_int
from ..files import check_output_path
from ..zoo.commands import add_model_arguments, load_model


def _export(args) -> int:
    from . import inspect_tflite, to_tflite

    output = os.path.abspath(args.output)
    try:  # before the model is built and converted
        check_output_path(args.output)
    except ValueError as error:
        raise CommandError(f"-o/--output: {error}", status=2) from error
    model, _ = load_model(args)
    try:
        to_tflite(model, output, target=args.target, strict=args.strict, verbose=not args.quiet)
    except ValueError as error:  # the model converted but would not run as promised
        raise CommandError(str(error), status=1) from error
    print(inspect_tflite(output, model=model))
    print(f"Wrote {output}")
    return 0


def _inspect(args) -> int:
    from . import inspect_tflite

    report = inspect_tflite(args.file)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report)
    return 0


def _benchmark(args) -> int:
    from . import benchmark

    latency = benchmark(args.file, threads=args.threads, runs=args.runs, warmup=args.warmup)
    print(json.dumps(latency.as_dict(), indent=2) if args.json else f"{args.file}: {latency}")
    return 0


def add_commands(subparsers) -> None:
    """Add `export`, `inspect` and `benchmark` to the `larq-dysign` command line."""
    export = subparsers.add_parser(
        "export",
        help="convert a model to an LCE TFLite flatbuffer and report what it runs",
        description="Load a saved model of `larq-dysign train` (as trained, no other flag), "
        "or build a zoo model (optionally loading --weights); convert it with Larq Compute "
        "Engine and print the file's report. Fails if a binary layer would run in float32, "
        "unless --no-strict.",
    )
    add_model_arguments(export)
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
    bench.add_argument("--threads", type=positive_int, default=1, metavar="N")
    bench.add_argument("--runs", type=positive_int, default=20, metavar="R")
    bench.add_argument("--warmup", type=non_negative_int, default=3, metavar="W")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(func=_benchmark)
