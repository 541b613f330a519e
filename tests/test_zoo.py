"""Every zoo model, from the registry: shapes, counts, training, LCE conversion, save/load."""

import math

import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

from larq_dysign import DyPReLU, DySign, zoo
from larq_dysign.export import binary_layers, op_histogram
from larq_dysign.zoo.registry import model_family

MODELS = zoo.list_models()
DY_BASELINES = {"DyResNet18": "ReActNet18", "DyMobileNet": "ReActNetA", "DyBinaryCCT": "BinaryCCT"}

# Reference counts at 224x224x3 / 1000 classes (docs/design.md, "Networks").
REFERENCE_MACS = {  # family: (binary MACs, float MACs, binary weights or None)
    "resnet": (1.68e9, 1.39e8, None),
    "mobilenet": (4.82e9, 1.2e7, 28.3e6),
}
REFERENCE_PARAMS = {"BinaryCCT": 22.4e6}
# include_top=False output: the last feature map (CNNs) or the pooled tokens (CCT)
FEATURES = {"resnet": (4, 512), "mobilenet": (4, 1024), "cct": (2, None)}
# Small-input tests of the transformers use fewer encoder layers: every layer is the same
# code, and a full-depth CCT-7/3x1 on 28x28 costs minutes of CPU per fit here.
SMALL = {"resnet": {}, "mobilenet": {}, "cct": {"num_layers": 2}}
# Fit-and-convert tests keep the papers' stems on 28x28 (7x7 / 14x14 maps): the same binary
# blocks at a fraction of the small stem's cost.
CONVERSION = {"resnet": {"stem": "imagenet"}, "mobilenet": {"stem": "imagenet"}, "cct": {}}


def _small_model(name, input_shape=(28, 28, 1), **kwargs):
    options = {**SMALL[model_family(name)], **kwargs}
    return zoo.get_model(name, input_shape=input_shape, num_classes=10, **options)


def _binary_layers(model):
    """Layers whose inputs and kernels are both 1-bit: these must become LceBconv2d."""
    return [layer.name for layer in binary_layers(model)]


def _macs(model):
    profiles = lq.models.ModelProfile(model).layer_profiles
    binary = sum(p.op_count("mac", 1) or 0 for p in profiles)
    floating = sum(p.op_count("mac", 32) or 0 for p in profiles)
    binary_weights = sum(p.weight_count(1) for p in profiles)
    return binary, floating, binary_weights


def test_registry_lists_all_models_and_rejects_unknown_names():
    assert {"DyResNet18", "ReActNet18", "DyMobileNet", "ReActNetA"} <= set(MODELS)
    with pytest.raises(ValueError, match="Unknown model 'ResNet50'.*DyResNet18.*ReActNetA"):
        zoo.get_model("ResNet50")


@pytest.mark.parametrize("name", MODELS)
def test_imagenet_configuration(name):
    model = zoo.get_model(name)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    family = model_family(name)
    if family in REFERENCE_MACS:
        binary, floating, binary_weights = _macs(model)
        ref_binary, ref_float, ref_weights = REFERENCE_MACS[family]
        assert binary == pytest.approx(ref_binary, rel=0.03)
        assert floating == pytest.approx(ref_float, rel=0.03)
        if ref_weights:
            assert binary_weights == pytest.approx(ref_weights, rel=0.03)
    if name in REFERENCE_PARAMS:
        assert model.count_params() == pytest.approx(REFERENCE_PARAMS[name], rel=0.03)


