"""The two-step recipe, weight decay, distillation, checkpoints surviving SIGKILL, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tinymodels import tiny_bnn

from larq_dysign import cli, training, zoo
from larq_dysign.layers import DySign, RSign
from larq_dysign.training import data, recipe
from larq_dysign.training.distill import Distiller, distillation_loss

# ---------------------------------------------------------------------------- recipe parts


def test_linear_decay_reaches_zero_and_stays_there():
    schedule = training.linear_decay(5e-4, 100)
    values = [float(schedule(step)) for step in (0, 25, 50, 100, 150)]
    np.testing.assert_allclose(values, [5e-4, 3.75e-4, 2.5e-4, 0.0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="decay_steps"):
        training.linear_decay(5e-4, 0)
    with pytest.raises(ValueError, match="learning_rate"):
        training.linear_decay(0.0, 10)


def test_weight_decay_is_coupled_l2_on_kernels_only():
    model = tiny_bnn(input_shape=(28, 28, 1), num_classes=10, binary_weights=False)
    decayed = training.add_weight_decay(model, 1e-2)
    assert sorted(w.name for w in decayed) == [
        "bconv/kernel:0",
        "logits/kernel:0",
        "stem/kernel:0",
    ]
    expected = 1e-2 / 2 * sum(float(np.sum(w.numpy() ** 2)) for w in decayed)
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), expected, rtol=1e-5)
    with tf.GradientTape() as tape:
        loss = tf.add_n(model.losses)
    gradients = tape.gradient(loss, model.trainable_weights)
    for weight, gradient in zip(model.trainable_weights, gradients):
        if any(weight is w for w in decayed):
            # d/dw (wd/2 * w^2) = wd * w, as PyTorch Adam's weight_decay
            np.testing.assert_allclose(gradient.numpy(), 1e-2 * weight.numpy(), rtol=1e-5)
        else:
            assert gradient is None, weight.name  # BatchNorm, biases, thresholds: no decay
    plain = tiny_bnn(input_shape=(28, 28, 1), num_classes=10)
    assert len(training.add_weight_decay(plain, 0.0)) == 3 and plain.losses == []
    with pytest.raises(ValueError, match="weight_decay"):
        training.add_weight_decay(plain, -1.0)


def test_transfer_weights_copies_by_layer_and_checks_names_and_shapes():
    step1 = tiny_bnn(input_shape=(28, 28, 1), num_classes=10, binary_weights=False)
    step2 = tiny_bnn(input_shape=(28, 28, 1), num_classes=10, binary_weights=True)
    assert step1.get_layer("bconv").kernel_quantizer is None
    assert step2.get_layer("bconv").kernel_quantizer is not None
    training.transfer_weights(step1, step2)
    for a, b in zip(step1.weights, step2.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = tiny_bnn(input_shape=(28, 28, 1), num_classes=5)
    with pytest.raises(ValueError, match=r"first mismatch at layer #5 'logits': .*\(16, 10\)"):
        training.transfer_weights(step1, other)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'ResNet99'.*ReActNet18"):
        training.resolve_model("ResNet99")
    with pytest.raises(ValueError, match="module:function"):
        training.resolve_model("no_such_module_xyz:fn")
    common = {"dataset": "fashion_mnist", "out_dir": str(tmp_path), "batch_size": 8}
    with pytest.raises(ValueError, match="step to be one of.*'3'"):
        training.train(tiny_bnn, epochs=1, step=3, **common)
    with pytest.raises(ValueError, match="epochs"):
        training.train(tiny_bnn, epochs=0, **common)
    with pytest.raises(FileNotFoundError, match="run step 1 first"):
        training.train(tiny_bnn, epochs=1, step=2, **common)
    with pytest.raises(ValueError, match="schedule to be one of 'two-step', 'one-step'.*'one'"):
        training.train(tiny_bnn, epochs=1, schedule="one", **common)
    with pytest.raises(ValueError, match="step to be 'both'.*schedule='one-step'.*but got 1"):
        training.train(tiny_bnn, epochs=1, step=1, schedule="one-step", **common)
    with pytest.raises(ValueError, match="threshold_init to be one of 'zeros', 'data'.*'mean'"):
        training.train(tiny_bnn, epochs=1, threshold_init="mean", **common)
    with pytest.raises(ValueError, match="threshold_init='zeros' with init='imagenet'"):
        training.train(tiny_bnn, epochs=1, threshold_init="data", init="imagenet", **common)
    assert not any(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        cli.main(["train", "ReActNet18", "--dataset", "mnist", "--epochs", "1", "--out", "x"])


# ---------------------------------------------------------------------------- distillation


def test_distillation_loss_is_kl_divergence():
    rng = np.random.default_rng(0)
    teacher = rng.dirichlet(np.ones(10), size=4).astype(np.float32)
    student = rng.dirichlet(np.ones(10), size=4).astype(np.float32)
    expected = np.sum(teacher * (np.log(teacher) - np.log(student)), axis=-1)
    np.testing.assert_allclose(distillation_loss(teacher, student).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(distillation_loss(teacher, teacher).numpy(), 0.0, atol=1e-6)


def test_distiller_loss_differs_from_labels_and_decreases(fashion_mnist_sample):
    x, y = fashion_mnist_sample
    teacher = tiny_bnn(input_shape=(28, 28, 1), num_classes=10, binary_weights=False)
    teacher.compile(tf.keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=3, batch_size=64, verbose=0)
    teacher_weights = [w.numpy() for w in teacher.weights]

    student = tiny_bnn(input_shape=(28, 28, 1), num_classes=10)
    distiller = training.compile_for_training(
        student, optimizer=tf.keras.optimizers.Adam(1e-2), num_classes=10, teacher=teacher
    )
    assert isinstance(distiller, Distiller)
    xb, yb = x[:64], y[:64]
    before = distiller.evaluate(xb, yb, batch_size=64, verbose=0, return_dict=True)
    student_probabilities = student.predict(xb, verbose=0)
    kl = distillation_loss(teacher.predict(xb, verbose=0), student_probabilities).numpy().mean()
    labels = tf.keras.losses.sparse_categorical_crossentropy(yb, student_probabilities)
    np.testing.assert_allclose(before["loss"], kl, rtol=1e-5)
    assert abs(before["loss"] - float(np.mean(labels))) > 0.05  # the teacher, not the labels

    history = distiller.fit(xb, yb, epochs=6, batch_size=64, verbose=0).history["loss"]
    after = distiller.evaluate(xb, yb, batch_size=64, verbose=0, return_dict=True)
    assert all(b < a for a, b in zip(history, history[1:])) and history[-1] < 0.9 * history[0]
    assert after["distillation_loss"] < before["distillation_loss"]
    for w, value in zip(teacher.weights, teacher_weights):
        np.testing.assert_array_equal(w.numpy(), value)  # the teacher is frozen

    # label_weight=1 is plain cross-entropy with the labels
    mixed = Distiller(student, teacher, label_weight=1.0)
    mixed.compile(optimizer="adam")
    ce = tf.keras.losses.sparse_categorical_crossentropy(yb, student.predict(xb, verbose=0))
    loss = mixed.evaluate(xb, yb, batch_size=64, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, float(np.mean(ce)), rtol=1e-5)
    with pytest.raises(ValueError, match="output shape"):
        Distiller(student, tiny_bnn(input_shape=(28, 28, 1), num_classes=5))


def _tiny_dy_bnn():
    from larq_dysign.layers import DyPReLU, DySign
    from larq_dysign.zoo import common

    inputs = tf.keras.Input((12, 12, 3))
    x = tf.keras.layers.Conv2D(16, 3, use_bias=False, name="stem")(inputs)
    x = tf.keras.layers.BatchNormalization(name="stem_bn")(x)
    x = DySign(reduction=2, name="sign")(x)
    x = common.binary_conv2d(16, 3, name="bconv")(x)
    x = DyPReLU(reduction=2, name="prelu")(tf.keras.layers.BatchNormalization(name="bn")(x))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(4, activation="softmax", name="logits")(x)
    return tf.keras.Model(inputs, outputs)


def test_compiled_models_have_optimizer_slots_and_trace_their_train_step_once():
    """compile_for_training builds the optimizer: a checkpoint can restore its slots before
    the first update, and `fit` traces once (a tf.function that creates variables is traced
    twice, as a plain `compile` + `fit` does)."""
    x = np.random.default_rng(0).uniform(-1, 1, (64, 28, 28, 1)).astype("float32")
    y = np.arange(64) % 10
    plain = tiny_bnn(input_shape=(28, 28, 1), num_classes=10)
    plain.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    plain.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert plain.train_function.experimental_get_tracing_count() == 2
    for teacher in (None, tiny_bnn(input_shape=(28, 28, 1), num_classes=10)):
        student = tiny_bnn(input_shape=(28, 28, 1), num_classes=10)
        model = training.compile_for_training(
            student, optimizer=tf.keras.optimizers.Adam(1e-3), num_classes=10, teacher=teacher
        )
        # Adam: the iteration count, then a first and a second moment per variable
        assert len(model.optimizer.variables) == 1 + 2 * len(student.trainable_variables)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        assert model.train_function.experimental_get_tracing_count() == 1


def test_xla_train_step_matches_the_default_one():
    # The DySign/DyPReLU custom gradients, the binary conv and BatchNorm under XLA: the same
    # updates as TensorFlow's own kernels, to float rounding (a threshold-rounding sign flip
    # would show as a >1e-3 difference in the hyper-function weights).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, 32)
    tf.keras.utils.set_random_seed(0)
    models = [_tiny_dy_bnn() for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    for model, jit in zip(models, (False, True)):
        training.compile_for_training(
            model, optimizer=tf.keras.optimizers.SGD(0.5), num_classes=4, jit_compile=jit
        )
        for _ in range(3):
            model.train_on_batch(x, y)
    assert models[1]._jit_compile and not models[0]._jit_compile
    moved = 0
    for default, xla, initial in zip(models[0].weights, models[1].weights, _tiny_initial(models)):
        np.testing.assert_allclose(xla.numpy(), default.numpy(), atol=1e-4, err_msg=xla.name)
        moved += not np.allclose(default.numpy(), initial)
    assert moved >= 10  # the comparison covers trained weights, hyper functions included


def _tiny_initial(models):
    tf.keras.utils.set_random_seed(0)
    return _tiny_dy_bnn().get_weights()


# ---------------------------------------------------------------------------- two steps


class _WeightsAtTrainBegin(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.snapshots = []

    def on_train_begin(self, logs=None):
        student = getattr(self.model, "student", self.model)
        self.snapshots.append({w.name: w.numpy() for w in student.weights})


@pytest.mark.slow
def test_two_step_recipe_on_fashion_mnist_beats_chance(tmp_path):
    # ReActNet18 at half width with the ImageNet stem (7x7 maps at 28 px: a cheap zoo
    # configuration), 30 updates of 16 images per step, lr 3e-3 for so short a run.
    recorder = _WeightsAtTrainBegin()
    results = training.train(
        "ReActNet18",
        dataset="fashion_mnist",
        out_dir=str(tmp_path),
        epochs=1,
        batch_size=16,
        steps_per_epoch=30,
        learning_rate=3e-3,
        model_kwargs={"stem": "imagenet", "width_multiplier": 0.5},
        data_kwargs={"train_examples": 4096, "augment": False},
        validate=False,
        callbacks=[recorder],
        verbose=0,
    )
    step1, step2 = results[1].model, results[2].model
    assert step1.get_layer("stage1_block1_conv").kernel_quantizer is None
    assert step2.get_layer("stage1_block1_conv").kernel_quantizer is not None
    assert len(step1.losses) == 1 and step2.losses == []  # weight decay 1e-5, then 0

    # step 2 starts exactly where step 1 ended (every weight, by name), then moves on
    at_step2_start = recorder.snapshots[1]
    assert set(at_step2_start) == {w.name for w in step1.weights}
    for w in step1.weights:
        np.testing.assert_array_equal(at_step2_start[w.name], w.numpy(), err_msg=w.name)
    kernel = "stage2_block1_conv/kernel:0"
    assert not np.array_equal(recorder.snapshots[0][kernel], at_step2_start[kernel])
    assert not np.array_equal(
        step2.get_layer("stage2_block1_conv").kernel.numpy(), at_step2_start[kernel]
    )

    for result in results.values():
        assert result.history["epoch"] == [0.0]
        assert os.path.isfile(result.weights_path)
        # the whole model, described: reloads without custom_objects and computes the same
        description = zoo.read_description(result.model_path)
        assert description["model"] == "ReActNet18" and description["step"] == result.step
        assert description["dataset"] == "fashion_mnist"
        assert description["arguments"]["stem"] == "imagenet"
        assert description["arguments"]["binary_weights"] is (result.step == 2)
        assert description["arguments"]["width_multiplier"] == 0.5
        assert description["arguments"]["include_top"] is True  # defaults recorded too
        assert description["recipe"]["learning_rate"] == 3e-3
        assert description["recipe"]["steps_per_epoch"] == 30
        reloaded = tf.keras.models.load_model(result.model_path)
        images = np.random.default_rng(0).uniform(-1, 1, (4, 28, 28, 1)).astype("float32")
        np.testing.assert_allclose(
            reloaded.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-6
        )

    # held-out test images; chance is 10%
    evaluation = data.fashion_mnist(batch_size=100, eval_examples=1000).eval
    accuracy = step2.evaluate(evaluation, verbose=0, return_dict=True)["accuracy"]
    print(f"two-step ReActNet18, 2 x 30 x 16 images: held-out accuracy {accuracy:.3f}")
    assert accuracy > 0.40

    # the final weights file passes the zoo's loader check (layer order and shapes)
    assert zoo.weights.check_compatible(step2, results[2].weights_path) == "h5"


# ---------------------------------------------------------------------------- resume


def test_truncate_history_keeps_complete_rows_before_the_checkpoint(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,2.5\n1,2.0\n2,1.5\n3,1.")  # epoch 3 cut by a kill
    training.truncate_history(str(path), 2)
    assert training.read_history(str(path)) == {"epoch": [0.0, 1.0], "loss": [2.5, 2.0]}
    path.write_text("epoch,loss\n0,2.5\n1,2")  # a partial last row is dropped
    training.truncate_history(str(path), 5)
    assert path.read_text().splitlines() == ["epoch,loss", "0,2.5"]


def tensorboard_scalars(logdir, tag: str) -> dict[int, float]:
    """{step: value} of a scalar in a TensorBoard log directory (every event file in it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    events.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}


