"""DySign, RSign, RPReLU, DyPReLU and BinaryDense: values, gradients, serialization, errors."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import BinaryDense, DyPReLU, DySign, RPReLU, RSign
from larq_dysign.layers import channel_statistics


def _randomize_hyper_function(layer, scale=0.5, seed=0):
    """Give the zero-initialized second FC real values so thresholds depend on the input."""
    rng = np.random.default_rng(seed)
    layer.hyper_kernel_2.assign(rng.normal(0, scale, layer.hyper_kernel_2.shape))
    layer.hyper_bias_2.assign(rng.normal(0, scale, layer.hyper_bias_2.shape))


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize("layer_cls", [DySign, RSign])
def test_outputs_are_plus_minus_one_and_sign_of_zero_is_plus_one(layer_cls):
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 16)).astype("float32")
    x[:, 0, 0, :] = 0.0
    y = layer_cls()(x).numpy()
    assert set(np.unique(y)) == {-1.0, 1.0}
    # fresh layers: zero threshold, so exactly sign(x) with sign(0) = +1
    np.testing.assert_array_equal(y, np.where(x >= 0, 1.0, -1.0))
    assert np.all(y[:, 0, 0, :] == 1.0)


def test_fresh_dysign_equals_rsign_with_same_bias():
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 32)).astype("float32")
    bias = np.random.default_rng(2).normal(0, 0.5, size=(32,)).astype("float32")
    dysign, rsign = DySign(), RSign()
    dysign.build(x.shape)
    rsign.build(x.shape)
    dysign.threshold.assign(bias)
    rsign.threshold.assign(bias)
    np.testing.assert_array_equal(dysign(x).numpy(), rsign(x).numpy())
    np.testing.assert_array_equal(rsign(x).numpy(), np.where(x - bias >= 0, 1.0, -1.0))


def test_threshold_is_dynamic_within_a_sample_and_independent_across_samples():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    layer = DySign(reduction=2)
    layer.build(x.shape)
    _randomize_hyper_function(layer, scale=1.0)
    before = layer(x).numpy()

    changed = x.copy()
    changed[0, :4, :4, :] += 3.0  # one region of sample 0 only
    after = layer(changed).numpy()

    untouched = np.ones((8, 8), dtype=bool)
    untouched[:4, :4] = False
    flips = before[0][untouched] != after[0][untouched]
    assert flips.sum() > 0, "thresholds did not move with the input statistics"
    np.testing.assert_array_equal(before[1], after[1])  # the other sample is unaffected
    # and the threshold moved, per channel, by a non-constant amount
    delta = layer.thresholds(changed).numpy() - layer.thresholds(x).numpy()
    assert np.abs(delta[0]).max() > 1e-3 and np.ptp(delta[0]) > 1e-3
    np.testing.assert_allclose(delta[1], 0.0, atol=1e-6)


def test_layer_granularity_gives_one_threshold_per_sample():
    x = np.random.default_rng(4).normal(size=(3, 4, 4, 24)).astype("float32")
    layer = DySign(granularity="layer")
    layer.build(x.shape)
    _randomize_hyper_function(layer)
    tau = layer.thresholds(x).numpy()
    assert tau.shape == (3, 1)
    assert layer.threshold.shape == (1,)
    np.testing.assert_array_equal(
        layer(x).numpy(), np.where(x - tau[:, None, None, :] >= 0, 1, -1)
    )


def test_token_inputs_use_mean_over_tokens():
    x = np.random.default_rng(5).normal(size=(2, 10, 32)).astype("float32")
    np.testing.assert_allclose(channel_statistics(x).numpy(), x.mean(axis=1), rtol=1e-5)
    stats = channel_statistics(x, "mean_std").numpy()
    np.testing.assert_allclose(stats[:, 32:], np.sqrt(x.var(axis=1) + 1e-5), rtol=1e-4)
    layer = DySign(statistics="mean_std")
    y = layer(x)
    assert y.shape == x.shape
    assert layer.hyper_kernel_1.shape == (64, 8)  # 2C inputs, hidden max(32 // 16, 8)


def test_hidden_width_is_channels_over_reduction_with_floor_of_eight():
    assert DySign(reduction=4)._hidden_units(256) == 64
    assert DySign(reduction=16)._hidden_units(64) == 8


# ---------------------------------------------------------------------------- gradients


def _estimator_derivative(z, estimator):
    inside = np.abs(z) <= 1.0
    if estimator == "approx_sign":
        return np.where(inside, 2.0 - 2.0 * np.abs(z), 0.0)
    return inside.astype(z.dtype)


def _numpy_dysign_gradients(x, w, upstream, estimator):
    """Reference backward pass of DySign (mean statistics, channel granularity)."""
    batch, height, width, _ = x.shape
    stats = x.mean(axis=(1, 2))
    pre = stats @ w["hyper_kernel_1"] + w["hyper_bias_1"]
    hidden = np.maximum(pre, 0.0)
    tau = w["threshold"] + hidden @ w["hyper_kernel_2"] + w["hyper_bias_2"]
    z = x - tau[:, None, None, :]
    local = upstream * _estimator_derivative(z, estimator)
    d_tau = -local.sum(axis=(1, 2))
    d_hidden = d_tau @ w["hyper_kernel_2"].T
    d_pre = d_hidden * (pre > 0)
    d_stats = d_pre @ w["hyper_kernel_1"].T
    return {
        "x": local + d_stats[:, None, None, :] / (height * width),
        "threshold": d_tau.sum(axis=0),
        "hyper_kernel_2": hidden.T @ d_tau,
        "hyper_bias_2": d_tau.sum(axis=0),
        "hyper_kernel_1": stats.T @ d_pre,
        "hyper_bias_1": d_pre.sum(axis=0),
    }


@pytest.mark.parametrize("estimator", ["approx_sign", "ste"])
def test_gradients_match_numpy_reference(estimator):
    rng = np.random.default_rng(6)
    x = rng.normal(0, 0.7, size=(3, 4, 5, 16)).astype("float64")
    upstream = rng.normal(size=x.shape)
    layer = DySign(reduction=2, estimator=estimator, dtype="float64")
    layer.build(x.shape)
    _randomize_hyper_function(layer, scale=0.3)
    layer.threshold.assign(rng.normal(0, 0.2, size=(16,)))
    layer.hyper_bias_1.assign(rng.normal(0, 0.2, size=layer.hyper_bias_1.shape))

    x_var = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x_var) * upstream)
    names = ["threshold", "hyper_kernel_1", "hyper_bias_1", "hyper_kernel_2", "hyper_bias_2"]
    variables = [getattr(layer, n) for n in names]
    grads = tape.gradient(loss, [x_var, *variables])

    weights = {n: v.numpy() for n, v in zip(names, variables)}
    expected = _numpy_dysign_gradients(x, weights, upstream, estimator)
    np.testing.assert_allclose(grads[0].numpy(), expected["x"], rtol=1e-7, atol=1e-9)
    for name, grad in zip(names, grads[1:]):
        np.testing.assert_allclose(grad.numpy(), expected[name], rtol=1e-7, atol=1e-9)
    assert np.abs(expected["hyper_kernel_1"]).max() > 0  # the reference is not trivially zero


def test_gradient_reaches_hyper_function_through_noop_binary_conv():
    """DySign before QuantConv2D(input_quantizer=NoOp(1)) keeps its gradient."""
    x = tf.random.normal((2, 6, 6, 32))
    sign = DySign()
    conv = lq.layers.QuantConv2D(
        8,
        3,
        input_quantizer=lq.quantizers.NoOp(precision=1),
        kernel_quantizer="magnitude_aware_sign",
        kernel_constraint="weight_clip",
    )
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(conv(sign(x)) ** 2)
    grads = tape.gradient(loss, [sign.threshold, sign.hyper_kernel_2])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


# ---------------------------------------------------------------------------- PReLU


def test_rprelu_values():
    x = np.random.default_rng(7).normal(size=(2, 3, 3, 8)).astype("float32")
    layer = RPReLU()
    layer.build(x.shape)
    gamma, zeta = np.linspace(-1, 1, 8), np.linspace(0.5, -0.5, 8)
    layer.shift_in.assign(gamma)
    layer.shift_out.assign(zeta)
    z = x - gamma
    np.testing.assert_allclose(layer(x).numpy(), np.where(z > 0, z, 0.25 * z) + zeta, rtol=1e-5)


def test_dyprelu_starts_as_rprelu_and_then_shifts_per_sample():
    x = np.random.default_rng(8).normal(size=(3, 4, 4, 16)).astype("float32")
    dy, static = DyPReLU(), RPReLU()
    dy.build(x.shape)
    static.build(x.shape)
    np.testing.assert_allclose(dy(x).numpy(), static(x).numpy(), rtol=1e-6)

    _randomize_hyper_function(dy)
    gamma, zeta = (t.numpy() for t in dy.shifts(x))
    assert gamma.shape == zeta.shape == (3, 16) and np.ptp(gamma[:, 0]) > 0
    z = x - gamma[:, None, None, :]
    expected = np.where(z > 0, z, 0.25 * z) + zeta[:, None, None, :]
    np.testing.assert_allclose(dy(x).numpy(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- BinaryDense


def test_binary_dense_is_a_binary_linear_map_on_tokens():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 7, 32)).astype("float32")
    layer = BinaryDense(16)
    y = layer(x).numpy()
    kernel = layer.kernel.numpy().reshape(32, 16)
    binary_kernel = np.abs(kernel).mean(axis=0) * np.where(kernel >= 0, 1.0, -1.0)
    np.testing.assert_allclose(
        y, np.where(x >= 0, 1.0, -1.0) @ binary_kernel, rtol=1e-5, atol=1e-5
    )
    assert layer.compute_output_shape((None, 7, 32)) == (None, 7, 16)
    # the [B, 1, N, D] layout gives the same numbers
    np.testing.assert_allclose(layer(x[:, None]).numpy()[:, 0], y, rtol=1e-6)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: DySign(granularity="pixel"), "granularity"),
        (lambda: DySign(statistics="median"), "statistics"),
        (lambda: DySign(estimator="swish"), "estimator"),
        (lambda: DySign(reduction=0), "reduction"),
        (lambda: RSign(estimator="tanh"), "estimator"),
        (lambda: DyPReLU(reduction=2.5), "reduction"),
        (lambda: BinaryDense(8, kernel_size=3), "kernel_size"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: BinaryDense(8, input_quantizer="bogus"),
            r"input_quantizer to be None, a larq quantizer .* but got 'bogus'",
        ),
        (lambda: RPReLU(slope_initializer="abc"), r"slope_initializer to be a number.*'abc'"),
        (
            lambda: DySign(name="sign")(tf.zeros((1, 4, 4, 8), tf.int32)),
            r"DySign 'sign' expects floating-point inputs, but got int32",
        ),
        (
            lambda: RPReLU(name="act")(tf.zeros((1, 4, 4, 8), tf.int32)),
            r"RPReLU 'act' expects floating-point inputs, but got int32",
        ),
    ],
)
def test_bad_layer_arguments_and_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("layer_class", [DySign, RSign, RPReLU, DyPReLU])
def test_a_built_layer_refuses_another_channel_count_by_name(layer_class):
    layer = layer_class(name="built")
    layer(tf.zeros((1, 4, 4, 8)))
    with pytest.raises(ValueError, match=r'layer "built" is incompatible.*axis -1.* value 8'):
        layer(tf.zeros((1, 4, 4, 16)))


def test_rank_two_input_is_rejected_with_shape():
    with pytest.raises(ValueError, match=r"rank >= 3.*\(4, 16\)"):
        DySign()(tf.zeros((4, 16)))
