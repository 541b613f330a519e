"""Independent NumPy forward passes of ReActNet's official PyTorch networks (inference mode).

Written from the official repository (github.com/liuzechun/ReActNet: `resnet/2_step2/
birealnet.py` for ReActNet-18, `mobilenet/2_step2/reactnet.py` for ReActNet-A) with nothing
of the zoo: NCHW tensors, OIHW weights, the official state-dict names, PyTorch's symmetric
zero padding (`padding=1` on both sides, also for stride 2), max-pooling padded with -inf,
`torch.sign` (0 at 0), BatchNorm with running statistics and eps 1e-5, and HardBinaryConv in
eval mode: `conv(x, sign(W)) * mean|W|` per output channel. Computed in float64.

`random_state(...)` makes a state dict of random weights and random BatchNorm statistics
under the official names and shapes (ReActNet-A's binary weights flat `(N, 1)`, as its
`HardBinaryConv.weights`), for comparing the zoo's imported models against this reference.
"""

from __future__ import annotations

import numpy as np

RESNET_WIDTHS = (64, 128, 256, 512)
RESNET_BLOCKS = 4
MOBILENET_WIDTHS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
BN_EPS = 1e-5


# ----------------------------------------------------------------------------- operations


def conv2d(x, weight, stride=1, padding=0, pad_value=0.0):
    """`F.conv2d` without bias: x (N, C, H, W), weight (O, C, kh, kw), symmetric padding."""
    x = np.pad(
        x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value
    )
    out_c, in_c, kh, kw = weight.shape
    n, c, h, w = x.shape
    assert c == in_c, (c, in_c)
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    s = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x,
        shape=(n, c, oh, ow, kh, kw),
        strides=(s[0], s[1], s[2] * stride, s[3] * stride, s[2], s[3]),
        writeable=False,
    )
    return np.einsum("ncijkl,ockl->noij", windows, weight, optimize=True)


def max_pool(x, kernel=3, stride=2, padding=1):
    x = np.pad(
        x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf
    )
    n, c, h, w = x.shape
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    s = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x,
        shape=(n, c, oh, ow, kernel, kernel),
        strides=(s[0], s[1], s[2] * stride, s[3] * stride, s[2], s[3]),
        writeable=False,
    )
    return windows.max(axis=(4, 5))


def avg_pool2(x):
    """`nn.AvgPool2d(kernel_size=2, stride=2)` (floor)."""
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def batch_norm(x, state, prefix):
    mean = state[f"{prefix}.running_mean"][None, :, None, None]
    var = state[f"{prefix}.running_var"][None, :, None, None]
    gamma = state[f"{prefix}.weight"][None, :, None, None]
    beta = state[f"{prefix}.bias"][None, :, None, None]
    return (x - mean) / np.sqrt(var + BN_EPS) * gamma + beta


def learnable_bias(x, state, prefix):
    """ReActNet's LearnableBias *adds* its (1, C, 1, 1) bias."""
    return x + state[f"{prefix}.bias"].reshape(1, -1, 1, 1)


def prelu(x, state, prefix):
    slope = state[f"{prefix}.weight"].reshape(1, -1, 1, 1)
    return np.where(x > 0, x, slope * x)


def hard_binary_conv(x, real_weights, stride, padding):
    """HardBinaryConv.forward in eval mode: sign weights, then the per-output-channel scale."""
    scale = np.abs(real_weights).mean(axis=(1, 2, 3))
    y = conv2d(x, np.sign(real_weights), stride=stride, padding=padding)
    return y * scale[None, :, None, None]


def binary_activation(x):
    return np.sign(x)  # torch.sign: 0 at 0


# ----------------------------------------------------------------------------- networks


