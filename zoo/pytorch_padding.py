"""PyTorch-compatible padding for the zoo's ResNet and MobileNet (`padding="pytorch"`).

Networks trained in PyTorch (ReActNet's published checkpoints) pad differently from the
zoo's default, and a binary network notices every differing pixel:

- **Binary convs** pad their +-1 input with **zeros** in PyTorch; the zoo pads with +1
  (`pad_values=1.0`, LCE's "same-one", which runs on every LCE target and keeps padded
  activations binary). Here: `QuantConv2D(padding="same", pad_values=0.0)`, which LCE
  still converts to `LceBconv2d` (zero padding, ARM target).
- **Stride 2.** PyTorch pads `k // 2` on *both* sides; TF's "same" puts the odd pixel at the
  end (for an even size and a 3x3 kernel: 0 before, 1 after). A `ZeroPadding2D` between
  the sign and the binary conv would turn the conv into a float `CONV_2D` in LCE, so the
  strided binary convs use a reflection instead: reverse H and W, sign, "same" conv with
  the kernel rotated by 180 degrees, reverse back. Reversing the input swaps "1 after" into
  "1 before", which is PyTorch's padding, and the rotation undoes the reversal of the
  windows; the result is exact for even and odd sizes. LCE converts it to REVERSE_V2 +
  LceQuantize + LceBconv2d + REVERSE_V2. The sign layer sits after the first reverse (it
  is per channel, and DySign's channel means do not depend on pixel order), and the kernel
  is *stored rotated* in the Keras model: `import_reactnet` rotates it when it copies
  PyTorch weights, and training simply goes on with the rotated kernel.
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

See docs/design.md, Padding.
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

PADDINGS = ("lce", "pytorch")


@lq.utils.register_keras_custom_object
class SpatialReverse(tf.keras.layers.Layer):
    """Reverse the height and width axes of NHWC feature maps: `y[:, i, j] = x[:, -1-i, -1-j]`.

    Its own inverse. Used in pairs around a strided conv (and the max-pool after it) to give
    them PyTorch's symmetric padding (see this module's docstring); LCE converts it to
    `REVERSE_V2`.

    Example:
        ```python
        y = SpatialReverse()(tf.reshape(tf.range(4.0), (1, 2, 2, 1)))  # [[3, 2], [1, 0]]
        ```
    """

    def call(self, inputs):
        return tf.reverse(inputs, axis=[1, 2])

    def compute_output_shape(self, input_shape):
        return input_shape
