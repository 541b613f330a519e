"""Keras model -> LCE TFLite flatbuffer, refusing silently float "binary" layers.

The conversion is LCE's `convert_keras_model` (a SavedModel of the model's serving function,
then `convert_saved_model`), with the SavedModel written by `save_traces=False` and the
serving signature LCE itself traces: the converter reads only that signature, and skipping
the per-layer traces makes export about 3x faster on the zoo's models (DyResNet18: 15 s
instead of 46 s here) with byte-identical output. If that path fails (e.g. a custom layer
without `get_config`), `larq_compute_engine.convert_keras_model` itself is called.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import larq_compute_engine as lce
import tensorflow as tf
from larq_compute_engine.mlir.python import converter as lce_converter
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from ..files import check_output_path, write_atomically
from . import flatbuffer as fbs
from .coverage import BinaryLayer, binary_layers, check_coverage
from .files import export_directory, sigterm_unwinds

TARGETS = ("arm", "xcore")
INFERENCE_TYPES = (tf.float32, tf.int8)
#: TensorFlow ops that carry quantization ranges (LCE's `_contains_training_quant_op`):
#: without them LCE cannot make int8 inputs or outputs and silently keeps float32.
FAKE_QUANT_OPS = frozenset(
    {
        "FakeQuantWithMinMaxVars",
        "FakeQuantWithMinMaxVarsPerChannel",
        "FakeQuantWithMinMaxArgs",
        "FakeQuantWithMinMaxArgsPerChannel",
        "QuantizeAndDequantizeV2",
        "QuantizeAndDequantizeV3",
    }
)


def _check_arguments(model, path, target, inference_input_type, inference_output_type, strict):
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"Expected model to be a tf.keras.Model, but got {type(model).__name__}.")
    policy = getattr(model, "dtype_policy", None)
    if policy is not None and getattr(policy, "name", "float32") != "float32":
        raise ValueError(
            "Expected model to compute in float32 (LCE does not convert mixed precision), but "
            f"its dtype policy is {policy.name!r}; rebuild it under the 'float32' policy and "
            "copy the weights."
        )
    if target not in TARGETS:
        raise ValueError(f'Expected target to be "arm" or "xcore", but got {target!r}.')
    for name, value in (
        ("inference_input_type", inference_input_type),
        ("inference_output_type", inference_output_type),
    ):
        if value not in INFERENCE_TYPES:
            raise ValueError(f"Expected {name} to be tf.float32 or tf.int8, but got {value!r}.")
    if not isinstance(strict, bool):
        raise ValueError(f"Expected strict to be True or False, but got {strict!r}.")
    if path is not None:
        check_output_path(path)


def _problem_message(problems: list[tuple[str, str]], total: int, strict: bool) -> str:
    lines = [
        f"{len(problems)} of {total} binary layers would not run as binary kernels "
        "(LceBconv2d) with LCE, but as float32:"
    ]
    lines += [f"  - {name}: {reason}" for name, reason in problems]
    if strict:
        lines.append("Fix these layers, or pass strict=False to export them in float32.")
    return "\n".join(lines)


def _int8_arguments(inference_input_type, inference_output_type) -> list[str]:
    return [
        name
        for name, value in (
            ("inference_input_type", inference_input_type),
            ("inference_output_type", inference_output_type),
        )
        if value == tf.int8
    ]


class _MissingQuantization(ValueError):
    """int8 inputs or outputs asked of a model without quantization ranges."""


def _check_quantization(function, int8: list[str]) -> None:
    """Before converting: int8 inputs/outputs need fake-quantization ops in the traced graph."""
    if not int8:
        return
    graph = function.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops |= {node.op for f in graph.library.function for node in f.node_def}
    if not ops & FAKE_QUANT_OPS:
        raise _MissingQuantization(
            f"Expected a quantized model for {' and '.join(f'{n}=tf.int8' for n in int8)}, but "
            "this model has no quantization information (no fake-quantization op, e.g. "
            "tf.quantization.fake_quant_with_min_max_vars): LCE would silently keep float32 "
            "inputs and outputs. int8 needs a quantization-aware trained (fake-quantized) "
            "model; otherwise export with tf.float32."
        )


def _check_io_types(tflite: fbs.TFLiteModel, int8: list[str]) -> None:
    """After converting: the file's inputs and outputs have the types that were asked for."""
    for name, tensors, what in (
        ("inference_input_type", tflite.inputs(), "inputs"),
        ("inference_output_type", tflite.outputs(), "outputs"),
    ):
        types = sorted({t.dtype for t in tensors})
        if name in int8 and types != ["INT8"]:
            raise ValueError(
                f"Expected {name}=tf.int8 to give int8 {what}, but the converted file's {what} "
                f"are {', '.join(types)}: LCE makes {what} int8 only where the model's fake "
                f"quantization reaches them. Add fake quantization at the model's {what}, or "
                "export with tf.float32."
            )


