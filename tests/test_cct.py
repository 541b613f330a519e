"""BinaryCCT / DyBinaryCCT specifics: CCT's sizes, SeqPool, attention maths, LCE layout.

Shapes, save/load and conversion of the default configurations are tested for every zoo
model in test_zoo.py; this file checks what is particular to the CCT family.
"""

import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter
from tensorflow.lite.python import schema_py_generated as schema

from larq_dysign import DyPReLU, DySign, RPReLU, zoo
from larq_dysign.export import binary_layers, op_histogram
from larq_dysign.layers import scaled_dot_product_attention
from larq_dysign.zoo.cct import VARIANTS

# one xdist group: the tests share module fixtures another worker would build again
pytestmark = pytest.mark.xdist_group("test_cct")

# The CCT paper's parameter counts (Table 1 / 2): CCT-14/7x2 on ImageNet, CCT-7/3x1 and
# CCT-7/3x2 on CIFAR.
PAPER_PARAMS = {"14/7x2": 22.4e6, "7/3x1": 3.76e6, "7/3x2": 3.85e6}


def _fp_cct_params(variant, *, tokens, num_classes, in_channels=3, num_layers=None):
    """Parameters of CCT with float linears, layer by layer as in the reference code:
    bias-free tokenizer convs, positional embedding, per layer LN + qkv (no bias) + proj +
    LN + fc1 + fc2, final LN, SeqPool's Linear(dim, 1), the classifier."""
    c = VARIANTS[variant]
    d, m, k = c.dim, c.mlp_units, c.kernel_size
    widths = [in_channels] + [c.tokenizer_width] * (c.tokenizer_convs - 1) + [d]
    tokenizer = sum(k * k * a * b for a, b in zip(widths[:-1], widths[1:]))
    layer = 2 * d + 3 * d * d + (d * d + d) + 2 * d + (d * m + m) + (m * d + d)
    layers = c.num_layers if num_layers is None else num_layers
    return tokenizer + tokens * d + layers * layer + 2 * d + (d + 1) + (d + 1) * num_classes


def _binary_extras(variant, *, num_layers=None):
    """What BinaryCCT adds to the float architecture: RSign thresholds before QKV, Proj, FC1
    (dim each) and FC2 (MLP width), RPReLU's 3 vectors, and BatchNorm (4) + RSign (1) per
    channel before each binary tokenizer conv."""
    c = VARIANTS[variant]
    layers = c.num_layers if num_layers is None else num_layers
    per_layer = 3 * c.dim + c.mlp_units + 3 * c.mlp_units
    return layers * per_layer + (c.tokenizer_convs - 1) * 5 * c.tokenizer_width


