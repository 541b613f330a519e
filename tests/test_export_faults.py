"""Faults the exporter survives: corrupt model files, killed exports, models and inputs it
cannot honour. docs/reliability.md ("Export and model files") lists each with its test."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils
from tinymodels import tiny_model

from larq_dysign import zoo
from larq_dysign.export import benchmark, inspect_tflite, to_tflite, verify
from larq_dysign.export.files import (
    EXPORT_DIRECTORY_PREFIX,
    STALE_AFTER_S,
    remove_stale_export_directories,
    sigterm_unwinds,
)

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
from tinymodels import tiny_model

path, work = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
model = tiny_model()
x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
rng = np.random.default_rng(13)
cases = [("truncated", data[:n]) for n in sorted({*range(64), *range(64, len(data), 97)})]
for _ in range(120):
    d = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        d[rng.integers(len(d))] ^= 1 << int(rng.integers(8))
    cases.append(("bit flips", bytes(d)))
for _ in range(40):
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
    assert [n for n, _ in truncated] == sorted({*range(64), *range(64, size, 97)})  # 142
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
    assert len(corrupted) == 160
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
    assert len(refused) >= 20 and len(ran) >= 20  # both kinds were exercised


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


# LCE's interpreter extension loaded alone (its package's __init__ would import TensorFlow).
RAW_LCE_SCRIPT = """
import glob, importlib.util, os, sys
import numpy as np
path, package = sys.argv[1:]
(extension,) = glob.glob(os.path.join(package, "tflite", "python", "interpreter_wrapper_lite*"))
spec = importlib.util.spec_from_file_location("interpreter_wrapper_lite", extension)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
interpreter = module.LiteInterpreter(open(path, "rb").read(), 1, False, False, False)
interpreter.predict([np.zeros((1, 8, 8, 3), np.float32)])
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        # the kinds of damage fuzzing found that pass TFLite's verifier and crash LCE
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
def test_well_formed_files_that_would_crash_lce_are_refused(tiny, edit, message, tmp_path):
    _, flatbuffer, _ = tiny
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(_with_edited_model(flatbuffer, edit))
    # LCE's interpreter alone, in a subprocess: the file kills it (SIGSEGV or SIGABRT)
    lce_package = os.path.dirname(importlib.util.find_spec("larq_compute_engine").origin)
    raw = subprocess.run(
        [sys.executable, "-c", RAW_LCE_SCRIPT, str(broken), lce_package], capture_output=True
    )
    assert raw.returncode in (-signal.SIGSEGV, -signal.SIGABRT), raw
    with pytest.raises(ValueError, match="broken.tflite' is not a valid TFLite") as error:
        benchmark(broken, runs=1, warmup=0)
    assert message in str(error.value)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 0, 8, 3), (1, 2**28, 8, 3)])
def test_inputs_lce_cannot_be_fed_are_refused(tiny, shape):
    """Dimensions damaged in a valid file: a batch of 2 or an empty input made LCE's predict
    raise RuntimeError; 2**31 values or more overflow TFLite's 32-bit element counts."""
    _, flatbuffer, _ = tiny

    def reshape_input(m):
        m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]].shape = np.array(shape, np.int32)

    with pytest.raises(ValueError) as error:
        benchmark(_with_edited_model(flatbuffer, reshape_input), runs=1, warmup=0)
    assert str(error.value).startswith("Expected inputs of batch size 1 (LCE's interpreter")
    assert str(error.value).endswith(f"but the given bytes has inputs of shape {shape}.")


# --- exports killed with SIGTERM and SIGKILL ------------------------------------------------

EXPORT_SCRIPT = """
import sys
import larq_dysign
from larq_dysign import zoo
from larq_dysign.export import to_tflite
model = zoo.ReActNet18(input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.25)
to_tflite(model, sys.argv[1], verbose=False)
"""


def _export_directories(tmp) -> list[str]:
    return sorted(n for n in os.listdir(tmp) if n.startswith(EXPORT_DIRECTORY_PREFIX))


