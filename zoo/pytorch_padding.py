"""PyTorch-compatible padding for the zoo's ResNet and MobileNet (`padding="pytorch"`).

Networks trained in PyTorch (ReActNet's published checkpoints) pad differently from the
zoo's default, and a binary network notices every differing pixel:

- **Binary convs** pad their +-1 input with **zeros** in PyTorch; the zoo pads with +1
  (`pad_values=1.0`, LCE's "same-one", which runs on every LCE target and keeps padded
  activations binary). Here: `QuantConv2D(padding="same", pad_values=0.0)`, which LCE
  still converts to `LceBconv2d` (zero padding, ARM target).
- **Stride 2.** PyTorch pads `k // 2` on *both* sides; TF's "same" puts the odd pixel at the
  end (for an even size and a 3x3 kernel: 0 before, 1 after). A `ZeroPadding2D` between
  the sign and the binary conv would turn the conv into a float `CONV_2D` in LCE, so a
  downsampling block uses a reflection instead: reverse H and W, then sign, "same" conv
  with the kernel rotated by 180 degrees, BatchNorm, and the shortcut (2x2 average pool,
  1x1 conv, BN: they commute with the reversal for even sizes), add, reverse back.
  Reversing the input swaps "1 after" into "1 before", which is PyTorch's padding, and the
  rotation undoes the reversal of the windows: exact for even and odd sizes. LCE converts
  it to REVERSE_V2 + LceQuantize + LceBconv2d + ... + REVERSE_V2. The sign is per channel
  and DySign's channel means do not depend on pixel order, so it may sit after the reverse;
  reversing the shortcut too keeps the Keras layers in the default padding's order (weights
  files are matched by position). The kernel is *stored rotated* in the Keras model:
  `import_reactnet` rotates it when it copies PyTorch weights, and training simply goes on
  with the rotated kernel.
- **Stems.** The float stride-2 stem convs (and the ResNet's max-pool 3x3/2, which PyTorch
  pads with -inf, TF's "same" max-pool ignoring padded pixels alike) get the same
  reflection, once around conv + BatchNorm (+ max-pool): `stem_reverse` ... `stem_unreverse`,
  the stem kernel stored rotated too. An explicit `ZeroPadding2D(k // 2)` + "valid" conv is
  not an option: LCE's converter fuses a symmetric PAD into a "same" CONV_2D whenever the
  output size matches, and "same" then pads asymmetrically (measured: max |diff| 18 on a
  7x7/2 conv; LCE's `IsSamePadding1D` checks the split of the padding, not its total).

Stride-1 3x3 convs pad 1 on both sides in both frameworks, and 1x1 convs do not pad, so they
need nothing beyond the zero pad value. The 2x2 average pools of the shortcuts match for
the even sizes PyTorch's ReActNets accept (inputs in multiples of 32).

LCE 0.16 computes a zero-padded `LceBconv2d` wrongly on maps smaller than its kernel
(measured: 1x1 and 2x2 maps; exact from 3x3 on): export `padding="pytorch"` models from
inputs of at least 96x96 (`warn_small_maps` says so when a model is built smaller).

See docs/design.md, Padding.
"""

from __future__ import annotations

import warnings

import larq as lq
import tensorflow as tf

PADDINGS = ("lce", "pytorch")


@lq.utils.register_keras_custom_object
class SpatialReverse(tf.keras.layers.Layer):
    """Reverse the height and width axes of NHWC feature maps: `y[:, i, j] = x[:, -1-i, -1-j]`.

    Its own inverse. Used in pairs around a downsampling block or the stem to give their
    strided convs and max-pool PyTorch's symmetric padding (see this module's docstring);
    LCE converts it to `REVERSE_V2`.

    Example:
        ```python
        y = SpatialReverse()(tf.reshape(tf.range(4.0), (1, 2, 2, 1)))  # [[3, 2], [1, 0]]
        ```
    """

    def call(self, inputs):
        return tf.reverse(inputs, axis=[1, 2])

    def compute_output_shape(self, input_shape):
        return input_shape


def warn_small_maps(model: tf.keras.Model) -> None:
    """Warn when a zero-padded binary conv of `model` sees a map smaller than its kernel:
    Keras computes it right, LCE 0.16's LceBconv2d does not (measured: max |diff| 13-42 on
    1x1 and 2x2 maps with 3x3 kernels, exact from 3x3 maps on). For the ResNet and
    MobileNet that means inputs below 96x96."""
    small = [
        f"{layer.name} ({layer.input_shape[1]}x{layer.input_shape[2]})"
        for layer in model.layers
        if isinstance(layer, lq.layers.QuantConv2D)
        and layer.pad_values == 0
        and layer.padding == "same"
        and any(d is not None and d < k for d, k in zip(layer.input_shape[1:3], layer.kernel_size))
    ]
    if small:
        warnings.warn(
            f'{model.name} with padding="pytorch": zero-padded binary convs on maps smaller '
            f"than their kernel: {', '.join(small)}. Keras computes them right, but LCE 0.16's "
            "LceBconv2d does not; export from inputs of at least 96x96.",
            stacklevel=3,
        )
