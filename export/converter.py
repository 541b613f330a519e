"""Keras model -> LCE TFLite flatbuffer, refusing silently float "binary" layers.

The conversion is LCE's `convert_keras_model` (a SavedModel of the model's serving function,
then `convert_saved_model`), with the SavedModel written by `save_traces=False` and the
serving signature LCE itself traces: the converter reads only that signature, and skipping
the per-layer traces makes export about 3x faster on the zoo's models (DyResNet18: 15 s
instead of 46 s here) with byte-identical output. If that path fails (e.g. a custom layer
without `get_config`), `larq_compute_engine.convert_keras_model` itself is called.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings

import larq_compute_engine as lce
import tensorflow as tf
from larq_compute_engine.mlir.python import converter as lce_converter
from tqdm.auto import tqdm

from .coverage import BinaryLayer, binary_layers, check_coverage

TARGETS = ("arm", "xcore")
INFERENCE_TYPES = (tf.float32, tf.int8)


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
        if not isinstance(path, str | os.PathLike):
            raise ValueError(
                f"Expected path to be None or a file path, but got {type(path).__name__}."
            )
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"Expected path to be a file path, but {path!r} is a directory.")
        if not os.path.isdir(directory):
            raise ValueError(
                f"Expected path to be in an existing directory, but {directory!r} does not exist."
            )


def _problem_message(problems: list[tuple[str, str]], total: int, strict: bool) -> str:
    lines = [
        f"{len(problems)} of {total} binary layers would not run as binary kernels "
        "(LceBconv2d) with LCE, but as float32:"
    ]
    lines += [f"  - {name}: {reason}" for name, reason in problems]
    if strict:
        lines.append("Fix these layers, or pass strict=False to export them in float32.")
    return "\n".join(lines)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory + `os.replace`:
    readers see the old file or the whole new one, and a failure leaves no partial file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a regular file respects umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _convert(model, *, target, inference_input_type, inference_output_type, verbose) -> bytes:
    options = {
        "target": target,
        "inference_input_type": inference_input_type,
        "inference_output_type": inference_output_type,
    }
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
            bar.update()
            bar.set_postfix_str(steps[1])
            with tempfile.TemporaryDirectory(prefix="larq_dysign_export_") as saved_model:
                model.save(saved_model, save_format="tf", save_traces=False, signatures=function)
                bar.update()
                bar.set_postfix_str(steps[2])
                flatbuffer = lce.convert_saved_model(saved_model, **options)
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
    `binary_layers`) must become an `LceBconv2d`. Layers LCE is known not to binarize
    (QuantDense, LCE issue #669; QuantDepthwiseConv2D; DoReFa and other non-sign
    quantizers) are reported before converting; after converting, each binary layer is
    matched by name to an `LceBconv2d` (`check_coverage`). With `strict=True` any layer left
    in float raises; with `strict=False` it is a warning. `path` is written only after all
    checks passed, atomically (temporary file in the same directory, then `os.replace`): a
    failed export leaves neither the file nor a temporary one.

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
        path: where to write the .tflite file; None only returns the bytes.
        target: "arm" (Raspberry Pi, phones) or "xcore".
        inference_input_type: tf.float32 or tf.int8 (int8 needs a quantized model).
        inference_output_type: tf.float32 or tf.int8.
        strict: raise if a binary layer would run in float32 (False: warn).
        verbose: show conversion progress on stderr.

    Returns:
        The flatbuffer's bytes.

    Raises:
        ValueError: a bad argument (named, with the value and what is allowed), or, with
            `strict=True`, binary layers that do not become `LceBconv2d` (listed by name with
            the reason).

    References:
        - LCE converter: https://docs.larq.dev/compute-engine/api/converter/
        - No binary dense kernel: https://github.com/larq/compute-engine/issues/669
    """
    _check_arguments(model, path, target, inference_input_type, inference_output_type, strict)
    layers: list[BinaryLayer] = binary_layers(model)
    known = [(layer.name, layer.known_problem) for layer in layers if layer.known_problem]
    if known and strict:
        raise ValueError(_problem_message(known, len(layers), strict=True))

    flatbuffer = _convert(
        model,
        target=target,
        inference_input_type=inference_input_type,
        inference_output_type=inference_output_type,
        verbose=verbose,
    )
    coverage = check_coverage(model, flatbuffer)
    if coverage.not_converted:
        message = _problem_message(list(coverage.not_converted), len(layers), strict=strict)
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    if path is not None:
        write_atomically(path, flatbuffer)
    return flatbuffer
