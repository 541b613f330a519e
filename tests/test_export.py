"""The LCE exporter: every zoo model binarized, parity with Keras, sizes, strictness, files."""

import inspect
import json
import math
import os
import platform
import stat

import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf
from tinymodels import tiny_model  # noqa: I001

from larq_dysign import zoo
from larq_dysign.export import (
    benchmark,
    binary_layers,
    check_coverage,
    inspect_tflite,
    to_tflite,
    verify,
)
from larq_dysign.export.runtime import kernels_note

SMALL = {"input_shape": (28, 28, 1), "num_classes": 10}


# --- a trained zoo model (each zoo model's 224 conversion: tests/test_zoo.py) -----------------


def _small_zoo_model(name: str, **kwargs) -> tf.keras.Model:
    """A zoo model at 28x28x1 / 10 classes; ImageNet stems where the family has them (7x7
    maps at 28 px: the same graph, 16x less work for LCE's reference kernels)."""
    constructor = zoo.get_model_constructor(name)
    if "stem" in inspect.signature(constructor).parameters:
        kwargs.setdefault("stem", "imagenet")
    return constructor(**SMALL, **kwargs)


def _packed_bytes(layer_name: str, model: tf.keras.Model) -> int:
    """Bytes of a binary kernel in LCE's layout: [O, KH, KW, ceil(I / 32)] int32."""
    kh, kw, cin, cout = model.get_layer(layer_name).kernel.shape
    return cout * kh * kw * math.ceil(cin / 32) * 4


def _check_parity(parity, samples):
    """Softmax outputs in [0, 1]. Float rounding differs between TF and TFLite (folded
    BatchNorm, fused ops); a pre-sign value within rounding of its threshold flips a bit, and
    the flip can grow through the following binary layers. So samples either match to ~1e-5
    or differ visibly (measured here over 32 images of a randomized DyBinaryCCT: 24 within
    1e-3, the others up to 0.5, 87.5% argmax agreement; trained zoo models: 97-100%
    agreement, mean differences 1e-4-3e-3). A broken conversion (wrong fold or threshold)
    reproduces no sample and about 1 class in 10."""
    assert parity.samples == samples
    assert parity.output_scale <= 1.0 + 1e-6
    assert parity.close_fraction >= 0.5
    assert parity.argmax_agreement >= 0.75
    assert parity.mean_abs_diff < 0.03


def test_dysign_model_after_a_short_fit_matches_keras_and_beats_float_weights(
    fashion_mnist_sample,
):
    """DyResNet18 (half width) after one epoch on 512 Fashion-MNIST images: real BatchNorm
    statistics, trained thresholds and hyper functions."""
    tf.keras.utils.set_random_seed(0)
    x, y = fashion_mnist_sample
    model = _small_zoo_model("DyResNet18", width_multiplier=0.5)
    # eager: 8 steps of this graph train faster than tf.function traces them here
    model.compile(
        tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", run_eagerly=True
    )
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    flatbuffer = to_tflite(model, verbose=False)
    parity = verify(model, flatbuffer, x[:64])
    _check_parity(parity, 64)
    # Trained: thresholds and BatchNorm moved off the ties of initialization. Measured here:
    # all 64 samples within 4e-6; allow a few flipped samples for other TF / LCE builds.
    assert parity.close_fraction >= 0.9 and parity.argmax_agreement >= 0.95

    # The same architecture and weights with float kernels (binary_weights=False): no
    # binary layer, so only strict=False exports it, with a warning.
    float_model = _small_zoo_model("DyResNet18", width_multiplier=0.5, binary_weights=False)
    float_model.set_weights(model.get_weights())
    with pytest.warns(UserWarning, match="has no binary layer.*binary_weights=True"):
        float_flatbuffer = to_tflite(float_model, strict=False, verbose=False)
    float_report = inspect_tflite(float_flatbuffer)
    assert float_report.lce_bconv2d == 0
    assert float_report.warnings[0].startswith("NOT BINARIZED")  # and says so

    layers = binary_layers(model)
    binary = sum(layer.weights for layer in layers)
    packed = sum(_packed_bytes(layer.name, model) for layer in layers)
    # 2%: the two graphs differ only around each conv (a bconv keeps its BatchNorm as a
    # multiplier + bias, a float conv folds it into weights + bias): O(channels) floats.
    assert len(flatbuffer) == pytest.approx(len(float_flatbuffer) - 4 * binary + packed, rel=0.02)
    assert len(float_flatbuffer) / len(flatbuffer) > 3  # 2.7M of 3.1M weights are binary