def reactnet18_forward(state: dict, images_nhwc: np.ndarray) -> np.ndarray:
    """Logits of ReActNet-18 (Bi-Real-based ResNet-18) for NHWC images."""
    state = {k: np.asarray(v, np.float64) for k, v in state.items()}
    x = np.transpose(np.asarray(images_nhwc, np.float64), (0, 3, 1, 2))
    x = conv2d(x, state["conv1.weight"], stride=2, padding=3)
    x = batch_norm(x, state, "bn1")
    x = max_pool(x, 3, 2, 1)
    for stage in range(1, len(RESNET_WIDTHS) + 1):
        for block in range(RESNET_BLOCKS):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            residual = x
            out = binary_activation(learnable_bias(x, state, f"{p}.move0"))
            out = hard_binary_conv(out, state[f"{p}.binary_conv.weight"], stride, 1)
            out = batch_norm(out, state, f"{p}.bn1")
            if f"{p}.downsample.1.weight" in state:
                residual = avg_pool2(x) if stride == 2 else x
                residual = conv2d(residual, state[f"{p}.downsample.1.weight"])
                residual = batch_norm(residual, state, f"{p}.downsample.2")
            out = out + residual
            out = learnable_bias(out, state, f"{p}.move1")
            out = prelu(out, state, f"{p}.prelu")
            x = learnable_bias(out, state, f"{p}.move2")
    x = x.mean(axis=(2, 3))
    return x @ state["fc.weight"].T + state["fc.bias"]


def _mobilenet_binary_weights(state, key, out_c, in_c, k):
    return state[key].reshape(out_c, in_c, k, k)  # HardBinaryConv.weights.view(self.shape)


def reactnet_a_forward(state: dict, images_nhwc: np.ndarray) -> np.ndarray:
    """Logits of ReActNet-A (binary MobileNetV1) for NHWC images."""
    state = {k: np.asarray(v, np.float64) for k, v in state.items()}
    x = np.transpose(np.asarray(images_nhwc, np.float64), (0, 3, 1, 2))
    x = conv2d(x, state["feature.0.conv1.weight"], stride=2, padding=1)
    x = batch_norm(x, state, "feature.0.bn1")
    widths = MOBILENET_WIDTHS
    for i in range(1, len(widths)):
        p = f"feature.{i}"
        inplanes, planes = widths[i - 1], widths[i]
        stride = 2 if inplanes != planes and planes != 64 else 1
        out1 = binary_activation(learnable_bias(x, state, f"{p}.move11"))
        w = _mobilenet_binary_weights(state, f"{p}.binary_3x3.weights", inplanes, inplanes, 3)
        out1 = batch_norm(hard_binary_conv(out1, w, stride, 1), state, f"{p}.bn1")
        if stride == 2:
            x = avg_pool2(x)
        out1 = x + out1
        out1 = learnable_bias(out1, state, f"{p}.move12")
        out1 = prelu(out1, state, f"{p}.prelu1")
        out1 = learnable_bias(out1, state, f"{p}.move13")
        out2 = binary_activation(learnable_bias(out1, state, f"{p}.move21"))
        if inplanes == planes:
            w = _mobilenet_binary_weights(state, f"{p}.binary_pw.weights", planes, inplanes, 1)
            out2 = batch_norm(hard_binary_conv(out2, w, 1, 0), state, f"{p}.bn2") + out1
        else:
            halves = []
            for part in (1, 2):
                w = _mobilenet_binary_weights(
                    state, f"{p}.binary_pw_down{part}.weights", inplanes, inplanes, 1
                )
                half = batch_norm(hard_binary_conv(out2, w, 1, 0), state, f"{p}.bn2_{part}")
                halves.append(half + out1)
            out2 = np.concatenate(halves, axis=1)
        out2 = learnable_bias(out2, state, f"{p}.move22")
        out2 = prelu(out2, state, f"{p}.prelu2")
        x = learnable_bias(out2, state, f"{p}.move23")
    x = x.mean(axis=(2, 3))
    return x @ state["fc.weight"].T + state["fc.bias"]


# ----------------------------------------------------------------------------- random weights


def _bn(rng, state, prefix, channels):
    state[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, channels)
    state[f"{prefix}.bias"] = rng.normal(0.0, 0.2, channels)
    state[f"{prefix}.running_mean"] = rng.normal(0.0, 0.5, channels)
    state[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, channels)
    state[f"{prefix}.num_batches_tracked"] = np.array(1000, np.int64)


def _bias(rng, state, prefix, channels):
    state[f"{prefix}.bias"] = rng.normal(0.0, 0.1, (1, channels, 1, 1))


