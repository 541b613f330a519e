"""Pretrained weights: a registry per model, download into a cache, mirrors, checked loading.

Modelled on larq-zoo and keras.applications: each zoo model has registry entries
`(dataset, include_top) -> file name, sha256, URL`; `weights="imagenet"` finds the file in a
local mirror directory or the cache, else downloads it with `tf.keras.utils.get_file` (sha256,
progress bar) into the cache; `weights="path/to/file"` loads a local checkpoint. Every load
first compares the checkpoint's layers and weight shapes with the model's, so a checkpoint of
another architecture or class count fails with the first mismatching layer named, before any
weight is assigned.

Where files are looked for, in this order (each for the no-top file first, then the full file
when `include_top=False`):

1. the mirror directory `$LARQ_DYSIGN_WEIGHTS_DIR` (read in place, never written);
2. the cache `$LARQ_DYSIGN_CACHE_DIR`, default `~/.keras/larq_dysign`;
3. a download from the mirror base URL `$LARQ_DYSIGN_WEIGHTS_URL` (`<base>/<file name>`) if
   set, else from the registry's URL. The download goes to a temporary name in the cache
   directory and is renamed only once complete and verified: an interrupted or corrupt
   download leaves nothing behind. `LARQ_DYSIGN_WEIGHTS_URL` may also be a `file://` URL or
   a local directory, which then acts as a mirror directory.

Verification: a registry entry with a sha256 accepts only a file with that hash (a bad file
in the cache is removed and downloaded again; a bad download is removed). An entry whose hash
is still empty (nothing published yet) accepts a file found in the mirror or cache, or
downloaded from the mirror URL, if its layer names' order and every weight shape match the
model exactly (the check every load makes); its sha256 is logged so that it can be compared
with the publisher's. An unhashed download that fails this check is removed from the cache.

Checkpoint formats: Keras HDF5 weights (`model.save_weights("w.h5")`, or a whole model saved
with `model.save("m.h5")`; any file name) and TensorFlow checkpoints written by
`model.save_weights("dir/prefix")` (pass the prefix, the `.index` file, or the directory).
Keras 3-style `.keras` archives, `.weights.h5` files and SavedModels are refused with the
command that converts them. Layers are matched by position (the order of the layers that have
weights, as Keras' topological loading), so layer names need not match; shapes must.
`include_top=False` accepts a no-top file, or a full file whose extra trailing layers (the
classifier head) are skipped.

Example:
    ```python
    model = zoo.DyResNet18(weights="imagenet")           # registry, cache, mirror
    model = zoo.DyResNet18(weights="dyresnet18.h5")      # a local file
    published = zoo.publish_weights(trained, "out/", dataset="imagenet")
    ```
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable

import h5py
import numpy as np
import tensorflow as tf

from .registry import get_model_constructor, list_models

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "LARQ_DYSIGN_CACHE_DIR"
MIRROR_URL_ENV = "LARQ_DYSIGN_WEIGHTS_URL"
MIRROR_DIR_ENV = "LARQ_DYSIGN_WEIGHTS_DIR"
#: Seconds a download may wait for the server (connect or next bytes) before it fails.
TIMEOUT_ENV = "LARQ_DYSIGN_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
#: `.part` files this old are left by a killed process (a live download writes its own).
STALE_PART_SECONDS = 24 * 3600
DEFAULT_CACHE_DIR = os.path.join("~", ".keras", "larq_dysign")
#: Datasets with an entry for every zoo model, and their class counts.
DEFAULT_DATASETS = {"imagenet": 1000}
#: The training recipe's dataset name for each registry dataset (for the error message).
TRAINING_DATASETS = {"imagenet": "imagenet2012"}
_DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")
_MODEL_MARK = "larq_dysign_model"  # HDF5 attributes written by `publish_weights`
_DATASET_MARK = "larq_dysign_dataset"
_TOP_MARK = "larq_dysign_include_top"
#: HDF5 attribute of weights made for a padding other than the zoo's default: "pytorch"
#: (`publish_weights` writes it for a model built with `padding="pytorch"`, e.g. the ImageNet
#: weights `import_reactnet` converts from ReActNet's PyTorch checkpoints).
PADDING_MARK = "larq_dysign_padding"


class WeightsError(Exception):
    """Base class of the errors raised when pretrained weights cannot be found or loaded."""


class WeightsNotAvailableError(WeightsError, FileNotFoundError):
    """No file for a registered dataset was found in the mirror or cache, and none could be
    downloaded (for ImageNet: nothing has been published yet)."""


class WeightsFileNotFoundError(WeightsError, FileNotFoundError, ValueError):
    """`weights` names a file or checkpoint that does not exist."""


class WeightsChecksumError(WeightsError, ValueError):
    """A file's sha256 differs from the registry's."""


class WeightsDownloadError(WeightsError, OSError):
    """A download failed (connection refused or cut, HTTP error); nothing was kept."""


class IncompatibleWeightsError(WeightsError, ValueError):
    """A checkpoint does not fit the model (another architecture, input channels or classes),
    or is not a weights file in a supported format."""


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One registry entry: where the weights of `model` trained on `dataset` live.

    Attributes:
        model: a zoo model name, e.g. "DyResNet18".
        dataset: e.g. "imagenet".
        include_top: True for the full network, False for the file without the head.
        file_name: the file's name in the cache and mirrors.
        sha256: hex digest, "" until a checkpoint is published.
        url: where to download it, "" until a checkpoint is published.
        num_classes: classes of the head (None for a no-top file).
    """

    model: str
    dataset: str
    include_top: bool
    file_name: str
    sha256: str = ""
    url: str = ""
    num_classes: int | None = None

    def as_code(self) -> str:
        """The `register_weights(...)` call that adds this entry."""
        return (
            f'zoo.register_weights("{self.model}", "{self.dataset}", '
            f"include_top={self.include_top}, num_classes={self.num_classes}, "
            f'sha256="{self.sha256}", url="{self.url}")'
        )


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """What `publish_weights` wrote: the file and the registry entry that describes it."""

    path: str
    entry: WeightsEntry


