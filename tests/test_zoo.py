"""Every zoo model, from the registry: shapes, counts, training, LCE conversion, save/load."""

import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import DyPReLU, DySign, zoo
from larq_dysign.export import binary_layers, inspect_tflite, to_tflite, verify
from larq_dysign.zoo.registry import model_family

MODELS = zoo.list_models()
# One model per family, for tests of what a family's builder does with any model (widths,
# include_top, unusual inputs): the Dy model, built by the same code as its baseline (the two
# differ only by the hyper functions, test_dy_model_is_baseline_plus_hyper_functions).
FAMILY_MODELS = sorted(
    {model_family(n): n for n in sorted(MODELS, key=lambda n: n.startswith("Dy"))}.values()
)
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


def _move_off_sign_ties(model: tf.keras.Model, seed: int = 0) -> None:
    """Give every all-zero weight (biases, thresholds, shifts, BatchNorm offsets, the second
    hyper-function FCs) small random values, and BatchNorm random statistics, as training
    does.

    At initialization a binary linear fed by another binary linear (CCT's FC1 -> RPReLU ->
    sign -> FC2) sums +-alpha terms to exactly 0 for a few % of its outputs; the next sign
    then sits on its threshold, where Keras's float accumulation leaves +-1e-7 of rounding
    and LCE's integer popcount exactly 0, and the bits flip (measured: an untrained
    BinaryCCT agreed on 19% of argmaxes). Trained models have no such ties.
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if "moving_variance" in weight.name:
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype(np.float32))
        elif not np.any(weight.numpy()):
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype(np.float32))


def _packed_bytes(layer, model: tf.keras.Model) -> int:
    """Bytes of a binary kernel in LCE's layout: [O, KH, KW, ceil(I / 32)] int32."""
    kh, kw, cin, cout = model.get_layer(layer.name).kernel.shape
    return cout * kh * kw * math.ceil(cin / 32) * 4


# The suite converts each zoo model once, here, in the configuration users deploy (224x224x3,
# 1000 classes, full width), and checks the file as a whole: coverage by name, sizes, and
# outputs against Keras.
@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_imagenet_configuration_converts_every_binary_layer_with_parity(name):
    tf.keras.utils.set_random_seed(0)
    model = zoo.get_model(name)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    family = model_family(name)
    if family in REFERENCE_MACS:
        binary_macs, float_macs, binary_weight_count = _macs(model)
        ref_binary, ref_float, ref_weights = REFERENCE_MACS[family]
        assert binary_macs == pytest.approx(ref_binary, rel=0.03)
        assert float_macs == pytest.approx(ref_float, rel=0.03)
        if ref_weights:
            assert binary_weight_count == pytest.approx(ref_weights, rel=0.03)
    if name in REFERENCE_PARAMS:
        assert model.count_params() == pytest.approx(REFERENCE_PARAMS[name], rel=0.03)

    _move_off_sign_ties(model)
    flatbuffer = to_tflite(model, verbose=False)  # strict: raises if a layer stays float
    report = inspect_tflite(flatbuffer, model=model)

    # Binary layers in Keras == LceBconv2d in the file, matched by name.
    layers = binary_layers(model)
    assert len(layers) >= 16  # ResNet-18: 16, ReActNet-A: 31, CCT-14: 4 per encoder layer + 1
    assert [layer.known_problem for layer in layers] == [None] * len(layers)
    assert report.lce_bconv2d == len(layers)
    assert report.coverage.converted == tuple(layer.name for layer in layers)
    assert report.coverage.not_converted == ()
    assert report.coverage.matched_by_count == ()  # every layer found by its tensor names
    # one LceQuantize per sign layer; a sign may feed several bconvs (ReActNet-A's doubling
    # blocks), never the other way round
    assert 1 <= report.lce_quantize <= report.lce_bconv2d
    assert report.binary_valued_float_ops == ()
    assert report.warnings == ()
    assert "LceBconv2d" in report.custom_ops and report.needs_lce_runtime

    # Binary weights bitpacked, 32 per int32.
    binary = sum(layer.weights for layer in layers)
    assert report.binary_weights == binary
    assert report.binary_weight_bytes == sum(_packed_bytes(layer, model) for layer in layers)
    # Expected size from Keras weight counts: every other parameter stays float32 (4 bytes),
    # binary weights take 1 bit, and each LceBconv2d adds a float multiplier and bias per
    # output channel (its scale mean|W| with the folded BatchNorm). 10%: BatchNorm's 4 values
    # per channel fold into the bconv's 2 or into the next op, identical constants are
    # stored once, and the graph itself takes some kB.
    floats = model.count_params() - binary
    channels = sum(model.get_layer(layer.name).kernel.shape[-1] for layer in layers)
    expected = 4 * floats + report.binary_weight_bytes + 8 * channels
    assert len(flatbuffer) == pytest.approx(expected, rel=0.10)
    assert report.file_bytes == len(flatbuffer) and report.weight_bytes <= len(flatbuffer)

    # Outputs against Keras on random images (LCE's reference kernels: seconds per image).
    # An untrained 1000-class model outputs nearly uniform probabilities, so one bit flipped
    # by float rounding at a threshold can change a sample's argmax; the deep CCTs (14
    # layers x 196 tokens: millions of signs per image) always meet such a flip, so their
    # numbers are checked after training, in tests/test_cct.py.
    if family != "cct":
        images = np.random.default_rng(1).uniform(-1, 1, (4, 224, 224, 3)).astype("float32")
        parity = verify(model, flatbuffer, images)
        # a broken conversion (wrong fold or threshold) reproduces no sample; DyMobileNet's
        # 31 binary layers flip a bit in most (measured: 2 of 12 exact, all 12 argmaxes)
        assert parity.samples == 4 and parity.close_fraction > 0
        assert parity.argmax_agreement >= 0.75
        assert parity.mean_abs_diff < 0.05 * parity.output_scale