def _start_export_and_signal(tmp, output, signum) -> tuple[subprocess.Popen, dict]:
    """Start an export with TMPDIR=tmp; once its temporary directory exists, send signum.
    Returns the process (ended) and what was in tmp when the signal was sent."""
    process = subprocess.Popen(
        [sys.executable, "-c", EXPORT_SCRIPT, str(output)],
        env=_env(TMPDIR=str(tmp)),
        stderr=subprocess.PIPE,
        text=True,
    )
    own = f"{EXPORT_DIRECTORY_PREFIX}{process.pid}_"
    deadline = time.monotonic() + 300
    while not any(n.startswith(own) for n in os.listdir(tmp)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the export ended before its temporary directory appeared: {process}")
        time.sleep(0.01)
    at_signal = {
        name: sum(f.stat().st_size for f in (tmp / name).rglob("*") if f.is_file())
        for name in _export_directories(tmp)
    }
    process.send_signal(signum)
    process.communicate(timeout=300)
    return process, at_signal


@pytest.fixture(scope="module")
def killed_exports(tmp_path_factory):
    """Two exports of a small ReActNet18 sharing one temporary directory: the first killed
    with SIGKILL, the second, started after, with SIGTERM."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    out = tmp_path_factory.mktemp("out")
    killed, at_kill = _start_export_and_signal(tmp, out / "killed.tflite", signal.SIGKILL)
    after_kill = _export_directories(tmp)
    terminated, at_term = _start_export_and_signal(tmp, out / "terminated.tflite", signal.SIGTERM)
    return {
        "killed": killed,
        "at_kill": at_kill,
        "after_kill": after_kill,
        "terminated": terminated,
        "at_term": at_term,
        "after_term": _export_directories(tmp),
        "outputs": sorted(os.listdir(out)),
    }


def test_sigkill_leaves_a_directory_that_the_next_export_removes(killed_exports):
    r = killed_exports
    assert r["killed"].returncode == -signal.SIGKILL
    (left,) = r["after_kill"]  # nothing can clean up after SIGKILL...
    assert left.startswith(f"{EXPORT_DIRECTORY_PREFIX}{r['killed'].pid}_")
    # ...so the next export removes it before making its own: when the second export was
    # converting, only its own directory was there
    assert list(r["at_term"]) == [d for d in r["at_term"] if str(r["terminated"].pid) in d]
    assert left not in r["after_term"]


def test_sigterm_removes_the_temporary_directory_and_ends_as_sigterm(killed_exports):
    r = killed_exports
    assert r["terminated"].returncode == -signal.SIGTERM  # the default handler, restored
    assert len(r["at_term"]) == 1  # the SavedModel was there when SIGTERM arrived
    assert r["after_term"] == []
    assert r["outputs"] == []  # neither export wrote its file, nor a temporary one


def test_sigterm_within_an_export_calls_the_previous_handler_and_restores_it():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(InterruptedError, match="interrupted by SIGTERM"):
            with sigterm_unwinds():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted by the handler
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)


def test_stale_directories_are_those_of_dead_processes_or_older_than_a_day(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: its pid names no process
    dead_pid = finished.pid
    names = {
        "dead": f"{EXPORT_DIRECTORY_PREFIX}{dead_pid}_a",
        "alive": f"{EXPORT_DIRECTORY_PREFIX}{os.getpid()}_b",
        "alive_but_old": f"{EXPORT_DIRECTORY_PREFIX}{os.getpid()}_c",
        "no_pid_old": f"{EXPORT_DIRECTORY_PREFIX}abc",
        "other": "someone_elses_directory",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"x" * 100)
    old = time.time() - STALE_AFTER_S - 60
    for key in ("alive_but_old", "no_pid_old"):
        os.utime(tmp_path / names[key], (old, old))
    removed = remove_stale_export_directories(str(tmp_path))
    gone = {"dead", "alive_but_old", "no_pid_old"}
    assert sorted(removed) == sorted(str(tmp_path / names[k]) for k in gone)
    assert sorted(os.listdir(tmp_path)) == sorted(names[k] for k in names.keys() - gone)


# --- models and inputs the exporter cannot honour -----------------------------------------


def _fake_quant(x):
    return tf.quantization.fake_quant_with_min_max_args(x, -4.0, 4.0)


def _float_model(fake_quant_at: tuple[str, ...] = ()) -> tf.keras.Model:
    """Conv -> pool -> dense, with fake quantization (quantization-aware training's ranges)
    at "input", "middle" and / or "output"."""

    def maybe(x, where):
        return (
            tf.keras.layers.Lambda(_fake_quant, name=f"fq_{where}")(x)
            if where in fake_quant_at
            else x
        )

    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(8, 3, padding="same", name="conv")(maybe(inputs, "input"))
    x = tf.keras.layers.GlobalAveragePooling2D()(maybe(x, "middle"))
    return tf.keras.Model(inputs, maybe(tf.keras.layers.Dense(4, name="head")(x), "output"))


def test_int8_io_of_a_model_without_quantization_is_refused_before_converting(tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError) as error, pytest.warns(UserWarning, match="no binary layer"):
        to_tflite(
            _float_model(),
            path,
            inference_input_type=tf.int8,
            inference_output_type=tf.int8,
            strict=False,
            verbose=False,
        )
    message = str(error.value)
    assert message.startswith(
        "Expected a quantized model for inference_input_type=tf.int8 and "
        "inference_output_type=tf.int8, but this model has no quantization information"
    )
    assert "quantization-aware trained (fake-quantized) model" in message
    assert os.listdir(tmp_path) == []


def test_int8_io_the_file_does_not_have_is_refused_after_converting(tmp_path):
    """Fake quantization inside the model only: LCE converts, keeping float32 inputs."""
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError) as error, pytest.warns(UserWarning, match="no binary layer"):
        to_tflite(
            _float_model(fake_quant_at=("middle",)),
            path,
            inference_input_type=tf.int8,
            strict=False,
            verbose=False,
        )
    assert str(error.value).startswith(
        "Expected inference_input_type=tf.int8 to give int8 inputs, but the converted "
        "file's inputs are FLOAT32"
    )
    assert os.listdir(tmp_path) == []


def test_int8_io_of_a_fake_quantized_model(tmp_path):
    model = _float_model(fake_quant_at=("input", "middle", "output"))
    with pytest.warns(UserWarning, match="has no binary layer"):
        flatbuffer = to_tflite(
            model,
            inference_input_type=tf.int8,
            inference_output_type=tf.int8,
            strict=False,
            verbose=False,
        )
    report = inspect_tflite(flatbuffer)
    assert [t.dtype for t in report.inputs + report.outputs] == ["INT8", "INT8"]
    assert benchmark(flatbuffer, runs=1, warmup=0).runs == 1  # random int8 inputs
    with pytest.raises(ValueError, match="verify compares float outputs.*INT8, INT8"):
        verify(model, flatbuffer, np.zeros((1, 8, 8, 3), np.float32))


def test_a_model_without_binary_layers_needs_strict_false(tmp_path):
    path = tmp_path / "m.tflite"
    model = zoo.ReActNet18(
        input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.25, binary_weights=False
    )
    with pytest.raises(ValueError) as error:
        to_tflite(model, path, verbose=False)  # refused before converting
    assert str(error.value) == (
        "Model 'ReActNet18' has no binary layer (a larq layer with a 1-bit kernel quantizer "
        "and a 1-bit input), so its file would run entirely in float32. A zoo model built "
        "with binary_weights=False (step 1 of the two-step recipe) is one: rebuild it with "
        "binary_weights=True (the zoo's constructors take it) and load the weights, or pass "
        "strict=False to export it in float32."
    )
    assert os.listdir(tmp_path) == []
    # strict=False: a warning, and the file (test_export converts a float DyResNet18 so)


def test_verify_refuses_non_finite_inputs(tiny):
    model, flatbuffer, _ = tiny
    x = np.zeros((3, 8, 8, 3), np.float32)
    x[1, 2, 3, 0] = np.nan
    x[2, 0, 0, 1] = np.inf
    with pytest.raises(ValueError) as error:
        verify(model, flatbuffer, x)
    assert str(error.value) == (
        "Expected inputs to be finite, but 2 of their 576 values are NaN or infinite (the "
        "first in sample 1)."
    )


def test_verify_reports_non_finite_outputs_not_agreement(tiny):
    """NaN in the Keras model's weights (diverged training), or in the file's (bits flipped
    in a weight: a valid file that loads and runs)."""
    model, flatbuffer, _ = tiny
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)

    nan_model = tiny_model()
    nan_model.set_weights(model.get_weights())
    bias = nan_model.get_layer("head").bias
    bias.assign(np.full(bias.shape, np.nan, np.float32))
    parity = verify(nan_model, flatbuffer, x)
    assert (parity.keras_non_finite, parity.tflite_non_finite) == (4, 0)
    assert parity.argmax_agreement == 0.0 and parity.close_fraction == 0.0
    assert np.isnan(parity.max_abs_diff)  # no sample to compare
    assert "argmax agreement 0.0%" in str(parity)
    assert (
        "WARNING: non-finite outputs (NaN, infinity or +-3.4e38) for 4 sample(s) in Keras"
        in str(parity)
    )

    def nan_head_weights(m):
        head = _first(m, "FULLY_CONNECTED")
        weights = m.buffers[m.subgraphs[0].tensors[head.inputs[1]].buffer]
        weights.data = np.full(weights.data.size // 4, np.nan, np.float32).view(np.uint8)

    parity = verify(model, _with_edited_model(flatbuffer, nan_head_weights), x)
    # the LCE interpreter's FULLY_CONNECTED clamps NaN to +-3.4e38: counted as non-finite
    assert (parity.keras_non_finite, parity.tflite_non_finite) == (0, 4)
    assert parity.argmax_agreement == 0.0
    assert "and 4 in the LCE interpreter, counted as disagreeing" in str(parity)