def _tiny_run(out, **overrides) -> dict:
    kwargs = {
        "dataset": "fashion_mnist",
        "out_dir": str(out),
        "epochs": 4,
        "batch_size": 16,
        "steps_per_epoch": 3,
        "step": 1,
        "data_kwargs": {"train_examples": 256, "augment": False},
        "validate": False,
        "verbose": 0,
        **overrides,
    }
    return training.train(tiny_bnn, **kwargs)


def _files(directory) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_resume_skips_damaged_checkpoints_newest_first_and_says_so(tmp_path, capsys):
    _tiny_run(tmp_path)  # finished: ckpt-2, ckpt-3 and ckpt-4 kept
    step_dir = tmp_path / "step1"
    checkpoints = step_dir / "checkpoints"
    before = training.read_history(str(step_dir / "history.csv"))
    (checkpoints / "ckpt-4.index").unlink()
    (checkpoints / "checkpoint").write_text("garbage {{ not a checkpoint state")
    (checkpoints / "ckpt-3.data-00000-of-00001").write_bytes(
        (checkpoints / "ckpt-3.data-00000-of-00001").read_bytes()[:100]  # truncated
    )
    results = _tiny_run(tmp_path, verbose=2)
    printed = capsys.readouterr().out
    assert f"skipped damaged checkpoint {checkpoints / 'ckpt-3'}" in printed
    assert f"resuming from {checkpoints / 'ckpt-2'} at epoch 2, optimizer iteration 6." in printed
    assert (results[1].initial_epoch, results[1].initial_iteration) == (2, 6)
    history = training.read_history(str(step_dir / "history.csv"))
    assert history["epoch"] == [0.0, 1.0, 2.0, 3.0]  # epochs 3 and 4 redone, 1 and 2 kept
    assert history["loss"][:2] == before["loss"][:2]
    assert _checkpoint_value(str(checkpoints / "ckpt-4"), "optimizer/_iterations") == 12


