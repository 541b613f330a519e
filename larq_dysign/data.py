"""Datasets: Fashion-MNIST from the standard IDX files (Debian's dataset-fashion-mnist)."""

from __future__ import annotations

import gzip
import os

import numpy as np

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


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


def find_fashion_mnist(directory: str | None = None) -> str | None:
    """The first directory holding the four Fashion-MNIST IDX files, or None.

    Looks in `directory` if given, else `$FASHION_MNIST_DIR`, then Debian's location.
    """
    candidates = [directory] if directory else [os.environ.get("FASHION_MNIST_DIR")]
    candidates += [] if directory else list(FASHION_MNIST_DIRS)
    for candidate in filter(None, candidates):
        names = [name for pair in _IDX_FILES.values() for name in pair]
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
        looked = directory or ", ".join(
            filter(None, [os.environ.get("FASHION_MNIST_DIR"), *FASHION_MNIST_DIRS])
        )
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found (looked in: {looked}). Install Debian's "
            "`dataset-fashion-mnist` package or pass the directory holding "
            "train-images-idx3-ubyte.gz and the three other files."
        )
    images_name, labels_name = _IDX_FILES[split]
    images = read_idx(os.path.join(found, images_name))[..., None]
    labels = read_idx(os.path.join(found, labels_name)).astype(np.int64)
    return images, labels
