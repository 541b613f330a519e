"""What `padding="pytorch"` (needed by ReActNet's imported weights) costs in LCE, side by side.

For each model, two builds with the same random weights: the zoo's default `padding="lce"`
(binary convs pad with +1, TF "same" everywhere) and `padding="pytorch"` (zero padding in
the binary convs, PyTorch's symmetric stride-2 padding through REVERSE_V2 pairs around the
strided binary convs and the max-pool, explicit ZeroPadding2D before the float stem conv).
Both are converted with `to_tflite` (target "arm"), and the table gives, per padding:

- the .tflite size and the ops that differ (REVERSE_V2, PAD);
- LceBconv2d coverage of the binary layers (must stay 100% with both paddings);
- latency of single inferences with LCE's interpreter on this host, the two files of a model
  timed in turns run after run (x86: portable reference kernels, not ARM speed; measure on
  the device with lce_benchmark_model). LCE's kernels compute +1 padding and correct the
  border outputs for zero padding afterwards (`core/bconv2d/zero_padding_correction.h`), a
  pass over the border pixels only; the REVERSE_V2 ops copy a feature map each.

Run (about 4 minutes at 224x224x3 on 2 shared cores):
    .venv/bin/python benchmarks/padding_benchmark.py
    .venv/bin/python benchmarks/padding_benchmark.py --models ReActNet18 --runs 5

Writes `padding_benchmark.json` and `padding_benchmark.md` to benchmarks/results/ (--out).
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import tensorflow as tf

from larq_compute_engine.tflite.python.interpreter import Interpreter

from larq_dysign import zoo
from larq_dysign.export import inspect_tflite, to_tflite
from larq_dysign.export.runtime import kernels_note

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = ("ReActNet18", "DyResNet18", "ReActNetA", "DyMobileNet")
PADDINGS = ("lce", "pytorch")
COUNTED_OPS = ("REVERSE_V2", "PAD", "LceBconv2d", "LceQuantize", "CONV_2D")


def _random_weights(model: tf.keras.Model, seed: int = 0) -> list[np.ndarray]:
    """Every weight random (zero-initialized ones too, as training would leave them), so the
    converter folds nothing away that a trained model would keep."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        value = weight.numpy()
        if not np.any(value):
            value = rng.normal(0.0, 0.1, value.shape).astype(np.float32)
        values.append(value)
    return values


