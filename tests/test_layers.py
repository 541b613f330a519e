"""DySign, RSign, RPReLU, DyPReLU and BinaryDense: values, gradients, serialization, errors."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import BinaryDense, DyPReLU, DySign, RPReLU, RSign
from larq_dysign.layers import channel_statistics, effective_groups

#: Every new hyper-function option at a non-default value.
OPTIONS = {"groups": 4, "bound": 1.0, "learning_rate_multiplier": 10.0, "min_hidden_units": 4}


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
    assert layer.hyper_kernel_1.shape == (64, 2)  # 2C inputs, hidden width 2


def test_hidden_width_is_two_or_channels_over_a_given_reduction_with_floor_of_eight():
    assert DySign()._hidden_units(1536) == 2
    assert DyPReLU(hidden_units=5)._hidden_units(64) == 5
    assert DySign(reduction=4)._hidden_units(256) == 64
    assert DySign(reduction=16)._hidden_units(64) == 8


def test_relu_hidden_activation_and_configs_saved_without_the_option():
    x = np.random.default_rng(3).normal(0, 1.0, size=(3, 4, 4, 8)).astype("float32")
    layer = DySign(hidden_activation="relu")
    layer.build(x.shape)
    _randomize_hyper_function(layer)
    pre = x.mean(axis=(1, 2)) @ layer.hyper_kernel_1.numpy() + layer.hyper_bias_1.numpy()
    assert pre.min() < 0 < pre.max()  # both sides of the kink are exercised
    expected = layer.threshold.numpy() + np.maximum(pre, 0) @ layer.hyper_kernel_2.numpy()
    expected += layer.hyper_bias_2.numpy()
    np.testing.assert_allclose(layer.thresholds(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    # a config written before the option existed computed ReLU, and still does
    legacy = {k: v for k, v in DySign(reduction=16).get_config().items()}
    del legacy["hidden_activation"]
    assert DySign.from_config(legacy).hidden_activation == "relu"
    assert DyPReLU.from_config(DyPReLU().get_config()).hidden_activation == "leaky_relu"


# ---------------------------------------------------------------------------- gradients


def _estimator_derivative(z, estimator):
    inside = np.abs(z) <= 1.0
    if estimator == "approx_sign":
        return np.where(inside, 2.0 - 2.0 * np.abs(z), 0.0)
    return inside.astype(z.dtype)


def _leaky(pre):
    """The hyper function's hidden activation, leaky ReLU with slope 0.2."""
    return np.where(pre > 0, pre, 0.2 * pre)


def _leaky_derivative(pre):
    return np.where(pre > 0, 1.0, 0.2)


def _numpy_dysign_gradients(x, w, upstream, estimator):
    """Reference backward pass of DySign (mean statistics, channel granularity)."""
    batch, height, width, _ = x.shape
    stats = x.mean(axis=(1, 2))
    pre = stats @ w["hyper_kernel_1"] + w["hyper_bias_1"]
    hidden = _leaky(pre)
    tau = w["threshold"] + hidden @ w["hyper_kernel_2"] + w["hyper_bias_2"]
    z = x - tau[:, None, None, :]
    local = upstream * _estimator_derivative(z, estimator)
    d_tau = -local.sum(axis=(1, 2))
    d_hidden = d_tau @ w["hyper_kernel_2"].T
    d_pre = d_hidden * _leaky_derivative(pre)
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


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [
        {"groups": 4},
        {"bound": 0.5},
        {"learning_rate_multiplier": 10.0},
        {"statistics": "mean_std", "min_hidden_units": 2},
        {**OPTIONS, "statistics": "mean_std"},
    ],
)
def test_fresh_layers_with_options_equal_their_static_versions(options):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 5, 5, 16)).astype("float32")
    bias = rng.normal(0, 0.5, size=(16,)).astype("float32")
    dysign, rsign = DySign(**options), RSign()
    dysign.build(x.shape)
    rsign.build(x.shape)
    dysign.threshold.assign(bias)
    rsign.threshold.assign(bias)
    np.testing.assert_array_equal(dysign(x).numpy(), rsign(x).numpy())
    dyprelu, rprelu = DyPReLU(**options), RPReLU()
    dyprelu.build(x.shape)
    rprelu.build(x.shape)
    np.testing.assert_array_equal(dyprelu(x).numpy(), rprelu(x).numpy())


