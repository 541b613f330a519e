"""Import ReActNet's published PyTorch checkpoints as the zoo's ImageNet weights.

ReActNet's official repository (https://github.com/liuzechun/ReActNet, table "Models" of
its README) links trained checkpoints of ReActNet-18 ("ReActNet (Bi-Real based)", 65.9%
ImageNet top-1 in the README) and ReActNet-A (69.5% in the README, 69.4% in the paper);
docs/weights.md says which figures are ReActNet's and which were measured here. The zoo's
`ReActNet18` and `ReActNetA` have the same structure, and a fresh DySign / DyPReLU equals
RSign / RPReLU exactly (the hyper function's second FC starts at zero), so one checkpoint
gives ImageNet weights to two zoo models each:

| checkpoint  | zoo models                  |
| ----------- | --------------------------- |
| ReActNet-18 | `ReActNet18`, `DyResNet18`  |
| ReActNet-A  | `ReActNetA`, `DyMobileNet`  |

The Dy models get the very same tensors, hyper functions at their initial values: they
compute exactly ReActNet, and are the starting point for fine-tuning the dynamic thresholds
(no DySign ImageNet accuracy comes with them).

Tensor mapping (official name -> Keras layer.weight), every one shape-checked:

- `conv1.weight` (OIHW) -> `stem_conv.kernel` (HWIO, rotated by 180 degrees: the stem
  works on a reversed image, see `pytorch_padding`); `fc.weight` (out, in) ->
  `logits.kernel` (in, out), `fc.bias` -> `logits.bias`;
- BatchNorm `weight`, `bias`, `running_mean`, `running_var` -> `gamma`, `beta`,
  `moving_mean`, `moving_variance` (eps 1e-5 on both sides); `num_batches_tracked` (a
  counter) is dropped;
- the LearnableBias before a sign (`move0`, `move11`, `move21`), which *adds* its bias ->
  `RSign.threshold = -bias` (RSign subtracts);
- LearnableBias, PReLU, LearnableBias after a residual sum (`move1`, `prelu`, `move2`) ->
  `RPReLU.shift_in = -bias`, `slope = prelu.weight`, `shift_out = +bias`;
- HardBinaryConv `binary_conv.weight` (OIHW) or ReActNet-A's `binary_3x3.weights`,
  `binary_pw*.weights` (flat `(O*I*k*k, 1)`) -> `QuantConv2D.kernel` (HWIO; rotated by 180
  degrees for a strided conv, see `pytorch_padding`);
- `downsample.1.weight`, `downsample.2.*` -> `*_shortcut_conv.kernel`, `*_shortcut_bn`.

HardBinaryConv binarizes its real weights with a per-output-channel scale `mean|W|`, which
is larq's `magnitude_aware_sign`: the real weights are copied and both sides binarize them
the same way. Two differences are left, both measure-zero for trained float weights:
`torch.sign(0) = 0` where larq's sign gives +1, for activations exactly at their threshold
and for weights exactly 0 (the importer counts the latter and reports them). The models are
built with `padding="pytorch"` (zero padding in the binary convs, PyTorch's symmetric
stride-2 padding; `larq_dysign.zoo.pytorch_padding`); the files record it, and the
constructors choose it by themselves when they load them (`padding=None`).

Example:
    ```python
    from larq_dysign import zoo
    zoo.import_reactnet("resnet18_step2.pth.tar", model="ReActNet18")   # once
    model = zoo.DyResNet18(weights="imagenet")                         # then, anywhere
    ```
    or on the command line: `larq-dysign import-reactnet CHECKPOINT --model ReActNet18`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from . import weights as weights_module
from .mobilenet import WIDTHS
from .registry import get_model_constructor
from .resnet import BLOCKS_PER_STAGE, STAGE_WIDTHS
from .torch_checkpoint import read_state_dict

OFFICIAL_REPOSITORY = "https://github.com/liuzechun/ReActNet"
#: Official network -> the Dy model that gets the same tensors.
DY_COUNTERPARTS = {"ReActNet18": "DyResNet18", "ReActNetA": "DyMobileNet"}
#: Zoo model -> the official network whose checkpoint it is imported from.
CHECKPOINT_SOURCES = {
    "ReActNet18": "ReActNet18",
    "DyResNet18": "ReActNet18",
    "ReActNetA": "ReActNetA",
    "DyMobileNet": "ReActNetA",
}
#: A tensor only each official network has.
SIGNATURE_KEYS = {"ReActNet18": "layer1.0.move0.bias", "ReActNetA": "feature.1.move11.bias"}
#: How the official README names each network.
OFFICIAL_NAMES = {"ReActNet18": "ReActNet-18 (Bi-Real based)", "ReActNetA": "ReActNet-A"}
#: Keras weights that have no PyTorch counterpart: the hyper functions, set to their
#: initial values (second FC zero) by `load_reactnet_state_dict`.
HYPER_WEIGHTS = ("hyper_kernel_1", "hyper_bias_1", "hyper_kernel_2", "hyper_bias_2")
#: Checkpoint entries without a Keras counterpart, dropped on purpose.
IGNORED_SUFFIXES = (".num_batches_tracked",)
IMPORT_INPUT_SHAPE = (224, 224, 3)


def import_command(model: str) -> str:
    """The command that converts the official checkpoint of `model`'s source network."""
    return f"larq-dysign import-reactnet CHECKPOINT --model {CHECKPOINT_SOURCES[model]}"


