"""`make demo`: the main job end to end on one machine, in minutes.

Train a DyResNet18 on real Fashion-MNIST (binary from the first update, two epochs), evaluate
it on the 10,000 test images, export it to an LCE TFLite file, check the file against Keras
with LCE's interpreter, time it on this host, and print a report saying where the file is.

Usage:
    python -m larq_dysign.training.demo [--out out/demo] [--epochs N] [--steps-per-epoch N]
        [--batch-size N] [--schedule two-step|one-step]

Model: the zoo's "small-input" preset for DyResNet18 (`zoo.get_preset`: small stem, width
0.25) with its learning rate and XLA. Budget: the recipe's one-step schedule (binary weights
from random initialization) for 2 epochs at batch 128, without augmentation, so that the demo
stays within 15 minutes on a 2-core machine; at this cost one binary step trains better than
ReActNet's two half-length steps (docs/results.md, "The demo").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
from larq_dysign import export, training
from larq_dysign.training import data

MODEL = "DyResNet18"
#: The zoo's configuration for 28x28 inputs (stem, width, budget; zoo/presets.py, measured in
#: docs/results.md): the demo's model comes from it.
PRESET = "small-input"
#: The demo's budget: one binary step of 2 epochs at batch 128, no augmentation (the preset's
#: two-step budget, 2 x 3 epochs at batch 64, takes about three times the CPU time).
SCHEDULE, EPOCHS, BATCH_SIZE, AUGMENT = "one-step", 2, 128, False


def run(
    out_dir: str,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    schedule: str = SCHEDULE,
    parity_samples: int = 500,
    resume: bool = False,
) -> dict:
    """Train, evaluate, export, verify and time; returns the figures it prints."""
    training_dir = os.path.join(out_dir, "training")
    started = time.perf_counter()
    results = training.train(
        MODEL,
        dataset="fashion_mnist",
        out_dir=training_dir,
        preset=PRESET,
        epochs=EPOCHS if epochs is None else epochs,
        batch_size=BATCH_SIZE if batch_size is None else batch_size,
        steps_per_epoch=steps_per_epoch,
        schedule=schedule,
        data_kwargs={"augment": AUGMENT},
        validation_steps=8,
        verbose=1,
        fresh=not resume,  # a finished earlier demo would be restored, not retrained
    )
    final = results[max(results)]
    model = final.model
    train_seconds = time.perf_counter() - started

    x_test, y_test = data.load_fashion_mnist_arrays("test")
    x_test = data.normalize(x_test).numpy()
    probabilities = model.predict(x_test, batch_size=256, verbose=1)
    keras_accuracy = float((probabilities.argmax(axis=1) == y_test).mean())

    tflite_path = os.path.join(out_dir, f"{MODEL.lower()}_fashion_mnist.tflite")
    flatbuffer = export.to_tflite(model, tflite_path)
    report = export.inspect_tflite(flatbuffer, model=model)
    parity = export.verify(model, flatbuffer, x_test[:parity_samples])
    latency = export.benchmark(flatbuffer, threads=1, runs=20)

    figures = {
        "model": MODEL,
        "dataset": "fashion_mnist",
        "schedule": schedule,
        "training_steps": {str(k): v.history.get("accuracy", []) for k, v in results.items()},
        "train_seconds": round(train_seconds, 1),
        "test_accuracy_keras": keras_accuracy,
        "tflite_path": os.path.abspath(tflite_path),
        "model_path": os.path.abspath(final.model_path),
        "export_command": f"larq-dysign export {final.model_path} -o {tflite_path}",
        "tflite_bytes": report.file_bytes,
        "parity": parity.as_dict(),
        "latency_ms_host": latency.as_dict(),
        "ops": dict(export.op_histogram(flatbuffer)),
    }
    with open(os.path.join(out_dir, "demo_report.json"), "w") as f:
        json.dump(figures, f, indent=2)

    print("\n" + "=" * 78)
    minutes = train_seconds / 60
    print(f"{MODEL} on Fashion-MNIST, {schedule} schedule, {minutes:.1f} min of training")
    print(f"test accuracy (Keras, 10,000 images): {keras_accuracy:.2%}")
    print(report)
    print(parity)
    print(latency)
    print(f"\nThe .tflite is at {os.path.abspath(tflite_path)}")
    print(f"The trained model is saved whole at {final.model_path}; to rebuild the .tflite:")
    print(f"  larq-dysign export {final.model_path} -o {tflite_path}")
    print("Run it on a Raspberry Pi with LCE's runtime: see docs/raspberry-pi.md.")
    print(f"Figures written to {os.path.join(out_dir, 'demo_report.json')}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output directory")
    parser.add_argument("--epochs", type=int, help=f"epochs of each step (default {EPOCHS})")
    parser.add_argument("--steps-per-epoch", type=int, help="default: one pass over the data")
    parser.add_argument("--batch-size", type=int, help=f"default {BATCH_SIZE}")
    parser.add_argument(
        "--schedule",
        choices=training.SCHEDULES,
        default=SCHEDULE,
        help="default: %(default)s",
    )
    parser.add_argument("--parity-samples", type=int, default=500)
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted demo's training"
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    run(
        args.out,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        schedule=args.schedule,
        parity_samples=args.parity_samples,
        resume=args.resume,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