def test_no_intact_checkpoint_stops_naming_the_directory_and_changes_nothing(tmp_path):
    _tiny_run(tmp_path)
    checkpoints = tmp_path / "step1" / "checkpoints"
    for index in checkpoints.glob("ckpt-*.index"):
        index.write_bytes(b"\0" * 64)
    files = _files(tmp_path)
    with pytest.raises(RuntimeError, match=f"No intact checkpoint in {checkpoints}: ckpt-4"):
        _tiny_run(tmp_path)
    assert _files(tmp_path) == files  # the history, the damaged files, everything kept


def test_each_step_trains_with_the_recipes_weights_and_decay(tmp_path):
    results = _tiny_run(tmp_path, epochs=1, step="both")
    for step, binary, decay in ((1, False, 1e-5), (2, True, 0.0)):
        settings = json.loads((tmp_path / f"step{step}" / "settings.json").read_text())
        assert (settings["weight_decay"], settings["arguments"]["binary_weights"]) == (
            decay,
            binary,
        )
        kernel_quantizer = results[step].model.get_layer("bconv").kernel_quantizer
        assert (kernel_quantizer is not None) is binary
        assert len(results[step].model.losses) == (1 if decay else 0)


def test_the_one_step_schedule_trains_binary_weights_from_scratch_in_step2(tmp_path):
    results = _tiny_run(tmp_path, epochs=1, step="both", schedule="one-step")
    assert list(results) == [2] and not (tmp_path / "step1").exists()
    settings = json.loads((tmp_path / "step2" / "settings.json").read_text())
    assert (settings["schedule"], settings["weight_decay"], settings["init"]) == (
        "one-step",
        0.0,
        None,
    )
    assert "initial_weights_sha256" not in settings  # random initialization
    assert results[2].model.get_layer("bconv").kernel_quantizer is not None
    assert len(results[2].history["loss"]) == 1
    again = _tiny_run(tmp_path, epochs=1, step="both", schedule="one-step")
    assert again[2].initial_epoch == 1  # restored, not retrained