def _hyper_function_params(layer):
    """Parameters a DySign/DyPReLU adds over RSign/RPReLU: W1, b1, W2, b2."""
    channels = layer.input_shape[-1]
    hidden = max(channels // layer.reduction, layer.min_hidden_units)
    inputs = channels * (2 if layer.statistics == "mean_std" else 1)
    groups = channels if layer.groups is None else math.gcd(layer.groups, channels)
    if isinstance(layer, DySign):
        outputs = groups if layer.granularity == "channel" else 1
        # "layer" keeps one static threshold
        static_difference = 0 if layer.granularity == "channel" else 1 - channels
    else:
        outputs, static_difference = 2 * groups, 0
    return inputs * hidden + hidden + hidden * outputs + outputs + static_difference


@pytest.mark.parametrize("dy_name", sorted(set(DY_BASELINES) & set(MODELS)))
def test_dy_model_is_baseline_plus_hyper_functions(dy_name):
    kwargs = {"input_shape": (32, 32, 3), "num_classes": 10}
    dy = zoo.get_model(dy_name, **kwargs)
    baseline = zoo.get_model(DY_BASELINES[dy_name], **kwargs)
    dynamic = [layer for layer in dy.layers if isinstance(layer, DySign | DyPReLU)]
    assert any(isinstance(layer, DySign) for layer in dynamic)
    assert any(isinstance(layer, DyPReLU) for layer in dynamic)
    expected = baseline.count_params() + sum(_hyper_function_params(layer) for layer in dynamic)
    assert dy.count_params() == expected
    # same graph: the same layer names, apart from the auto-named input layer
    assert [layer.name for layer in dy.layers[1:]] == [layer.name for layer in baseline.layers[1:]]
    assert _binary_layers(dy) == _binary_layers(baseline)


@pytest.mark.parametrize("dy_name", sorted(set(DY_BASELINES) & set(MODELS)))
def test_dy_parts_switch_off_one_at_a_time(dy_name):
    kwargs = {"input_shape": (32, 32, 3), "num_classes": 10}

    def kinds(model):
        return {type(layer).__name__ for layer in model.layers}

    sign_only = kinds(zoo.get_model(dy_name, dyprelu=False, **kwargs))
    prelu_only = kinds(zoo.get_model(dy_name, dysign=False, **kwargs))
    assert {"DySign", "RPReLU"} <= sign_only and not {"DyPReLU", "RSign"} & sign_only
    assert {"DyPReLU", "RSign"} <= prelu_only and not {"DySign", "RPReLU"} & prelu_only


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3), (96, 128, 3)])
def test_small_and_odd_inputs(name, input_shape):
    model = _small_model(name, input_shape)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, *input_shape)).astype("float32")
    y = model(x, training=False).numpy()
    assert y.shape == (2, 10)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # softmax head


@pytest.mark.parametrize("name", MODELS)
def test_include_top_false_and_input_tensor(name):
    rank, dim = FEATURES[model_family(name)]
    inputs = tf.keras.Input((32, 32, 3))
    features = zoo.get_model(
        name, input_tensor=inputs, include_top=False, **SMALL[model_family(name)]
    )
    assert features.inputs[0] is inputs
    assert len(features.output_shape) == rank
    if dim is not None:
        assert features.output_shape[-1] == dim
    # a user's head on the feature extractor
    pooled = (
        features.output if rank == 2 else tf.keras.layers.GlobalAveragePooling2D()(features.output)
    )
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(pooled))
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 3)