# --- strictness: layers LCE does not binarize --------------------------------------------


def _assert_nothing_written(directory, path):
    assert not os.path.exists(path)
    assert os.listdir(directory) == []  # no temporary file left behind


@pytest.mark.parametrize(
    "kind, layer, reason",
    [("dense", "binary_dense", "#669"), ("dorefa", "dorefa_conv", "DoReFa")],
)
def test_strict_refuses_known_float_layers_before_converting(tmp_path, kind, layer, reason):
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError) as error:
        to_tflite(tiny_model(kind), path, verbose=False)
    message = str(error.value)
    assert f"{layer}:" in message and reason in message
    assert "1 of 2 binary layers" in message and message.count("\n  - ") == 1
    assert "strict=False" in message
    _assert_nothing_written(tmp_path, path)


def test_strict_finds_a_layer_the_converter_left_in_float_by_name(tmp_path):
    model = tiny_model("reshape")
    assert [layer.known_problem for layer in binary_layers(model)] == [None, None]
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"conv_after_reshape: no LceBconv2d matched"):
        to_tflite(model, path, verbose=False)  # converts, then checks coverage
    _assert_nothing_written(tmp_path, path)


def test_not_strict_warns_and_the_report_flags_the_float_layer(tmp_path):
    model = tiny_model("dense")
    path = tmp_path / "model.tflite"
    with pytest.warns(UserWarning, match="binary_dense: QuantDense"):
        flatbuffer = to_tflite(model, path, strict=False, verbose=False)
    assert path.read_bytes() == flatbuffer
    report = inspect_tflite(path, model=model)
    assert report.lce_bconv2d == 1 and report.fully_connected == 2
    assert report.coverage.converted == ("bconv",)
    assert report.coverage.not_converted[0][0] == "binary_dense"
    # found from the file alone too: the dense weights are +-1 stored as float32
    assert report.binary_valued_float_ops == ("FULLY_CONNECTED tiny_dense/binary_dense/MatMul",)
    text = str(report)
    assert "WARNING: NOT BINARIZED: 1 of 2 binary Keras layers" in text
    assert "WARNING: 1 float op(s) hold binary-valued weights" in text


# --- conversion path, files, arguments ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The plain tiny model, converted once: the model, the bytes, and the file written over
    one that held b"old"."""
    tf.keras.utils.set_random_seed(0)
    model = tiny_model()
    path = tmp_path_factory.mktemp("tiny") / "model.tflite"
    path.write_bytes(b"old")
    return model, to_tflite(model, str(path), verbose=False), path


def test_fast_export_is_byte_identical_to_lce_convert_keras_model(tiny):
    model, flatbuffer, _ = tiny
    assert flatbuffer == lce.convert_keras_model(model)


def test_path_is_written_whole_with_regular_permissions(tiny):
    _, flatbuffer, path = tiny
    assert path.read_bytes() == flatbuffer
    assert os.listdir(path.parent) == ["model.tflite"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": "x86"}, 'Expected target to be "arm" or "xcore", but got \'x86\'.'),
        ({"inference_input_type": tf.float16}, "Expected inference_input_type to be tf.float32"),
        ({"strict": "yes"}, "Expected strict to be True or False, but got 'yes'."),
        ({"path": 3}, "Expected path to be None or a file path, but got int."),
        ({"path": ""}, "Expected path to be a file path, but got ''."),
        ({"path": "newdir/"}, "Expected path to be a file path, but 'newdir/' ends with a sep"),
        ({"path": "."}, "Expected path to be a file path, but '.' is a directory."),
        ({"path": "no/such/m.tflite"}, "but '{cwd}/no/such' (of path 'no/such/m.tflite') does"),
        # /proc refuses new files even to root, for whom permission bits do not count
        ({"path": "/proc/m.tflite"}, "in a writable directory, but '/proc' (of path '/proc/m"),
    ],
)
def test_bad_arguments_are_named_before_any_work(kwargs, message, tmp_path, monkeypatch):
    """Checked before anything else: a float model with strict=True would otherwise fail
    with "no binary layer", and a bad path used to fail only after the conversion."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    with pytest.raises(ValueError) as error:
        to_tflite(model, verbose=False, **kwargs)
    assert message.format(cwd=work) in str(error.value)
    assert os.listdir(tmp_path) == ["work"] and os.listdir(work) == []  # nothing written


