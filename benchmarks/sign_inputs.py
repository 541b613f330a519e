"""Where each sign layer's inputs lie at initialization: the figures behind thresholds from data.

For each configuration (a zoo model at 28x28x1, 10 classes, seed 0), runs 256 Fashion-MNIST
training images through the untrained model in training mode (BatchNorm with the batch's
statistics, as in the first updates) and records, for every sign layer (RSign / DySign) in
the model's order:

- the mean of its input;
- the share of its outputs that are +1;
- the share of its inputs within 1 of the threshold, where the sign's surrogate gradient is
  not zero (approx_sign and the STE both vanish beyond).

With `threshold_init="data"` the thresholds are first set by `training.initialize_thresholds`
on the same images, as `train(threshold_init="data")` does.

Run:
    .venv/bin/python benchmarks/sign_inputs.py

Prints one line per configuration (first and last signs, ranges) and writes every layer's
figures to benchmarks/results/sign_inputs.json (--out). About a minute on 2 CPUs.
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

from larq_dysign import training, zoo
from larq_dysign.files import write_atomically
from larq_dysign.layers import DySign, RSign
from larq_dysign.training import data

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results")
IMAGES = training.recipe.THRESHOLD_INIT_IMAGES

SMALL_W025 = {"stem": "small", "width_multiplier": 0.25}
SMALL_W05 = {"stem": "small", "width_multiplier": 0.5}
#: (label, model, model arguments, threshold init)
CONFIGS = (
    ("ReActNet18 small stem w0.25", "ReActNet18", SMALL_W025, "zeros"),
    ("ReActNetA small stem w0.25", "ReActNetA", SMALL_W025, "zeros"),
    ("ReActNetA small stem w0.25, thresholds from data", "ReActNetA", SMALL_W025, "data"),
    ("ReActNetA small stem w0.5, thresholds from data", "ReActNetA", SMALL_W05, "data"),
    ("BinaryCCT 7/3x2 w0.5", "BinaryCCT", {"variant": "7/3x2", "width_multiplier": 0.5}, "zeros"),
)


def sign_inputs(model: tf.keras.Model, images: np.ndarray) -> list[dict]:
    """Per sign layer of `model`: its input's mean, the +1 share, the in-window share."""
    signs = [layer for layer in model.layers if isinstance(layer, RSign | DySign)]
    inputs = tf.keras.Model(model.inputs, [layer.input for layer in signs])(images, training=True)
    rows = []
    for layer, x in zip(signs, inputs):
        threshold = layer.threshold.numpy()  # static part; DySign's dynamic part starts at 0
        outputs = layer(x).numpy()
        rows.append(
            {
                "layer": layer.name,
                "input_mean": float(np.mean(x)),
                "input_std": float(np.std(x)),
                "plus_one": float(np.mean(outputs > 0)),
                "in_window": float(np.mean(np.abs(x.numpy() - threshold) <= 1.0)),
            }
        )
    return rows


def summary(label: str, rows: list[dict]) -> str:
    def span(key):
        values = [row[key] for row in rows]
        return (
            f"{min(values):.2f}-{max(values):.2f} (first {values[0]:.2f}, last {values[-1]:.2f})"
        )

    return (
        f"{label}: {len(rows)} signs; input mean {span('input_mean')}; "
        f"+1 share {span('plus_one')}; within 1 of the threshold {span('in_window')}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    x, _ = data.load_fashion_mnist_arrays("train")
    images = data.normalize(x[:IMAGES]).numpy()
    results = []
    for label, name, kwargs, threshold_init in CONFIGS:
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(0)
        model = zoo.get_model(name, input_shape=(28, 28, 1), num_classes=10, **kwargs)
        if threshold_init == "data":
            training.initialize_thresholds(model, images)
        rows = sign_inputs(model, images)
        print(summary(label, rows), flush=True)
        results.append(
            {
                "label": label,
                "model": name,
                "model_kwargs": kwargs,
                "threshold_init": threshold_init,
                "layers": rows,
            }
        )
    meta = {
        "command": "python benchmarks/sign_inputs.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "images": IMAGES,
        "seed": 0,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sign_inputs.json")
    write_atomically(path, json.dumps({"meta": meta, "configs": results}, indent=1))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