def test_thresholds_from_data_centre_every_sign_input_of_reactnet_a(fashion_mnist_sample):
    images = fashion_mnist_sample[0][:128]
    model = zoo.ReActNetA(
        stem="small", width_multiplier=0.25, input_shape=(28, 28, 1), num_classes=10
    )
    signs = [layer for layer in model.layers if isinstance(layer, RSign)]
    inputs = tf.keras.Model(model.inputs, [layer.input for layer in signs])
    before = [float(tf.reduce_mean(x)) for x in inputs(images, training=True)]
    assert before[-1] > 1.5  # the uncentred real-valued path (the docstring's "why")

    names = training.initialize_thresholds(model, images)
    assert names == [layer.name for layer in signs]
    for layer, x in zip(signs, inputs(images, training=True)):
        mean = tf.reduce_mean(x, axis=[0, 1, 2])  # each layer's input, its predecessors set
        np.testing.assert_allclose(layer.threshold.numpy(), mean.numpy(), atol=1e-4)
        positive = float(tf.reduce_mean(tf.cast(layer(x) > 0, tf.float32)))
        assert 0.3 < positive < 0.7, (layer.name, positive)  # was +1 for up to 96%

    # a DySign with one static threshold gets the mean over all channels
    dysign = DySign(granularity="layer")
    x = tf.random.normal((4, 5, 5, 3)) + tf.constant([1.0, 2.0, 6.0])
    layer_model = tf.keras.Sequential([tf.keras.Input((5, 5, 3)), dysign])
    training.initialize_thresholds(layer_model, x)
    np.testing.assert_allclose(dysign.threshold.numpy(), [float(tf.reduce_mean(x))], atol=1e-5)