#: Published checkpoints (none yet: see the module docstring and `publish_weights`). Add the
#: `WeightsEntry(...)` that `larq-dysign publish-weights` prints.
PUBLISHED_WEIGHTS: tuple[WeightsEntry, ...] = ()

_REGISTRY: dict[tuple[str, str, bool], WeightsEntry] = {}
_DATASET_CLASSES: dict[str, int] = dict(DEFAULT_DATASETS)


def weights_file_name(model_name: str, dataset: str, *, include_top: bool = True) -> str:
    """larq-zoo's file naming: `<model>_<dataset>_weights[_notop].h5`, lower case."""
    suffix = "" if include_top else "_notop"
    return f"{model_name.lower()}_{dataset}_weights{suffix}.h5"


def _check_dataset_name(dataset) -> None:
    if not isinstance(dataset, str) or not _DATASET_NAME.fullmatch(dataset):
        raise ValueError(
            "Expected dataset to be a lower-case name of letters, digits, '_' or '-' (it is "
            f"part of the file name), but got {dataset!r}."
        )


def register_weights(
    model_name: str,
    dataset: str,
    *,
    include_top: bool = True,
    num_classes: int | None = None,
    sha256: str = "",
    url: str = "",
    file_name: str | None = None,
) -> WeightsEntry:
    """Add (or replace) the registry entry `(model_name, dataset, include_top)`.

    Details:
        After this, `zoo.<model_name>(weights=dataset)` finds the file in the mirror or cache
        or downloads it from `url`. `sha256` "" accepts any file whose layers match the model
        (see the module docstring). A new dataset needs `num_classes` (used to reject
        `num_classes` that cannot match before a model is built).

    Example:
        ```python
        zoo.register_weights("ReActNet18", "cifar10", num_classes=10,
                             sha256="9f2c...", url="https://example.org/w/reactnet18_cifar10_weights.h5")
        model = zoo.ReActNet18(input_shape=(32, 32, 3), num_classes=10, weights="cifar10")
        ```

    Args:
        model_name: a zoo model (`zoo.list_models()`).
        dataset: lower-case dataset name.
        include_top: the entry is for the full network (True) or the no-top file (False).
        num_classes: classes of the dataset; needed for a dataset not registered yet.
        sha256: hex sha256 of the file, or "".
        url: download URL, or "".
        file_name: default `weights_file_name(model_name, dataset, include_top=...)`.

    Returns:
        The `WeightsEntry` added.

    Raises:
        ValueError: unknown model, bad dataset name, missing or inconsistent `num_classes`,
            a sha256 that is not 64 hex digits.
    """
    get_model_constructor(model_name)
    _check_dataset_name(dataset)
    if sha256 and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"Expected sha256 to be 64 lower-case hex digits or '', got {sha256!r}.")
    known = _DATASET_CLASSES.get(dataset)
    if num_classes is None and known is None:
        raise ValueError(
            f"Expected num_classes for the new dataset {dataset!r}, but got None. "
            f"Known datasets: {sorted(_DATASET_CLASSES)}."
        )
    if num_classes is not None and known is not None and num_classes != known:
        raise ValueError(
            f"Expected num_classes={known} for dataset {dataset!r} (registered before), "
            f"but got {num_classes}."
        )
    _DATASET_CLASSES[dataset] = known if known is not None else num_classes
    entry = WeightsEntry(
        model=model_name,
        dataset=dataset,
        include_top=include_top,
        file_name=file_name or weights_file_name(model_name, dataset, include_top=include_top),
        sha256=sha256,
        url=url,
        num_classes=_DATASET_CLASSES[dataset] if include_top else None,
    )
    _REGISTRY[(model_name, dataset, include_top)] = entry
    return entry


