"""Data pipelines: ImageNet and CIFAR-10 through the real TFDS builders (tiny archives in
the real formats, offline) and on TFDS mock data, Fashion-MNIST on the real files."""

import io
import os
import tarfile

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


# ---------------------------------------------------------------------------- TFDS, real builders
#
# `tfds.testing.mock_data` (above) never runs `download_and_prepare`, so a broken preparation
# path passed those tests: issue #13, TFDS' `DatasetBuilder.code_path` imports
# `importlib_resources`, which nothing installed. The tests below run the real builders
# through `data.load`, as `larq-dysign train --dataset ...` does, offline, on tiny archives in
# the real formats: download_and_prepare (code_path, checksums, extraction, the builders' own
# file parsing, writing the records), reading, and the zoo's preprocessing.


def _add_to_tar(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    tar.addfile(member, io.BytesIO(payload))


def _solid_jpeg(colour, height: int, width: int) -> bytes:
    image = np.broadcast_to(np.asarray(colour, np.uint8), (height, width, 3))
    return tf.io.encode_jpeg(image, quality=95).numpy()


def _identify_solid_images(images: np.ndarray, colours: dict) -> list:
    """The key of `colours` each normalized image shows; each image must be one flat colour."""
    found = []
    for image in images:
        pixels = (image.reshape(-1, 3).astype(np.float64) + 1.0) * 127.5
        mean = pixels.mean(0)
        assert np.abs(pixels - mean).max() < 4  # flat: a crop of one colour, not a mixture
        key = min(colours, key=lambda k: np.abs(mean - colours[k]).max())
        assert np.abs(mean - colours[key]).max() < 4, (mean, colours[key])
        found.append(key)
    return found


# Class index = rank of the synset in sorted order (1000 classes): tench, Chihuahua, toilet
# tissue.
IMAGENET_TRAIN_CLASSES = {"n01440764": 0, "n02085620": 151, "n15075141": 999}
IMAGENET_TRAIN_COLOURS = {0: (40, 200, 90), 151: (140, 60, 220), 999: (230, 150, 20)}
# The first validation images' classes in the real set (e.g. Caffe's val.txt: ILSVRC2012_val_
# 00000001.JPEG 65, ...); TFDS must attach them to files named like the real ones.
IMAGENET_VALIDATION_LABELS = [65, 970, 230, 809, 516, 57, 334, 415]


def _write_ilsvrc2012_manual_dir(directory) -> None:
    """ILSVRC2012_img_train.tar (one nXXXXXXXX.tar of JPEGs per class) and _img_val.tar."""
    directory.mkdir()
    with tarfile.open(directory / "ILSVRC2012_img_train.tar", "w") as train:
        for synset, label in IMAGENET_TRAIN_CLASSES.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as class_tar:
                for i in range(4):
                    jpeg = _solid_jpeg(IMAGENET_TRAIN_COLOURS[label], 40 + 7 * i, 60 - 5 * i)
                    _add_to_tar(class_tar, f"{synset}_{i + 1}.JPEG", jpeg)
            _add_to_tar(train, f"{synset}.tar", inner.getvalue())
    # Written in reverse order: TFDS pairs its label list with the *sorted* file names.
    with tarfile.open(directory / "ILSVRC2012_img_val.tar", "w") as validation:
        for i in reversed(range(len(IMAGENET_VALIDATION_LABELS))):
            jpeg = _solid_jpeg((15 + 30 * i, 240 - 30 * i, 128), 48, 64)
            _add_to_tar(validation, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg)


def test_imagenet2012_prepares_from_a_manual_dir_for_real(tmp_path):
    manual_dir, data_dir = tmp_path / "manual", tmp_path / "tfds"
    _write_ilsvrc2012_manual_dir(manual_dir)

    pipelines = data.load(
        "imagenet2012", batch_size=4, manual_dir=str(manual_dir), data_dir=str(data_dir)
    )
    builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
        "train": 12,
        "validation": 8,
    }

    evaluation = list(pipelines.eval)
    assert [len(y) for _, y in evaluation] == [4, 4]
    train = list(pipelines.train)
    assert [len(y) for _, y in train] == [4, 4, 4]
    for x, y in evaluation + train:
        assert x.dtype == tf.float32 and x.shape == (4, 224, 224, 3) and y.dtype == tf.int64
        assert -1.0 <= x.numpy().min() and x.numpy().max() <= 1.0

    # Each validation image (identified by its colour) carries the real set's label.
    validation_colours = {
        i: (15 + 30 * i, 240 - 30 * i, 128) for i in range(len(IMAGENET_VALIDATION_LABELS))
    }
    images = np.concatenate([x.numpy() for x, _ in evaluation])
    labels = np.concatenate([y.numpy() for _, y in evaluation])
    shown = _identify_solid_images(images, validation_colours)
    assert sorted(shown) == list(range(8))
    assert labels.tolist() == [IMAGENET_VALIDATION_LABELS[i] for i in shown]

    # Train crops keep their class's colour and carry the class index of their synset.
    images = np.concatenate([x.numpy() for x, _ in train])
    labels = np.concatenate([y.numpy() for _, y in train])
    assert labels.tolist() == _identify_solid_images(images, IMAGENET_TRAIN_COLOURS)
    assert sorted(labels.tolist()) == [0] * 4 + [151] * 4 + [999] * 4


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def _cifar10_image(index: int) -> np.ndarray:
    """Image `index` of the fake archive, (32, 32, 3) uint8: red is 3 + 7 x index
    everywhere, green 8 x row, blue 8 x column, so a parser that mixed up planes, rows and
    columns would show it."""
    rows, columns = np.mgrid[0:32, 0:32]
    return np.stack([np.full((32, 32), 3 + 7 * index), 8 * rows, 8 * columns], -1).astype(np.uint8)