def missing_weights_hint(model: str) -> str:
    """For `weights="imagenet"` errors: where the checkpoint is and how to convert it."""
    source = CHECKPOINT_SOURCES[model]
    return (
        f"{model}'s ImageNet weights come from ReActNet's published {OFFICIAL_NAMES[source]} "
        f"PyTorch checkpoint, linked in the README of {OFFICIAL_REPOSITORY} (table Models: "
        f"{OFFICIAL_REPOSITORY}#models). Download it and convert it once with "
        f"`{import_command(model)}`."
    )


# ----------------------------------------------------------------------------- the mapping


@dataclasses.dataclass(frozen=True)
class TensorMapping:
    """One Keras weight and the checkpoint tensor it is made from.

    Attributes:
        layer: Keras layer name, e.g. "stage1_block1_sign".
        weight: the layer's attribute, e.g. "threshold".
        source: the checkpoint key, e.g. "layer1.0.move0.bias".
        convert: array from the checkpoint -> array for Keras (given the Keras layer).
    """

    layer: str
    weight: str
    source: str
    convert: Callable[[np.ndarray, tf.keras.layers.Layer], np.ndarray]


def _same(value, layer):
    return value


def _negated(value, layer):
    """LearnableBias adds its bias; RSign / RPReLU's shift_in subtract theirs."""
    return -value.reshape(-1)


def _flat(value, layer):
    return value.reshape(-1)


def _float_kernel(value, layer):
    if value.ndim != 4:
        return value  # the shape check reports it
    return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO


def _rotated_float_kernel(value, layer):
    """The stem conv of `padding="pytorch"` works on a reversed image (`pytorch_padding`)."""
    kernel = _float_kernel(value, layer)
    return kernel[::-1, ::-1] if kernel.ndim == 4 else kernel


def _binary_kernel(value, layer):
    """HardBinaryConv's weights -> HWIO; ReActNet-A stores them flat as `(O*I*k*k, 1)`."""
    height, width, channels, filters = layer.kernel.shape
    if value.size != height * width * channels * filters:
        return value  # the shape check reports it
    return np.transpose(value.reshape(filters, channels, height, width), (2, 3, 1, 0))


def _rotated_binary_kernel(value, layer):
    """A strided conv that `padding="pytorch"` runs on a reversed input (`pytorch_padding`)
    holds its kernel rotated by 180 degrees."""
    kernel = _binary_kernel(value, layer)
    return kernel[::-1, ::-1] if kernel.ndim == 4 else kernel


def _dense_kernel(value, layer):
    return value.T if value.ndim == 2 else value


def _batch_norm(layer: str, prefix: str) -> list[TensorMapping]:
    return [
        TensorMapping(layer, "gamma", f"{prefix}.weight", _same),
        TensorMapping(layer, "beta", f"{prefix}.bias", _same),
        TensorMapping(layer, "moving_mean", f"{prefix}.running_mean", _same),
        TensorMapping(layer, "moving_variance", f"{prefix}.running_var", _same),
    ]


def _sign(layer: str, move: str) -> list[TensorMapping]:
    return [TensorMapping(layer, "threshold", f"{move}.bias", _negated)]


def _prelu(layer: str, move_in: str, prelu: str, move_out: str) -> list[TensorMapping]:
    return [
        TensorMapping(layer, "shift_in", f"{move_in}.bias", _negated),
        TensorMapping(layer, "slope", f"{prelu}.weight", _same),
        TensorMapping(layer, "shift_out", f"{move_out}.bias", _flat),
    ]


