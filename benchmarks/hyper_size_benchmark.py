"""What each hyper-function option of the study costs in bytes, for every Dy model at 224x224.

For the ImageNet configuration of DyResNet18, DyMobileNet and DyBinaryCCT (224x224x3, 1000
classes), with the hyper function as it was before the study and with each variant of the
study (`accuracy_benchmark.STUDY_VARIANTS`, the same options on DySign and DyPReLU):

- the float parameters the hyper functions add over the static baseline (Dy model minus its
  baseline, `count_params`), in MB of float32;
- the baseline's binary weights in MB at 1 bit each, the bar of #14.4 ("float hyper-function
  bytes below the binary weight bytes");
- the estimated .tflite size over the baseline's: float32 parameters at 4 bytes and binary
  weights at 1 bit, the LCE file's layout without its graph (for the original options
  the estimate is within 5% of the sizes export_benchmark.py measures: 1.39x / 1.99x / 6.18x
  against 1.40x / 2.00x / 5.92x).

"bound 1", "lr x10" and "hidden 2 leaky" change how the hyper function computes or trains,
not its size: they cost what the original (or "hidden 2") does and are left out
(`SAME_BYTES`); `mean_std` doubles the first layer's inputs.

Run:
    .venv/bin/python benchmarks/hyper_size_benchmark.py

Writes `hyper_sizes.json` to benchmarks/results/ (--out); `benchmarks/make_results.py` puts
its table into docs/results.md section 3.
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import json
import os
import sys

import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
import tensorflow as tf

from larq_dysign import zoo
from larq_dysign.export import binary_layers
from larq_dysign.files import write_atomically

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_results  # noqa: E402
from accuracy_benchmark import ORIGINAL_OPTIONS, STUDY_VARIANTS  # noqa: E402

BASELINES = {"DyResNet18": "ReActNet18", "DyMobileNet": "ReActNetA", "DyBinaryCCT": "BinaryCCT"}
#: Variants that change only how the hyper function trains: the same bytes as the original.
SAME_BYTES = ("bound 1", "lr x10", "hidden 2 leaky")


def measure() -> list[dict]:
    rows = []
    variants = {"original": {}} | {
        name: options for name, (options, _) in STUDY_VARIANTS.items() if name not in SAME_BYTES
    }
    for dy, baseline_name in BASELINES.items():
        baseline = zoo.get_model(baseline_name)
        base_params = baseline.count_params()
        binary = sum(layer.weights for layer in binary_layers(baseline))
        base_mb = (4 * (base_params - binary) + binary / 8) / 1e6
        for variant, changes in variants.items():
            tf.keras.backend.clear_session()
            options = {**ORIGINAL_OPTIONS, **changes}
            model = zoo.get_model(dy, dysign_options=options, dyprelu_options=options)
            hyper = model.count_params() - base_params
            row = {
                "model": dy,
                "variant": variant,
                "hyper_floats": hyper,
                "hyper_mb": 4 * hyper / 1e6,
                "binary_mb": binary / 8 / 1e6,
                "size_ratio_estimate": (base_mb + 4 * hyper / 1e6) / base_mb,
            }
            print(
                f"{dy:12s} {variant:13s} hyper functions {row['hyper_mb']:6.2f} MB, binary "
                f"weights {row['binary_mb']:5.2f} MB, .tflite ~{row['size_ratio_estimate']:.2f}x "
                f"{baseline_name}'s",
                flush=True,
            )
            rows.append(row)
        tf.keras.backend.clear_session()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    rows = measure()
    os.makedirs(args.out, exist_ok=True)
    write_atomically(os.path.join(args.out, "hyper_sizes.json"), json.dumps(rows, indent=1))
    print("\n".join(make_results.hyper_size_rows(rows)))  # docs/results.md's table
    return 0


if __name__ == "__main__":
    sys.exit(main())
