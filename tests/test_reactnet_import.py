"""ReActNet's PyTorch checkpoints in the zoo: the mapping reproduces the official networks.

The reference is an independent NumPy forward of the official architectures
(tests/reactnet_reference.py: NCHW, OIHW weights, PyTorch's symmetric padding, torch.sign),
run on random weights and random BatchNorm statistics under the official names. The zoo
models, built with `padding="pytorch"` and loaded through the importer's mapping, must give
the same logits; and so must their LCE flatbuffers, with every binary conv an LceBconv2d.
"""

import os

import h5py
import numpy as np
import pytest
import reactnet_reference as ref
import tensorflow as tf
import torch_format
from larq_compute_engine.tflite.python.interpreter import Interpreter

from larq_dysign import cli, zoo
from larq_dysign.export import inspect_tflite, to_tflite, verify
from larq_dysign.zoo import weights as weights_module
from larq_dysign.zoo.pytorch_padding import SpatialReverse
from larq_dysign.zoo.reactnet_import import load_reactnet_state_dict, reactnet_assignments

SIZE = 96  # even sizes at every stride 2, as PyTorch needs; >= 3x3 maps, as LCE needs
NUM_CLASSES = 10
DY = {"ReActNet18": "DyResNet18", "ReActNetA": "DyMobileNet"}


def _build(name: str, padding: str = "pytorch", **kwargs) -> tf.keras.Model:
    return zoo.get_model(
        name,
        input_shape=(SIZE, SIZE, 3),
        num_classes=NUM_CLASSES,
        stem="imagenet",
        padding=padding,
        **kwargs,
    )


def _logits(model: tf.keras.Model, images: np.ndarray) -> np.ndarray:
    head = tf.keras.Model(model.inputs, model.get_layer("logits").output)
    return head(images, training=False).numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).normal(size=(8, SIZE, SIZE, 3)).astype(np.float32)


# One test per official network, converting one model each (pytest-xdist would repeat a
# module fixture on each worker).
@pytest.mark.parametrize("official", ["ReActNet18", "ReActNetA"])
def test_imported_models_compute_the_official_network_in_keras_and_lce(official, images):
    state = ref.random_state(official, num_classes=NUM_CLASSES, seed=1)
    reference = ref.FORWARDS[official](state, images)
    # float32 (Keras) against float64 (reference): ~1e-6 relative per layer over ~20 layers;
    # a sign flipped by rounding would show as a jump far above this.
    tolerance = 1e-4 * float(np.abs(reference).max())
    for name in (official, DY[official]):
        model = _build(name)
        load_reactnet_state_dict(model, state)
        logits = _logits(model, images)
        assert np.abs(logits - reference).max() <= tolerance, name
        assert np.array_equal(logits.argmax(-1), reference.argmax(-1)), name

    # LCE, on the Dy model (the baseline's graph plus the hyper functions)
    flatbuffer = to_tflite(model, verbose=False)
    report = inspect_tflite(flatbuffer, model=model)
    assert report.coverage.fraction == 1.0, report.coverage.not_converted
    assert report.lce_bconv2d == len(report.coverage.binary_layers)
    # one REVERSE_V2 per SpatialReverse: a pair around the stem and each strided binary conv
    reversals = sum(isinstance(layer, SpatialReverse) for layer in model.layers)
    assert report.op_histogram.get("REVERSE_V2", 0) == reversals > 0
    assert "PAD" not in report.op_histogram
    # Softmax outputs, LCE against Keras and against the official network. A sample matches
    # to float32 rounding (1e-5 on probabilities) unless a pre-sign value lies within
    # rounding of its threshold: LCE's and Keras's rounding then flip one bit, and the flip
    # grows through the next blocks (measured here: one of 8 images of the ResNet, a value
    # 7e-9 from its threshold in stage1_block2, 576 = 3x3x64 outputs changed). A wrong
    # padding or tensor mapping matches no sample.
    parity = verify(model, flatbuffer, images)
    lce = Interpreter(flatbuffer).predict(images)
    like_keras = np.abs(lce - model(images, training=False).numpy()).max(axis=1) <= 1e-5
    like_reference = np.abs(lce - _softmax(reference)).max(axis=1) <= 1e-4
    assert like_keras.sum() >= 6 and like_reference.sum() >= 6, parity
    assert parity.argmax_agreement >= 7 / 8, parity

    # The test can fail: the zoo's default padding (+1 in binary convs, TF's asymmetric
    # "same") with the very same tensors is a different network.
    default = _build(official, padding="lce")
    load_reactnet_state_dict(default, state)
    assert np.abs(_logits(default, images) - reference).max() > 100 * tolerance