def registered_datasets(model_name: str | None = None) -> list[str]:
    """Datasets `weights=` accepts for `model_name` (for any model when None), sorted."""
    if model_name is None:
        return sorted(_DATASET_CLASSES)
    names = {dataset for (model, dataset, _), _entry in _REGISTRY.items() if model == model_name}
    if model_name in list_models():
        names.update(DEFAULT_DATASETS)
    return sorted(names)


def dataset_num_classes(dataset: str) -> int | None:
    """Classes of a registered dataset (1000 for "imagenet"), None if unknown."""
    return _DATASET_CLASSES.get(dataset)


def weights_entry(model_name: str, dataset: str, *, include_top: bool = True) -> WeightsEntry:
    """The registry entry `(model_name, dataset, include_top)`.

    Every zoo model has "imagenet" entries (empty URL and hash until published), so models
    registered later need nothing here.

    Raises:
        ValueError: unknown model, or no entry for `dataset` (the valid ones are listed).
    """
    get_model_constructor(model_name)
    key = (model_name, dataset, include_top)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if dataset in DEFAULT_DATASETS:
        return WeightsEntry(
            model=model_name,
            dataset=dataset,
            include_top=include_top,
            file_name=weights_file_name(model_name, dataset, include_top=include_top),
            num_classes=DEFAULT_DATASETS[dataset] if include_top else None,
        )
    if (model_name, dataset, not include_top) in _REGISTRY:
        # A full file alone serves include_top=False (head skipped), not the other way round.
        raise ValueError(
            f"Expected weights for {model_name} with include_top={include_top} to be a dataset "
            f"registered for it, but {dataset!r} has only an include_top={not include_top} file."
        )
    raise ValueError(
        f"Expected weights for {model_name} to be None, a path to a checkpoint, or one of the "
        f"datasets registered for it {registered_datasets(model_name)}, but got {dataset!r}."
    )


for _entry in PUBLISHED_WEIGHTS:
    if _entry.num_classes is not None:
        _DATASET_CLASSES.setdefault(_entry.dataset, _entry.num_classes)
    _REGISTRY[(_entry.model, _entry.dataset, _entry.include_top)] = _entry


# ----------------------------------------------------------------------------- locations