def _binary_conv(layer: str, module: str, state, *, rotate: bool = False) -> TensorMapping:
    """ReActNet-18 names HardBinaryConv's tensor `weight`, ReActNet-A `weights`. `rotate`:
    the conv works on a reversed map (a downsampling block with `padding="pytorch"`)."""
    source = f"{module}.weights" if f"{module}.weights" in state else f"{module}.weight"
    return TensorMapping(
        layer, "kernel", source, _rotated_binary_kernel if rotate else _binary_kernel
    )


def _stem_conv(model: tf.keras.Model, source: str) -> TensorMapping:
    rotate = _has_layer(model, "stem_reverse")
    return TensorMapping(
        "stem_conv", "kernel", source, _rotated_float_kernel if rotate else _float_kernel
    )


def _head() -> list[TensorMapping]:
    return [
        TensorMapping("logits", "kernel", "fc.weight", _dense_kernel),
        TensorMapping("logits", "bias", "fc.bias", _same),
    ]


def resnet_mapping(model: tf.keras.Model, state) -> list[TensorMapping]:
    """ReActNet-18's (`resnet/2_step2/birealnet.py`) tensors for `ReActNet18` / `DyResNet18`."""
    mapping = [_stem_conv(model, "conv1.weight")]
    mapping += _batch_norm("stem_bn", "bn1")
    for stage in range(1, len(STAGE_WIDTHS) + 1):
        for block in range(1, BLOCKS_PER_STAGE + 1):
            name, module = f"stage{stage}_block{block}", f"layer{stage}.{block - 1}"
            mapping += _sign(f"{name}_sign", f"{module}.move0")
            reflected = _has_layer(model, f"{name}_reverse")
            mapping.append(
                _binary_conv(f"{name}_conv", f"{module}.binary_conv", state, rotate=reflected)
            )
            mapping += _batch_norm(f"{name}_bn", f"{module}.bn1")
            if _has_layer(model, f"{name}_shortcut_conv"):
                mapping.append(
                    TensorMapping(
                        f"{name}_shortcut_conv",
                        "kernel",
                        f"{module}.downsample.1.weight",
                        _float_kernel,
                    )
                )
                mapping += _batch_norm(f"{name}_shortcut_bn", f"{module}.downsample.2")
            mapping += _prelu(
                f"{name}_prelu", f"{module}.move1", f"{module}.prelu", f"{module}.move2"
            )
    if _has_layer(model, "logits"):
        mapping += _head()
    return mapping


def mobilenet_mapping(model: tf.keras.Model, state) -> list[TensorMapping]:
    """ReActNet-A's (`mobilenet/2_step2/reactnet.py`) tensors for `ReActNetA` / `DyMobileNet`."""
    mapping = [_stem_conv(model, "feature.0.conv1.weight")]
    mapping += _batch_norm("stem_bn", "feature.0.bn1")
    for index in range(1, len(WIDTHS)):
        name, module = f"block{index}", f"feature.{index}"
        mapping += _sign(f"{name}_sign_3x3", f"{module}.move11")
        reflected = _has_layer(model, f"{name}_reverse")
        mapping.append(
            _binary_conv(f"{name}_conv_3x3", f"{module}.binary_3x3", state, rotate=reflected)
        )
        mapping += _batch_norm(f"{name}_conv_3x3_bn", f"{module}.bn1")
        mapping += _prelu(
            f"{name}_prelu_3x3", f"{module}.move12", f"{module}.prelu1", f"{module}.move13"
        )
        mapping += _sign(f"{name}_sign_1x1", f"{module}.move21")
        if _has_layer(model, f"{name}_conv_1x1"):
            mapping.append(_binary_conv(f"{name}_conv_1x1", f"{module}.binary_pw", state))
            mapping += _batch_norm(f"{name}_conv_1x1_bn", f"{module}.bn2")
        else:
            for part, number in (("a", 1), ("b", 2)):
                conv = f"{name}_conv_1x1_{part}"
                mapping.append(_binary_conv(conv, f"{module}.binary_pw_down{number}", state))
                mapping += _batch_norm(f"{conv}_bn", f"{module}.bn2_{number}")
        mapping += _prelu(
            f"{name}_prelu_1x1", f"{module}.move22", f"{module}.prelu2", f"{module}.move23"
        )
    if _has_layer(model, "logits"):
        mapping += _head()
    return mapping