def _hyper_function_params(layer):
    """Parameters a DySign/DyPReLU adds over RSign/RPReLU: W1, b1, W2, b2."""
    channels = layer.input_shape[-1]
    if layer.reduction is None:
        hidden = layer.hidden_units
    else:
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


# 28x28x1 and 32x32x3 inputs are built and run by most tests here (widths, include_top,
# save/load, fits); this one adds a non-square input whose sides halve unevenly.
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_odd_inputs(name):
    input_shape = (96, 128, 3)
    model = _small_model(name, input_shape)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, *input_shape)).astype("float32")
    y = model(x, training=False).numpy()
    assert y.shape == (2, 10)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # softmax head


@pytest.mark.parametrize("name", FAMILY_MODELS)
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
def test_a_short_fit_reaches_every_kind_of_weight(name, fashion_mnist_sample):
    x, y = fashion_mnist_sample
    options = {"stem": "imagenet"} if model_family(name) != "cct" else {}
    model = _small_model(name, width_multiplier=0.25, **options)
    # eager: a few steps of these graphs train faster than tf.function traces them
    model.compile(
        tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", run_eagerly=True
    )
    binary = model.get_layer(_binary_layers(model)[0])
    kernel_before = binary.kernel.numpy().copy()
    hyper = [w for w in model.trainable_weights if "hyper_kernel_2" in w.name]
    thresholds = [w for w in model.trainable_weights if "threshold" in w.name]
    model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(binary.kernel.numpy(), kernel_before)
    # the second FCs and the thresholds start at zero and stay there only if no gradient
    # reaches them
    assert all(np.abs(w.numpy()).max() > 0 for w in hyper + thresholds)


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_round_trip(name, tmp_path):
    model = _small_model(name, (32, 32, 3), width_multiplier=0.25)
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
        ({"input_shape": "28,28,1"}, r"input_shape .*'28,28,1' of type str"),
        (
            {"binary_weights": "false"},
            "Expected binary_weights to be True or False, but got 'false'",
        ),
        (
            {"input_shape": (32, 32, 3), "input_tensor": tf.keras.Input((28, 28, 1))},
            r"input_shape to match input_tensor's shape \(28, 28, 1\), but got input_shape="
            r"\(32, 32, 3\)",
        ),
    ],
)
def test_bad_arguments_are_rejected_before_building(kwargs, message, monkeypatch):
    built = []
    monkeypatch.setattr(tf.keras, "Model", lambda *a, **k: built.append(a))
    with pytest.raises(ValueError, match=message):
        zoo.ReActNet18(**kwargs)
    assert built == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"dysign_options": {"reduction": 4, "bogus": 1}},
            r"keys of dysign_options to be DySign arguments \(reduction, granularity, "
            r"statistics, estimator.*\), but got 'bogus'",
        ),
        ({"dysign_options": "reduction=4"}, "dysign_options to be a dict .* of type str"),
        (
            {"dysign": False, "dysign_options": {"reduction": 4}},
            r"no dysign_options with dysign=False",
        ),
        ({"dyprelu_options": {"reduction": 0}}, r"Invalid dyprelu_options .*reduction"),
    ],
)
def test_bad_dy_options_are_named_before_building(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.DyResNet18(**kwargs)


def test_numpy_integer_shapes_are_accepted():
    model = zoo.ReActNet18(
        input_shape=tuple(np.array([28, 28, 1])), num_classes=np.int64(10), width_multiplier=0.25
    )
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_width_multiplier_scales_every_width(name):
    def widths(model):
        return sorted(
            {layer.filters for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)}
        )

    full = _small_model(name, width_multiplier=0.5)
    half = _small_model(name, width_multiplier=0.25)
    assert widths(half) == [w // 2 for w in widths(full)]
    # weights grow with width^2: a quarter of the binary weights (within the FP stem/head)
    ratio = half.count_params() / full.count_params()
    assert 0.2 < ratio < 0.35, ratio
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 28, 28, 1)).astype("float32")
    y = half(x, training=False).numpy()
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)  # softmax head


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