def test_threshold_init_data_applies_to_the_step_from_scratch_only(tmp_path, monkeypatch):
    # the real initialize_thresholds, counted: tiny_bnn's sign follows a BatchNorm, so its
    # thresholds from data are ~0 and the weights alone could not tell whether it ran
    calls = []

    def counted(model, images):
        calls.append((model.name, int(images.shape[0])))
        return training.initialize_thresholds(model, images)

    monkeypatch.setattr(recipe, "initialize_thresholds", counted)
    _tiny_run(tmp_path, epochs=1, step="both", threshold_init="data")
    settings = {
        step: json.loads((tmp_path / f"step{step}" / "settings.json").read_text())
        for step in (1, 2)
    }
    assert settings[1]["threshold_init"] == "data"
    assert "threshold_init" not in settings[2]  # step 2 starts from step 1's weights
    assert calls == [("tiny_bnn", recipe.THRESHOLD_INIT_IMAGES)]  # step 1 only, 256 images
    _tiny_run(tmp_path / "plain", epochs=1)
    assert "threshold_init" not in json.loads((tmp_path / "plain/step1/settings.json").read_text())
    assert len(calls) == 1  # zeros: not called
    with pytest.raises(ValueError, match="threshold_init"):  # not silently another run
        _tiny_run(tmp_path / "plain", epochs=1, threshold_init="data")


