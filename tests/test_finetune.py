"""Fine-tuning from ImageNet weights: ReActNet's checkpoint imported, a Dy model trained from
it on (mock) ImageNet, thresholds first, distilled from a keras.applications teacher."""

import numpy as np
import pytest
import reactnet_reference as ref
import tensorflow as tf
import tensorflow_datasets as tfds
import torch_format

from larq_dysign import DyPReLU, DySign, training, zoo
from larq_dysign.training.distill import load_teacher
from larq_dysign.zoo import weights as weights_module


def test_a_teacher_by_name_sees_the_students_images_through_its_own_preprocessing():
    teacher = load_teacher("ResNet50", input_shape=(64, 64, 3), weights=None)
    assert teacher.output_shape == (None, 1000) and not teacher.trainable
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    base = teacher.layers[-1]  # the keras.applications model itself
    expected = base(tf.keras.applications.resnet50.preprocess_input((x + 1) * 127.5))
    np.testing.assert_allclose(teacher(x).numpy(), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"tf.keras.applications model \(.*resnet50.*'resnet9'"):
        load_teacher("resnet9", input_shape=(64, 64, 3), weights=None)


@pytest.mark.slow
def test_dyresnet18_fine_tunes_its_thresholds_from_imported_reactnet_weights(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(weights_module.CACHE_DIR_ENV, str(tmp_path / "cache"))
    checkpoint = tmp_path / "resnet18_step2.pth.tar"
    torch_format.write_checkpoint(checkpoint, ref.random_state("ReActNet18", num_classes=1000))
    zoo.import_reactnet(str(checkpoint), model="ReActNet18")
    start = zoo.DyResNet18(weights="imagenet")  # what fine-tuning starts from

    with tfds.testing.mock_data(num_examples=8):
        results = training.train(
            "DyResNet18",
            dataset="imagenet2012",
            out_dir=str(tmp_path / "run"),
            step=2,
            epochs=1,
            steps_per_epoch=2,
            batch_size=2,
            init="imagenet",
            trainable="thresholds",
            teacher="resnet50",
            teacher_weights=None,
            validate=False,
            verbose=0,
        )
    model = results[2].model
    description = zoo.read_description(results[2].model_path)
    assert description["arguments"]["padding"] == "pytorch"  # the weights' padding, recorded
    # and a second run started from this saved model (--init it) gets the same padding
    assert weights_module.recorded_padding(results[2].model_path, model_name="DyResNet18") == (
        "pytorch"
    )
    recipe = description["recipe"]
    assert (recipe["init"], recipe["trainable"], recipe["teacher"]) == (
        "imagenet",
        "thresholds",
        "resnet50",
    )

    moved, kept = set(), set()
    for layer, original in zip(model.layers, start.layers):
        for weight, value in zip(layer.weights, original.get_weights()):
            changed = not np.array_equal(weight.numpy(), value)
            if isinstance(layer, DySign | DyPReLU | tf.keras.layers.BatchNormalization):
                (moved if changed else kept).add(type(layer).__name__)
            else:
                assert not changed, weight.name  # frozen: the imported ReActNet weights
    assert {"DySign", "DyPReLU", "BatchNormalization"} <= moved
    # the second hyper-function FCs left zero: DySign now differs from ReActNet's RSign
    assert all(
        np.abs(w.numpy()).max() > 0 for w in model.trainable_weights if "hyper_kernel_2" in w.name
    )