def test_effective_groups_split_channels_equally():
    assert effective_groups(128, None) == 128
    assert effective_groups(128, 16) == 16
    assert effective_groups(8, 16) == 8  # fewer channels than groups: one per channel
    assert effective_groups(24, 16) == 8  # equal groups of 3 channels
    assert effective_groups(1152, 16) == 16


def test_groups_share_the_dynamic_part_but_keep_per_channel_static_thresholds():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 4, 4, 32)).astype("float32")
    layer = DySign(groups=4, reduction=2)
    layer.build(x.shape)
    assert layer.hyper_kernel_2.shape == (16, 4) and layer.threshold.shape == (32,)
    _randomize_hyper_function(layer)
    bias = rng.normal(size=(32,)).astype("float32")
    layer.threshold.assign(bias)
    dynamic = layer.thresholds(x).numpy() - bias  # (3, 32)
    grouped = dynamic.reshape(3, 4, 8)
    np.testing.assert_allclose(grouped, grouped[:, :, :1].repeat(8, axis=2), atol=1e-6)
    assert np.ptp(grouped[:, :, 0]) > 1e-3  # groups differ

    prelu = DyPReLU(groups=4, reduction=2)
    prelu.build(x.shape)
    assert prelu.hyper_kernel_2.shape == (16, 8)  # 4 groups x 2 shifts
    _randomize_hyper_function(prelu)
    for shift in prelu.shifts(x):
        values = shift.numpy().reshape(3, 4, 8)
        np.testing.assert_allclose(values, values[:, :, :1].repeat(8, axis=2), atol=1e-6)


def test_bounded_thresholds_stay_within_bound_times_the_channel_spread():
    rng = np.random.default_rng(12)
    x = rng.normal(0, 2.0, size=(4, 6, 6, 16)).astype("float32")
    layer = DySign(bound=0.5)
    layer.build(x.shape)
    _randomize_hyper_function(layer, scale=50.0)  # saturate the sigmoid
    dynamic = layer.thresholds(x).numpy()
    spread = np.sqrt(x.var(axis=(1, 2)) + 1e-5)
    assert np.all(np.abs(dynamic) <= 0.5 * spread + 1e-6)
    assert np.abs(dynamic).max() > 0.45 * spread.min()  # and it reaches the bound
    # the same formula, written out
    stats = x.mean(axis=(1, 2))
    hidden = _leaky(stats @ layer.hyper_kernel_1.numpy() + layer.hyper_bias_1.numpy())
    z = hidden @ layer.hyper_kernel_2.numpy() + layer.hyper_bias_2.numpy()
    # 2 sigmoid(z) - 1 = tanh(z / 2)
    np.testing.assert_allclose(dynamic, 0.5 * spread * np.tanh(z / 2), rtol=1e-4, atol=1e-5)


def test_learning_rate_multiplier_stores_weights_over_m_and_adam_moves_them_m_times_faster():
    x = np.random.default_rng(13).normal(size=(4, 5, 5, 16)).astype("float32")
    target = tf.constant(np.random.default_rng(14).choice([-1.0, 1.0], size=x.shape))
    moves = {}
    for m in (1.0, 10.0):
        layer = DySign(learning_rate_multiplier=m, dtype="float64")
        layer.build(x.shape)
        layer.hyper_kernel_1.assign(np.full(layer.hyper_kernel_1.shape, 0.1) / m)
        layer.hyper_kernel_2.assign(np.full(layer.hyper_kernel_2.shape, 0.01) / m)
        used = m * layer.hyper_kernel_2.numpy()
        optimizer = tf.keras.optimizers.Adam(1e-3)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((layer(x) - target) ** 2)
        variables = [layer.hyper_kernel_1, layer.hyper_kernel_2]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        moves[m] = m * layer.hyper_kernel_2.numpy() - used
    # Adam's first step is lr * g / (|g| + eps) per weight: the stored weight moves by ~lr
    # whatever m is, so the weight the layer uses moves m times as far
    assert np.abs(moves[1.0]).max() > 0
    np.testing.assert_allclose(moves[10.0], 10.0 * moves[1.0], rtol=1e-3)
    stored = DySign(learning_rate_multiplier=10.0)
    stored.build(x.shape)
    he_std = np.sqrt(2.0 / 16)  # fan_in 16
    assert stored.hyper_kernel_1.numpy().std() < 0.2 * he_std  # about he_std / 10