def convert_pair(name: str, *, input_shape, num_classes: int) -> tuple[list[dict], dict]:
    """Both paddings of one model with the same weights: rows and flatbuffers."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    constructor = zoo.get_model_constructor(name)
    rows, flatbuffers, values = [], {}, None
    for padding in PADDINGS:
        model = constructor(
            input_shape=input_shape, num_classes=num_classes, stem="imagenet", padding=padding
        )
        if values is None:
            values = _random_weights(model)
        model.set_weights(values)
        start = time.perf_counter()
        flatbuffer = to_tflite(model, verbose=False)
        seconds = time.perf_counter() - start
        report = inspect_tflite(flatbuffer, model=model)
        rows.append(
            {
                "model": name,
                "padding": padding,
                "tflite_bytes": len(flatbuffer),
                "ops": {op: report.op_histogram.get(op, 0) for op in COUNTED_OPS},
                "binary_layers": len(report.coverage.binary_layers),
                "coverage": report.coverage.fraction,
                "conversion_s": round(seconds, 1),
            }
        )
        flatbuffers[(name, padding)] = flatbuffer
        del model
        gc.collect()
    return rows, flatbuffers


def time_in_turns(flatbuffers: dict, *, threads: int, runs: int, warmup: int) -> dict:
    """Milliseconds of single inferences, every file taking its turn run after run."""
    interpreters = {key: Interpreter(fb, num_threads=threads) for key, fb in flatbuffers.items()}
    rng = np.random.default_rng(0)
    shape = tuple(next(iter(interpreters.values())).input_shapes[0])
    image = rng.standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        for interpreter in interpreters.values():
            interpreter.predict(image)
    times = {key: [] for key in interpreters}
    for _ in range(runs):
        for key, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.predict(image)
            times[key].append((time.perf_counter() - start) * 1e3)
    return times


def markdown_table(rows: list[dict], threads: int = 1) -> str:
    lines = [
        "| model | padding | .tflite MB | size vs lce | REVERSE_V2 | PAD | LceBconv2d / binary "
        f"layers | {threads} thread ms (min / median) | latency vs lce (min / median) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = {r["model"]: r for r in rows if r["padding"] == "lce"}
    for r in rows:
        b = base[r["model"]]
        lines.append(
            f"| {r['model']} | {r['padding']} | {r['tflite_bytes'] / 1e6:.3f} "
            f"| {r['tflite_bytes'] / b['tflite_bytes']:.4f}x | {r['ops']['REVERSE_V2']} "
            f"| {r['ops']['PAD']} | {r['ops']['LceBconv2d']} / {r['binary_layers']} "
            f"| {r['latency_ms']['min']:.1f} / {r['latency_ms']['median']:.1f} "
            f"| {r['latency_ms']['min'] / b['latency_ms']['min']:.2f}x / "
            f"{r['latency_ms']['median'] / b['latency_ms']['median']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--input-shape", default="224,224,3", metavar="H,W,C")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10, help="timed inferences per file")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for JSON and markdown")
    parser.add_argument("--from-json", metavar="FILE", help="re-render an earlier run's JSON")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            previous = json.load(f)
        write_results(args.out, previous["meta"], previous["rows"])
        return 0
    input_shape = tuple(int(d) for d in args.input_shape.split(","))
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()

    rows = []
    for name in args.models:
        print(f"{name}: converting both paddings ...", file=sys.stderr, flush=True)
        pair_rows, flatbuffers = convert_pair(
            name, input_shape=input_shape, num_classes=args.num_classes
        )
        times = time_in_turns(
            flatbuffers, threads=args.threads, runs=args.runs, warmup=args.warmup
        )
        for row in pair_rows:
            t = times[(row["model"], row["padding"])]
            row["latency_ms"] = {
                "min": round(min(t), 2),
                "median": round(statistics.median(t), 2),
                "max": round(max(t), 2),
            }
        rows.extend(pair_rows)
        del flatbuffers
        gc.collect()

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "benchmarks/padding_benchmark.py " + " ".join(argv or sys.argv[1:]),
        "input_shape": list(input_shape),
        "num_classes": args.num_classes,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": args.threads,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "larq_compute_engine": __import__("larq_compute_engine").__version__,
        "note": kernels_note(platform.machine()),
        "seconds": round(time.perf_counter() - started),
    }
    write_results(args.out, meta, rows)
    return 0


def write_results(out: str, meta: dict, rows: list[dict]) -> None:
    """Print the table; write `padding_benchmark.json` and `.md` to `out`."""
    os.makedirs(out, exist_ok=True)
    table = markdown_table(rows, meta["threads"])
    with open(os.path.join(out, "padding_benchmark.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(out, "padding_benchmark.md"), "w") as f:
        f.write(
            '# LCE cost of `padding="pytorch"` (ReActNet\'s imported weights)\n\n'
            f"{meta['date']}, `{meta['command'].strip()}`: input "
            f"{','.join(map(str, meta['input_shape']))}, {meta['num_classes']} classes, "
            f"{meta['machine']} host with {meta['cpus']} CPUs (shared with other jobs), TF "
            f"{meta['tensorflow']}, LCE {meta['larq_compute_engine']}, target arm; the same "
            f"random weights in both builds of a model; {meta['runs']} runs per file at "
            f"{meta['threads']} thread(s) after {meta['warmup']} warm-up, the two files of a "
            f"model taking turns; {meta['seconds']} s in all.\n\n"
            f"Latency: {meta['note']}.\n\n{table}"
        )
    print(table)
    print(f"Wrote {os.path.join(out, 'padding_benchmark.json')} and .md")


if __name__ == "__main__":
    sys.exit(main())