def default_cache_dir() -> str:
    """`$LARQ_DYSIGN_CACHE_DIR`, else `~/.keras/larq_dysign` (expanded)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR))


def mirror_locations() -> tuple[str | None, str | None]:
    """The configured mirror `(directory, base URL)`, each None when not set.

    `$LARQ_DYSIGN_WEIGHTS_DIR` is a directory; `$LARQ_DYSIGN_WEIGHTS_URL` is an http(s) base
    URL, or a `file://` URL / local directory (then it is the directory, if
    `$LARQ_DYSIGN_WEIGHTS_DIR` is not set).

    Raises:
        ValueError: a variable names something that is neither a URL nor a directory.
    """
    directory = os.environ.get(MIRROR_DIR_ENV) or None
    url = os.environ.get(MIRROR_URL_ENV) or None
    if directory is not None and not os.path.isdir(os.path.expanduser(directory)):
        raise ValueError(
            f"Expected {MIRROR_DIR_ENV} to be an existing directory, but got {directory!r}."
        )
    if url is not None and not re.match(r"(https?|ftp)://", url):
        local = urllib.parse.urlparse(url).path if url.startswith("file://") else url
        if not os.path.isdir(os.path.expanduser(local)):
            raise ValueError(
                f"Expected {MIRROR_URL_ENV} to be an http(s):// base URL, a file:// URL or an "
                f"existing directory, but got {url!r}."
            )
        directory, url = directory or local, None
    if directory is not None:
        directory = os.path.abspath(os.path.expanduser(directory))
    return directory, url.rstrip("/") if url else None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_timeout() -> float:
    """`LARQ_DYSIGN_DOWNLOAD_TIMEOUT` in seconds (default 60).

    Raises:
        ValueError: the variable is set to something other than a positive number.
    """
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(
            f"Expected {TIMEOUT_ENV} to be a positive number of seconds, but got {value!r}."
        )
    return seconds


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """`get_file` opens its connection with urllib's default, no timeout: a server that stops
    sending would hang the caller forever. Set the process default for the download only."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def remove_stale_parts(directory: str, *, older_than: float = STALE_PART_SECONDS) -> list[str]:
    """Delete `.part` files older than `older_than` seconds, left by killed downloads."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(directory), ".*.part")):
        try:
            if time.time() - os.path.getmtime(path) > older_than:
                os.remove(path)
                removed.append(path)
        except OSError:  # another process removed or renamed it meanwhile
            continue
    return removed


class _NotOnServer(Exception):
    """HTTP 404: the mirror or registry URL does not hold the file (try the next source)."""


def _download(
    url: str, destination: str, *, sha256: str, check: Callable[[str], None] | None
) -> None:
    """Download `url` to `destination` through a temporary name in the same directory.

    `tf.keras.utils.get_file` (tf-keras 2.21) writes straight to its target, keeps a file
    whose hash does not match, and does not compare the bytes received with the
    Content-Length: a connection closed mid-file ends the download "successfully". So here it
    writes `.<name>.<random>.part`, renamed only after the sha256 matched (or, without a
    registered hash, after `check`, by default that the file reads as Keras HDF5 weights;
    HDF5 detects a truncated file), and removed on any failure.
    """
    directory = os.path.dirname(destination)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise WeightsDownloadError(
            f"Cannot create the weights cache {directory!r} ({error}); set {CACHE_DIR_ENV} to a "
            "writable directory."
        ) from error
    remove_stale_parts(directory)
    part = os.path.join(directory, f".{os.path.basename(destination)}.{uuid.uuid4().hex}.part")
    timeout = download_timeout()
    try:
        try:
            with _socket_timeout(timeout):
                tf.keras.utils.get_file(
                    fname=part,
                    origin=url,
                    file_hash=sha256 or None,
                    hash_algorithm="sha256",
                    cache_dir=directory,
                    cache_subdir=directory,
                )
        except ValueError as error:  # get_file's hash mismatch; it keeps the file
            if sha256 and os.path.exists(part):
                actual = sha256_of(part)
                if actual != sha256:
                    raise WeightsChecksumError(
                        f"The file downloaded from {url} ({os.path.getsize(part)} bytes) has "
                        f"sha256 {actual}, but the registry expects {sha256}: the download was "
                        "cut off, or the server holds another version of the file. It was "
                        f"removed; nothing was cached in {directory}."
                    ) from error
            raise WeightsDownloadError(f"Downloading {url} failed: {error}") from error
        except Exception as error:
            cause = error.__context__
            if isinstance(cause, urllib.error.HTTPError) and cause.code == 404:
                raise _NotOnServer(f"{url}: HTTP 404") from error
            reason = getattr(cause, "reason", None) or cause or error
            if isinstance(error, TimeoutError) or isinstance(reason, TimeoutError):
                reason = f"no data for {timeout:g} s; {TIMEOUT_ENV} sets the limit"
            raise WeightsDownloadError(
                f"Downloading {url} failed ({reason}); no partial file was kept in {directory}."
            ) from error
        if not sha256:  # with a hash, the file is right even if it does not fit the model
            (check or _read_h5_layers)(part)
            logger.warning(
                "No sha256 is registered for %s: accepted the download (sha256 %s) after "
                "checking that it reads as weights%s.",
                url,
                sha256_of(part),
                " fitting the model" if check else "",
            )
        os.replace(part, destination)
    finally:
        if os.path.exists(part):
            os.remove(part)


def _find_or_download(
    entries: list[WeightsEntry], *, cache_dir: str, check: Callable[[str], None] | None
) -> tuple[str, WeightsEntry]:
    """The first usable file for `entries` (in order): mirror directory, cache, download."""
    mirror_dir, mirror_url = mirror_locations()
    for entry in entries:
        if mirror_dir is not None:
            path = os.path.join(mirror_dir, entry.file_name)
            if os.path.isfile(path):
                if entry.sha256 and sha256_of(path) != entry.sha256:
                    raise WeightsChecksumError(
                        f"{path} (mirror directory {MIRROR_DIR_ENV}) has sha256 "
                        f"{sha256_of(path)}, but the registry expects {entry.sha256}. The "
                        "mirror holds another version of the file: replace it."
                    )
                return path, entry
        path = os.path.join(cache_dir, entry.file_name)
        if os.path.isfile(path):
            if not entry.sha256 or sha256_of(path) == entry.sha256:
                return path, entry
            os.remove(path)
            if not (mirror_url or entry.url):
                raise WeightsChecksumError(
                    f"The cached {path} did not have the registry's sha256 {entry.sha256} and "
                    "was removed; no URL is configured to download it again."
                )
            logger.warning("Removed %s: its sha256 differs from the registry's.", path)
    tried = []
    for entry in entries:
        url = f"{mirror_url}/{entry.file_name}" if mirror_url else entry.url
        if not url:
            continue
        path = os.path.join(cache_dir, entry.file_name)
        try:
            _download(url, path, sha256=entry.sha256, check=check)
        except _NotOnServer as error:
            tried.append(str(error))
            continue
        return path, entry
    raise WeightsNotAvailableError(_not_available_message(entries, cache_dir, mirror_dir, tried))


def _not_available_message(entries, cache_dir, mirror_dir, tried) -> str:
    from . import reactnet_import  # it imports this module

    first = entries[0]
    names = " or ".join(entry.file_name for entry in entries)
    _, mirror_url = mirror_locations()
    published = any(entry.url for entry in entries)
    lines = [
        f"No {first.dataset!r} weights for {first.model} (include_top={first.include_top}) "
        + (
            "could be found or downloaded."
            if published
            else "have been published yet: no public checkpoint of this network exists (the "
            "papers' authors released none and this project has not trained one)."
        ),
        f"Looked for {names} in:",
        f"  - mirror directory: {mirror_dir or f'not set (${MIRROR_DIR_ENV})'}",
        f"  - cache: {cache_dir} (${CACHE_DIR_ENV} changes it)",
        f"  - mirror URL: {mirror_url or f'not set (${MIRROR_URL_ENV})'}",
    ]
    lines += [f"  - download: {message}" for message in tried]
    importable = first.dataset == "imagenet" and first.model in reactnet_import.CHECKPOINT_SOURCES
    if importable:
        lines[0] = (
            f"No {first.dataset!r} weights for {first.model} (include_top={first.include_top}) "
            "are in the mirror or cache yet."
        )
        lines.append(reactnet_import.missing_weights_hint(first.model))
    training_dataset = TRAINING_DATASETS.get(first.dataset, first.dataset)
    lines += [
        ("Or train" if importable else "To produce the file, train")
        + " the model with the recipe and publish its weights:",
        f"  larq-dysign train {first.model} --dataset {training_dataset} ...",
        f"  larq-dysign publish-weights {first.model} <trained weights .h5> "
        f"--dataset {first.dataset} -o <directory>" + ("" if first.include_top else " --notop"),
        "then copy the file into the mirror directory or the cache above (or pass "
        'weights="<path to the .h5>").',
    ]
    return "\n".join(lines)


def get_weights_file(
    model_name: str,
    dataset: str,
    *,
    include_top: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """The local path of the registered weights file, downloading it into the cache if needed.

    Details:
        Looks in the mirror directory, then the cache, then downloads (see the module
        docstring). `include_top=False` returns the no-top file if one is found, else the
        full file (its head is skipped when loaded). Use it to fill a cache on a machine with
        network access before copying the cache to an air-gapped one.

    Example:
        ```python
        path = zoo.get_weights_file("DyResNet18", "imagenet")
        ```

    Args:
        model_name: a zoo model.
        dataset: a dataset registered for it.
        include_top: as in the model constructors.
        cache_dir: default `default_cache_dir()`.

    Returns:
        The file's path (in the mirror directory or the cache).

    Raises:
        ValueError: unknown model or dataset.
        WeightsNotAvailableError: no file anywhere (the message says where it looked and how
            to produce one).
        WeightsChecksumError: a file with a sha256 other than the registry's (removed if it
            was in the cache).
        WeightsDownloadError: the download failed (nothing kept).
    """
    return _resolve(model_name, dataset, include_top=include_top, cache_dir=cache_dir)[0]


def _resolve(model_name, dataset, *, include_top, cache_dir, check=None):
    if include_top:
        entries = [weights_entry(model_name, dataset, include_top=True)]
    else:  # the no-top file if registered, else the full file (its head skipped)
        entries = []
        for top in (False, True):
            try:
                entries.append(weights_entry(model_name, dataset, include_top=top))
            except ValueError:
                pass
        if not entries:
            weights_entry(model_name, dataset, include_top=False)  # raises, listing datasets
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    return _find_or_download(entries, cache_dir=cache_dir, check=check)


# ------------------------------------------------------------------- checkpoint reading


def _looks_like_path(text: str) -> bool:
    return bool(
        os.sep in text
        or (os.altsep and os.altsep in text)
        or text.startswith(("~", "."))
        or re.search(r"\.(h5|hdf5|keras|index|ckpt|weights)$", text)
    )


def resolve_checkpoint_path(weights: str | os.PathLike) -> str:
    """The path to load for a local checkpoint: an HDF5 file, or a TF checkpoint prefix.

    Accepts a file, a TF checkpoint prefix, its `.index` file, or a directory holding a TF
    `checkpoint` file (its latest checkpoint).

    Raises:
        WeightsFileNotFoundError: nothing of the kind exists.
    """
    path = os.path.expanduser(os.fspath(weights))
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return path  # refused with a conversion recipe by `_read_layer_shapes`
    elif path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    elif os.path.isfile(path):
        return path
    elif os.path.isfile(path + ".index"):
        return path
    raise WeightsFileNotFoundError(
        "Expected weights to be None, a registered dataset name "
        f"{registered_datasets()} or the path to a checkpoint (.h5 file, TF checkpoint prefix "
        f"or directory), but got {os.fspath(weights)!r}: no such file or checkpoint."
    )


def recorded_padding(weights, *, model_name: str, include_top: bool = True) -> str | None:
    """The padding `weights` were made for, as their file records it (`PADDING_MARK`).

    Details:
        The zoo constructors call it for `padding=None`, before building: "pytorch" for the
        files `import_reactnet` writes, None (the zoo's default padding) for files without
        the mark, TF checkpoints, or no weights. A registered dataset is looked up as for
        loading (`get_weights_file`: mirror, cache, download), so its errors come first.

    Raises:
        WeightsNotAvailableError, WeightsChecksumError, WeightsDownloadError: for a dataset,
            see `get_weights_file`.
    """
    if isinstance(weights, str) and weights in registered_datasets(model_name):
        path = get_weights_file(model_name, weights, include_top=include_top)
    elif isinstance(weights, str | os.PathLike):
        path = os.path.expanduser(os.fspath(weights))
    else:
        return None
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        return None
    try:
        with h5py.File(path, "r") as file:
            value = file.attrs.get(PADDING_MARK)
    except OSError:
        return None  # loading reports the damaged file
    return value.decode("utf8") if isinstance(value, bytes) else value


def _model_padding(model: tf.keras.Model) -> str | None:
    """ "pytorch" for a zoo model built with `padding="pytorch"` (it reverses feature maps
    around its strided convs), else None."""
    from .pytorch_padding import SpatialReverse

    return "pytorch" if any(isinstance(x, SpatialReverse) for x in model.layers) else None


def validate_weights_argument(weights, *, include_top: bool, num_classes: int) -> None:
    """Reject a bad `weights` value before a model is built (called by every constructor).

    Raises:
        ValueError: not None/str/PathLike; an unknown dataset name (the registered ones are
            listed); a registered dataset whose class count differs from `num_classes` while
            `include_top` is True.
        WeightsFileNotFoundError: a path that does not exist.
    """
    if weights is None:
        return
    if not isinstance(weights, str | os.PathLike):
        raise ValueError(
            "Expected weights to be None, a registered dataset name or a checkpoint path, "
            f"but got {weights!r} of type {type(weights).__name__}."
        )
    if isinstance(weights, str) and weights in _DATASET_CLASSES:
        classes = _DATASET_CLASSES[weights]
        if include_top and classes != num_classes:
            raise ValueError(
                f'Expected num_classes={classes} with weights="{weights}" and include_top=True '
                f"(the {weights} head has {classes} classes), but got num_classes="
                f"{num_classes}. Use include_top=False and add your own head to fine-tune."
            )
        return
    if isinstance(weights, str) and not _looks_like_path(weights) and not os.path.exists(weights):
        raise ValueError(
            "Expected weights to be None, a registered dataset name "
            f"{registered_datasets()} or the path to a checkpoint file, but got {weights!r}: "
            "no such dataset, and no such file."
        )
    resolve_checkpoint_path(weights)


def _h5_attribute(group, name: str) -> list[str]:
    """An HDF5 string-list attribute; Keras splits large ones into `name0`, `name1`, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]