def _has_layer(model: tf.keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


_MAPPINGS = {
    "ReActNet18": resnet_mapping,
    "DyResNet18": resnet_mapping,
    "ReActNetA": mobilenet_mapping,
    "DyMobileNet": mobilenet_mapping,
}


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {shown}{more}"


def reactnet_assignments(
    model: tf.keras.Model, state: dict[str, np.ndarray]
) -> list[tuple[tf.Variable, np.ndarray]]:
    """Pair every weight of a zoo ReActNet / Dy model with its converted checkpoint tensor.

    Details:
        Nothing is assigned here. Every problem is collected first and reported in one
        error: checkpoint tensors the model needs but the file lacks, tensors whose shape
        does not fit, checkpoint entries nothing uses (besides BatchNorm's
        `num_batches_tracked`), and model weights nothing fills (besides the hyper
        functions of DySign / DyPReLU).

    Args:
        model: a `ReActNet18`, `DyResNet18`, `ReActNetA` or `DyMobileNet` (its name says
            which), built with `padding="pytorch"` for exact ReActNet outputs.
        state: the official state dict (`torch_checkpoint.read_state_dict`), keys without
            the `module.` prefix.

    Returns:
        `[(variable, value)]` for `tf.keras.backend.batch_set_value`.

    Raises:
        ValueError: an unsupported model; or every missing, misshapen, unused or unfilled
            tensor, by name.
    """
    if model.name not in _MAPPINGS:
        raise ValueError(
            f"Expected a ReActNet18, DyResNet18, ReActNetA or DyMobileNet model, but got "
            f"{model.name!r}."
        )
    layers = {layer.name: layer for layer in model.layers}
    missing, misshapen, assignments, filled = [], [], [], set()
    for item in _MAPPINGS[model.name](model, state):
        layer = layers.get(item.layer)
        variable = getattr(layer, item.weight, None) if layer is not None else None
        if variable is None:
            raise ValueError(f"{model.name} has no weight {item.layer}.{item.weight} (a bug).")
        target = f"{item.layer}.{item.weight}"
        if item.source not in state:
            missing.append(f"{item.source} (for {target})")
            continue
        value = np.asarray(item.convert(np.asarray(state[item.source]), layer))
        if tuple(value.shape) != tuple(variable.shape):
            misshapen.append(
                f"{item.source} {tuple(state[item.source].shape)} does not fit {target} "
                f"{tuple(variable.shape)}"
            )
            continue
        assignments.append((variable, value.astype(variable.dtype.as_numpy_dtype)))
        filled.add(id(variable))
    used = {item.source for item in _MAPPINGS[model.name](model, state)}
    unused = [k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES)]
    unfilled = [
        v.name
        for v in model.weights
        if id(v) not in filled and v.name.split("/")[-1].split(":")[0] not in HYPER_WEIGHTS
    ]
    problems = []
    if missing:
        problems.append(_listing("missing in the checkpoint", missing))
    if misshapen:
        problems.append(_listing("shapes that do not fit", misshapen))
    if unused:
        problems.append(_listing("checkpoint tensors with no place in the model", unused))
    if unfilled:
        problems.append(_listing("model weights with no checkpoint tensor", unfilled))
    if problems:
        raise ValueError(
            f"The checkpoint does not fit {model.name} (an official "
            f"{OFFICIAL_NAMES[CHECKPOINT_SOURCES[model.name]]} checkpoint expected, 1000 "
            "classes for ImageNet): " + "; ".join(problems) + "."
        )
    return assignments


def _hyper_initial_values(model: tf.keras.Model) -> list[tuple[tf.Variable, np.ndarray]]:
    """DySign / DyPReLU hyper functions at their initial values, reproducibly: first FC
    from its he_normal initializer with a fixed seed per layer, the rest zero (second FC
    zero: the layer computes exactly its static RSign / RPReLU part)."""
    values = []
    for index, layer in enumerate(model.layers):
        kernel = getattr(layer, "hyper_kernel_1", None)
        if kernel is None:
            continue
        initial = tf.keras.initializers.HeNormal(seed=index)(kernel.shape)
        values.append((kernel, np.asarray(initial)))
        for name in HYPER_WEIGHTS[1:]:
            variable = getattr(layer, name)
            values.append((variable, np.zeros(variable.shape, variable.dtype.as_numpy_dtype)))
    return values


def load_reactnet_state_dict(model: tf.keras.Model, state: dict[str, np.ndarray]) -> None:
    """Load an official ReActNet state dict into a zoo model, in place, all or nothing.

    Details:
        `reactnet_assignments` checks and converts every tensor first; then the weights are
        set, and a Dy model's hyper functions are reset to their initial values (second FC
        zero), so the model computes exactly the checkpoint's ReActNet.

    Example:
        ```python
        state = torch_checkpoint.read_state_dict("checkpoint.pth.tar")
        model = zoo.ReActNet18(padding="pytorch", stem="imagenet")
        load_reactnet_state_dict(model, state)
        ```

    Raises:
        ValueError: see `reactnet_assignments`.
    """
    assignments = reactnet_assignments(model, state) + _hyper_initial_values(model)
    tf.keras.backend.batch_set_value(assignments)