def test_every_problem_is_named_in_one_error():
    state = ref.random_state("ReActNetA", num_classes=NUM_CLASSES, seed=2)
    del state["feature.3.move21.bias"]
    state["feature.5.bn1.weight"] = state["feature.5.bn1.weight"][:-1]
    state["feature.1.extra"] = np.zeros(3, np.float32)
    model = _build("DyMobileNet")
    with pytest.raises(ValueError) as caught:
        reactnet_assignments(model, state)
    message = str(caught.value)
    assert "missing in the checkpoint (1): feature.3.move21.bias (for block3_sign_1x1." in message
    assert "feature.5.bn1.weight (255,) does not fit block5_conv_3x3_bn.gamma (256,)" in message
    assert "no place in the model (1): feature.1.extra" in message


def test_padding_keyword(tmp_path, monkeypatch):
    monkeypatch.setenv(weights_module.CACHE_DIR_ENV, str(tmp_path))
    small = {"input_shape": (SIZE, SIZE, 3), "num_classes": 1000, "stem": "imagenet"}

    def reversals(model):
        return sum(isinstance(layer, SpatialReverse) for layer in model.layers)

    def weights(model):
        return [w.name for w in model.weights], [tuple(w.shape) for w in model.weights]

    # stem and each downsampling block between two reversals; the weights in the same order
    # as with the default padding (LCE's +1), for files matched by position
    for name, downsampling in (("ReActNet18", 3), ("DyMobileNet", 4)):
        default, pytorch = (
            zoo.get_model(name, **small, padding=p, width_multiplier=0.25)
            for p in ("lce", "pytorch")
        )
        assert reversals(default) == 0 and reversals(pytorch) == 2 + 2 * downsampling
        assert weights(default) == weights(pytorch)
    with pytest.raises(ValueError, match="padding to be one of 'lce', 'pytorch', None"):
        zoo.ReActNetA(**small, padding="same")
    # LCE 0.16 gets zero-padded binary convs wrong on maps below 3x3 (stage 4 at 64 px)
    with pytest.warns(UserWarning, match=r"stage4_block2_conv \(2x2\).*at least 96x96"):
        zoo.ReActNet18(input_shape=(64, 64, 3), stem="imagenet", padding="pytorch")
    # weights="imagenet" chooses PyTorch's padding; with nothing cached the error says where
    # the official checkpoint is and which command converts it
    for name, source in (("DyMobileNet", "ReActNetA"), ("ReActNet18", "ReActNet18")):
        with pytest.raises(FileNotFoundError) as caught:
            zoo.get_model(name, **small, weights="imagenet")
        message = str(caught.value)
        assert "https://github.com/liuzechun/ReActNet" in message
        assert f"larq-dysign import-reactnet CHECKPOINT --model {source}" in message
        assert str(tmp_path) in message


def test_cli_import_then_imagenet_weights_load(tmp_path, monkeypatch, capsys):
    """The full path at 224x224 / 1000 classes: a checkpoint as ReActNet's train.py saves it
    (nested dict, DataParallel prefix), the CLI, the cache, `weights="imagenet"`."""
    monkeypatch.setenv(weights_module.CACHE_DIR_ENV, str(tmp_path / "cache"))
    state = ref.random_state("ReActNet18", num_classes=1000, seed=3)
    checkpoint = tmp_path / "resnet18_step2.pth.tar"
    torch_format.write_checkpoint(checkpoint, state)

    assert cli.main(["import-reactnet", str(checkpoint), "--model", "ReActNet18"]) == 0
    out = capsys.readouterr().out
    files = sorted(os.listdir(tmp_path / "cache"))
    assert files == ["dyresnet18_imagenet_weights.h5", "reactnet18_imagenet_weights.h5"]
    for file in files:
        digest = weights_module.sha256_of(tmp_path / "cache" / file)
        assert f"{tmp_path / 'cache' / file}  sha256 {digest}" in out

    with h5py.File(tmp_path / "cache" / files[0], "r") as file:
        assert file.attrs[weights_module.PADDING_MARK] == "pytorch"
        assert file.attrs["larq_dysign_source_sha256"] == weights_module.sha256_of(checkpoint)

    image = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    reference = ref.reactnet18_forward(state, image)
    for name in ("ReActNet18", "DyResNet18"):
        model = zoo.get_model(name, weights="imagenet")  # padding chosen: "pytorch"
        assert any(isinstance(layer, SpatialReverse) for layer in model.layers)
        logits = _logits(model, image)
        assert np.abs(logits - reference).max() <= 1e-4 * np.abs(reference).max(), name
    # asked for, the default padding loads the same tensors (to fine-tune into it)
    model = zoo.ReActNet18(weights="imagenet", padding="lce")
    assert not any(isinstance(layer, SpatialReverse) for layer in model.layers)
    assert np.abs(_logits(model, image) - reference).max() > 1e-2 * np.abs(reference).max()


