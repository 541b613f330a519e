"""The README's sequence through the installed `larq-dysign` command: train -> export ->
inspect -> benchmark -> evaluate -> publish-weights, where every command after `train` is
given nothing but the trained file; and user errors answered in one line."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import zoo
from larq_dysign.export import verify

# slow: run first in the parallel schedule (conftest.py); one xdist group: the tests share
# one training run (a module fixture), which another worker would repeat
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_cli")]

LARQ_DYSIGN = os.path.join(os.path.dirname(sys.executable), "larq-dysign")
#: absl's C++ log lines, which the command line hides.
TENSORFLOW_LOG = re.compile(
    r"^([IWE]\d{4} \d+:\d+:\d+\.\d+ |WARNING: All log messages before absl)"
)


def run(*arguments, cwd, check=True) -> subprocess.CompletedProcess:
    """`larq-dysign ARGUMENTS` as a user runs it (no TF_CPP_MIN_LOG_LEVEL of the tests')."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [LARQ_DYSIGN, *map(str, arguments)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=1200,
    )
    assert not any(TENSORFLOW_LOG.match(line) for line in result.stderr.splitlines()), (
        result.stderr
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`larq-dysign train` of a non-default model: ReActNet18 at width 0.25 with the ImageNet
    stem, 2 epochs of 3 steps per recipe step."""
    directory = tmp_path_factory.mktemp("readme")
    result = run(
        "train", "ReActNet18", "--dataset", "fashion_mnist", "--stem", "imagenet",
        "--width-multiplier", "0.25", "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "32", "--validation-steps", "2", "--out", "runs/fm", "--verbose", "2",
        cwd=directory,
    )  # fmt: skip
    return directory, result


def test_train_saves_a_self_describing_model_per_step(trained):
    directory, result = trained
    model_path = directory / "runs/fm/step2/ReActNet18_step2.keras"
    assert "Epoch 2/2" in result.stdout
    assert "Export it: larq-dysign export runs/fm/step2/ReActNet18_step2.keras" in result.stdout
    description = json.loads(model_path.with_suffix(".json").read_text())
    assert description["model"] == "ReActNet18" and description["step"] == 2
    assert description["dataset"] == "fashion_mnist"
    assert description["input_shape"] == [28, 28, 1] and description["num_classes"] == 10
    assert description["arguments"] == {
        "input_shape": [28, 28, 1],
        "include_top": True,
        "num_classes": 10,
        "binary_weights": True,
        "stem": "imagenet",
        "width_multiplier": 0.25,
        "padding": None,  # the default: the weights' padding, "lce" without weights
    }
    assert description["recipe"]["epochs"] == 2
    assert description["recipe"]["steps_per_epoch"] == 3
    assert description["recipe"]["global_batch_size"] == 32
    # a plain Keras load, no custom_objects: the model it describes
    model = tf.keras.models.load_model(model_path)
    assert model.get_layer("stem_conv").kernel.shape == (7, 7, 1, 16)


def test_export_inspect_and_benchmark_take_nothing_but_the_trained_file(
    trained, fashion_mnist_sample
):
    directory, _ = trained
    exported = run(
        "export", "runs/fm/step2/ReActNet18_step2.keras", "-o", "m.tflite", cwd=directory
    )
    assert "Coverage: 16 / 16 binary Keras layers run as LceBconv2d" in exported.stdout

    inspected = run("inspect", "m.tflite", "--json", cwd=directory)
    report = json.loads(inspected.stdout)
    assert report["lce_bconv2d"] == 16 and report["inputs"][0]["shape"] == [1, 28, 28, 1]
    timed = run("benchmark", "m.tflite", "--runs", "3", "--warmup", "1", cwd=directory)
    assert "3 runs after 1 warm-up" in timed.stdout and "not ARM speed" in timed.stdout

    model, _ = zoo.load_saved_model(directory / "runs/fm")
    x, _ = fashion_mnist_sample
    parity = verify(model, str(directory / "m.tflite"), x[:32])
    assert parity.argmax_agreement >= 0.9  # a short run sits near sign ties (test_export)


def test_evaluate_and_publish_weights_take_the_trained_file(trained):
    directory, _ = trained
    evaluated = run(
        "evaluate", "runs/fm", "--eval-examples", "64", "--verbose", "0", cwd=directory
    )
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"loss", "accuracy"} and 0 <= metrics["accuracy"] <= 1
    published = run(
        "publish-weights", "runs/fm", "--dataset", "fashion_mnist", "-o", "release",
        "--notop", cwd=directory,
    )  # fmt: skip
    assert "sha256:" in published.stdout
    files = sorted(os.listdir(directory / "release"))
    assert files == [
        "reactnet18_fashion_mnist_weights.h5",
        "reactnet18_fashion_mnist_weights_notop.h5",
    ]
    # the published file loads into the zoo model the description gives
    model, description = zoo.load_saved_model(directory / "runs/fm")
    rebuilt = zoo.ReActNet18(
        **description["arguments"], weights=str(directory / "release" / files[0])
    )
    images = np.random.default_rng(0).uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(rebuilt(images).numpy(), model(images).numpy(), atol=1e-6)


#: (arguments, exit status, start of the one-line message, through the installed command?):
#: two cases run as a user runs them (a separate process, TensorFlow's logs hidden), the
#: others through `cli.main` in this process: the same parser and error handling without a
#: TensorFlow import per case.
ERROR_CASES = [
    (["train", "NoSuchNet", "--dataset", "fashion_mnist", "--epochs", "1", "--out", "r"],
     2, "larq-dysign train: error: Unknown model 'NoSuchNet'; the zoo has: BinaryCCT", True),
    (["train", "ReActNet18", "--dataset", "fashion_mnist", "--epochs", "0", "--out", "r"],
     2, "larq-dysign train: error: argument --epochs: expected a positive integer, got '0'",
     False),
    (["train", "ReActNet18", "--dataset", "fashion_mnist", "--epochs", "1", "--out",
      "file.txt/run"], 2, "larq-dysign train: error: --out 'file.txt/run' cannot be used", False),
    (["train", "DyResNet18", "--dysign-option", "bogus=1", "--dataset", "fashion_mnist",
      "--epochs", "1", "--out", "r"], 2,
     "Expected the keys of dysign_options to be DySign arguments (reduction, granularity", False),
    (["export", "ReActNet18", "--weights", "runs/fm/step2/ReActNet18_step2.h5", "-o",
      "x.tflite"], 2, "first mismatch at layer #0 'stem_conv'", True),
    (["export", "runs/fm", "--width-multiplier", "0.5", "-o", "x.tflite"], 2,
     "--width-multiplier: a saved model (runs/fm) is built as it was saved", False),
    (["train", "ReActNet18", "--dataset", "fashion_mnist", "--stem", "imagenet",
      "--width-multiplier", "0.25", "--epochs", "2", "--steps-per-epoch", "3",
      "--batch-size", "32", "--out", "runs/fm", "--learning-rate", "0.01"], 2,
     "runs/fm/step1 was trained with other settings: learning_rate 0.0005 (now 0.01).", False),
    (["train", "ReActNet18", "--dataset", "fashion_mnist", "--epochs", "1", "--step", "1",
      "--schedule", "one-step", "--out", "runs/other"], 2,
     "Expected step to be 'both' (the default) with schedule='one-step'", False),
    (["train", "ReActNet18", "--dataset", "imagenet2012", "--no-augment", "--epochs", "1",
      "--out", "r"], 2, "larq-dysign train: error: --no-augment is only for the small datasets.",
     False),
]  # fmt: skip


def run_in_process(arguments, capsys) -> tuple[int, str]:
    """`larq_dysign.cli.main(arguments)`: its exit status (argparse's exit too) and stderr."""
    from larq_dysign import cli

    capsys.readouterr()
    try:
        status = cli.main([str(argument) for argument in arguments])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("arguments, status, message, installed", ERROR_CASES)
def test_user_errors_are_one_line_with_the_exit_status_and_change_nothing(
    trained, arguments, status, message, installed, capsys, monkeypatch
):
    directory, _ = trained
    (directory / "file.txt").write_text("a file, not a directory")
    before = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    if installed:
        result = run(*arguments, cwd=directory, check=False)
        returncode, stderr = result.returncode, result.stderr
    else:
        monkeypatch.chdir(directory)
        returncode, stderr = run_in_process(arguments, capsys)
    assert returncode == status
    assert stderr.startswith(message) or message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) == before
