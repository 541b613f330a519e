"""Datasets as `tf.data` pipelines: ImageNet (TFDS), CIFAR-10 (TFDS), Fashion-MNIST (IDX/TFDS).

Every pipeline yields `(images, labels)` batches: float32 images of shape
`(B, H, W, C)` normalized by `normalize` to [-1, 1] (`x / 127.5 - 1`, larq-zoo's convention,
the one `zoo.preprocess_input` applies too), and int64 class indices `(B,)`.

Augmentation follows the papers' recipes:

- `imagenet2012`: train, a random-resized crop to 224 (area 8-100%, aspect 3/4 to 4/3) and
  a random flip; eval, the shorter side resized to 256 and a 224 center crop.
- `cifar10`, `fashion_mnist`: train, 4 px zero padding, a random crop back to size and a
  random flip; eval, the images as they are.

Example:
    ```python
    from larq_dysign.training import data
    pipelines = data.load("fashion_mnist", batch_size=128)
    model.fit(pipelines.train, validation_data=pipelines.eval, epochs=3)
    data.dataset_info("imagenet2012").input_shape   # (224, 224, 3)
    ```
"""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ..checks import check_positive_int
from ..files import atomic_path
from ..zoo.imagenet import normalize

AUTOTUNE = tf.data.AUTOTUNE
FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
    os.path.join("~", ".keras", "datasets", "fashion-mnist"),  # download_fashion_mnist()
)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: ImageNet: train crops of this size; eval resizes the shorter side to `EVAL_RESIZE` first.
IMAGENET_SIZE = 224
EVAL_RESIZE = 256
SMALL_PADDING = 4


# ---------------------------------------------------------------------------- dataset facts


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and the training loop need to know about a dataset.

    Attributes:
        name: the name `load` and the CLI take.
        input_shape: (height, width, channels) of the pipeline's images.
        num_classes: number of classes.
        train_examples, eval_examples: sizes of the train and eval splits.
        eval_split: what the eval pipeline reads ("validation" for ImageNet, else "test").
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_examples: int
    eval_examples: int
    eval_split: str


DATASETS: dict[str, DatasetInfo] = {
    "imagenet2012": DatasetInfo(
        "imagenet2012", (224, 224, 3), 1000, 1_281_167, 50_000, "validation"
    ),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, 50_000, 10_000, "test"),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, 60_000, 10_000, "test"),
}


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of `name`.

    Raises:
        ValueError: unknown dataset; the message lists the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"Expected dataset to be one of {sorted(DATASETS)}, but got {name!r}.")
    return DATASETS[name]


class Pipelines(NamedTuple):
    """A dataset's train and eval pipelines (batched, normalized) and its `DatasetInfo`."""

    train: tf.data.Dataset
    eval: tf.data.Dataset
    info: DatasetInfo


# ---------------------------------------------------------------------------- augmentation


def random_resized_crop(
    image_bytes: tf.Tensor,
    size: int = IMAGENET_SIZE,
    *,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    seed: int | None = None,
) -> tf.Tensor:
    """Decode a random crop of a JPEG and resize it to `size` x `size` (Inception's crop).

    Details:
        Samples a box covering `area_range` of the image with `aspect_ratio_range`
        (10 attempts, else the whole image), decodes only that box, and resizes it
        bilinearly. Returns float32 values in [0, 255]; `normalize` is applied later.

    Args:
        image_bytes: a scalar string tensor holding a JPEG.
        size: output height and width.
        area_range: fraction of the image area the crop covers.
        aspect_ratio_range: width / height of the crop.
        seed: op seed, for reproducible crops.

    Returns:
        A `(size, size, 3)` float32 tensor.
    """
    shape = tf.io.extract_jpeg_shape(image_bytes)
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
        seed=seed,
    )
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
    return tf.image.resize(image, (size, size), method="bilinear")


def center_crop(
    image_bytes: tf.Tensor, size: int = IMAGENET_SIZE, *, resize: int = EVAL_RESIZE
) -> tf.Tensor:
    """Decode a JPEG, resize its shorter side to `resize` (aspect kept), crop the center.

    Args:
        image_bytes: a scalar string tensor holding a JPEG.
        size: output height and width.
        resize: length of the shorter side before cropping.

    Returns:
        A `(size, size, 3)` float32 tensor with values in [0, 255].
    """
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
    scale = resize / tf.minimum(height, width)
    new_size = tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32)
    image = tf.image.resize(image, tf.maximum(new_size, size), method="bilinear")
    return tf.image.resize_with_crop_or_pad(image, size, size)


def pad_crop_flip(
    image: tf.Tensor, *, padding: int = SMALL_PADDING, seed: int | None = None
) -> tf.Tensor:
    """Small-image augmentation: zero-pad `padding` pixels, random crop back, random flip.

    Args:
        image: `(H, W, C)` tensor.
        padding: pixels added on each side before the crop (the shift is at most this).
        seed: op seed.

    Returns:
        A tensor of the same shape and dtype: `image` shifted by up to `padding` pixels in
        each direction (zeros fill in) and mirrored left-right with probability 1/2.
    """
    height, width, channels = image.shape
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.random_crop(padded, (height, width, channels), seed=seed)
    return tf.image.random_flip_left_right(image, seed=seed)


# ---------------------------------------------------------------------------- pipelines


def _finish(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    training: bool,
    augment: Callable | None,
    shuffle_buffer: int,
    drop_remainder: bool,
) -> tf.data.Dataset:
    """Shuffle (train), augment per example, batch, normalize per batch, prefetch."""
    if training:
        dataset = dataset.shuffle(shuffle_buffer)
    if augment is not None:
        dataset = dataset.map(lambda x, y: (augment(x), y), num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda x, y: (normalize(x), tf.cast(y, tf.int64)), AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def _check_batch_size(batch_size) -> None:
    check_positive_int("batch_size", batch_size)


def _subset(dataset: tf.data.Dataset, examples: int | None) -> tf.data.Dataset:
    return dataset if examples is None else dataset.take(examples)


def _in_memory(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    # Arrays have no files to shard: multi-worker training shards them by element.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def imagenet2012(
    *,
    batch_size: int,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    shuffle_buffer: int = 10_000,
    drop_remainder: bool = True,
) -> Pipelines:
    """ImageNet (ILSVRC 2012) through TFDS `imagenet2012`.

    Details:
        TFDS cannot download ImageNet: put `ILSVRC2012_img_train.tar` and
        `ILSVRC2012_img_val.tar` in `manual_dir` (default `<data_dir>/downloads/manual`);
        the first call prepares the TFRecords. Train: shuffled files and a
        `shuffle_buffer` of encoded JPEGs, `random_resized_crop` to 224 (only the crop is
        decoded) and a random flip. Eval (the validation split): shorter side to 256, center
        crop 224. Both `normalize`d to [-1, 1].

    Example:
        ```python
        pipelines = data.imagenet2012(batch_size=256, manual_dir="/data/imagenet")
        ```

    Args:
        batch_size: global batch size (per-replica size x replicas under a strategy).
        data_dir: TFDS data directory (default `~/tensorflow_datasets`).
        manual_dir: directory holding the two ILSVRC2012 tar files.
        train_examples, eval_examples: use only the first N examples of a split.
        shuffle_buffer: encoded images held for shuffling (about 110 KB each).
        drop_remainder: drop the last partial train batch (static shapes, e.g. for TPUs).

    Returns:
        `Pipelines(train, eval, info)` with `(B, 224, 224, 3)` float32 images.

    Raises:
        ValueError: a bad `batch_size`.
    """
    import tensorflow_datasets as tfds

    _check_batch_size(batch_size)
    prepare = {}
    if manual_dir is not None:
        prepare = {"download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)}

    def split(name: str, shuffle: bool) -> tf.data.Dataset:
        return tfds.load(
            "imagenet2012",
            split=name,
            data_dir=data_dir,
            as_supervised=True,
            shuffle_files=shuffle,
            decoders={"image": tfds.decode.SkipDecoding()},
            download_and_prepare_kwargs=prepare,
        )

    info = DATASETS["imagenet2012"]
    train = _finish(
        _subset(split("train", True), train_examples),
        batch_size=batch_size,
        training=True,
        augment=lambda image: tf.image.random_flip_left_right(random_resized_crop(image)),
        shuffle_buffer=shuffle_buffer,
        drop_remainder=drop_remainder,
    )
    evaluation = _finish(
        _subset(split(info.eval_split, False), eval_examples),
        batch_size=batch_size,
        training=False,
        augment=center_crop,
        shuffle_buffer=0,
        drop_remainder=False,
    )
    return Pipelines(train, evaluation, info)


def _tfds_splits(name: str, data_dir: str | None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The train and eval splits of TFDS dataset `name` as `(image, label)` pairs."""
    import tensorflow_datasets as tfds

    return tuple(
        tfds.load(name, split=split, data_dir=data_dir, as_supervised=True)
        for split in ("train", DATASETS[name].eval_split)
    )


def _small_pipelines(
    info: DatasetInfo,
    splits: tuple[tf.data.Dataset, tf.data.Dataset],
    batch_size: int,
    train_examples: int | None,
    eval_examples: int | None,
    augment: bool,
    drop_remainder: bool,
) -> Pipelines:
    """Cache the (small, uint8) splits in memory, then pad-crop-flip the train split."""
    train, evaluation = splits
    train = _subset(train, train_examples).cache()
    evaluation = _subset(evaluation, eval_examples).cache()
    return Pipelines(
        _finish(
            train,
            batch_size=batch_size,
            training=True,
            augment=pad_crop_flip if augment else None,
            shuffle_buffer=min(info.train_examples, train_examples or info.train_examples),
            drop_remainder=drop_remainder,
        ),
        _finish(
            evaluation,
            batch_size=batch_size,
            training=False,
            augment=None,
            shuffle_buffer=0,
            drop_remainder=False,
        ),
        info,
    )


def cifar10(
    *,
    batch_size: int,
    data_dir: str | None = None,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    augment: bool = True,
    drop_remainder: bool = True,
) -> Pipelines:
    """CIFAR-10 through TFDS `cifar10` (downloaded on first use).

    Train: pad 4 px, random crop 32, random flip (`pad_crop_flip`); eval: the test split as
    is. Both cached in memory as uint8 and `normalize`d to [-1, 1].

    Example:
        ```python
        pipelines = data.cifar10(batch_size=128)
        ```

    Args:
        batch_size: global batch size.
        data_dir: TFDS data directory.
        train_examples, eval_examples: use only the first N examples of a split.
        augment: False turns the train augmentation off.
        drop_remainder: drop the last partial train batch.

    Returns:
        `Pipelines(train, eval, info)` with `(B, 32, 32, 3)` float32 images.

    Raises:
        ValueError: a bad `batch_size`.
    """
    _check_batch_size(batch_size)
    info = DATASETS["cifar10"]
    train, evaluation = _tfds_splits("cifar10", data_dir)
    return _small_pipelines(
        info,
        (train, evaluation),
        batch_size,
        train_examples,
        eval_examples,
        augment,
        drop_remainder,
    )


def fashion_mnist(
    *,
    batch_size: int,
    directory: str | None = None,
    data_dir: str | None = None,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    augment: bool = True,
    drop_remainder: bool = True,
) -> Pipelines:
    """Fashion-MNIST from the standard IDX files, or through TFDS when there are none.

    Details:
        Looks for the IDX files as `find_fashion_mnist` does (`directory`,
        `$FASHION_MNIST_DIR`, Debian's `/usr/share/datasets/fashion-mnist`,
        `~/.keras/datasets/fashion-mnist`); without them, loads TFDS `fashion_mnist`
        (which downloads). Train: `pad_crop_flip`; eval: the test split. Both `normalize`d.

    Example:
        ```python
        pipelines = data.fashion_mnist(batch_size=64, train_examples=2048)
        ```

    Args:
        batch_size: global batch size.
        directory: a directory holding the four IDX files.
        data_dir: TFDS data directory (used only without IDX files).
        train_examples, eval_examples: use only the first N examples of a split.
        augment: False turns the train augmentation off.
        drop_remainder: drop the last partial train batch.

    Returns:
        `Pipelines(train, eval, info)` with `(B, 28, 28, 1)` float32 images.

    Raises:
        ValueError: a bad `batch_size`.
        FileNotFoundError: `directory` was given but does not hold the IDX files.
    """
    _check_batch_size(batch_size)
    info = DATASETS["fashion_mnist"]
    if directory is not None or find_fashion_mnist() is not None:
        train = _in_memory(*load_fashion_mnist_arrays("train", directory))
        evaluation = _in_memory(*load_fashion_mnist_arrays("test", directory))
    else:
        train, evaluation = _tfds_splits("fashion_mnist", data_dir)
    return _small_pipelines(
        info,
        (train, evaluation),
        batch_size,
        train_examples,
        eval_examples,
        augment,
        drop_remainder,
    )


_LOADERS: dict[str, Callable[..., Pipelines]] = {
    "imagenet2012": imagenet2012,
    "cifar10": cifar10,
    "fashion_mnist": fashion_mnist,
}


def load(name: str, *, batch_size: int, **kwargs) -> Pipelines:
    """The pipelines of dataset `name` (`imagenet2012`, `cifar10` or `fashion_mnist`).

    Example:
        ```python
        train, evaluation, info = data.load("cifar10", batch_size=128)
        ```

    Args:
        name: a key of `DATASETS`.
        batch_size: global batch size.
        **kwargs: the dataset function's other keyword arguments (`data_dir`,
            `manual_dir`, `directory`, `train_examples`, ...).

    Returns:
        `Pipelines(train, eval, info)`.

    Raises:
        ValueError: unknown dataset (the known ones are listed), or a bad argument.
    """
    dataset_info(name)
    return _LOADERS[name](batch_size=batch_size, **kwargs)


def takes_augment(name: str) -> bool:
    """Whether dataset `name`'s loader has the `augment` switch (the small datasets; ImageNet's
    crops are part of its pipeline)."""
    dataset_info(name)
    return "augment" in inspect.signature(_LOADERS[name]).parameters


# ---------------------------------------------------------------------------- IDX files


def read_idx(path: str) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes into an array.

    Raises:
        ValueError: the file is not an IDX file of unsigned bytes.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4]!r}).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {array.size} values, its header says {dims}.")
    return array.reshape(dims)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write an array of unsigned bytes as an IDX file (gzipped if `path` ends in `.gz`).

    The inverse of `read_idx`. The file is written under a temporary name and renamed, so
    an interrupted write leaves no partial file.

    Raises:
        ValueError: `array` is not uint8, or has no dimension / more than 255 of them.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(
            f"Expected a uint8 array with 1 to 255 dimensions, but got {array.dtype} with "
            f"shape {array.shape}."
        )
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    opener = gzip.open if path.endswith(".gz") else open
    with atomic_path(path) as tmp, opener(tmp, "wb") as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def _fashion_mnist_candidates(directory: str | None) -> list[str]:
    if directory:
        return [directory]
    return [
        os.path.expanduser(d)
        for d in filter(None, [os.environ.get("FASHION_MNIST_DIR"), *FASHION_MNIST_DIRS])
    ]


def find_fashion_mnist(directory: str | None = None) -> str | None:
    """The first directory holding the four Fashion-MNIST IDX files, or None.

    Looks in `directory` if given, else `$FASHION_MNIST_DIR`, Debian's location, then
    `~/.keras/datasets/fashion-mnist` (where `download_fashion_mnist` writes).
    """
    names = [name for pair in _IDX_FILES.values() for name in pair]
    for candidate in _fashion_mnist_candidates(directory):
        if all(os.path.exists(os.path.join(candidate, name)) for name in names):
            return candidate
    return None


def load_fashion_mnist_arrays(
    split: str = "train", directory: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images `(N, 28, 28, 1)` uint8 and labels `(N,)` int64 from IDX files.

    Raises:
        ValueError: `split` is not "train" or "test".
        FileNotFoundError: no directory with the IDX files was found.
    """
    if split not in _IDX_FILES:
        raise ValueError(f'Expected split to be "train" or "test", but got {split!r}.')
    found = find_fashion_mnist(directory)
    if found is None:
        looked = ", ".join(_fashion_mnist_candidates(directory))
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found (looked in: {looked}). Install Debian's "
            "`dataset-fashion-mnist` package, run "
            "`larq_dysign.training.data.download_fashion_mnist()`, or pass the directory "
            "holding train-images-idx3-ubyte.gz and the three other files."
        )
    images_name, labels_name = _IDX_FILES[split]
    images = read_idx(os.path.join(found, images_name))[..., None]
    labels = read_idx(os.path.join(found, labels_name)).astype(np.int64)
    return images, labels