def _conversion_hint(path: str, kind: str) -> IncompatibleWeightsError:
    return IncompatibleWeightsError(
        f"{path} is a {kind}, which the zoo does not load. Convert it to HDF5 weights: "
        "`model = zoo.<Model>(...); model.load_weights(path); model.save_weights('w.h5')` "
        "(or `tf.keras.models.load_model(path).save_weights('w.h5')`), then pass 'w.h5'."
    )


def _read_h5_layers(path: str) -> tuple[list[tuple[str, list[tuple]]], dict]:
    """Layers with weights in a Keras HDF5 file: [(name, [weight shapes])], and its marks."""
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise IncompatibleWeightsError(
            f"{path} cannot be read as HDF5 weights (truncated or damaged?): {error}"
        ) from error
    with file:
        group = file
        if "layer_names" not in file.attrs and "model_weights" in file:
            group = file["model_weights"]
        if not _h5_attribute(group, "layer_names"):
            if "layers" in file or "vars" in file:
                raise _conversion_hint(path, "Keras 3-style `.weights.h5` file")
            raise IncompatibleWeightsError(
                f"{path} is an HDF5 file but not Keras weights (no 'layer_names' attribute)."
            )
        layers = []
        for name in _h5_attribute(group, "layer_names"):
            weight_names = _h5_attribute(group[name], "weight_names")
            if weight_names:
                layers.append((name, [tuple(group[name][w].shape) for w in weight_names]))
        marks = {key: file.attrs[key] for key in (_MODEL_MARK, _DATASET_MARK) if key in file.attrs}
    return layers, marks


