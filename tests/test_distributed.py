"""tf.distribute: 2 logical CPUs vs 1 device, and two local MultiWorkerMirrored workers.

Each scenario runs in subprocesses: logical devices and collective ops must be configured
before TensorFlow initializes, and would leak into the test process otherwise.
"""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import training
from larq_dysign.training import distribute

pytestmark = pytest.mark.slow  # run first in the parallel schedule (conftest.py)

MIRRORED_SCRIPT = r"""
import json
import larq_dysign  # noqa: F401  (Keras 2 first)
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from larq_dysign import training
from larq_dysign.training import data
from tinymodels import tiny_bnn

images, labels = data.load_fashion_mnist_arrays("train")
x, y = data.normalize(images[:32]).numpy(), labels[:32]
shape = {"input_shape": (28, 28, 1), "num_classes": 10, "batch_norm": False}
tf.keras.utils.set_random_seed(0)
student_init = tiny_bnn(**shape).get_weights()
teacher_init = tiny_bnn(binary_weights=False, **shape).get_weights()


def run(strategy, distill):
    with strategy.scope():
        student = tiny_bnn(**shape)
        student.set_weights(student_init)
        training.add_weight_decay(student, 1e-2)
        teacher = None
        if distill:
            teacher = tiny_bnn(binary_weights=False, **shape)
            teacher.set_weights(teacher_init)
        model = training.compile_for_training(
            student, optimizer=tf.keras.optimizers.Adam(1e-3), num_classes=10, teacher=teacher
        )
    batch = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # one global batch
    evaluated = model.evaluate(batch, verbose=0, return_dict=True)["loss"]
    trained = model.fit(batch, epochs=1, verbose=0).history["loss"][0]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "eval_loss": evaluated,
        "train_loss": trained,
        "weights": [w.tolist() for w in student.get_weights()],
    }


results = {}
for distill in (False, True):
    results[f"one_{distill}"] = run(tf.distribute.get_strategy(), distill)
    results[f"two_{distill}"] = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), distill)
results["initial"] = [w.tolist() for w in student_init]
print("RESULTS " + json.dumps(results))
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


#: What a worker prints when another process took its port between `_free_ports` and its
#: own bind (TensorFlow's gRPC server does not share ports, so they cannot be held open).
PORT_TAKEN = "Could not start gRPC server"


def _run_workers(command: list[str], env: dict, logs, count: int = 2, attempts: int = 3):
    """Run `count` MultiWorkerMirrored workers on fresh local ports; start over with other
    ports when one lost its port to another process (its peers, waiting for it, are
    stopped). Returns the workers' (stdout, stderr)."""
    for attempt in range(attempts):
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(count)]}
        files = [(logs / f"{attempt}-{i}.out", logs / f"{attempt}-{i}.err") for i in range(count)]
        workers = []
        for index, (out, err) in enumerate(files):
            task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            with open(out, "w") as stdout, open(err, "w") as stderr:
                workers.append(
                    subprocess.Popen(
                        command,
                        env={**env, "TF_CONFIG": json.dumps(task)},
                        stdout=stdout,
                        stderr=stderr,
                    )
                )
        deadline = time.monotonic() + 900  # a hang must not block CI forever
        while any(w.poll() is None for w in workers):
            failed = any(w.poll() not in (None, 0) for w in workers)
            if failed or time.monotonic() > deadline:
                for worker in workers:
                    worker.kill()
                    worker.wait()
                break
            time.sleep(0.2)
        outputs = [(out.read_text(), err.read_text()) for out, err in files]
        if any(PORT_TAKEN in stderr for _, stderr in outputs) and attempt + 1 < attempts:
            continue
        for worker, (stdout, stderr) in zip(workers, outputs):
            assert worker.returncode == 0, stdout + stderr[-3000:]
        return outputs
    raise AssertionError("unreachable")


def test_mirrored_two_logical_cpus_match_one_device(tmp_path, tiny_models_env):
    (tmp_path / "mirrored.py").write_text(MIRRORED_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "mirrored.py")],
        env=tiny_models_env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS ") :])
    for distill in (False, True):
        one, two = results[f"one_{distill}"], results[f"two_{distill}"]
        assert one["replicas"] == 1 and two["replicas"] == 2
        # Same global batch, same weights, no BatchNorm (per-replica batch statistics would
        # differ): only the order of float sums differs between 16 + 16 and 32 examples.
        assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        for a, b in zip(one["weights"], two["weights"]):
            np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-6)
        # the update was real: Adam's first step moves weights by about its lr, 1e-3
        moved = max(
            float(np.max(np.abs(np.array(a) - np.array(b))))
            for a, b in zip(one["weights"], results["initial"])
        )
        assert moved > 5e-4
    # distillation and cross-entropy are different losses of the same batch
    assert abs(results["one_True"]["eval_loss"] - results["one_False"]["eval_loss"]) > 1e-3


def test_multiworker_two_local_workers_train(tmp_path, tiny_models_env):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "larq_dysign.cli", "train", "tinymodels:tiny_bnn",
        "--dataset", "fashion_mnist", "--train-examples", "256", "--eval-examples", "64",
        "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8", "--step", "1",
        "--strategy", "multiworker", "--out", str(out), "--verbose", "2",
    ]  # fmt: skip
    outputs = [stdout for stdout, _ in _run_workers(command, tiny_models_env, tmp_path)]

    for stdout in outputs:
        assert "2 replica(s), global batch 16, 3 steps per epoch" in stdout
    # metrics are all-reduced: both workers report the same numbers
    summaries = [[line for line in o.splitlines() if line.startswith("step ")] for o in outputs]
    assert len(summaries[0]) == 1
    first = [json.loads(line.split(": ", 1)[1].rsplit(" -> ", 1)[0]) for line in summaries[0]]
    second = [json.loads(line.split(": ", 1)[1].rsplit(" -> ", 1)[0]) for line in summaries[1]]
    for a, b in zip(first, second):
        assert a.keys() == b.keys() and "val_accuracy" in a
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5), key

    directory = out / "step1"
    history = training.read_history(str(directory / "history.csv"))
    assert history["epoch"] == [0.0, 1.0]
    latest = tf.train.latest_checkpoint(str(directory / "checkpoints"))
    reader = tf.train.load_checkpoint(latest)
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 6
    assert (directory / "tiny_bnn_step1.h5").is_file()
    assert not (directory / ".worker-1").exists()  # the non-chief's scratch copy is gone


def test_strategy_names_and_chief():
    with pytest.raises(ValueError, match=r"strategy to be one of .*'gpu'"):
        distribute.make_strategy("gpu")
    with pytest.raises(ValueError, match="tpu only with"):
        distribute.make_strategy("mirrored", tpu="grpc://1.2.3.4:8470")
    strategy = distribute.make_strategy("default")
    assert strategy.num_replicas_in_sync == 1 and distribute.is_chief(strategy)
    assert distribute.worker_directory("/x/out", strategy) == "/x/out"
