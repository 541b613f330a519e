"""Export every zoo model with LCE and measure what the file costs: size, coverage, latency.

For each model at 224x224x3 / 1000 classes (override with --input-shape / --num-classes):

- size of the .tflite file, and of the same architecture with float weights: the model
  rebuilt with `binary_weights=False`, given the *same* weights and converted the same way
  (so both files hold the same float parameters; the difference is the binary kernels);
- LceBconv2d coverage of the binary Keras layers;
- conversion seconds (`to_tflite`, this machine);
- latency with LCE's interpreter on this host, 1 and 2 threads (x86: reference kernels,
  not ARM speed, see docs/raspberry-pi.md), the models timed in turns, run after run;
- DySign overhead: minimum latency of each Dy model over its static-threshold baseline's
  (the model of the same family whose name does not start with "Dy"), and its file size
  over the baseline's; the float32 weights of its hyper functions next to the bytes of its
  binary weights.

Weights are random; zero-initialized parameters (biases, thresholds, DySign's second
hyper-function layer) get small random values as training would give them, so the converter
cannot fold them away and the sizes are those of a trained model.

Run:
    .venv/bin/python benchmarks/export_benchmark.py              # every zoo model
    .venv/bin/python benchmarks/export_benchmark.py --models ReActNet18 DyResNet18 --runs 5

Writes `export_benchmark.json` and `export_benchmark.md` to benchmarks/results/ (--out).
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import inspect
import json
import os
import platform
import statistics
import sys
import time

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import larq as lq
import numpy as np
import tensorflow as tf

from larq_dysign import DyPReLU, DySign, zoo
from larq_compute_engine.tflite.python.interpreter import Interpreter

from larq_dysign.export import binary_layers, inspect_tflite, to_tflite
from larq_dysign.export.runtime import kernels_note
from larq_dysign.zoo import saved
from larq_dysign.zoo.registry import model_family

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _move_off_zero(model: tf.keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if not np.any(weight.numpy()):
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype(np.float32))


def measure(name: str, *, input_shape, num_classes: int, floats: bool):
    """One model's row of the table (without latency) and its flatbuffer."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    if saved.looks_like_saved_model(name):  # a trained model, built as saved, as trained
        model, description = zoo.load_saved_model(name)
        zoo_name, arguments = description["model"], description["arguments"]
        constructor = functools.partial(
            zoo.get_model_constructor(zoo_name),
            **{k: v for k, v in arguments.items() if k not in ("input_shape", "num_classes")},
        )
        input_shape, num_classes = tuple(description["input_shape"]), description["num_classes"]
    else:
        zoo_name, constructor = name, zoo.get_model_constructor(name)
        model = constructor(input_shape=input_shape, num_classes=num_classes)
        _move_off_zero(model)
    start = time.perf_counter()
    flatbuffer = to_tflite(model, verbose=False, strict=False)
    seconds = time.perf_counter() - start
    report = inspect_tflite(flatbuffer, model=model)
    layers = binary_layers(model)
    binary = sum(layer.weights for layer in layers)
    profiles = lq.models.ModelProfile(model).layer_profiles

    hyper = [
        w
        for layer in model.layers
        for quantizer in (layer, getattr(layer, "input_quantizer", None))
        if isinstance(quantizer, (DySign, DyPReLU))
        for w in quantizer.weights
        if "hyper_" in w.name
    ]
    row = {
        "model": name,
        "family": model_family(zoo_name),
        "parameters": int(model.count_params()),
        # the DySign / DyPReLU hyper functions' weights, all float32 in the file
        "hyper_function_floats": int(sum(np.prod(w.shape) for w in hyper)),
        "binary_weights": binary,
        # larq's profile: 1-bit and 32-bit multiply-accumulates (no attention products)
        "binary_macs": int(sum(p.op_count("mac", 1) or 0 for p in profiles)),
        "float_macs": int(sum(p.op_count("mac", 32) or 0 for p in profiles)),
        "tflite_bytes": len(flatbuffer),
        "binary_weight_bytes": report.binary_weight_bytes,
        "float_weight_bytes": report.float_weight_bytes,
        "binary_layers": len(layers),
        "lce_bconv2d": report.lce_bconv2d,
        "coverage": report.coverage.fraction,
        "not_converted": [n for n, _ in report.coverage.not_converted],
        "conversion_s": round(seconds, 1),
        "float_weights_tflite_bytes": None,
        "float_weights_method": None,
    }
    if floats and "binary_weights" in inspect.signature(constructor).parameters:
        float_model = constructor(
            **{"input_shape": input_shape, "num_classes": num_classes, "binary_weights": False}
        )
        float_model.set_weights(model.get_weights())
        row["float_weights_tflite_bytes"] = len(
            to_tflite(float_model, strict=False, verbose=False)  # no binary layer, on purpose
        )
        row["float_weights_method"] = "converted (binary_weights=False, same weights)"
        del float_model
    else:
        row["float_weights_tflite_bytes"] = (
            len(flatbuffer) - report.binary_weight_bytes + 4 * binary
        )
        row["float_weights_method"] = "computed (binary filters as float32)"
    row["size_ratio"] = round(row["float_weights_tflite_bytes"] / len(flatbuffer), 2)

    del model
    gc.collect()
    return row, flatbuffer