_TF_LAYER_KEY = re.compile(r"layer_with_weights-(\d+)/(.+)/\.ATTRIBUTES/VARIABLE_VALUE")


def _read_tf_layers(prefix: str) -> list[tuple[str, list[tuple]]]:
    """Layers with weights in a TF checkpoint written by `save_weights`, by position.

    Shapes are sorted (checkpoint keys are attribute names, not the weights' order).
    """
    shapes: dict[int, list[tuple]] = {}
    for key, shape in tf.train.list_variables(prefix):
        match = _TF_LAYER_KEY.fullmatch(key)
        if match and ".OPTIMIZER_SLOT" not in key:
            shapes.setdefault(int(match.group(1)), []).append(tuple(shape))
    if not shapes:
        raise IncompatibleWeightsError(
            f"{prefix} is a TF checkpoint without Keras layer weights (no 'layer_with_weights-N' "
            "variables): write it with `model.save_weights(prefix)`, not `tf.train.Checkpoint`."
        )
    return [(f"layer_with_weights-{i}", sorted(shapes[i])) for i in sorted(shapes)]


def _checkpoint_format(path: str) -> str:
    """ "h5" or "tf"; raises for formats the zoo does not load."""
    if os.path.isdir(path):
        raise _conversion_hint(path, "SavedModel directory")
    if os.path.isfile(path):
        if h5py.is_hdf5(path):
            return "h5"
        if zipfile.is_zipfile(path):
            raise _conversion_hint(path, "Keras 3-style `.keras` archive")
        if os.path.isfile(path + ".index"):
            return "tf"
        raise IncompatibleWeightsError(
            f"{path} is neither a Keras HDF5 weights file nor a TF checkpoint."
        )
    return "tf"


def _model_layers(model: tf.keras.Model) -> list[tuple[tf.keras.layers.Layer, list]]:
    """Layers with weights in Keras' topological order, each with its weights in the order
    HDF5 files store them (trainable, then non-trainable)."""
    return [
        (layer, layer.trainable_weights + layer.non_trainable_weights)
        for layer in model.layers
        if layer.weights
    ]


def _format_shapes(shapes) -> str:
    return "[" + ", ".join(str(tuple(int(d) for d in shape)) for shape in shapes) + "]"


def check_compatible(
    model: tf.keras.Model,
    checkpoint: str,
    *,
    model_name: str | None = None,
    include_top: bool = True,
) -> str:
    """Compare a checkpoint's layers and weight shapes with the model's, without loading.

    Details:
        Layers with weights are paired by position (Keras' topological order). Every model
        layer needs a checkpoint layer with the same weight shapes; with
        `include_top=False` the checkpoint may hold extra trailing layers (the head of a full
        file), with `include_top=True` it may not.

    Args:
        model: the model to load into.
        checkpoint: an HDF5 file or a TF checkpoint prefix (`resolve_checkpoint_path`).
        model_name: for messages; default `model.name`.
        include_top: whether the model has its head.

    Returns:
        The format, "h5" or "tf".

    Raises:
        IncompatibleWeightsError: naming the model and the first mismatching layer, or an
            unsupported format.
    """
    model_name = model_name or model.name
    fmt = _checkpoint_format(checkpoint)
    if fmt == "h5":
        saved, marks = _read_h5_layers(checkpoint)
    else:
        saved, marks = _read_tf_layers(checkpoint), {}
    origin = ""
    if _MODEL_MARK in marks:
        origin = (
            f" (the checkpoint was published for {marks[_MODEL_MARK]}"
            + (f" on {marks[_DATASET_MARK]}" if _DATASET_MARK in marks else "")
            + ")"
        )
    ours = _model_layers(model)
    prefix = f"The checkpoint {checkpoint} does not fit {model_name}{origin}: first mismatch"
    for index, (layer, variables) in enumerate(ours):
        model_shapes = [tuple(v.shape) for v in variables]
        if index >= len(saved):
            raise IncompatibleWeightsError(
                f"{prefix} at layer #{index} {layer.name!r} (weights "
                f"{_format_shapes(model_shapes)}), which has no counterpart: the checkpoint "
                f"holds only {len(saved)} layers with weights"
                + (" (a no-top file? pass include_top=False)." if include_top else ".")
            )
        saved_name, saved_shapes = saved[index]
        compared = sorted(model_shapes) if fmt == "tf" else model_shapes
        if compared != saved_shapes:
            raise IncompatibleWeightsError(
                f"{prefix} at layer #{index} {layer.name!r}: the model's weights have shapes "
                f"{_format_shapes(compared)}, the checkpoint's layer {saved_name!r} has "
                f"{_format_shapes(saved_shapes)}. Check the model, input_shape (channels, "
                "stem) and num_classes against those the checkpoint was trained with."
            )
    if include_top and len(saved) > len(ours):
        raise IncompatibleWeightsError(
            f"{prefix} at the checkpoint's layer #{len(ours)} {saved[len(ours)][0]!r}, which "
            f"has no counterpart: {model_name} has {len(ours)} layers with weights, the "
            f"checkpoint {len(saved)}."
        )
    return fmt


def load_checkpoint(
    model: tf.keras.Model,
    checkpoint: str | os.PathLike,
    *,
    model_name: str | None = None,
    include_top: bool = True,
) -> None:
    """Load a local checkpoint into `model` in place, after `check_compatible`.

    Raises:
        WeightsFileNotFoundError: no such file.
        IncompatibleWeightsError: see `check_compatible`.
    """
    path = resolve_checkpoint_path(checkpoint)
    fmt = check_compatible(model, path, model_name=model_name, include_top=include_top)
    if fmt == "tf":
        model.load_weights(path).expect_partial()  # expect_partial: a skipped head
        return
    with h5py.File(path, "r") as file:
        group = file
        if "layer_names" not in file.attrs and "model_weights" in file:
            group = file["model_weights"]
        saved = [
            (name, names)
            for name in _h5_attribute(group, "layer_names")
            if (names := _h5_attribute(group[name], "weight_names"))
        ]
        assignments = []
        for (_layer, variables), (name, weight_names) in zip(_model_layers(model), saved):
            values = [np.asarray(group[name][w]) for w in weight_names]
            assignments.extend(zip(variables, values))
    tf.keras.backend.batch_set_value(assignments)
    for layer in model.layers:
        layer.finalize_state()