def _binary_conv_scale(in_c, k):
    """Keeps a BN input of +-1 activations at order 1 for the random BN statistics."""
    return 1.0 / np.sqrt(in_c * k * k)


def random_state(model: str, *, num_classes: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """A float32 state dict of `model` ("ReActNet18" or "ReActNetA") with random values.

    Weights are normal, BatchNorm statistics random (running_var in [0.5, 2]), LearnableBias
    N(0, 0.1), PReLU slopes in [0.05, 0.45]; every key and shape as the official modules have
    them (plus `num_batches_tracked`), in their registration order.
    """
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    if model == "ReActNet18":
        state["conv1.weight"] = rng.normal(0, 0.1, (64, 3, 7, 7))
        _bn(rng, state, "bn1", 64)
        inplanes = 64
        for stage, planes in enumerate(RESNET_WIDTHS, start=1):
            for block in range(RESNET_BLOCKS):
                p = f"layer{stage}.{block}"
                _bias(rng, state, f"{p}.move0", inplanes)
                state[f"{p}.binary_conv.weight"] = rng.normal(
                    0, _binary_conv_scale(inplanes, 3), (planes, inplanes, 3, 3)
                )
                _bn(rng, state, f"{p}.bn1", planes)
                _bias(rng, state, f"{p}.move1", planes)
                state[f"{p}.prelu.weight"] = rng.uniform(0.05, 0.45, planes)
                _bias(rng, state, f"{p}.move2", planes)
                if block == 0 and inplanes != planes:
                    state[f"{p}.downsample.1.weight"] = rng.normal(
                        0, 1 / np.sqrt(inplanes), (planes, inplanes, 1, 1)
                    )
                    _bn(rng, state, f"{p}.downsample.2", planes)
                inplanes = planes
        state["fc.weight"] = rng.normal(0, 0.05, (num_classes, 512))
        state["fc.bias"] = rng.normal(0, 0.1, num_classes)
    elif model == "ReActNetA":
        widths = MOBILENET_WIDTHS
        state["feature.0.conv1.weight"] = rng.normal(0, 0.2, (widths[0], 3, 3, 3))
        _bn(rng, state, "feature.0.bn1", widths[0])
        for i in range(1, len(widths)):
            p = f"feature.{i}"
            inplanes, planes = widths[i - 1], widths[i]
            _bias(rng, state, f"{p}.move11", inplanes)
            state[f"{p}.binary_3x3.weights"] = rng.normal(
                0, _binary_conv_scale(inplanes, 3), (inplanes * inplanes * 9, 1)
            )
            _bn(rng, state, f"{p}.bn1", inplanes)
            _bias(rng, state, f"{p}.move12", inplanes)
            state[f"{p}.prelu1.weight"] = rng.uniform(0.05, 0.45, inplanes)
            _bias(rng, state, f"{p}.move13", inplanes)
            _bias(rng, state, f"{p}.move21", inplanes)
            scale = _binary_conv_scale(inplanes, 1)
            if inplanes == planes:
                state[f"{p}.binary_pw.weights"] = rng.normal(0, scale, (planes * inplanes, 1))
                _bn(rng, state, f"{p}.bn2", planes)
            else:
                for part in (1, 2):
                    state[f"{p}.binary_pw_down{part}.weights"] = rng.normal(
                        0, scale, (inplanes * inplanes, 1)
                    )
                _bn(rng, state, f"{p}.bn2_1", inplanes)
                _bn(rng, state, f"{p}.bn2_2", inplanes)
            _bias(rng, state, f"{p}.move22", planes)
            state[f"{p}.prelu2.weight"] = rng.uniform(0.05, 0.45, planes)
            _bias(rng, state, f"{p}.move23", planes)
        state["fc.weight"] = rng.normal(0, 0.05, (num_classes, widths[-1]))
        state["fc.bias"] = rng.normal(0, 0.1, num_classes)
    else:
        raise ValueError(f"Expected model 'ReActNet18' or 'ReActNetA', but got {model!r}.")
    return {k: v if v.dtype == np.int64 else np.asarray(v, np.float32) for k, v in state.items()}


FORWARDS = {"ReActNet18": reactnet18_forward, "ReActNetA": reactnet_a_forward}
