"""Running a converted file with LCE's interpreter: parity with Keras, and host latency.

The interpreter in the `larq-compute-engine` wheel
(`larq_compute_engine.tflite.python.interpreter.Interpreter`) runs LCE's custom ops with
their portable kernels on the host (x86-64 here). Its outputs prove the conversion correct;
its latency shows relative costs (DySign vs RSign, 1 vs 2 threads), not ARM speed: LCE's
optimized kernels are aarch64 code (see docs/raspberry-pi.md to measure on a Pi).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

from . import flatbuffer as fbs

#: Relative tolerance (of the largest |output|) under which a sample counts as reproduced.
CLOSE_RTOL = 1e-3


def kernels_note(machine: str) -> str:
    """What a host latency measures, for labels: x86 hosts run LCE's portable kernels."""
    if machine.lower() in ("aarch64", "arm64"):
        return (
            f"LCE interpreter on this {machine} host, not a Raspberry Pi: measure on the "
            "device with lce_benchmark_model"
        )
    return (
        f"LCE interpreter on the {machine} host: portable reference kernels (x86), not ARM "
        "speed; measure on the device with lce_benchmark_model"
    )


@dataclasses.dataclass(frozen=True)
class Parity:
    """How closely the converted file reproduces the Keras model on the same inputs.

    Attributes:
        max_abs_diff: largest |tflite - keras| over all outputs and samples.
        mean_abs_diff: mean |tflite - keras|.
        argmax_agreement: share of samples whose argmax over the last axis agrees.
        close_fraction: share of samples whose every output is within
            `CLOSE_RTOL * output_scale` of Keras: samples no sign flip changed.
        output_scale: largest |keras output|, to read the differences against.
        samples: number of inputs compared.
        keras_non_finite, tflite_non_finite: samples whose Keras / LCE outputs hold NaN,
            infinity or +-3.4e38 (float32's largest value, where TFLite's kernels clamp NaN).
            Such a sample counts as neither close nor agreeing, and is left out of the
            differences (NaN when no sample is finite on both sides).
    """

    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    close_fraction: float
    output_scale: float
    samples: int
    keras_non_finite: int = 0
    tflite_non_finite: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        text = (
            f"Keras vs LCE interpreter on {self.samples} inputs: max |diff| "
            f"{self.max_abs_diff:.3g}, mean |diff| {self.mean_abs_diff:.3g} (outputs up to "
            f"{self.output_scale:.3g}), {self.close_fraction:.1%} of samples within "
            f"{CLOSE_RTOL:g} x that, argmax agreement {self.argmax_agreement:.1%}"
        )
        if self.keras_non_finite or self.tflite_non_finite:
            text += (
                f"\nWARNING: non-finite outputs (NaN, infinity or +-3.4e38) for "
                f"{self.keras_non_finite} "
                f"sample(s) in Keras and {self.tflite_non_finite} in the LCE interpreter, "
                "counted as disagreeing"
            )
        return text


@dataclasses.dataclass(frozen=True)
class Latency:
    """Latency of one inference (batch 1) with LCE's interpreter on this host.

    Attributes:
        min_ms, median_ms, max_ms, mean_ms: over `runs` timed inferences.
        threads: interpreter threads.
        runs, warmup: timed and untimed inferences.
        machine: the host's architecture (`platform.machine()`).
        kernels: what these numbers measure (host reference kernels, not ARM speed).
    """

    min_ms: float
    median_ms: float
    max_ms: float
    mean_ms: float
    threads: int
    runs: int
    warmup: int
    machine: str
    kernels: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"latency, {self.threads} thread(s), {self.runs} runs after {self.warmup} warm-up: "
            f"min {self.min_ms:.2f} ms, median {self.median_ms:.2f} ms, max {self.max_ms:.2f} ms"
            f"\n  ({self.kernels})"
        )


def _interpreter(tflite: fbs.TFLiteModel, threads: int = 1) -> Interpreter:
    """LCE's interpreter for a checked file, whose inputs it can be fed; its refusal (e.g. an
    unknown custom operator) as a ValueError naming the file."""
    shapes = tflite.input_shapes()
    for shape in shapes:
        if (
            shape[:1] not in ((), (1,))
            or any(d < 1 for d in shape[1:])
            or math.prod(shape[1:]) >= 2**31
        ):
            raise ValueError(
                "Expected inputs of batch size 1 (LCE's interpreter runs one sample at a time) "
                "with positive dimensions and fewer than 2**31 values (TFLite's kernels count "
                f"them in 32-bit ints), but {tflite.source} has inputs of shape "
                f"{', '.join(map(str, shapes))}."
            )
    try:
        return Interpreter(tflite.data, num_threads=threads)
    except RuntimeError as error:
        raise ValueError(
            f"LCE's interpreter cannot run {tflite.source} (its reason is logged above): "
            + " ".join(str(error).split())
        ) from None


