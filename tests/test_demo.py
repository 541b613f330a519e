"""`make demo` as a user runs it (`python -m larq_dysign.training.demo`, on a few updates):
it ends by printing the export command that rebuilds its `.tflite` from its saved model, and
the model that command reads is the network in the `.tflite`. (`larq-dysign export` of a
trained `.keras`, run through the installed command, is tests/test_cli.py's.) The threshold
figure of docs/results.md reads that model."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from larq_dysign import export, zoo

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_prints_an_export_command_that_rebuilds_its_tflite(tmp_path, fashion_mnist_sample):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    demo = subprocess.run(
        [sys.executable, "-m", "larq_dysign.training.demo", "--out", "out/demo", "--epochs", "1",
         "--steps-per-epoch", "2", "--batch-size", "32", "--parity-samples", "20"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1200,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Traceback" not in demo.stderr
    report = json.loads((tmp_path / "out/demo/demo_report.json").read_text())
    command = re.search(r"^  (larq-dysign export .+)$", demo.stdout, re.M).group(1)
    assert command == report["export_command"]
    arguments = shlex.split(command)
    model_path, tflite_path = arguments[2], arguments[arguments.index("-o") + 1]
    assert model_path.endswith("DyResNet18_step2.keras")
    assert report["schedule"] == "one-step" and list(report["training_steps"]) == ["2"]
    assert os.path.realpath(tmp_path / tflite_path) == report["tflite_path"]
    demo_file = (tmp_path / tflite_path).read_bytes()

    # the saved model the command reads computes what the demo's file computes (LCE's
    # interpreter against Keras): rebuilding it converts this network
    saved, description = zoo.load_saved_model(tmp_path / model_path)
    assert description["model"] == "DyResNet18" and description["step"] == 2
    assert export.op_histogram(demo_file)["LceBconv2d"] == 16
    parity = export.verify(saved, demo_file, fashion_mnist_sample[0][:32])
    # two updates leave some signs near ties, where float rounding can flip one (test_export)
    assert parity.samples == 32 and parity.argmax_agreement >= 0.9, parity

    # benchmarks/threshold_figure.py reads the demo's model (docs/results.md section 6)
    figure = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "threshold_figure.py"), "--run",
         "out/demo/training", "--images", "64", "--out", "figures"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert figure.returncode == 0, figure.stdout + figure.stderr
    thresholds = json.loads((tmp_path / "figures/thresholds.json").read_text())
    assert [row["layer"] for row in thresholds["layers"]] == [
        f"stage{stage}_block1_sign" for stage in (1, 2, 3, 4)
    ]
    assert all(0 <= row["flipped_fraction"] <= 1 for row in thresholds["layers"])
    meta = thresholds["meta"]
    assert meta["run"] == "DyResNet18" and meta["images"] == 64
    assert meta["source"].startswith("the model saved in") and 0 <= meta["test_accuracy"] <= 1
    assert (tmp_path / "figures/thresholds.png").stat().st_size > 0