def test_a_model_that_is_not_keras_is_refused():
    with pytest.raises(ValueError, match="Expected model to be a tf.keras.Model, but got str"):
        to_tflite("DyResNet18")


def test_report_of_a_binarized_file(tiny):
    model, flatbuffer, _ = tiny
    report = inspect_tflite(flatbuffer, model=model)
    assert (report.lce_bconv2d, report.lce_quantize, report.conv_2d) == (1, 1, 1)
    assert report.fully_connected == 1 and report.depthwise_conv_2d == 0
    assert report.binary_weights == 3 * 3 * 32 * 32
    assert report.binary_weight_bytes == 32 * 3 * 3 * 1 * 4
    assert [(t.shape, t.dtype) for t in report.inputs] == [((1, 8, 8, 3), "FLOAT32")]
    assert [(t.shape, t.dtype) for t in report.outputs] == [((1, 4), "FLOAT32")]
    assert report.warnings == ()
    text = str(report)
    assert 'a stock TFLite runtime fails with "unresolved custom op"' in text
    assert "1 LceBconv2d, 1 LceQuantize" in text
    data = json.loads(json.dumps(report.as_dict()))
    assert data["op_histogram"]["LceBconv2d"] == 1 and data["coverage"]["fraction"] == 1.0


def test_inspect_refuses_a_file_that_is_not_tflite(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="Expected a TFLite flatbuffer .* but '.*weights.h5'"):
        inspect_tflite(path)
    with pytest.raises(FileNotFoundError):
        inspect_tflite(tmp_path / "missing.tflite")


def test_benchmark_reports_its_settings_and_says_what_the_host_numbers_are(tiny):
    _, flatbuffer, _ = tiny
    latency = benchmark(flatbuffer, threads=2, runs=5, warmup=1)
    assert (latency.threads, latency.runs, latency.warmup) == (2, 5, 1)
    assert latency.machine == platform.machine()
    assert latency.kernels == kernels_note(platform.machine())
    assert str(latency).startswith("latency, 2 thread(s), 5 runs after 1 warm-up: min ")
    with pytest.raises(ValueError, match="Expected threads to be an integer >= 1, but got 0"):
        benchmark(flatbuffer, threads=0)


def test_host_latency_is_labelled_by_architecture():
    assert "portable reference kernels (x86), not ARM speed" in kernels_note("x86_64")
    assert "not a Raspberry Pi" in kernels_note("aarch64")
    assert "not a Raspberry Pi" in kernels_note("arm64")


def test_verify_checks_the_input_shape(tiny):
    model, flatbuffer, _ = tiny
    with pytest.raises(ValueError, match=r"Expected inputs of shape \(N, 8, 8, 3\)"):
        verify(model, flatbuffer, np.zeros((2, 8, 8, 1), np.float32))


def test_check_coverage_matches_by_name_not_by_count(tiny):
    model, flatbuffer, _ = tiny
    coverage = check_coverage(model, flatbuffer)
    assert coverage.converted == ("bconv",) and coverage.matched_by_count == ()
    # the same file judged against a model with a second binary layer: one bconv, two layers
    other = tiny_model("reshape")
    coverage = check_coverage(other, flatbuffer)
    assert coverage.converted == ("bconv",)
    assert [name for name, _ in coverage.not_converted] == ["conv_after_reshape"]