def _predict(interpreter: Interpreter, tflite: fbs.TFLiteModel, inputs):
    try:
        return interpreter.predict(inputs)
    except RuntimeError as error:
        raise ValueError(
            f"LCE's interpreter failed to run {tflite.source} (its reason is logged above): "
            + " ".join(str(error).split())
        ) from None


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}, but got {value!r}.")


def _outputs_list(outputs) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        return [np.asarray(v) for v in outputs.values()]
    if isinstance(outputs, list | tuple):
        return [np.asarray(v) for v in outputs]
    return [np.asarray(outputs)]


def verify(
    model: tf.keras.Model,
    flatbuffer: bytes | str | os.PathLike,
    inputs: np.ndarray,
    *,
    batch_size: int = 32,
) -> Parity:
    """Run Keras and LCE's interpreter on the same inputs and compare the outputs.

    Details: Keras runs in inference mode (`training=False`, BatchNorm moving statistics).
    Binarization turns a float rounding difference at a sign threshold into a flipped bit,
    whose effect can grow through the following binary layers: samples either match to
    float precision or differ visibly (the deeper the network, the more of the latter). A
    correct conversion reproduces most samples (`close_fraction`) and their classes; a
    broken one (wrong fold, wrong threshold) reproduces none. A sample whose outputs hold
    NaN or infinity on either side (diverged weights, a damaged file) is counted apart and
    never as agreeing.

    Example:
        ```python
        parity = verify(model, flatbuffer, x_test[:64])
        print(parity)  # max/mean |diff|, close_fraction, argmax agreement
        ```

    Args:
        model: the Keras model that was converted.
        flatbuffer: the converted file (bytes or a path), with float32 inputs and outputs.
        inputs: a float array `(N, *input_shape)` for a single-input model.
        batch_size: Keras batch size.

    Returns:
        A `Parity`.

    Raises:
        ValueError: inputs of the wrong shape or not finite (NaN, infinity), a file with
            int8 inputs/outputs, or data that is not a valid TFLite flatbuffer.
    """
    tflite = fbs.load(flatbuffer)
    file_inputs = tflite.inputs()
    if len(file_inputs) != 1:
        raise ValueError(f"verify supports single-input models; this file has {len(file_inputs)}.")
    types = [t.dtype for t in file_inputs + tflite.outputs()]
    if any(t != "FLOAT32" for t in types):
        raise ValueError(
            "verify compares float outputs: export with inference_input_type=tf.float32 and "
            f"inference_output_type=tf.float32 (this file has {', '.join(types)})."
        )
    inputs = np.asarray(inputs, dtype=np.float32)
    expected = tflite.input_shapes()[0][1:]
    if inputs.ndim != len(expected) + 1 or tuple(inputs.shape[1:]) != expected or not len(inputs):
        raise ValueError(
            f"Expected inputs of shape (N, {', '.join(map(str, expected))}) with N >= 1, but "
            f"got {inputs.shape}."
        )
    finite = np.isfinite(inputs)
    if not finite.all():
        raise ValueError(
            f"Expected inputs to be finite, but {finite.size - finite.sum()} of their "
            f"{finite.size} values are NaN or infinite (the first in sample "
            f"{int(np.argmin(finite.reshape(len(inputs), -1).all(axis=1)))})."
        )
    _check_int("batch_size", batch_size, 1)
    interpreter = _interpreter(tflite)

    # Direct calls, not `predict`: no tf.function to trace for each new model.
    batches = [
        _outputs_list(model(inputs[i : i + batch_size], training=False))
        for i in range(0, len(inputs), batch_size)
    ]
    keras_outputs = [np.concatenate(parts) for parts in zip(*batches)]
    tflite_outputs = _outputs_list(_predict(interpreter, tflite, inputs))
    if len(keras_outputs) != len(tflite_outputs):
        raise ValueError(
            f"The model has {len(keras_outputs)} outputs but the file {len(tflite_outputs)}: "
            "was it converted from this model?"
        )
    for k, t in zip(keras_outputs, tflite_outputs):
        if k.shape != t.shape:
            raise ValueError(
                f"Output shapes differ: Keras {k.shape}, TFLite {t.shape}: was the file "
                "converted from this model?"
            )

    keras_finite, tflite_finite = _finite_samples(keras_outputs), _finite_samples(tflite_outputs)
    both = keras_finite & tflite_finite  # only these samples are compared
    sample_max = np.zeros(len(inputs))
    agreements, diffs = [], []
    for k, t in zip(keras_outputs, tflite_outputs):
        with np.errstate(invalid="ignore"):  # inf - inf in samples left out below
            diff = np.abs(t.astype(np.float64) - k).reshape(len(k), -1)
        sample_max = np.maximum(sample_max, np.where(both, diff.max(axis=1), np.inf))
        diffs.append(diff[both].ravel())
        matches = (k.argmax(-1) == t.argmax(-1)).reshape(len(k), -1).mean(axis=1)
        agreements.append(np.mean(np.where(both, matches, 0.0)))
    diff = np.concatenate(diffs)
    scale = max(float(np.abs(k[both]).max(initial=0.0)) for k in keras_outputs)
    return Parity(
        max_abs_diff=float(diff.max()) if diff.size else float("nan"),
        mean_abs_diff=float(diff.mean()) if diff.size else float("nan"),
        argmax_agreement=float(np.mean(agreements)),
        close_fraction=float(np.mean(sample_max <= CLOSE_RTOL * scale)),
        output_scale=scale,
        samples=len(inputs),
        keras_non_finite=int(np.sum(~keras_finite)),
        tflite_non_finite=int(np.sum(~tflite_finite)),
    )


def _finite_samples(outputs: list[np.ndarray]) -> np.ndarray:
    """Per sample: True when all its output values are finite. TFLite's kernels clamp their
    outputs to +-float32 max, which turns NaN into +-3.4e38: those count as non-finite."""
    limit = np.finfo(np.float32).max
    return np.all([(np.abs(o.reshape(len(o), -1)) < limit).all(axis=1) for o in outputs], axis=0)


def _random_input(shape, dtype, rng) -> np.ndarray:
    shape = tuple(max(int(d), 1) for d in shape)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def benchmark(
    flatbuffer: bytes | str | os.PathLike,
    *,
    threads: int = 1,
    runs: int = 20,
    warmup: int = 3,
    seed: int = 0,
) -> Latency:
    """Time single inferences (batch 1) of a converted file with LCE's interpreter.

    Details: inputs are random (normal for float inputs); each run is one `predict` call
    on the interpreter built once with `num_threads=threads`. The numbers come from LCE's
    portable kernels on this host (x86-64 here): compare files and thread counts with
    them, never quote them as Raspberry Pi latency.

    Example:
        ```python
        print(benchmark("dyresnet18.tflite", threads=2, runs=10))
        ```

    Args:
        flatbuffer: the converted file, bytes or a path.
        threads: interpreter threads (>= 1).
        runs: timed inferences (>= 1).
        warmup: untimed inferences first (>= 0).
        seed: seed of the random inputs.

    Returns:
        A `Latency` in milliseconds.

    Raises:
        ValueError: a bad argument, or data that is not a valid TFLite flatbuffer (checked
            whole before LCE's interpreter reads it).
    """
    _check_int("threads", threads, 1)
    _check_int("runs", runs, 1)
    _check_int("warmup", warmup, 0)
    tflite = fbs.load(flatbuffer)
    interpreter = _interpreter(tflite, threads)
    rng = np.random.default_rng(seed)
    inputs = [
        _random_input(shape, dtype, rng)
        for shape, dtype in zip(interpreter.input_shapes, interpreter.input_types)
    ]
    batch = inputs[0] if len(inputs) == 1 else inputs  # predict: (1, ...) arrays, batch of one
    for _ in range(warmup):
        _predict(interpreter, tflite, batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        _predict(interpreter, tflite, batch)
        times.append((time.perf_counter() - start) * 1e3)
    machine = platform.machine() or "unknown"
    return Latency(
        min_ms=min(times),
        median_ms=statistics.median(times),
        max_ms=max(times),
        mean_ms=statistics.fmean(times),
        threads=threads,
        runs=runs,
        warmup=warmup,
        machine=machine,
        kernels=kernels_note(machine),
    )