def test_options_round_trip_through_get_config():
    for cls in (DySign, DyPReLU):
        layer = cls(**OPTIONS, statistics="mean_std", name="layer")
        config = layer.get_config()
        assert {k: config[k] for k in OPTIONS} == OPTIONS
        clone = cls.from_config(config)
        assert clone.get_config() == config


def _numpy_option_gradients(x, w, upstream, *, m, bound, groups):
    """Reference backward pass of DySign with groups, a bound and a multiplier (mean stats,
    approx_sign): tau = b + expand(bound * std * (2 sigmoid(z) - 1)), z from m * weights."""
    batch, height, width, channels = x.shape
    size = channels // groups
    stats = x.mean(axis=(1, 2))
    spread = np.sqrt(x.var(axis=(1, 2)) + 1e-5)
    pre = stats @ (m * w["hyper_kernel_1"]) + m * w["hyper_bias_1"]
    hidden = _leaky(pre)
    z = hidden @ (m * w["hyper_kernel_2"]) + m * w["hyper_bias_2"]  # (B, G)
    sigmoid = 1 / (1 + np.exp(-z))
    offset = bound * spread * (2 * np.repeat(sigmoid, size, axis=1) - 1)
    tau = w["threshold"] + offset
    local = upstream * _estimator_derivative(x - tau[:, None, None, :], "approx_sign")
    d_tau = -local.sum(axis=(1, 2))  # (B, C)
    d_z = (d_tau * bound * spread * 2).reshape(batch, groups, size).sum(axis=2)
    d_z = d_z * sigmoid * (1 - sigmoid)
    d_hidden = d_z @ (m * w["hyper_kernel_2"]).T
    d_pre = d_hidden * _leaky_derivative(pre)
    d_stats = d_pre @ (m * w["hyper_kernel_1"]).T
    return {
        # the spread carries no gradient (stop_gradient), the mean does
        "x": local + d_stats[:, None, None, :] / (height * width),
        "threshold": d_tau.sum(axis=0),
        "hyper_kernel_2": m * hidden.T @ d_z,
        "hyper_bias_2": m * d_z.sum(axis=0),
        "hyper_kernel_1": m * stats.T @ d_pre,
        "hyper_bias_1": m * d_pre.sum(axis=0),
    }


def test_gradients_with_groups_bound_and_multiplier_match_numpy_reference():
    rng = np.random.default_rng(15)
    x = rng.normal(0, 0.7, size=(3, 4, 5, 16)).astype("float64")
    upstream = rng.normal(size=x.shape)
    m, bound, groups = 3.0, 0.8, 4
    layer = DySign(
        reduction=2, groups=groups, bound=bound, learning_rate_multiplier=m, dtype="float64"
    )
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
    expected = _numpy_option_gradients(x, weights, upstream, m=m, bound=bound, groups=groups)
    np.testing.assert_allclose(grads[0].numpy(), expected["x"], rtol=1e-7, atol=1e-9)
    for name, grad in zip(names, grads[1:]):
        np.testing.assert_allclose(grad.numpy(), expected[name], rtol=1e-7, atol=1e-9)
    assert np.abs(expected["hyper_kernel_1"]).max() > 0


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
        (lambda: DySign(groups=0), r"groups to be a positive integer or None, but got 0"),
        (lambda: DyPReLU(bound=-1.0), r"bound to be a positive number or None, but got -1.0"),
        (lambda: DySign(learning_rate_multiplier=0), "learning_rate_multiplier.*got 0"),
        (lambda: DyPReLU(min_hidden_units=0), "min_hidden_units.*got 0"),
        (lambda: DySign(hidden_units=0), "hidden_units to be a positive integer, but got 0"),
        (lambda: DyPReLU(hidden_activation="tanh"), "hidden_activation.*'tanh'"),
        (
            lambda: DyPReLU(hidden_units=4, reduction=16),
            r"either hidden_units .* or reduction .* got hidden_units=4 and reduction=16",
        ),
        (lambda: DySign(granularity="layer", groups=4), "groups=None with granularity='layer'"),
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
