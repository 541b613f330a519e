"""DySign vs static thresholds on the full Fashion-MNIST split, several seeds per model.

Every run trains one zoo model with the two-step recipe (`larq_dysign.training.train`:
step 1 real weights, step 2 binary weights from step 1; Adam with linear decay), the same
budget within each comparison: `STEPS` updates of `--batch-size` images per recipe step,
drawn from all 60,000 training images (2 x 235 x 128 is one pass over them), then evaluates
on all 10,000 test images. Experiments:

- the three Dy / baseline pairs: ReActNet18 vs DyResNet18, ReActNetA vs DyMobileNet,
  BinaryCCT vs DyBinaryCCT ("7/3x1");
- ablations on the ResNet backbone: DySign alone, DyPReLU alone, one threshold per sample
  ("layer" granularity) instead of one per channel.

Widths are reduced (`width_multiplier`, and 2 encoder layers for the CCTs) so that the
whole grid fits a 2-core machine; `CONFIGS` says which. Runs go to `--runs-dir`, one
directory each with its `result.json`; a finished run is not repeated, so the command can be
re-run after an interruption, or with more seeds. `--jobs` runs train in parallel, each in its
own process with `--threads` TensorFlow threads.

Run:
    .venv/bin/python benchmarks/accuracy_benchmark.py                 # 3 seeds, everything
    .venv/bin/python benchmarks/accuracy_benchmark.py --seeds 0 --experiments resnet

Writes `accuracy.json`, `accuracy.md` and `training_curves.png` to benchmarks/results/ (--out).
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results")
DEFAULT_RUNS = os.path.join(os.path.dirname(HERE), "out", "accuracy_runs")

RESNET = {"stem": "imagenet", "width_multiplier": 0.25}
MOBILENET = {"stem": "imagenet", "width_multiplier": 0.25}
CCT = {"variant": "7/3x1", "num_layers": 2, "width_multiplier": 0.25}

#: config name -> (experiment, zoo model, constructor arguments, baseline config or None)
CONFIGS = {
    "ReActNet18": ("resnet", "ReActNet18", RESNET, None),
    "DyResNet18": ("resnet", "DyResNet18", RESNET, "ReActNet18"),
    "DyResNet18 DySign only": (
        "ablation",
        "DyResNet18",
        {**RESNET, "dyprelu": False},
        "ReActNet18",
    ),
    "DyResNet18 DyPReLU only": (
        "ablation",
        "DyResNet18",
        {**RESNET, "dysign": False},
        "ReActNet18",
    ),
    "DyResNet18 layer thresholds": (
        "ablation",
        "DyResNet18",
        {**RESNET, "dysign_options": {"granularity": "layer"}},
        "ReActNet18",
    ),
    "ReActNetA": ("mobilenet", "ReActNetA", MOBILENET, None),
    "DyMobileNet": ("mobilenet", "DyMobileNet", MOBILENET, "ReActNetA"),
    "BinaryCCT": ("cct", "BinaryCCT", CCT, None),
    "DyBinaryCCT": ("cct", "DyBinaryCCT", CCT, "BinaryCCT"),
}
EXPERIMENTS = ("resnet", "ablation", "mobilenet", "cct")
#: Updates per recipe step (batch 128): one pass over the 60,000 training images in all for
#: the ResNets, half a pass for ReActNet-A, a quarter for the CCTs (1.6 s per update here:
#: attention over 196 tokens), the same within each pair.
STEPS = {"resnet": 235, "ablation": 235, "mobilenet": 118, "cct": 60}
#: Training curves: the train loss and accuracy every this many updates.
CURVE_EVERY = 10


def run_id(config: str, seed: int) -> str:
    return f"{config.replace(' ', '_')}_seed{seed}"


# ---------------------------------------------------------------------------- one run


def train_one(
    config: str,
    seed: int,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    threads: int,
    runs_dir: str,
) -> dict:
    """Train `config` with `seed` in this process; write and return its result."""
    import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
    import tensorflow as tf

    from larq_dysign import training

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    experiment, model, kwargs, baseline = CONFIGS[config]
    directory = os.path.join(runs_dir, run_id(config, seed))
    curve = []

    class Curve(tf.keras.callbacks.Callback):
        def __init__(self, step):
            super().__init__()
            self.step = step

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % CURVE_EVERY == 0:
                update = (self.step - 1) * steps + batch + 1
                curve.append([update, float(logs["loss"]), float(logs["accuracy"])])

    class StepTimer(tf.keras.callbacks.Callback):
        """Seconds per update after the first 5 (graph tracing and compilation)."""

        def on_train_begin(self, logs=None):
            self.start = None

        def on_train_batch_end(self, batch, logs=None):
            if batch == 4:
                self.start = time.perf_counter()
            self.end, self.batches = time.perf_counter(), batch - 4

    tf.keras.utils.set_random_seed(seed)
    timers, results = {}, {}
    start = time.perf_counter()
    for step in (1, 2):
        timers[step] = StepTimer()
        results.update(
            training.train(
                model,
                dataset="fashion_mnist",
                out_dir=directory,
                epochs=1,
                steps_per_epoch=steps,
                batch_size=batch_size,
                step=step,
                learning_rate=learning_rate,
                model_kwargs=kwargs,
                callbacks=[Curve(step), timers[step]],
                verbose=2,
            )
        )
    seconds = time.perf_counter() - start
    final = results[2]
    result = {
        "config": config,
        "experiment": experiment,
        "model": model,
        "kwargs": kwargs,
        "baseline": baseline,
        "seed": seed,
        "steps_per_recipe_step": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "parameters": int(final.model.count_params()),
        # the eval split of fashion_mnist is the whole test set, evaluated after each step
        "test_accuracy": float(final.history["val_accuracy"][-1]),
        "test_loss": float(final.history["val_loss"][-1]),
        "step1_test_accuracy": float(results[1].history["val_accuracy"][-1]),
        "seconds": seconds,
        "seconds_per_update": {
            str(step): (t.end - t.start) / t.batches for step, t in timers.items() if t.start
        },
        "threads": threads,
        "curve": curve,
        "weights": final.weights_path,
    }
    with open(os.path.join(directory, "result.json.part"), "w") as f:
        json.dump(result, f, indent=1)
    os.replace(os.path.join(directory, "result.json.part"), os.path.join(directory, "result.json"))
    return result


# ---------------------------------------------------------------------------- summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: list[dict]) -> dict:
    """Per config: accuracy mean and sample std over seeds; vs its baseline: the difference
    of means and whether it exceeds the seed spread, taken as 2 standard errors of the
    difference, `2 sqrt(s_a^2/n_a + s_b^2/n_b)` (about a 95% interval)."""
    by_config: dict[str, list[dict]] = {}
    for result in results:
        by_config.setdefault(result["config"], []).append(result)
    rows = {}
    for config in CONFIGS:
        runs = sorted(by_config.get(config, []), key=lambda r: r["seed"])
        if not runs:
            continue
        accuracies = [r["test_accuracy"] for r in runs]
        mean, std = _mean_std(accuracies)
        rows[config] = {
            "config": config,
            "experiment": CONFIGS[config][0],
            "model": CONFIGS[config][1],
            "kwargs": CONFIGS[config][2],
            "baseline": CONFIGS[config][3],
            "seeds": [r["seed"] for r in runs],
            "test_accuracies": accuracies,
            "mean": mean,
            "std": std,
            "parameters": runs[0]["parameters"],
            "updates": runs[0]["steps_per_recipe_step"],
            "seconds_per_update": statistics.fmean(
                statistics.fmean(r["seconds_per_update"].values()) for r in runs
            ),
        }
    for row in rows.values():
        base = rows.get(row["baseline"]) if row["baseline"] else None
        if base is None:
            continue
        n_a, n_b = len(row["test_accuracies"]), len(base["test_accuracies"])
        margin = 2 * math.sqrt(row["std"] ** 2 / n_a + base["std"] ** 2 / n_b)
        difference = row["mean"] - base["mean"]
        row["difference"] = difference
        row["margin"] = margin
        row["exceeds_spread"] = bool(n_a > 1 and n_b > 1 and abs(difference) > margin)
    return rows


def markdown(rows: dict, meta: dict) -> str:
    lines = [
        "# DySign vs static thresholds on Fashion-MNIST",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}).",
        "Budget per run: two-step recipe, the same number of updates of "
        f"{meta['batch_size']} images in each recipe step for both sides of a comparison "
        '("updates" column, drawn from all 60,000 training images; 235 x 2 is one pass), '
        f"Adam lr {meta['learning_rate']:g} with linear decay; test accuracy on all 10,000 "
        "test images. Mean and sample standard deviation "
        'over seeds; "exceeds spread" when |difference| > 2 standard errors of the '
        "difference.",
        "",
        "| experiment | model | config | params | updates | seeds | test accuracy (%) | "
        "vs baseline (points) | exceeds spread |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows.values():
        config = ", ".join(f"{k}={v}" for k, v in row["kwargs"].items())
        versus, exceeds = "", ""
        if "difference" in row:
            versus = f"{100 * row['difference']:+.2f} (+-{100 * row['margin']:.2f})"
            exceeds = "yes" if row["exceeds_spread"] else "no"
        lines.append(
            f"| {row['experiment']} | {row['config']} | {config} | {row['parameters']:,} | "
            f"2 x {row['updates']} | {len(row['seeds'])} | "
            f"{100 * row['mean']:.2f} +- {100 * row['std']:.2f} | "
            f"{versus} | {exceeds} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(results: list[dict], path: str) -> None:
    """Train loss per update, Dy vs baseline, mean over seeds, one panel per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [
        ("ReActNet18", "DyResNet18"),
        ("ReActNetA", "DyMobileNet"),
        ("BinaryCCT", "DyBinaryCCT"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, pair in zip(axes, pairs):
        for config in pair:
            curves = [r["curve"] for r in results if r["config"] == config and r["curve"]]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            updates = [point[0] for point in curves[0][:length]]
            loss = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
            axis.plot(updates, loss, label=f"{config} ({len(curves)} seeds)")
        steps = next((r["steps_per_recipe_step"] for r in results if r["config"] in pair), None)
        if steps:
            axis.axvline(steps, color="grey", linestyle=":", label="step 1 -> step 2")
        axis.set_title(" vs ".join(pair))
        axis.set_xlabel("update")
        axis.set_ylabel("train loss (running mean within the step)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ---------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, help="updates per recipe step for every model (default: STEPS)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per run")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--run-one", nargs=2, metavar=("CONFIG", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = dict(
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        threads=args.threads,
        runs_dir=args.runs_dir,
    )
    if args.run_one:
        config = args.run_one[0]
        steps = args.steps or STEPS[CONFIGS[config][0]]
        train_one(config, int(args.run_one[1]), steps=steps, **settings)
        return 0

    configs = [c for c, spec in CONFIGS.items() if spec[0] in args.experiments]
    # seed-major order: every config gets its first seed before any gets its third
    queue = [(c, s) for s in args.seeds for c in configs]
    os.makedirs(args.runs_dir, exist_ok=True)

    def result_path(config, seed):
        return os.path.join(args.runs_dir, run_id(config, seed), "result.json")

    def launch(item):
        config, seed = item
        if os.path.exists(result_path(config, seed)):
            return
        log = os.path.join(args.runs_dir, run_id(config, seed) + ".log")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--run-one",
            config,
            str(seed),
            *(["--steps", str(args.steps)] if args.steps else []),
            "--batch-size",
            str(args.batch_size),
            "--learning-rate",
            str(args.learning_rate),
            "--threads",
            str(args.threads),
            "--runs-dir",
            args.runs_dir,
        ]
        started = time.perf_counter()
        with open(log, "w") as f:
            code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
        status = "done" if code == 0 else f"FAILED ({code}, see {log})"
        print(
            f"{config} seed {seed}: {status} in {time.perf_counter() - started:.0f} s", flush=True
        )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(launch, queue))

    results = [
        json.load(open(result_path(c, s)))
        for c in CONFIGS
        for s in args.seeds
        if os.path.exists(result_path(c, s))
    ]
    rows = summarize(results)
    meta = {
        "command": "python benchmarks/accuracy_benchmark.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "steps": args.steps or STEPS,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "jobs": args.jobs,
        "threads": args.threads,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "accuracy.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows, "runs": results}, f, indent=1)
    with open(os.path.join(args.out, "accuracy.md"), "w") as f:
        f.write(markdown(rows, meta))
    plot_curves(results, os.path.join(args.out, "training_curves.png"))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
