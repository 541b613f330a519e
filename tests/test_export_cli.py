"""`larq-dysign export / inspect / benchmark`: a saved checkpoint to a checked .tflite file."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import cli, zoo
from larq_dysign.export import verify


@pytest.fixture(scope="module")
def exported_checkpoint(tmp_path_factory):
    """ReActNet18 weights saved to .h5, exported by `larq-dysign export`: the model they came
    from, the .tflite path, the command's exit status and what it printed."""
    directory = tmp_path_factory.mktemp("cli")
    tf.keras.utils.set_random_seed(7)
    model = zoo.ReActNet18(input_shape=(28, 28, 1), num_classes=10)
    rng = np.random.default_rng(7)
    for weight in model.weights:  # a checkpoint unlike any fresh initialization
        if "moving_variance" not in weight.name:
            weight.assign(weight + rng.normal(0.0, 0.05, weight.shape).astype(np.float32))
    weights = directory / "reactnet18.h5"
    model.save_weights(str(weights))
    output = directory / "reactnet18.tflite"
    argv = ["export", "ReActNet18", "--weights", str(weights), "--input-shape", "28,28,1"]
    argv += ["--num-classes", "10", "-o", str(output), "--quiet"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(argv)
    return model, output, status, printed.getvalue()


def test_export_builds_the_model_from_a_checkpoint_and_prints_the_report(
    exported_checkpoint, fashion_mnist_sample
):
    model, output, status, printed = exported_checkpoint
    assert status == 0
    assert "16 LceBconv2d, 16 LceQuantize" in printed
    assert "Coverage: 16 / 16 binary Keras layers run as LceBconv2d" in printed
    assert "unresolved custom op" in printed and "WARNING" not in printed
    assert f"Wrote {output}" in printed
    assert sorted(os.listdir(output.parent)) == ["reactnet18.h5", "reactnet18.tflite"]

    # The file holds the checkpoint's weights: it reproduces the model that saved them.
    x, _ = fashion_mnist_sample
    parity = verify(model, str(output), x[:16])
    assert parity.close_fraction >= 0.5 and parity.argmax_agreement >= 0.75  # see test_export


def test_inspect_prints_the_report_and_json(exported_checkpoint, capsys):
    _, output, _, _ = exported_checkpoint
    assert cli.main(["inspect", str(output)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{output}: ") and "16 LceBconv2d" in text
    assert "binary (bitpacked)" in text and "LceBconv2d                      16" in text
    assert cli.main(["inspect", str(output), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["lce_bconv2d"] == 16 and data["file_bytes"] == output.stat().st_size
    assert data["binary_weights"] == 10_985_472  # ResNet-18's 16 binary 3x3 convs
    assert data["inputs"][0]["shape"] == [1, 28, 28, 1]


def test_benchmark_prints_host_latency_labelled_not_arm(exported_checkpoint, capsys):
    _, output, _, _ = exported_checkpoint
    argv = ["benchmark", str(output), "--threads", "2", "--runs", "3", "--warmup", "1"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "2 thread(s), 3 runs after 1 warm-up" in text and "not ARM speed" in text
    assert cli.main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["threads"] == 2 and 0 < data["min_ms"] <= data["median_ms"] <= data["max_ms"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "missing.tflite"], "larq-dysign inspect: error: [Errno 2]"),
        (["benchmark", "missing.tflite"], "larq-dysign benchmark: error: [Errno 2]"),
        (["export", "NoSuchNet", "-o", "x.tflite"], "Unknown model 'NoSuchNet'; the zoo has"),
        (
            ["export", "ReActNet18", "--weights", "missing.h5", "-o", "x.tflite"],
            "Expected --weights to be a checkpoint file, but 'missing.h5' does not exist.",
        ),
        (
            ["export", "ReActNet18", "-o", "no/such/dir/x.tflite"],
            "Expected -o/--output to be a file in an existing directory",
        ),
    ],
)
def test_user_errors_exit_1_with_one_line_and_no_file(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert os.listdir(tmp_path) == []


def test_inspect_of_a_file_that_is_not_tflite(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    assert cli.main(["inspect", str(path)]) == 1
    assert "Expected a TFLite flatbuffer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "ReActNet18", "--input-shape", "28,28", "-o", "x.tflite"], "H,W,C"),
        (["benchmark", "x.tflite", "--threads", "0"], "expected a positive integer, got '0'"),
        (["export", "ReActNet18", "--target", "x86", "-o", "x.tflite"], "invalid choice"),
    ],
)
def test_malformed_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "larq_dysign.cli", "export", "NoSuchNet", "-o", "x.tflite"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1
    assert "larq-dysign export: error: Unknown model 'NoSuchNet'" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []
