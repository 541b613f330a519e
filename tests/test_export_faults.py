"""Faults the exporter survives: corrupt model files, killed exports, models and inputs it
cannot honour. docs/reliability.md ("Export and model files") lists each with its test."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils
from test_export import tiny_model

from larq_dysign.export import benchmark, inspect_tflite, to_tflite, verify

TESTS = os.path.dirname(os.path.abspath(__file__))


def _env(**extra) -> dict:
    path = os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny binary model (conv, LceQuantize + LceBconv2d, mean, dense), converted once."""
    tf.keras.utils.set_random_seed(0)
    model = tiny_model()
    path = tmp_path_factory.mktemp("tiny") / "tiny.tflite"
    return model, to_tflite(model, path, verbose=False), path


# --- truncated and corrupted files ----------------------------------------------------------

# Every cut point of the first 64 bytes and every 29th after, and random corruptions (1-3
# flipped bits anywhere; a block of 1-64 random bytes), each given to inspect_tflite,
# benchmark and verify, in a subprocess: a crash of LCE's interpreter shows as a negative
# return code instead of killing pytest. The address space is capped so that a corruption
# that makes a tensor huge fails there instead of exhausting the machine.
CORRUPTION_SCRIPT = """
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
import numpy as np
import larq_dysign
from larq_dysign.export import benchmark, inspect_tflite, verify
from test_export import tiny_model

path, work = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
model = tiny_model()
x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
rng = np.random.default_rng(13)
cases = [("truncated", data[:n]) for n in sorted({*range(64), *range(64, len(data), 29)})]
for _ in range(300):
    d = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        d[rng.integers(len(d))] ^= 1 << int(rng.integers(8))
    cases.append(("bit flips", bytes(d)))
for _ in range(100):
    d, n = bytearray(data), int(rng.integers(1, 65))
    start = int(rng.integers(len(d) - n))
    d[start : start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    cases.append(("garbage", bytes(d)))

calls = {
    "inspect_tflite": inspect_tflite,
    "benchmark": lambda f: benchmark(f, runs=1, warmup=0),
    "verify": lambda f: verify(model, f, x),
}
outcomes = []  # per file: kind, size, {function: "ran" | "named" | other}
for i, (kind, corrupt) in enumerate(cases):
    target = os.path.join(work, f"case{i}.tflite")
    with open(target, "wb") as f:
        f.write(corrupt)
    results = {}
    for name, call in calls.items():
        try:
            call(target)
            results[name] = "ran"
        except ValueError as error:  # "named": the file was refused, by its name
            named = repr(target) in str(error)
            results[name] = "named" if named else f"ValueError: {error}"
        except Exception as error:
            results[name] = f"{type(error).__name__}: {error}"
    outcomes.append((kind, len(corrupt), results))
    os.remove(target)
print(json.dumps(outcomes))
"""


@pytest.fixture(scope="module")
def corruption_outcomes(tiny, tmp_path_factory):
    _, flatbuffer, path = tiny
    work = tmp_path_factory.mktemp("corrupt")
    result = subprocess.run(
        [sys.executable, "-c", CORRUPTION_SCRIPT, str(path), str(work)],
        capture_output=True,
        text=True,
        errors="replace",  # LCE logs tensor names from damaged files to stderr
        env=_env(),
        timeout=900,
    )
    assert result.returncode == 0, (  # < 0: killed by a signal (a segfault is -11)
        f"return code {result.returncode}\n{result.stderr[-3000:]}"
    )
    return len(flatbuffer), json.loads(result.stdout.splitlines()[-1])


def test_truncated_files_raise_a_value_error_naming_the_file(corruption_outcomes):
    size, outcomes = corruption_outcomes
    truncated = [(n, r) for kind, n, r in outcomes if kind == "truncated"]
    assert [n for n, _ in truncated] == sorted({*range(64), *range(64, size, 29)})  # 319
    # refused by inspect_tflite, benchmark and verify alike, naming the file
    assert [(n, r) for n, r in truncated if set(r.values()) != {"named"}] == []


def test_corrupted_files_raise_a_value_error_or_run_never_crash(corruption_outcomes):
    """A corruption breaks the file, which all three functions refuse by name, or leaves a
    valid one (flipped bits in a weight or a name; a changed shape) that runs, or that LCE's
    interpreter refuses (an unknown operator name) or verify refuses (inputs of another
    shape), with a ValueError: never anything else, never a crash (the fixture's return
    code)."""
    _, outcomes = corruption_outcomes
    corrupted = [r for kind, _, r in outcomes if kind != "truncated"]
    assert len(corrupted) == 400
    refused = [r for r in corrupted if r["inspect_tflite"] != "ran"]
    assert [r for r in refused if set(r.values()) != {"named"}] == []
    accepted = [r for r in corrupted if r["inspect_tflite"] == "ran"]
    odd = [
        r
        for r in accepted
        for v in r.values()
        if v not in ("ran", "named") and not v.startswith("ValueError: Expected inputs of shape")
    ]
    assert odd == []
    ran = [r for r in accepted if set(r.values()) == {"ran"}]
    assert len(refused) >= 50 and len(ran) >= 50  # both kinds were exercised


def test_the_reported_repro_head_c_100(tiny, tmp_path):
    """issue #13: `head -c 100 ok.tflite > t.tflite; larq-dysign benchmark t.tflite` was a
    segfault; verify took a notebook kernel down; inspect_tflite raised struct.error."""
    model, flatbuffer, _ = tiny
    path = tmp_path / "t.tflite"
    path.write_bytes(flatbuffer[:100])
    message = (
        f"{str(path)!r} is not a valid TFLite flatbuffer (100 bytes, truncated or corrupted?)"
    )
    for call in (
        lambda: benchmark(path),
        lambda: verify(model, path, np.zeros((1, 8, 8, 3), np.float32)),
        lambda: inspect_tflite(path),
    ):
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value).startswith(message)


def _with_edited_model(flatbuffer: bytes, edit) -> bytes:
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    edit(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _first(model, name: str):
    """The first operator called `name` (a builtin name or an LCE custom code)."""
    names = [
        code.customCode.decode() if code.customCode else flatbuffer_utils.opcode_to_name(model, i)
        for i, code in enumerate(model.operatorCodes)
    ]
    return next(op for op in model.subgraphs[0].operators if names[op.opcodeIndex] == name)


@pytest.mark.parametrize(
    "edit, message",
    [
        # found by fuzzing: each of these, well-formed as a flatbuffer, crashed LCE's interpreter
        (
            lambda m: setattr(_first(m, "LceBconv2d"), "outputs", np.zeros(0, np.int32)),
            "operator 2 (LceBconv2d): expected 5 input(s) and 1 output, got (",
        ),
        (
            lambda m: setattr(_first(m, "CONV_2D").builtinOptions, "strideH", 0),
            "operator 0 (CONV_2D): expected strides, dilations and window sizes >= 1, got "
            "strideH=0",
        ),
        (
            lambda m: setattr(_first(m, "CONV_2D"), "builtinOptions", None),
            "operator 0 (CONV_2D): expected Conv2DOptionsT options, got NoneType",
        ),
        (
            lambda m: setattr(_first(m, "MEAN"), "outputs", _first(m, "CONV_2D").outputs),
            "writes tensor",  # a second writer: the real output is never computed
        ),
    ],
)
def test_well_formed_files_that_would_crash_lce_are_refused(tiny, edit, message):
    _, flatbuffer, _ = tiny
    broken = _with_edited_model(flatbuffer, edit)
    with pytest.raises(ValueError, match="the given bytes is not a valid TFLite") as error:
        benchmark(broken, runs=1, warmup=0)
    assert message in str(error.value)