def _cifar10_record(index: int, label: int) -> bytes:
    """One record of CIFAR-10's binary format: the label byte, then the R, G, B planes."""
    return bytes([label]) + _cifar10_image(index).transpose(2, 0, 1).tobytes()


def _cifar10_label(index: int) -> int:
    return (3 * index + 1) % 10


def _put_cifar10_archive_in_the_download_cache(data_dir) -> None:
    """A tiny cifar-10-binary.tar.gz where TFDS keeps a finished download of the real one.

    TFDS cannot fetch from 127.0.0.1 instead of www.cs.toronto.edu (the URL is fixed in the
    builder), and it checks a fetched or manually placed archive against the registered
    sha256, which no other file matches. A finished download is stored as
    `<data_dir>/downloads/cifar10/<name from url and sha256>` plus an `.INFO` file; TFDS
    reuses such a file without fetching or re-hashing. Everything after the fetch is real.
    """
    from tensorflow_datasets.core.download import checksums, resource

    url_info = checksums.get_all_url_infos()[CIFAR10_URL]  # TFDS' registered size and sha256
    path = tfds.core.Path(data_dir) / "downloads" / "cifar10"
    path.mkdir(parents=True)
    path = path / resource.get_dl_fname(CIFAR10_URL, url_info.checksum)
    files = {f"data_batch_{n}.bin": [2 * n - 2, 2 * n - 1] for n in range(1, 6)}
    files["test_batch.bin"] = [10, 11, 12, 13]
    with tarfile.open(path, "w:gz") as archive:
        for name, indices in files.items():
            records = b"".join(_cifar10_record(i, _cifar10_label(i)) for i in indices)
            _add_to_tar(archive, f"cifar-10-batches-bin/{name}", records)
        names = ("\n".join(CIFAR10_NAMES) + "\n\n").encode()  # as in the real file
        _add_to_tar(archive, "cifar-10-batches-bin/batches.meta.txt", names)
    resource.write_info_file(
        url=CIFAR10_URL,
        path=path,
        dataset_name="cifar10",
        original_fname="cifar-10-binary.tar.gz",
        url_info=url_info,
    )


def test_cifar10_prepares_from_the_cifar_archive_for_real(tmp_path):
    _put_cifar10_archive_in_the_download_cache(tmp_path)

    pipelines = data.load("cifar10", batch_size=5, data_dir=str(tmp_path), augment=False)
    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    assert builder.info.splits["train"].num_examples == 10
    assert builder.info.splits["test"].num_examples == 4
    assert builder.info.features["label"].names == CIFAR10_NAMES  # read from batches.meta.txt

    train, evaluation = list(pipelines.train), list(pipelines.eval)
    assert [len(y) for _, y in train] == [5, 5] and [len(y) for _, y in evaluation] == [4]
    for split, batches, indices in (
        ("train", train, range(10)),
        ("test", evaluation, [10, 11, 12, 13]),
    ):
        images = np.concatenate([x.numpy() for x, _ in batches])
        labels = np.concatenate([y.numpy() for _, y in batches])
        assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3), split
        # the red plane names the record: each one exactly once, pixel for pixel, normalized
        shown = [round(((image[0, 0, 0] + 1) * 127.5 - 3) / 7) for image in images]
        assert sorted(shown) == list(indices), split
        for image, index in zip(images, shown):
            np.testing.assert_allclose(image, _cifar10_image(index) / 127.5 - 1.0, atol=1e-6)
        assert labels.tolist() == [_cifar10_label(i) for i in shown], split