def _hyper(channels, outputs, reduction=None):
    """Hyper function C -> 2 (or DY-ReLU's max(C // r, 8)) -> outputs: W1, b1, W2, b2."""
    hidden = 2 if reduction is None else max(channels // reduction, 8)
    return channels * hidden + hidden + hidden * outputs + outputs


def _binary_layer_names(model):
    return [layer.name for layer in binary_layers(model)]


def _encoder_layers(model):
    return sum(layer.name.endswith("_qkv") for layer in model.layers)


@pytest.fixture(scope="module")
def imagenet_cct():
    """The default BinaryCCT (224x224x3, 1000 classes), built once: it has 22M weights."""
    return zoo.BinaryCCT()


def test_default_at_224_is_cct_14_7x2_with_the_papers_size(imagenet_cct):
    model = imagenet_cct
    assert _encoder_layers(model) == 14
    assert model.get_layer("tokens").output_shape == (None, 1, 196, 384)
    assert model.get_layer("pooled").output_shape == (None, 384)
    fp = _fp_cct_params("14/7x2", tokens=196, num_classes=1000)
    assert fp == pytest.approx(PAPER_PARAMS["14/7x2"], rel=0.005)  # paper rounds to 0.1M
    assert model.count_params() == fp + _binary_extras("14/7x2")
    assert model.count_params() == pytest.approx(PAPER_PARAMS["14/7x2"], rel=0.03)

    profiles = lq.models.ModelProfile(model).layer_profiles
    binary = sum(p.op_count("mac", 1) or 0 for p in profiles)
    floating = sum(p.op_count("mac", 32) or 0 for p in profiles)
    # binary: the tokenizer's conv7x7/2 64->384 at 28x28, then per layer and token the
    # QKV (384->1152), Proj (384->384), FC1 (384->1152) and FC2 (1152->384) linears
    per_token = 384 * 1152 + 384 * 384 + 2 * 384 * 1152
    assert binary == 28 * 28 * 49 * 64 * 384 + 14 * 196 * per_token
    # float: conv7x7/2 3->64 at 112x112, SeqPool's Linear(384, 1) per token, classifier
    assert floating == 112 * 112 * 49 * 3 * 64 + 196 * 384 + 384 * 1000


def test_7_3x1_at_32x32_has_the_papers_size():
    model = zoo.BinaryCCT(input_shape=(32, 32, 3), num_classes=10)  # variant chosen by size
    assert _encoder_layers(model) == 7
    assert model.get_layer("tokens").output_shape == (None, 1, 256, 256)
    fp = _fp_cct_params("7/3x1", tokens=256, num_classes=10)
    assert fp == pytest.approx(PAPER_PARAMS["7/3x1"], rel=0.005)  # paper rounds to 0.01M
    assert model.count_params() == fp + _binary_extras("7/3x1")
    assert model.count_params() == pytest.approx(PAPER_PARAMS["7/3x1"], rel=0.03)


def test_7_3x2_has_the_papers_size_and_49_tokens_on_28x28():
    model = zoo.BinaryCCT(input_shape=(32, 32, 3), num_classes=10, variant="7/3x2")
    assert _encoder_layers(model) == 7
    assert model.get_layer("tokens").output_shape == (None, 1, 64, 256)  # 32 -> 16 -> 8
    fp = _fp_cct_params("7/3x2", tokens=64, num_classes=10)
    assert fp == pytest.approx(PAPER_PARAMS["7/3x2"], rel=0.005)  # paper rounds to 0.01M
    assert model.count_params() == fp + _binary_extras("7/3x2")
    # on Fashion-MNIST: 28 -> 14 -> 7, a quarter of 7/3x1's 196 tokens
    small = zoo.BinaryCCT(input_shape=(28, 28, 1), num_classes=10, variant="7/3x2", num_layers=1)
    assert small.get_layer("tokens").output_shape == (None, 1, 49, 256)
    assert [layer.name for layer in binary_layers(small)][0] == "tokenizer2_conv"


def test_include_top_false_returns_the_seqpool_average_of_the_tokens():
    model = zoo.BinaryCCT(input_shape=(28, 28, 1), include_top=False, num_layers=1)
    assert model.get_layer("tokens").output_shape == (None, 1, 196, 256)  # 14x14 tokens
    assert model.output_shape == (None, 256)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 28, 28, 1)).astype("float32")
    tokens = tf.keras.Model(model.input, model.get_layer("final_norm").output)(x).numpy()
    tokens = tokens[:, 0]  # (B, N, D)
    kernel, bias = model.get_layer("seq_pool_attention").get_weights()
    scores = tokens @ kernel + bias  # (B, N, 1)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    expected = (weights * tokens).sum(axis=1)
    # float32 sums over 196 tokens of values of order 1
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_attention_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    batch, tokens, heads, head_dim = 2, 5, 2, 4
    dim = heads * head_dim
    qkv = rng.normal(size=(batch, 1, tokens, 3 * dim)).astype("float32")
    out = scaled_dot_product_attention(tf.constant(qkv), heads).numpy()
    assert out.shape == (batch, 1, tokens, dim)
    q, k, v = np.split(qkv[:, 0], 3, axis=-1)
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[..., part] @ k[..., part].transpose(0, 2, 1) / np.sqrt(head_dim)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(out[:, 0, :, part], probs @ v[..., part], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "constructor, kwargs, message",
    [
        (
            "BinaryCCT",
            {"variant": "7/3"},
            r"variant to be one of '14/7x2', '7/3x1', '7/3x2'.*got '7/3'",
        ),
        ("BinaryCCT", {"num_layers": 0}, r"num_layers to be a positive integer.*got 0"),
        ("BinaryCCT", {"mlp_activation": "relu"}, r"'prelu', 'gelu'.*got 'relu'"),
        ("DyBinaryCCT", {"mlp_activation": "gelu"}, r"dyprelu=False.*got dyprelu=True"),
    ],
)
def test_bad_cct_arguments_are_rejected(constructor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(zoo, constructor)(input_shape=(28, 28, 1), **kwargs)


def test_gelu_mlp_replaces_the_prelu():
    model = zoo.DyBinaryCCT(
        input_shape=(28, 28, 1), num_layers=1, mlp_activation="gelu", dyprelu=False
    )
    kinds = {type(layer) for layer in model.layers}
    assert DySign in kinds and not {RPReLU, DyPReLU} & kinds
    assert model.get_layer("layer1_mlp_activation").get_config()["activation"] == "gelu"


SMALL = {"input_shape": (28, 28, 1), "num_classes": 10, "variant": "14/7x2", "num_layers": 1}


@pytest.fixture(scope="module")
def trained_dy(fashion_mnist_sample):
    """A one-layer "14/7x2" DyBinaryCCT (binary tokenizer conv, 2x2 tokens at 28x28) with
    non-zero dynamic parts, after one epoch on 512 real images (realistic BatchNorm
    statistics and thresholds)."""
    tf.keras.utils.set_random_seed(0)
    x, y = fashion_mnist_sample
    model = zoo.DyBinaryCCT(dyprelu_options={"reduction": 8}, **SMALL)
    rng = np.random.default_rng(0)
    for w in model.weights:
        if "hyper_kernel_2" in w.name or "hyper_bias_2" in w.name:
            w.assign(rng.normal(0, 0.3, w.shape))
    model.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model, x[:64]


def test_dy_model_is_baseline_plus_one_hyper_function_per_sign_and_prelu(trained_dy):
    dy, _ = trained_dy
    baseline = zoo.BinaryCCT(**SMALL)
    d, m, width = 384, 1152, 64
    tokenizer = _hyper(width, width)  # DySign before the binary tokenizer conv
    # DySign before QKV, Proj, FC1 (d channels) and FC2 (m channels); DyPReLU (m -> 2m)
    # with the reduction passed through dyprelu_options
    layer = 3 * _hyper(d, d) + _hyper(m, m) + _hyper(m, 2 * m, reduction=8)
    assert dy.count_params() == baseline.count_params() + tokenizer + layer
    assert sum(isinstance(layer, DySign) for layer in dy.layers) == 5


def _fully_connected_weight_kinds(flatbuffer):
    """(constant, run-time): FULLY_CONNECTED ops whose weights are stored in the file (a
    layer's kernel) or computed while running (an activation, e.g. an attention product)."""
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    fc_codes = {
        i
        for i, code in enumerate(codes)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        == schema.BuiltinOperator.FULLY_CONNECTED
    }
    constant = runtime = 0
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            if op.OpcodeIndex() not in fc_codes:
                continue
            buffer = model.Buffers(subgraph.Tensors(op.Inputs(1)).Buffer())
            if buffer.DataLength() > 0:
                constant += 1
            else:
                runtime += 1
    return constant, runtime


def test_small_dy_cct_runs_every_binary_layer_as_a_binary_kernel(trained_dy):
    model, x = trained_dy
    flatbuffer = lce.convert_keras_model(model)
    ops = op_histogram(flatbuffer)
    binary_layers = _binary_layer_names(model)
    assert len(binary_layers) == 5  # tokenizer conv + QKV, Proj, FC1, FC2
    assert ops["LceBconv2d"] == len(binary_layers)
    assert ops["LceQuantize"] == len(binary_layers)
    assert ops["CONV_2D"] == 1  # the FP tokenizer conv only
    # FULLY_CONNECTED with stored weights: two per hyper function (5 DySign + 1 DyPReLU),
    # SeqPool's Linear(dim, 1) and the classifier -- none stands in for a binary layer.
    # With run-time weights: the float attention products, which the converter unrolls per
    # head (QK^T and AV: 2 x 6 heads), and SeqPool's weighted sum.
    assert _fully_connected_weight_kinds(flatbuffer) == (2 * 6 + 2, 2 * 6 + 1)
    assert ops["FULLY_CONNECTED"] == 2 * 6 + 2 + 2 * 6 + 1

    keras_out = model(x).numpy()
    tflite_out = Interpreter(flatbuffer).predict(x)
    # Softmax probabilities. Float rounding differs (~1e-7) between TF and TFLite; an
    # activation within rounding of its threshold flips a bit and moves that sample's
    # outputs by ~1e-2 (seen with two layers: 1 sample of 64). So: nearly all samples
    # agree to float precision, none far off, predictions (nearly) identical.
    per_sample = np.abs(tflite_out - keras_out).max(axis=1)
    assert np.mean(per_sample < 1e-5) >= 0.95
    assert per_sample.max() < 0.05
    assert (tflite_out.argmax(1) == keras_out.argmax(1)).mean() >= 0.98
