"""`make demo` as a user runs it (`python -m larq_dysign.training.demo`, on a few updates):
it ends by printing the export command that rebuilds its `.tflite` from its saved model, and
that command, run through the installed `larq-dysign`, gives the same network."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from larq_compute_engine.tflite.python.interpreter import Interpreter

from larq_dysign import export

pytestmark = pytest.mark.slow

BIN = os.path.dirname(sys.executable)


def test_demo_prints_an_export_command_that_rebuilds_its_tflite(tmp_path):
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

    rebuilt = subprocess.run(
        [os.path.join(BIN, arguments[0]), *arguments[1:]],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1200,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    rebuilt_file = (tmp_path / tflite_path).read_bytes()
    assert export.op_histogram(rebuilt_file) == export.op_histogram(demo_file)
    assert export.op_histogram(rebuilt_file)["LceBconv2d"] == 16
    # the same weights: the same outputs (the files differ in tensor names only)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
    expected = Interpreter(demo_file).predict(images)
    np.testing.assert_allclose(Interpreter(rebuilt_file).predict(images), expected, atol=1e-6)