def _convert(model, *, target, inference_input_type, inference_output_type, verbose) -> bytes:
    options = {
        "target": target,
        "inference_input_type": inference_input_type,
        "inference_output_type": inference_output_type,
    }
    int8 = _int8_arguments(inference_input_type, inference_output_type)
    steps = ("trace", "save", "LCE convert")
    start = time.perf_counter()
    with tqdm(
        total=len(steps),
        desc=f"Exporting {model.name} with LCE ({target})",
        unit="step",
        disable=not verbose,
        file=sys.stderr,
        bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]",
    ) as bar:
        try:
            bar.set_postfix_str(steps[0])
            function = lce_converter.concrete_function_from_keras_model(model)
            _check_quantization(function, int8)
            bar.update()
            bar.set_postfix_str(steps[1])
            with export_directory() as saved_model:
                model.save(saved_model, save_format="tf", save_traces=False, signatures=function)
                bar.update()
                bar.set_postfix_str(steps[2])
                flatbuffer = lce.convert_saved_model(saved_model, **options)
        except _MissingQuantization:
            raise
        except Exception as error:  # noqa: BLE001 (any failure: let LCE's own path try)
            warnings.warn(
                f"Fast SavedModel export failed ({type(error).__name__}: {error}); "
                "converting with larq_compute_engine.convert_keras_model.",
                stacklevel=3,
            )
            bar.set_postfix_str("convert_keras_model")
            flatbuffer = lce.convert_keras_model(model, **options)
        bar.n = len(steps)
        bar.set_postfix_str(f"done in {time.perf_counter() - start:.1f} s")
    return flatbuffer


def to_tflite(
    model: tf.keras.Model,
    path: str | os.PathLike | None = None,
    *,
    target: str = "arm",
    inference_input_type: tf.DType = tf.float32,
    inference_output_type: tf.DType = tf.float32,
    strict: bool = True,
    verbose: bool = True,
) -> bytes:
    """Convert a Keras model to an LCE TFLite flatbuffer, checking its binary layers.

    Details: every binary Keras layer (1-bit kernel quantizer and 1-bit input, see
    `binary_layers`) must become an `LceBconv2d`. A model without any binary layer, and
    layers LCE is known not to binarize (QuantDense, LCE issue #669; QuantDepthwiseConv2D;
    DoReFa and other non-sign quantizers), are reported before converting; after converting,
    each binary layer is matched by name to an `LceBconv2d` (`check_coverage`). With
    `strict=True` any of these raises; with `strict=False` it is a warning. int8 inputs or
    outputs need a fake-quantized model (checked before converting) and are checked in the
    file after. `path` is checked before converting and written only after all checks
    passed, atomically (temporary file in the same directory, then `os.replace`): a failed
    export leaves neither the file nor a temporary one. SIGTERM removes the temporary
    SavedModel before the process ends; directories left by killed exports are removed by
    the next one (`larq_dysign.export.files`).

    Example:
        ```python
        from larq_dysign import zoo
        from larq_dysign.export import inspect_tflite, to_tflite
        model = zoo.DyResNet18(input_shape=(28, 28, 1), num_classes=10)
        flatbuffer = to_tflite(model, "dyresnet18.tflite")
        print(inspect_tflite(flatbuffer, model=model))
        ```

    Args:
        model: the Keras model (float32 policy).
        path: where to write the .tflite file, in an existing writable directory; None
            only returns the bytes.
        target: "arm" (Raspberry Pi, phones) or "xcore".
        inference_input_type: tf.float32 or tf.int8 (int8 needs a fake-quantized model).
        inference_output_type: tf.float32 or tf.int8.
        strict: raise if a binary layer, or the whole model, would run in float32 (False:
            warn).
        verbose: show conversion progress on stderr.

    Returns:
        The flatbuffer's bytes.

    Raises:
        ValueError: a bad argument (named, with the value and what is allowed), int8
            asked of a model without quantization information, or, with `strict=True`, a
            model without binary layers or binary layers that do not become `LceBconv2d`
            (listed by name with the reason).
        InterruptedError: SIGTERM arrived and its previous handler did not end the process.

    References:
        - LCE converter: https://docs.larq.dev/compute-engine/api/converter/
        - No binary dense kernel: https://github.com/larq/compute-engine/issues/669
    """
    _check_arguments(model, path, target, inference_input_type, inference_output_type, strict)
    layers: list[BinaryLayer] = binary_layers(model)
    if not layers:
        message = (
            f"Model {model.name!r} has no binary layer (a larq layer with a 1-bit kernel "
            "quantizer and a 1-bit input), so its file would run entirely in float32. A zoo "
            "model built with binary_weights=False (step 1 of the two-step recipe) is one: "
            "rebuild it with binary_weights=True (the zoo's constructors take it) and load "
            "the weights"
        )
        if strict:
            raise ValueError(f"{message}, or pass strict=False to export it in float32.")
        warnings.warn(f"{message}.", stacklevel=2)
    known = [(layer.name, layer.known_problem) for layer in layers if layer.known_problem]
    if known and strict:
        raise ValueError(_problem_message(known, len(layers), strict=True))

    with sigterm_unwinds():  # SIGTERM removes the temporary SavedModel and output file
        flatbuffer = _convert(
            model,
            target=target,
            inference_input_type=inference_input_type,
            inference_output_type=inference_output_type,
            verbose=verbose,
        )
        tflite = fbs.load(flatbuffer)
        _check_io_types(tflite, _int8_arguments(inference_input_type, inference_output_type))
        coverage = check_coverage(model, tflite)
        if coverage.not_converted:
            message = _problem_message(list(coverage.not_converted), len(layers), strict=strict)
            if strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        if path is not None:
            write_atomically(path, flatbuffer)
    return flatbuffer