@pytest.mark.parametrize("name", MODELS)
def test_short_fit_trains_every_part_then_converts_with_parity(name, fashion_mnist_sample):
    """One fit serves two checks (a fit of each model is the suite's main cost): training
    reaches every kind of weight, and the trained model converts to binary kernels."""
    x, y = fashion_mnist_sample
    model = _small_model(name, **CONVERSION[model_family(name)])
    model.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    binary = model.get_layer(_binary_layers(model)[0])
    kernel_before = binary.kernel.numpy().copy()
    hyper = [w for w in model.trainable_weights if "hyper_kernel_2" in w.name]
    # 8 steps: BatchNorm statistics and thresholds move away from their initial values
    model.fit(x[:128], y[:128], batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(binary.kernel.numpy(), kernel_before)
    # the second FCs start at zero and stay there only if no gradient reaches them
    assert all(np.abs(w.numpy()).max() > 0 for w in hyper)

    flatbuffer = lce.convert_keras_model(model)
    ops = op_histogram(flatbuffer)
    assert ops["LceBconv2d"] == len(_binary_layers(model))
    assert ops["LceQuantize"] >= 1

    x_test = x[256:320]
    keras_out = model.predict(x_test, verbose=0)
    tflite_out = Interpreter(flatbuffer).predict(x_test)
    assert np.isfinite(keras_out).all()
    # Outputs are softmax probabilities. LCE's kernels sum in another order than TF, so an
    # activation within float rounding of its threshold can binarize the other way and the
    # flip propagates (measured: ~1 in 8 samples of a 16-layer ResNet differ by 0.02-0.14).
    # So: the typical sample agrees to rounding, none is far off, predictions agree.
    per_sample = np.abs(tflite_out - keras_out).max(axis=1)
    assert np.median(per_sample) < 1e-4, np.sort(per_sample)[-8:]
    assert per_sample.max() < 0.3
    assert (tflite_out.argmax(1) == keras_out.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("name", MODELS)
def test_imagenet_configuration_converts(name):
    model = zoo.get_model(name)
    ops = op_histogram(lce.convert_keras_model(model))
    assert ops["LceBconv2d"] == len(_binary_layers(model))


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_round_trip(name, tmp_path):
    model = _small_model(name, (32, 32, 3))
    rng = np.random.default_rng(1)
    for w in model.weights:  # non-trivial dynamic parts, so a lost weight would show
        if "hyper_kernel_2" in w.name:
            w.assign(rng.normal(0, 0.1, w.shape))
    x = rng.uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"include_top": "yes"}, "include_top"),
        ({"stem": "cifar"}, "stem"),
        ({"width_multiplier": 0}, "width_multiplier"),
        ({"width_multiplier": "half"}, "width_multiplier"),
    ],
)
def test_bad_arguments_are_rejected_before_building(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.ReActNet18(**kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_width_multiplier_scales_every_width(name):
    def widths(model):
        return sorted(
            {layer.filters for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)}
        )

    full = _small_model(name)
    half = _small_model(name, width_multiplier=0.5)
    assert widths(half) == [w // 2 for w in widths(full)]
    # weights grow with width^2: a quarter of the binary weights (within the FP stem/head)
    ratio = half.count_params() / full.count_params()
    assert 0.2 < ratio < 0.35, ratio
    assert half.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 10)


def test_scaled_width_rounds_to_multiples_of_eight():
    from larq_dysign.zoo.common import scaled_width

    assert [scaled_width(64, m) for m in (1, 0.5, 0.25, 0.1, 0.3)] == [64, 32, 16, 8, 24]
    assert scaled_width(256, 0.25, divisor=32) == 64
    assert scaled_width(384, 0.3, divisor=48) == 144  # 115.2 -> 96 would lose > 10%


@pytest.mark.parametrize("name", ["ReActNet18", "ReActNetA"])
def test_stems_set_the_first_binary_blocks_resolution(name):
    first = {"ReActNet18": "stage1_block1_sign", "ReActNetA": "block1_sign_3x3"}[name]
    sizes = {
        stem: zoo.get_model(name, input_shape=(28, 28, 1), num_classes=10, stem=stem)
        .get_layer(first)
        .input_shape[1]
        for stem in ("small", "small_stride2", "imagenet")
    }
    assert sizes["small"] == 28 and sizes["small_stride2"] == 14
    assert sizes["imagenet"] == (7 if name == "ReActNet18" else 14)


def test_presets_give_model_arguments_under_the_users():
    for name in MODELS:
        preset = zoo.get_preset("small-input", name)
        assert preset is not zoo.PRESETS["small-input"][model_family(name)]  # a copy
        preset.model_kwargs["width_multiplier"] = 4  # changing the copy changes nothing
        assert zoo.get_preset("small-input", name).model_kwargs["width_multiplier"] != 4
    kwargs = {"input_shape": (28, 28, 1), "num_classes": 10}
    model = zoo.get_model("ReActNet18", preset="small-input", **kwargs)
    reference = zoo.ReActNet18(
        **zoo.get_preset("small-input", "ReActNet18").model_kwargs, **kwargs
    )
    assert model.count_params() == reference.count_params()
    assert [layer.name for layer in model.layers[1:]] == [
        layer.name for layer in reference.layers[1:]
    ]
    # the user's arguments win over the preset's
    wide = zoo.get_model("ReActNet18", preset="small-input", width_multiplier=0.5, **kwargs)
    assert wide.get_layer("stem_conv").filters == 32


def test_unknown_presets_and_models_are_named():
    with pytest.raises(ValueError, match=r"preset to be one of 'small-input', but got 'tiny'"):
        zoo.get_preset("tiny", "ReActNet18")
    with pytest.raises(ValueError, match=r"Unknown model 'ResNet50'.*DyResNet18"):
        zoo.get_preset("small-input", "ResNet50")
    with pytest.raises(ValueError, match="preset to be one of"):
        zoo.get_model("ReActNet18", preset="tiny")


def test_constructors_are_keyword_only():
    with pytest.raises(TypeError):
        zoo.DyResNet18((224, 224, 3))


def test_preprocess_and_decode_predictions_offline():
    images = np.array([[0, 127.5, 255]], dtype="float32")
    np.testing.assert_allclose(zoo.preprocess_input(images), [[-1.0, 0.0, 1.0]])
    predictions = np.zeros((2, 1000), "float32")
    predictions[0, [1, 2, 999]] = [0.5, 0.3, 0.2]
    predictions[1, 134] = 1.0
    decoded = zoo.decode_predictions(predictions, top=3)
    assert decoded[0] == [
        ("n01443537", "goldfish", 0.5),
        ("n01484850", "great_white_shark", pytest.approx(0.3)),
        ("n15075141", "toilet_tissue", pytest.approx(0.2)),
    ]
    assert decoded[1][0][:2] == ("n02012849", "crane")
    with pytest.raises(ValueError, match=r"\(samples, 1000\).*\(2, 10\)"):
        zoo.decode_predictions(np.zeros((2, 10)))