def test_pytorch_padding_saves_and_reloads_without_custom_objects(tmp_path, images):
    model = _build("DyMobileNet", width_multiplier=0.25)
    for path in (str(tmp_path / "model.keras"), str(tmp_path / "model.h5")):
        model.save(path)
        reloaded = tf.keras.models.load_model(path)
        assert sum(isinstance(layer, SpatialReverse) for layer in reloaded.layers) == 10
        np.testing.assert_allclose(
            reloaded(images[:2], training=False).numpy(),
            model(images[:2], training=False).numpy(),
            atol=1e-6,
        )
        # the file says how it was built: weights=path rebuilds it with this padding
        assert weights_module.recorded_padding(path, model_name="DyMobileNet") == "pytorch"
    model.save_weights(str(tmp_path / "weights.h5"))  # weights only: nothing recorded
    padding = weights_module.recorded_padding(tmp_path / "weights.h5", model_name="DyMobileNet")
    assert padding is None


def test_cli_errors_are_one_line(tmp_path, capsys):
    """Bad arguments (status 2): a missing file, a file that is no checkpoint, an unknown
    --model, the other network's checkpoint; one line each, no traceback."""

    def run(*argv):
        try:
            status = cli.main(["import-reactnet", *map(str, argv)])
        except SystemExit as exit_:  # argparse's usage errors
            status = exit_.code
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return status, err

    missing = tmp_path / "missing.pth.tar"
    status, err = run(missing, "--model", "ReActNetA")
    assert status == 2 and "missing.pth.tar" in err

    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("hello\n")
    status, err = run(not_a_checkpoint)
    assert status == 2 and "PyTorch checkpoint" in err

    status, err = run(missing, "--model", "ResNet50")
    assert status == 2 and "'ResNet50'" in err and "ReActNetA" in err

    checkpoint = tmp_path / "mobilenet.pth.tar"
    torch_format.write_checkpoint(checkpoint, ref.random_state("ReActNetA", seed=4))
    status, err = run(checkpoint, "--model", "ReActNet18")
    assert status == 2 and "--model ReActNetA" in err


@pytest.mark.parametrize("name", ["ReActNet18", "ReActNetA"])
def test_a_stride2_small_stem_pads_as_pytorch_with_padding_pytorch(name):
    """`padding="pytorch"` means PyTorch's symmetric padding for every stride-2 stem (the
    ResNet's "small_stride2" stem once kept TensorFlow's asymmetric "same")."""
    model = zoo.get_model(
        name,
        input_shape=(16, 16, 3),
        num_classes=10,
        stem="small_stride2",
        padding="pytorch",
        width_multiplier=0.25,
    )
    stem = tf.keras.Model(model.input, model.get_layer("stem_unreverse").output)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    kernel = model.get_layer("stem_conv").kernel.numpy()[::-1, ::-1]  # stored rotated
    expected = ref.conv2d(images.transpose(0, 3, 1, 2), kernel.transpose(3, 2, 0, 1), 2, 1)
    epsilon = model.get_layer("stem_bn").epsilon  # fresh BatchNorm: x / sqrt(1 + epsilon)
    np.testing.assert_allclose(
        stem(images).numpy(), expected.transpose(0, 2, 3, 1) / np.sqrt(1 + epsilon), atol=1e-5
    )
