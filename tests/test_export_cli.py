"""`larq-dysign export / inspect / benchmark`: a saved checkpoint to a checked .tflite file."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import cli, zoo
from larq_dysign.export import binary_layers, verify
from larq_dysign.training import data

# one xdist group: the tests share module fixtures another worker would build again
pytestmark = pytest.mark.xdist_group("test_export_cli")


@pytest.fixture(scope="module")
def exported_checkpoint(tmp_path_factory):
    """ReActNet18 weights saved to .h5, exported by `larq-dysign export`: the model they came
    from, the .tflite path, the command's exit status and what it printed."""
    directory = tmp_path_factory.mktemp("cli")
    tf.keras.utils.set_random_seed(7)
    model = zoo.ReActNet18(input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.25)
    rng = np.random.default_rng(7)
    for weight in model.weights:  # a checkpoint unlike any fresh initialization
        if "moving_variance" not in weight.name:
            weight.assign(weight + rng.normal(0.0, 0.05, weight.shape).astype(np.float32))
    weights = directory / "reactnet18.h5"
    model.save_weights(str(weights))
    output = directory / "reactnet18.tflite"
    argv = ["export", "ReActNet18", "--weights", str(weights), "--input-shape", "28,28,1"]
    argv += ["--num-classes", "10", "--width-multiplier", "0.25", "-o", str(output), "--quiet"]
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


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", "/ckpt"])
def test_every_weights_format_builds_the_same_model(exported_checkpoint, suffix, capsys):
    """`--weights` takes tf-keras' `.weights.h5`, a whole `.keras` and a TF checkpoint
    prefix as well as `.h5` (the same model flags in every command: evaluate here, which
    needs no conversion)."""
    model = exported_checkpoint[0]
    path = str(exported_checkpoint[1].parent / f"reactnet18{suffix.replace('/', '_')}")
    if suffix == ".keras":
        model.save(path)
    else:
        model.save_weights(path)
    argv = ["evaluate", "ReActNet18", "--weights", path, "--width-multiplier", "0.25"]
    argv += ["--dataset", "fashion_mnist", "--eval-examples", "64", "--verbose", "0"]
    assert cli.main(argv) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = data.load_fashion_mnist_arrays("test")
    expected = model.evaluate(
        zoo.preprocess_input(images[:64].astype("float32")), labels[:64], verbose=0
    )
    assert reported["accuracy"] == pytest.approx(expected[1], abs=1e-6)


def test_inspect_prints_the_report_and_json(exported_checkpoint, capsys):
    _, output, _, _ = exported_checkpoint
    assert cli.main(["inspect", str(output)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{output}: ") and "16 LceBconv2d" in text
    assert "binary (bitpacked)" in text and "LceBconv2d                      16" in text
    assert cli.main(["inspect", str(output), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["lce_bconv2d"] == 16 and data["file_bytes"] == output.stat().st_size
    model = exported_checkpoint[0]
    assert data["binary_weights"] == sum(layer.weights for layer in binary_layers(model))
    assert data["inputs"][0]["shape"] == [1, 28, 28, 1]


def test_benchmark_prints_host_latency_labelled_not_arm(exported_checkpoint, capsys):
    _, output, _, _ = exported_checkpoint
    argv = ["benchmark", str(output), "--threads", "2", "--runs", "3", "--warmup", "1"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "2 thread(s), 3 runs after 1 warm-up" in text and "not ARM speed" in text
    assert cli.main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["threads"], data["runs"], data["warmup"]) == (2, 3, 1)


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["inspect", "missing.tflite"], 2, "larq-dysign inspect: error: [Errno 2]"),
        (["benchmark", "missing.tflite"], 2, "larq-dysign benchmark: error: [Errno 2]"),
        (["export", "NoSuchNet", "-o", "x.tflite"], 2, "Unknown model 'NoSuchNet'; the zoo has"),
        (
            ["export", "ReActNet18", "--weights", "missing.h5", "-o", "x.tflite"],
            2,
            "'missing.h5': no such file or checkpoint.",
        ),
        (
            ["export", "ReActNet18", "-o", "no/such/dir/x.tflite"],
            2,
            "-o/--output: Expected path to be in an existing directory, but",
        ),
        (
            ["export", "BinaryCCT", "--stem", "small", "-o", "x.tflite"],
            2,
            "--stem does not apply to BinaryCCT, which takes: input_shape, weights,",
        ),
        (
            ["export", "ReActNet18", "--dysign-option", "reduction=4", "-o", "x.tflite"],
            2,
            "--dysign-option does not apply to ReActNet18",
        ),
        (
            ["export", "no/such/run", "-o", "x.tflite"],
            2,
            "no/such/run: no such file or directory.",
        ),
    ],
)
def test_user_errors_exit_with_one_line_and_no_file(
    argv, status, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == status
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_inspect_of_a_file_that_is_not_tflite(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    assert cli.main(["inspect", str(path)]) == 2
    assert "Expected a TFLite flatbuffer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["export", "ReActNet18", "--input-shape", "28,28", "-o", "x.tflite"],
            "argument --input-shape: expected HEIGHT,WIDTH,CHANNELS of positive integers",
        ),
        (["benchmark", "x.tflite", "--threads", "0"], "expected a positive integer, got '0'"),
        (["export", "ReActNet18", "--target", "x86", "-o", "x.tflite"], "invalid choice"),
    ],
)
def test_malformed_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def _without_log_level() -> dict:
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def test_the_installed_command_reports_errors_in_one_line_without_tensorflow_logs(tmp_path):
    larq_dysign_command = os.path.join(os.path.dirname(sys.executable), "larq-dysign")
    for command in ([larq_dysign_command], [sys.executable, "-m", "larq_dysign.cli"]):
        result = subprocess.run(
            [*command, "export", "NoSuchNet", "-o", "x.tflite"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_without_log_level(),
            timeout=300,
        )
        assert result.returncode == 2
        assert result.stderr.startswith("larq-dysign export: error: Unknown model 'NoSuchNet'")
        assert len(result.stderr.splitlines()) == 1  # no TensorFlow start-up logs either
        assert os.listdir(tmp_path) == []


def test_a_users_tf_cpp_min_log_level_wins_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "larq_dysign.cli", "export", "NoSuchNet", "-o", "x.tflite"]
    shown = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_without_log_level(), "TF_CPP_MIN_LOG_LEVEL": "0"},
        timeout=300,
    )
    assert re.search(r"^[IWE]\d{4} .*\] ", shown.stderr, re.M)  # TensorFlow's own log lines
    debug = subprocess.run(
        [*command, "--debug"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_without_log_level(),
        timeout=300,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "ValueError: Unknown model 'NoSuchNet'" in debug.stderr
