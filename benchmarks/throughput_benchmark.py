"""Training cost, Dy vs baseline side by side: seconds per `train_on_batch` update.

Every model is built and compiled first, then timed in turns, round after round, so the
Dy model and its baseline see the same machine load. Configurations: each family's
`small-input` preset (the accuracy benchmark's evidence; 28x28x1 Fashion-MNIST images, the
preset's batch and XLA setting), and the hyper-function study's variants on the ResNet-18
preset network.

The process runs TensorFlow on 1 thread and the ratios come from CPU time
(`time.process_time`): on a machine shared with other jobs, wall time measures the other
jobs as much as the model, while the CPU time a single-threaded step consumes does not
depend on how long it waited for a core. Wall-clock images per second are reported too.

Run:
    .venv/bin/python benchmarks/throughput_benchmark.py [--rounds 5 --steps 3]

Writes `throughput.json` and `throughput.md` to benchmarks/results/ (--out).
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import tensorflow as tf

from larq_dysign import zoo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy_benchmark import STUDY, _preset_configs  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def rows_to_time() -> list[dict]:
    """(row name, zoo model, constructor arguments, batch, XLA, baseline row) per row."""
    rows = []
    for name, config in _preset_configs().items():
        rows.append(
            {
                "name": f"{name} (small-input preset)",
                "model": config.model,
                "kwargs": config.kwargs,
                "batch_size": config.budget.batch_size,
                "jit_compile": config.budget.jit_compile,
                "baseline": config.baseline and f"{config.baseline} (small-input preset)",
                "group": "preset",
            }
        )
    for name, config in STUDY.items():
        rows.append(
            {
                "name": name,
                "model": config.model,
                "kwargs": config.kwargs,
                "batch_size": config.budget.batch_size,
                "jit_compile": config.budget.jit_compile,
                "baseline": config.baseline,
                "group": "study",
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed updates per round")
    parser.add_argument("--groups", nargs="+", default=["preset", "study"])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    rows = [row for row in rows_to_time() if row["group"] in args.groups]
    rng = np.random.default_rng(0)
    models = {}
    for row in rows:
        batch = row["batch_size"]
        x = rng.uniform(-1, 1, (batch, 28, 28, 1)).astype("float32")
        y = rng.integers(0, 10, batch)
        model = zoo.get_model(
            row["model"], input_shape=(28, 28, 1), num_classes=10, **row["kwargs"]
        )
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=row["jit_compile"])
        start = time.perf_counter()
        model.train_on_batch(x, y)  # tracing (and XLA compilation)
        row["first_step_seconds"] = time.perf_counter() - start
        model.train_on_batch(x, y)
        row["parameters"] = int(model.count_params())
        models[row["name"]] = (model, x, y)
        print(f"built {row['name']}: first step {row['first_step_seconds']:.1f} s", flush=True)

    cpu = {name: [] for name in models}
    wall = {name: [] for name in models}
    for round_ in range(args.rounds):
        for name, (model, x, y) in models.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            cpu[name].append((time.process_time() - cpu_start) / args.steps)
            wall[name].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    by_name = {row["name"]: row for row in rows}
    for row in rows:
        row["cpu_seconds_per_step"] = statistics.median(cpu[row["name"]])
        row["cpu_seconds_per_step_all"] = cpu[row["name"]]
        row["wall_seconds_per_step"] = statistics.median(wall[row["name"]])
        row["images_per_cpu_second"] = row["batch_size"] / row["cpu_seconds_per_step"]
        row["images_per_second"] = row["batch_size"] / row["wall_seconds_per_step"]
    for row in rows:
        base = by_name.get(row["baseline"]) if row["baseline"] else None
        if base is not None:
            row["dy_over_baseline_time"] = (
                row["cpu_seconds_per_step"] / base["cpu_seconds_per_step"]
            )
    meta = {
        "command": "python benchmarks/throughput_benchmark.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}",
        "rounds": args.rounds,
        "steps": args.steps,
        "threads": 1,
        "load_average": os.getloadavg()[0],
    }
    lines = [
        "# Training cost on Fashion-MNIST-sized inputs (28x28x1)",
        "",
        f"Generated by `{meta['command'].strip()}` on {meta['date']} ({meta['machine']}); "
        f"1 TensorFlow thread, median of {args.rounds} rounds of {args.steps} updates, models "
        "timed in turns; ratios from CPU seconds per update.",
        "",
        "| model | arguments | batch | XLA | params | CPU s / update | images / CPU s | "
        "images / s (wall) | Dy / baseline (CPU) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        arguments = ", ".join(f"{k}={v}" for k, v in row["kwargs"].items())
        ratio = f"{row['dy_over_baseline_time']:.2f}" if "dy_over_baseline_time" in row else ""
        lines.append(
            f"| {row['name']} | {arguments} | {row['batch_size']} | "
            f"{'yes' if row['jit_compile'] else 'no'} | {row['parameters']:,} | "
            f"{row['cpu_seconds_per_step']:.3f} | {row['images_per_cpu_second']:.0f} | "
            f"{row['images_per_second']:.0f} | {ratio} |"
        )
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "throughput.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "throughput.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