def download_fashion_mnist(directory: str | None = None, *, data_dir: str | None = None) -> str:
    """Fetch Fashion-MNIST through TFDS and write the four standard IDX files.

    Details:
        For machines without Debian's `dataset-fashion-mnist` package (`make data` calls
        this). TFDS downloads the dataset into `data_dir`; its splits are then written as
        `train-images-idx3-ubyte.gz` and the three other files, byte-for-byte the IDX
        format `load_fashion_mnist_arrays` reads, in `directory`.

    Example:
        ```python
        data.download_fashion_mnist()   # -> "~/.keras/datasets/fashion-mnist" expanded
        ```

    Args:
        directory: where to write the IDX files; default `~/.keras/datasets/fashion-mnist`,
            which `find_fashion_mnist` searches.
        data_dir: TFDS data directory.

    Returns:
        The directory holding the four files.
    """
    import tensorflow_datasets as tfds

    directory = os.path.expanduser(directory or FASHION_MNIST_DIRS[-1])
    os.makedirs(directory, exist_ok=True)
    for split, (images_name, labels_name) in _IDX_FILES.items():
        dataset = tfds.load("fashion_mnist", split=split, data_dir=data_dir, as_supervised=True)
        images, labels = zip(*tfds.as_numpy(dataset))
        write_idx(os.path.join(directory, images_name), np.stack(images)[..., 0])
        write_idx(os.path.join(directory, labels_name), np.asarray(labels, dtype=np.uint8))
    return directory
