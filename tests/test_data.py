"""Data pipelines: ImageNet and CIFAR-10 on TFDS mock data, Fashion-MNIST on the real files."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from larq_dysign import zoo
from larq_dysign.training import data


def test_normalize_maps_byte_range_to_minus_one_one():
    values = data.normalize(np.array([0, 51, 127.5, 255], dtype=np.float32)).numpy()
    np.testing.assert_allclose(values, [-1.0, 51 / 127.5 - 1, 0.0, 1.0], atol=1e-7)
    assert data.normalize(np.array([0, 255], np.uint8)).dtype == tf.float32


def test_normalize_is_the_zoos_preprocess_input_convention():
    # Models trained on these pipelines see the same inputs as users' images prepared with
    # zoo.preprocess_input.
    images = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        np.asarray(zoo.preprocess_input(images)), data.normalize(images).numpy(), atol=1e-7
    )


def test_dataset_info_and_unknown_names():
    assert data.dataset_info("imagenet2012").input_shape == (224, 224, 3)
    assert data.dataset_info("imagenet2012").num_classes == 1000
    assert data.dataset_info("cifar10").input_shape == (32, 32, 3)
    assert data.dataset_info("fashion_mnist").input_shape == (28, 28, 1)
    with pytest.raises(
        ValueError, match=r"\['cifar10', 'fashion_mnist', 'imagenet2012'\].*mnist'"
    ):
        data.dataset_info("mnist")
    with pytest.raises(ValueError, match="batch_size"):
        data.load("fashion_mnist", batch_size=0)


# ---------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_arrays_are_the_real_dataset_offline():
    train_images, train_labels = data.load_fashion_mnist_arrays("train")
    test_images, test_labels = data.load_fashion_mnist_arrays("test")
    assert train_images.shape == (60000, 28, 28, 1) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28, 1) and test_labels.dtype == np.int64
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
    assert train_images.max() == 255 and train_images.min() == 0


def test_fashion_mnist_pipelines_normalize_batch_and_augment():
    images, labels = data.load_fashion_mnist_arrays("test")
    train_images, train_labels = data.load_fashion_mnist_arrays("train")
    pipelines = data.fashion_mnist(batch_size=64, train_examples=256, eval_examples=100)
    assert pipelines.info is data.DATASETS["fashion_mnist"]

    eval_batches = list(pipelines.eval)
    assert [len(y) for _, y in eval_batches] == [64, 36]  # eval keeps the last partial batch
    x, y = eval_batches[0]
    assert x.dtype == tf.float32 and x.shape == (64, 28, 28, 1)
    np.testing.assert_array_equal(x.numpy(), images[:64].astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(y.numpy(), labels[:64])

    train_batches = list(pipelines.train)
    assert len(train_batches) == 4  # 256 examples / 64, drop_remainder
    seen = np.concatenate([y.numpy() for _, y in train_batches])
    # shuffled, but the same 256 examples
    np.testing.assert_array_equal(np.sort(seen), np.sort(train_labels[:256]))
    assert not np.array_equal(seen, train_labels[:256])
    x = np.concatenate([x.numpy() for x, _ in train_batches])
    assert x.min() >= -1.0 and x.max() <= 1.0
    # augmented: a shift brings in black (-1) rows or columns; only an unshifted, unflipped
    # image (1 chance in 162) equals its original
    originals = train_images[:256].astype(np.float32) / 127.5 - 1.0
    changed = [not any(np.array_equal(a, b) for b in originals) for a in x[:8]]
    assert sum(changed) >= 6


def test_pad_crop_flip_is_a_shift_and_maybe_a_flip():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, size=(12, 10, 3)).astype(np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    candidates = [
        crop[:, ::-1] if flip else crop
        for dy in range(9)
        for dx in range(9)
        for flip in (False, True)
        for crop in [padded[dy : dy + 12, dx : dx + 10]]
    ]
    outputs = [data.pad_crop_flip(tf.constant(image)).numpy() for _ in range(20)]
    for out in outputs:
        assert out.shape == image.shape and out.dtype == np.uint8
        assert any(np.array_equal(out, c) for c in candidates)
    assert len({o.tobytes() for o in outputs}) > 5  # random, not one fixed transform


def test_fashion_mnist_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        data.fashion_mnist(batch_size=8, directory=str(tmp_path))


def test_idx_round_trip_and_errors(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "b.idx.gz"):
        path = str(tmp_path / name)
        data.write_idx(path, array)
        np.testing.assert_array_equal(data.read_idx(path), array)
    with open(tmp_path / "a.idx", "rb") as f:
        assert f.read(8) == bytes([0, 0, 8, 3, 0, 0, 0, 2])  # magic, ndim, first dim
    with pytest.raises(ValueError, match="uint8"):
        data.write_idx(str(tmp_path / "c.idx"), array.astype(np.int32))


def test_download_fashion_mnist_writes_the_idx_files_tfds_provides(tmp_path):
    # TFDS' mock data stands in for the download (no network here); the writing is real.
    with tfds.testing.mock_data(num_examples=7):
        directory = data.download_fashion_mnist(str(tmp_path))
        expected = list(
            tfds.as_numpy(tfds.load("fashion_mnist", split="test", as_supervised=True))
        )
    assert directory == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(
        name for pair in data._IDX_FILES.values() for name in pair
    )
    images, labels = data.load_fashion_mnist_arrays("test", directory)
    assert images.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(images, np.stack([x for x, _ in expected]))
    np.testing.assert_array_equal(labels, [y for _, y in expected])


# ---------------------------------------------------------------------------- TFDS datasets


def test_imagenet_pipelines_on_mock_data():
    with tfds.testing.mock_data(num_examples=10):
        pipelines = data.imagenet2012(batch_size=4, manual_dir="/nonexistent/manual")
        train = list(pipelines.train)
        evaluation = list(pipelines.eval)
        evaluation_again = list(pipelines.eval)
    assert len(train) == 2  # 10 examples, drop_remainder
    assert [len(y) for _, y in evaluation] == [4, 4, 2]
    for x, y in train + evaluation:
        assert x.dtype == tf.float32 and x.shape[1:] == (224, 224, 3)
        assert -1.0 <= x.numpy().min() and x.numpy().max() <= 1.0
        assert x.numpy().std() > 0.1  # real pixels, not a constant fill
        assert y.dtype == tf.int64 and np.all((y.numpy() >= 0) & (y.numpy() < 1000))
    # eval is deterministic (center crop, fixed order)
    for (a, _), (b, _) in zip(evaluation, evaluation_again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_imagenet_eval_resizes_shorter_side_then_crops_the_center():
    # 300x400 JPEG: left half black, right half white. Shorter side 300 -> 256 makes it
    # 256x341; the central 224 columns start at 58, so the edge (x = 170.7) lands at 112.7.
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = 255
    jpeg = tf.io.encode_jpeg(image, quality=100)
    out = data.center_crop(jpeg).numpy()
    assert out.shape == (224, 224, 3)
    # JPEG ringing and bilinear blur stay within a few pixels of the edge
    assert out[:, :108].max() < 20 and out[:, 118:].min() > 235
    crop = data.random_resized_crop(jpeg, 64).numpy()
    assert crop.shape == (64, 64, 3) and 0 <= crop.min() and crop.max() <= 255


def test_cifar10_pipelines_on_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        pipelines = data.load("cifar10", batch_size=3)
        train = list(pipelines.train)
        evaluation = list(pipelines.eval)
    assert len(train) == 2 and len(evaluation) == 2
    for x, y in train + evaluation:
        assert x.dtype == tf.float32 and x.shape == (3, 32, 32, 3)
        assert -1.0 <= x.numpy().min() and x.numpy().max() <= 1.0
        assert np.all((y.numpy() >= 0) & (y.numpy() < 10))