def time_round_robin(
    flatbuffers: dict[str, bytes], *, threads: int, runs: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds of single inferences, the models taking turns run after run: load from
    other processes on a shared machine then slows every model alike, and ratios hold."""
    interpreters = {name: Interpreter(fb, num_threads=threads) for name, fb in flatbuffers.items()}
    rng = np.random.default_rng(0)
    inputs = {
        name: rng.standard_normal(tuple(interpreter.input_shapes[0])).astype(np.float32)
        for name, interpreter in interpreters.items()
    }
    for _ in range(warmup):
        for name, interpreter in interpreters.items():
            interpreter.predict(inputs[name])
    times: dict[str, list[float]] = {name: [] for name in interpreters}
    for _ in range(runs):
        for name, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.predict(inputs[name])
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def add_overheads(rows: list[dict]) -> None:
    """DySign overhead: Dy model latency / its baseline's, per thread count, from the minimum
    over runs (the run least disturbed by other processes)."""
    by_name = {row["model"]: row for row in rows}
    for row in rows:
        row["dysign_overhead"] = None
        if not row["model"].startswith("Dy"):
            continue
        baselines = [
            r for r in rows if r["family"] == row["family"] and not r["model"].startswith("Dy")
        ]
        if len(baselines) != 1:
            continue
        base = by_name[baselines[0]["model"]]
        row["baseline"] = base["model"]
        row["size_over_baseline"] = round(row["tflite_bytes"] / base["tflite_bytes"], 3)
        row["dysign_overhead"] = {
            f"{t}t": round(row[f"latency_{t}t_ms"]["min"] / base[f"latency_{t}t_ms"]["min"], 3)
            for t in (1, 2)
        }


def _mb(n) -> str:
    return f"{n / 1e6:.2f}" if n is not None else "-"


def markdown_table(rows: list[dict]) -> str:
    header = (
        "| model | .tflite MB | float-weights MB | ratio | LceBconv2d / binary layers | "
        "convert s | 1 thread ms (min / median) | 2 threads ms (min / median) | "
        "DySign overhead (1t / 2t, min) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for r in rows:
        overhead = r.get("dysign_overhead")
        overhead_text = (
            f"{overhead['1t']:.2f}x / {overhead['2t']:.2f}x vs {r['baseline']}"
            if overhead
            else "-"
        )
        lines.append(
            f"| {r['model']} | {_mb(r['tflite_bytes'])} | {_mb(r['float_weights_tflite_bytes'])} "
            f"| {r['size_ratio']:.1f}x | {r['lce_bconv2d']} / {r['binary_layers']} "
            f"| {r['conversion_s']:.1f} "
            f"| {r['latency_1t_ms']['min']:.1f} / {r['latency_1t_ms']['median']:.1f} "
            f"| {r['latency_2t_ms']['min']:.1f} / {r['latency_2t_ms']['median']:.1f} "
            f"| {overhead_text} |"
        )
    return header + "\n".join(lines) + "\n"


def write_results(out: str, meta: dict, rows: list[dict]) -> None:
    """Print the table; write `export_benchmark.json` and `export_benchmark.md` to `out`."""
    add_overheads(rows)
    table = markdown_table(rows)
    with open(os.path.join(out, "export_benchmark.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(out, "export_benchmark.md"), "w") as f:
        f.write(
            f"# LCE export benchmark\n\n{meta['date']}, input "
            f"{','.join(map(str, meta['input_shape']))}, {meta['num_classes']} classes, "
            f"{meta['machine']} host with {meta['cpus']} CPUs, TF {meta['tensorflow']}, LCE "
            f"{meta['larq_compute_engine']}; {meta['runs']} runs per model, the models taking "
            "turns (round robin) so that load from other processes hits all alike.\n\n"
            f"Latency: {meta['note']}.\n\n{table}"
        )
    print(table)
    print(f"Wrote {os.path.join(out, 'export_benchmark.json')} and .md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=zoo.list_models(),
        metavar="MODEL",
        help="zoo names (built at --input-shape), or saved models of `larq-dysign train` "
        "(.keras, .json or run directory: as trained)",
    )
    parser.add_argument("--input-shape", default="224,224,3", metavar="H,W,C")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10, help="timed inferences per setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--no-float", action="store_true", help="compute, don't convert, the float-weights size"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for JSON and markdown")
    parser.add_argument(
        "--from-json", metavar="FILE", help="re-render the tables of an earlier run's JSON"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            previous = json.load(f)
        os.makedirs(args.out, exist_ok=True)
        write_results(args.out, previous["meta"], previous["rows"])
        return 0
    input_shape = tuple(int(d) for d in args.input_shape.split(","))
    unknown = sorted(
        set(args.models) - set(zoo.list_models()) - {m for m in args.models if os.path.exists(m)}
    )
    if unknown:
        parser.error(f"unknown models {unknown}; the zoo has {zoo.list_models()}")
    os.makedirs(args.out, exist_ok=True)

    rows, flatbuffers = [], {}
    for name in args.models:
        print(f"{name}: converting ...", file=sys.stderr, flush=True)
        row, flatbuffers[name] = measure(
            name,
            input_shape=input_shape,
            num_classes=args.num_classes,
            floats=not args.no_float,
        )
        rows.append(row)
        print(
            f"{name}: {_mb(row['tflite_bytes'])} MB (float weights "
            f"{_mb(row['float_weights_tflite_bytes'])} MB), {row['lce_bconv2d']}/"
            f"{row['binary_layers']} LceBconv2d, {row['conversion_s']} s",
            file=sys.stderr,
            flush=True,
        )
    for threads in (1, 2):
        print(f"timing, {threads} thread(s) ...", file=sys.stderr, flush=True)
        times = time_round_robin(flatbuffers, threads=threads, runs=args.runs, warmup=args.warmup)
        for row in rows:
            t = times[row["model"]]
            row[f"latency_{threads}t_ms"] = {
                "min": round(min(t), 2),
                "median": round(statistics.median(t), 2),
                "max": round(max(t), 2),
            }

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input_shape": list(input_shape),
        "num_classes": args.num_classes,
        "runs": args.runs,
        "warmup": args.warmup,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "larq_compute_engine": __import__("larq_compute_engine").__version__,
        "note": kernels_note(platform.machine()),
    }
    write_results(args.out, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