def test_other_settings_on_an_existing_run_are_refused_unless_fresh(tmp_path, capsys):
    _tiny_run(tmp_path, epochs=2)
    files = _files(tmp_path)
    with pytest.raises(ValueError, match=r"learning_rate 0.0005 \(now 0.002\)\. .*--fresh"):
        _tiny_run(tmp_path, epochs=2, learning_rate=2e-3)
    with pytest.raises(ValueError, match=r"epochs 2 \(now 3\); global_batch_size 16 \(now 8\)"):
        _tiny_run(tmp_path, epochs=3, batch_size=8)
    with pytest.raises(ValueError, match=r"data.train_examples 256 \(now 128\)\."):
        _tiny_run(tmp_path, epochs=2, data_kwargs={"train_examples": 128, "augment": False})
    assert _files(tmp_path) == files
    results = _tiny_run(tmp_path, epochs=2, learning_rate=2e-3, fresh=True, verbose=2)
    assert "Starting over (fresh)" in capsys.readouterr().out
    assert results[1].initial_epoch == 0
    settings = json.loads((tmp_path / "step1" / "settings.json").read_text())
    assert settings["learning_rate"] == 2e-3


def test_step2_refuses_to_continue_from_other_step1_weights(tmp_path):
    _tiny_run(tmp_path, epochs=1, step="both")
    _tiny_run(tmp_path, epochs=1, step=1, fresh=True)  # step 1 again: other weights
    with pytest.raises(ValueError, match="step2 was trained with other settings: "
                       "initial_weights_sha256"):  # fmt: skip
        _tiny_run(tmp_path, epochs=1, step="both")


def _checkpoint_value(prefix: str, name: str):
    reader = tf.train.load_checkpoint(prefix)
    return int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.mark.slow
