"""How a trained DyResNet18's thresholds vary across inputs: the dynamic behaviour DySign is for.

Loads a trained DyResNet18 (by default the one `make demo` trains, in out/demo/training; or
any saved model of `larq-dysign train` or accuracy-benchmark run), measures its accuracy on
the 10,000 Fashion-MNIST test images, runs it on the first `--images` of them, and for the
first DySign layer of each stage
records every image's per-channel threshold `tau(x) = b + W2 relu(W1 mean(x) + b1) + b2`.
Figures per layer:

- the spread of each channel's threshold across images (std over images), next to the
  spread of that channel's activations (std over images and positions) for scale;
- the share of binary activations that the dynamic part decides: positions where
  `sign(x - tau(x))` differs from `sign(x - mean_over_images(tau))`, the static threshold
  that best matches on average;
- the mean threshold per class for a few channels (do thresholds depend on the content?).

Run (after `make demo`, or with --run after `accuracy_benchmark.py` or `larq-dysign train`):
    .venv/bin/python benchmarks/threshold_figure.py [--run out/demo/training]

Writes `thresholds.json` and `thresholds.png` to benchmarks/results/ (--out).
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import tensorflow as tf

from larq_dysign import DySign, zoo
from larq_dysign.training import data

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_RUN = os.path.join(ROOT, "out", "demo", "training")  # what `make demo` trains
DEFAULT_OUT = os.path.join(HERE, "results")
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def analyse(model: tf.keras.Model, x: np.ndarray, y: np.ndarray) -> list[dict]:
    signs = [layer for layer in model.layers if isinstance(layer, DySign)]
    # the first DySign of each stage
    chosen = [layer for layer in signs if layer.name.endswith("block1_sign")]
    probe = tf.keras.Model(model.inputs, [layer.input for layer in chosen])
    inputs = probe.predict(x, batch_size=250, verbose=0)
    rows = []
    for layer, activations in zip(chosen, inputs):
        tau = layer.thresholds(tf.constant(activations)).numpy()  # (images, channels)
        static = tau.mean(axis=0)
        dynamic_sign = activations >= tau[:, None, None, :]
        static_sign = activations >= static[None, None, None, :]
        per_class = np.stack([tau[y == c].mean(axis=0) for c in range(10)])
        rows.append(
            {
                "layer": layer.name,
                "channels": int(tau.shape[1]),
                "threshold_std_over_images": tau.std(axis=0).tolist(),
                "activation_std": activations.reshape(-1, tau.shape[1]).std(axis=0).tolist(),
                "static_part": layer.threshold.numpy().reshape(-1).tolist(),
                "mean_threshold_std_over_images": float(tau.std(axis=0).mean()),
                "mean_activation_std": float(activations.std(axis=(0, 1, 2)).mean()),
                "flipped_fraction": float((dynamic_sign != static_sign).mean()),
                "per_class_mean_threshold": per_class.tolist(),
            }
        )
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(rows), figsize=(4 * len(rows), 7.5), squeeze=False)
    for column, row in enumerate(rows):
        top, bottom = axes[0][column], axes[1][column]
        spread = np.array(row["threshold_std_over_images"])
        scale = np.array(row["activation_std"])
        order = np.argsort(spread)[::-1]
        top.bar(range(len(order)), spread[order], label="threshold std over images")
        top.plot(range(len(order)), scale[order], "k.", ms=3, label="activation std")
        top.set_yscale("log")
        top.set_title(
            f"{row['layer']}\n{row['flipped_fraction']:.1%} of signs set by the dynamic part"
        )
        top.set_xlabel("channel (sorted by threshold spread)")
        top.legend(fontsize=8)
        per_class = np.array(row["per_class_mean_threshold"])
        channels = order[:6]
        for channel in channels:
            bottom.plot(range(10), per_class[:, channel], marker="o", label=f"channel {channel}")
        bottom.set_xticks(range(10))
        bottom.set_xticklabels(CLASSES, rotation=60, fontsize=7)
        bottom.set_ylabel("mean threshold over the class's images")
        bottom.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run",
        default=DEFAULT_RUN,
        help="a trained DyResNet18: a saved model of `larq-dysign train` (.keras, .json or run "
        "directory, e.g. an accuracy-benchmark run); default: the model of `make demo`",
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        model, description = zoo.load_saved_model(args.run)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(
            f"Expected --run to be a trained model (run benchmarks/accuracy_benchmark.py or "
            f"larq-dysign train first): {error}"
        ) from error
    source = f"the model saved in {os.path.relpath(os.path.abspath(args.run), ROOT)}"
    if os.path.abspath(args.run) == DEFAULT_RUN:
        source = "the model `make demo` trains, in out/demo/training"
    result_path = os.path.join(args.run, "result.json")  # an accuracy-benchmark run's
    if os.path.isfile(result_path):
        with open(result_path) as f:
            source = f"seed {json.load(f)['seed']} of the accuracy benchmark"
    x_all, y_all = data.load_fashion_mnist_arrays("test")
    x_all = data.normalize(x_all).numpy()
    predicted = model.predict(x_all, batch_size=250, verbose=0).argmax(axis=1)
    test_accuracy = float((predicted == y_all).mean())
    x, y = x_all[: args.images], y_all[: args.images]
    rows = analyse(model, x, y)
    meta = {
        "command": "python benchmarks/threshold_figure.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "run": description["model"],
        "source": source,
        "test_accuracy": test_accuracy,
        "images": len(x),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "thresholds.json"), "w") as f:
        json.dump({"meta": meta, "layers": rows}, f, indent=1)
    plot(rows, os.path.join(args.out, "thresholds.png"))
    print(f"{meta['run']} ({source}): test accuracy {test_accuracy:.2%}")
    for row in rows:
        print(
            f"{row['layer']}: threshold std over images "
            f"{row['mean_threshold_std_over_images']:.4f} "
            f"(activation std {row['mean_activation_std']:.3f}), "
            f"{row['flipped_fraction']:.2%} of signs set by the dynamic part"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