def _count_zero_binary_weights(state) -> tuple[int, int]:
    """Exact zeros among HardBinaryConv weights (modules named `binary_*` officially)."""
    binary = [value for key, value in state.items() if ".binary_" in key]
    return sum(int(np.count_nonzero(v == 0)) for v in binary), sum(v.size for v in binary)


def import_reactnet(
    checkpoint: str | os.PathLike,
    *,
    model: str = "ReActNet18",
    cache_dir: str | os.PathLike | None = None,
) -> list[weights_module.PublishedWeights]:
    """Convert an official ReActNet PyTorch checkpoint into the zoo's ImageNet weights.

    Details:
        Reads the checkpoint without torch (`torch_checkpoint.read_state_dict`: zip or
        legacy format, state dict at the top or under "state_dict", `module.` prefixes
        removed), builds `model` and its Dy counterpart at 224x224x3 with 1000 classes,
        the ImageNet stem and `padding="pytorch"`, loads the tensors into both (every
        tensor mapped by name and shape-checked, see `reactnet_assignments`; nothing is
        written unless both fit), and writes each model's registry file
        (`weights_file_name(name, "imagenet")`) into the weights cache, atomically. Prints
        each file's path and sha256. Afterwards `zoo.<Model>(weights="imagenet")` loads them
        by the ordinary registry path, in the PyTorch-compatible padding.

    Example:
        ```python
        from larq_dysign import zoo
        written = zoo.import_reactnet("reactnet_a.pth.tar", model="ReActNetA")
        model = zoo.DyMobileNet(weights="imagenet")
        ```

    Args:
        checkpoint: the `.pth.tar` file linked in ReActNet's README.
        model: the official network, "ReActNet18" (ReActNet-18, also gives DyResNet18) or
            "ReActNetA" (also gives DyMobileNet).
        cache_dir: where to write; default the weights cache (`$LARQ_DYSIGN_CACHE_DIR`,
            else `~/.keras/larq_dysign`).

    Returns:
        The two `PublishedWeights` (path and registry entry with sha256), the official
        model's first.

    Raises:
        ValueError: `model` is not "ReActNet18" or "ReActNetA"; the file is not a readable
            PyTorch checkpoint (`TorchCheckpointError`); or its tensors do not fit (every
            missing, misshapen or left-over tensor named).
        FileNotFoundError: no such checkpoint file.
    """
    if model not in DY_COUNTERPARTS:
        raise ValueError(
            f"Expected model to be one of {tuple(DY_COUNTERPARTS)}, but got {model!r}."
        )
    checkpoint = os.fspath(checkpoint)
    state = read_state_dict(checkpoint)
    for official, key in SIGNATURE_KEYS.items():
        if official != model and key in state and SIGNATURE_KEYS[model] not in state:
            raise ValueError(
                f"{checkpoint} holds {OFFICIAL_NAMES[official]} (it has {key!r}), not "
                f"{OFFICIAL_NAMES[model]}: pass model={official!r} (--model {official})."
            )
    source_sha256 = weights_module.sha256_of(checkpoint)
    models = []
    for name in (model, DY_COUNTERPARTS[model]):
        keras_model = get_model_constructor(name)(
            input_shape=IMPORT_INPUT_SHAPE,
            num_classes=weights_module.dataset_num_classes("imagenet"),
            stem="imagenet",
            padding="pytorch",
        )
        load_reactnet_state_dict(keras_model, state)
        models.append(keras_model)
    out_dir = os.fspath(cache_dir) if cache_dir is not None else weights_module.default_cache_dir()
    published = []
    for keras_model in models:
        item = weights_module.publish_weights(
            keras_model,
            out_dir,
            dataset="imagenet",
            attributes={  # the padding mark comes with the model's padding="pytorch"
                "larq_dysign_source": f"{OFFICIAL_NAMES[model]} {OFFICIAL_REPOSITORY}",
                "larq_dysign_source_sha256": source_sha256,
            },
        )
        print(f"wrote {item.path}  sha256 {item.entry.sha256}")
        published.append(item)
    zeros, total = _count_zero_binary_weights(state)
    if zeros:
        print(
            f"note: {zeros} of {total} binary weights are exactly 0: torch.sign gives 0 there, "
            "larq's sign +1, so outputs can differ slightly from PyTorch's."
        )
    return published