def load_pretrained(
    model: tf.keras.Model,
    weights: str | os.PathLike | None,
    *,
    model_name: str,
    include_top: bool,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Load `weights` into `model` in place: None (nothing), a registered dataset, or a path.

    Called by every zoo constructor (through `common.finish_model`).

    Example:
        ```python
        model = zoo.ReActNet18(input_shape=(32, 32, 3), num_classes=10)
        load_pretrained(model, "reactnet18_cifar10.h5", model_name="ReActNet18", include_top=True)
        ```

    Args:
        model: a zoo model, built.
        weights: None, a dataset registered for `model_name` (e.g. "imagenet"), or a
            checkpoint path (HDF5 file, TF checkpoint prefix, `.index` file or directory).
        model_name: the zoo name of the model (registry key, messages).
        include_top: whether the model has its head.
        cache_dir: default `default_cache_dir()`.

    Raises:
        ValueError: a dataset not registered for `model_name`.
        WeightsNotAvailableError, WeightsChecksumError, WeightsDownloadError: see
            `get_weights_file`.
        WeightsFileNotFoundError: a path that does not exist.
        IncompatibleWeightsError: the checkpoint does not fit the model.
    """
    if weights is None:
        return
    if isinstance(weights, str) and weights in registered_datasets(model_name):

        def check(path: str) -> None:
            check_compatible(model, path, model_name=model_name, include_top=include_top)

        path, entry = _resolve(
            model_name, weights, include_top=include_top, cache_dir=cache_dir, check=check
        )
        load_checkpoint(model, path, model_name=model_name, include_top=include_top)
        return
    if isinstance(weights, str) and weights in _DATASET_CLASSES:
        weights_entry(model_name, weights, include_top=include_top)  # raises, listing valid ones
    load_checkpoint(model, weights, model_name=model_name, include_top=include_top)


# ---------------------------------------------------------------------------- publishing


def publish_weights(
    model: tf.keras.Model,
    out_dir: str | os.PathLike,
    *,
    dataset: str,
    include_top: bool = True,
    model_name: str | None = None,
    url_base: str = "",
    attributes: dict[str, str] | None = None,
) -> PublishedWeights:
    """Write a trained model's weights as a registry file and describe its entry.

    Details:
        Writes `<out_dir>/<model>_<dataset>_weights[_notop].h5` (Keras HDF5 weights, marked
        with the model and dataset so a mismatch error can name them, and with
        `PADDING_MARK` for a model built with `padding="pytorch"`), through a temporary
        name, and computes its sha256. Upload the file (its URL is `<url_base>/<file name>`),
        then add the returned entry to `PUBLISHED_WEIGHTS` (or call `register_weights`), or
        just copy the file into a cache or mirror directory: it then loads with
        `weights=dataset`.

    Example:
        ```python
        published = zoo.publish_weights(trained_model, "out/", dataset="imagenet")
        print(published.entry.sha256)
        ```

    Args:
        model: the trained model, built with `include_top` as given here.
        out_dir: where to write the file (created if needed).
        dataset: lower-case dataset name, e.g. "imagenet".
        include_top: whether `model` has its head (False writes the `_notop` file).
        model_name: the zoo name; default `model.name`.
        url_base: where the file will be uploaded, for the entry's URL ("" leaves it empty).
        attributes: more HDF5 attributes of the file (e.g. where the weights come from).

    Returns:
        `PublishedWeights(path, entry)`.

    Raises:
        ValueError: unknown model name, bad dataset name, a head whose class count differs
            from the dataset's.
    """
    model_name = model_name or model.name
    get_model_constructor(model_name)
    _check_dataset_name(dataset)
    num_classes = None
    if include_top:
        num_classes = int(model.output_shape[-1])
        known = _DATASET_CLASSES.get(dataset)
        if known is not None and known != num_classes:
            raise ValueError(
                f"Expected a model with {known} classes for dataset {dataset!r}, but "
                f"{model_name}'s output has {num_classes}."
            )
    file_name = weights_file_name(model_name, dataset, include_top=include_top)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, file_name)
    part = os.path.join(out_dir, f".{file_name}.{uuid.uuid4().hex}.part.h5")
    try:
        model.save_weights(part, save_format="h5")
        with h5py.File(part, "a") as file:
            file.attrs[_MODEL_MARK] = model_name
            file.attrs[_DATASET_MARK] = dataset
            file.attrs[_TOP_MARK] = include_top
            if _model_padding(model):
                file.attrs[PADDING_MARK] = _model_padding(model)
            for key, value in (attributes or {}).items():
                file.attrs[key] = value
        digest = sha256_of(part)
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)
    entry = WeightsEntry(
        model=model_name,
        dataset=dataset,
        include_top=include_top,
        file_name=file_name,
        sha256=digest,
        url=f"{url_base.rstrip('/')}/{file_name}" if url_base else "",
        num_classes=num_classes,
    )
    return PublishedWeights(path=path, entry=entry)