def test_cli_run_killed_by_sigkill_resumes_with_optimizer_state_and_history(
    tmp_path, tiny_models_env, capsys
):
    teacher = tiny_bnn(input_shape=(28, 28, 1), num_classes=10, binary_weights=False)
    teacher.save(tmp_path / "teacher.keras")
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "larq_dysign.cli", "train", "tinymodels:tiny_bnn",
        "--dataset", "fashion_mnist", "--train-examples", "512", "--no-validation",
        "--epochs", "6", "--steps-per-epoch", "20", "--batch-size", "16", "--step", "1",
        "--teacher", str(tmp_path / "teacher.keras"), "--out", str(out), "--verbose", "2",
    ]  # fmt: skip
    env = tiny_models_env
    checkpoints = out / "step1" / "checkpoints"
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 600  # a safety net, not a timing assertion
    while not (checkpoints / "checkpoint").exists() and process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    first_output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, first_output  # killed mid-run

    latest = tf.train.latest_checkpoint(str(checkpoints))
    epochs_done = _checkpoint_value(latest, "epoch")
    assert 1 <= epochs_done < 6 and latest.endswith(f"ckpt-{epochs_done}")
    assert _checkpoint_value(latest, "optimizer/_iterations") == 20 * epochs_done
    before = training.read_history(str(out / "step1" / "history.csv"))
    # the CSV row of an epoch is written just before its checkpoint: the row of the epoch
    # after the checkpoint may exist too (it is dropped and redone on resume)
    assert len(before["epoch"]) in (epochs_done, epochs_done + 1)

    second = subprocess.run(command, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    expected = f"resuming from {latest} at epoch {epochs_done}, optimizer iteration "
    assert expected + f"{20 * epochs_done}." in second.stdout, second.stdout
    assert f"Epoch {epochs_done + 1}/6" in second.stdout and "Epoch 1/6" not in second.stdout

    history = training.read_history(str(out / "step1" / "history.csv"))
    assert history["epoch"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    for column in ("loss", "distillation_loss", "accuracy"):
        assert history[column][:epochs_done] == before[column][:epochs_done], column
    # the schedule continued from the restored iteration: 5e-4 * (1 - 20 e / 120), as
    # TensorBoard logged it at the end of each resumed epoch (the killed run's events may
    # not have been flushed)
    rates = tensorboard_scalars(out / "step1" / "logs" / "train", "epoch_learning_rate")
    resumed = list(range(epochs_done, 6))
    assert set(resumed) <= set(rates)
    np.testing.assert_allclose(
        [rates[e] for e in resumed], [5e-4 * (1 - (e + 1) / 6) for e in resumed], atol=1e-9
    )
    final = tf.train.latest_checkpoint(str(checkpoints))
    assert final.endswith("ckpt-6") and _checkpoint_value(final, "optimizer/_iterations") == 120

    # `larq-dysign evaluate` on the final weights agrees with Keras' evaluate
    weights = out / "step1" / "tiny_bnn_step1.h5"
    capsys.readouterr()
    arguments = ["evaluate", "tinymodels:tiny_bnn", "--weights", str(weights)]
    arguments += ["--no-binary-weights"]
    arguments += ["--dataset", "fashion_mnist", "--eval-examples", "200", "--verbose", "0"]
    assert cli.main(arguments) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = tiny_bnn(input_shape=(28, 28, 1), num_classes=10, binary_weights=False)
    model.load_weights(str(weights))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = data.load_fashion_mnist_arrays("test")
    expected_metrics = model.evaluate(
        data.normalize(images[:200]), labels[:200], verbose=0, return_dict=True
    )
    assert reported["accuracy"] == pytest.approx(expected_metrics["accuracy"], abs=1e-6)
    assert reported["loss"] == pytest.approx(expected_metrics["loss"], rel=1e-4)


def test_a_preset_gives_the_model_arguments_and_budget_the_user_does_not(tmp_path):
    from larq_dysign.zoo import get_preset

    preset = get_preset("small-input", "ReActNet18")
    results = training.train(
        "ReActNet18",
        preset="small-input",
        dataset="fashion_mnist",
        out_dir=str(tmp_path),
        step=1,
        steps_per_epoch=1,
        learning_rate=1e-3,  # given: wins over the preset's
        model_kwargs={"width_multiplier": 0.125},  # given: wins over the preset's
        jit_compile=False,
        validate=False,
        verbose=0,
    )
    settings = json.loads((tmp_path / "step1" / "settings.json").read_text())
    assert settings["epochs"] == preset.epochs
    assert settings["global_batch_size"] == preset.batch_size
    assert settings["learning_rate"] == 1e-3
    for key, value in preset.model_kwargs.items():
        if key != "width_multiplier":
            assert settings["arguments"][key] == value, key
    assert settings["arguments"]["width_multiplier"] == 0.125
    assert results[1].model.get_layer("stem_conv").kernel.shape[-1] == 8
    assert "threshold_init" not in settings  # the ResNet-18 preset keeps zeros


def test_the_reactnet_a_preset_sets_its_thresholds_from_data_but_not_over_init():
    given = {
        "model_kwargs": {"width_multiplier": 0.5},
        "epochs": None,
        "batch_size": 32,
        "learning_rate": None,
        "jit_compile": None,
        "threshold_init": None,
    }
    preset = zoo.get_preset("small-input", "ReActNetA")
    assert recipe.with_preset("small-input", "ReActNetA", **given) == (
        {**preset.model_kwargs, "width_multiplier": 0.5},
        preset.epochs,
        32,
        preset.learning_rate,
        preset.jit_compile,
        "data",
        {"augment": False},
    )
    # with init (trained thresholds) the preset's data init gives way
    assert recipe.with_preset("small-input", "ReActNetA", **given, init="imagenet")[5] is None
    assert recipe.with_preset("small-input", "ReActNet18", **given)[5] == "zeros"
    given["threshold_init"] = "zeros"  # the user's choice wins
    assert recipe.with_preset("small-input", "ReActNetA", **given)[5] == "zeros"


def test_the_reactnet_a_preset_turns_augmentation_off_on_small_datasets_only():
    given = dict.fromkeys(
        ("model_kwargs", "epochs", "batch_size", "learning_rate", "jit_compile", "threshold_init")
    )
    assert zoo.get_preset("small-input", "ReActNetA").augment is False
    assert recipe.with_preset("small-input", "ReActNetA", **given)[6] == {"augment": False}
    kept = {"train_examples": 512}
    assert recipe.with_preset(
        "small-input", "ReActNetA", **given, dataset="cifar10", data_kwargs=kept
    )[6] == {"train_examples": 512, "augment": False}
    assert kept == {"train_examples": 512}  # the caller's dict is not changed
    # ImageNet's pipeline has its own crops; the user's choice wins; ResNet-18 keeps them
    assert recipe.with_preset("small-input", "ReActNetA", **given, dataset="imagenet2012")[6] == {}
    on = {"augment": True}
    assert recipe.with_preset("small-input", "ReActNetA", **given, data_kwargs=on)[6] == on
    assert recipe.with_preset("small-input", "ReActNet18", **given)[6] == {}
