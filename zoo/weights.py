"""Pretrained weights: a registry table, a download cache, mirrors, and checked loading.

As in keras.applications and larq-zoo: registry entries `(model, dataset, include_top) -> file
name, sha256, URL` (`PUBLISHED_WEIGHTS`, or `register_weights` at run time). A registered
dataset (`weights="imagenet"`) is read from the mirror directory `$LARQ_DYSIGN_WEIGHTS_DIR`,
else the cache `$LARQ_DYSIGN_CACHE_DIR` (default `~/.keras/larq_dysign`), else downloaded with
`tf.keras.utils.get_file` from `$LARQ_DYSIGN_WEIGHTS_URL/<file name>` or the registry's URL,
and verified. Every load, of a dataset or a checkpoint path, runs `check_compatible` (the
first mismatching layer named before any weight is assigned), then tf-keras's own
`model.load_weights`: Keras HDF5 (`save_weights("w.h5")`, `save("m.h5")`), `.weights.h5`,
whole-model `.keras` and TF checkpoints (the prefix, its `.index` file or the directory).
docs/reliability.md lists the faults survived (atomic downloads, the timeout, bad cache
files) and their tests.

Example:
    ```python
    model = zoo.DyResNet18(weights="imagenet")
    model = zoo.DyResNet18(weights="runs/fm/step2/DyResNet18_step2.h5")
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

import h5py
import tensorflow as tf

from ..files import atomic_path
from .pytorch_padding import SpatialReverse
from .registry import get_model_constructor, list_models

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "LARQ_DYSIGN_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".keras", "larq_dysign")
MIRROR_URL_ENV = "LARQ_DYSIGN_WEIGHTS_URL"
MIRROR_DIR_ENV = "LARQ_DYSIGN_WEIGHTS_DIR"
#: Seconds a download may wait for data (connect or next bytes); more than a day overflows
#: time_t in socket timeouts ("timestamp out of range").
TIMEOUT_ENV = "LARQ_DYSIGN_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 24 * 3600.0
#: `.part` files this old were left by a killed process (a live download writes its own).
STALE_PART_SECONDS = 24 * 3600
#: Datasets with an entry for every zoo model, their class counts, and the training
#: recipe's name for them (for the not-found message).
DEFAULT_DATASETS = {"imagenet": 1000}
TRAINING_DATASETS = {"imagenet": "imagenet2012"}
# HDF5 attributes written by `publish_weights`: origin (for messages), the weights' sha256.
_MODEL_MARK, _DATASET_MARK = "larq_dysign_model", "larq_dysign_dataset"
_CONTENT_MARK = "larq_dysign_weights_sha256"
#: HDF5 attribute "pytorch" of weights for a model built with `padding="pytorch"`, e.g. the
#: ImageNet weights `import_reactnet` converts from ReActNet's PyTorch checkpoints.
PADDING_MARK = "larq_dysign_padding"
# What h5py, zipfile and TF's checkpoint reader raise for a file that is not weights or is
# truncated or damaged.
_READ_ERRORS = (OSError, KeyError, IndexError, RuntimeError, zipfile.BadZipFile, tf.errors.OpError)


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """Where the weights of `model` trained on `dataset` live: `file_name` in the cache and
    mirrors, `sha256` and `url` ("" until published), `num_classes` (None without the head)."""

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


#: The registry table: add the `WeightsEntry(...)` that `larq-dysign publish-weights` prints.
PUBLISHED_WEIGHTS: tuple[WeightsEntry, ...] = ()

_REGISTRY = {(e.model, e.dataset, e.include_top): e for e in PUBLISHED_WEIGHTS}
_DATASET_CLASSES = {e.dataset: e.num_classes for e in PUBLISHED_WEIGHTS if e.num_classes}
_DATASET_CLASSES.update(DEFAULT_DATASETS)


def weights_file_name(model_name: str, dataset: str, *, include_top: bool = True) -> str:
    """larq-zoo's file naming: `<model>_<dataset>_weights[_notop].h5`, lower case."""
    return f"{model_name.lower()}_{dataset}_weights{'' if include_top else '_notop'}.h5"


def _check_dataset_name(dataset) -> None:
    if not isinstance(dataset, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", dataset):
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

    Then `zoo.<model_name>(weights=dataset)` finds the file in the mirror or cache, or
    downloads it from `url`; without `sha256` any intact weights file is accepted.

    Example:
        ```python
        zoo.register_weights("ReActNet18", "cifar10", num_classes=10, sha256="9f2c...",
                             url="https://example.org/w/reactnet18_cifar10_weights.h5")
        model = zoo.ReActNet18(input_shape=(32, 32, 3), num_classes=10, weights="cifar10")
        ```

    Args:
        num_classes: the dataset's class count, needed for a new dataset only.
        file_name: default `weights_file_name(model_name, dataset, include_top=...)`.

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
    _DATASET_CLASSES[dataset] = known or num_classes
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
    names = {dataset for (model, dataset, _) in _REGISTRY if model == model_name}
    return sorted(names | (set(DEFAULT_DATASETS) if model_name in list_models() else set()))


def dataset_num_classes(dataset: str) -> int | None:
    """Classes of a registered dataset (1000 for "imagenet"), None if unknown."""
    return _DATASET_CLASSES.get(dataset)


def weights_entry(model_name: str, dataset: str, *, include_top: bool = True) -> WeightsEntry:
    """The registry entry `(model_name, dataset, include_top)`; every zoo model has
    (unpublished) "imagenet" entries.

    Raises:
        ValueError: unknown model, or no entry for `dataset` (the valid ones are listed).
    """
    get_model_constructor(model_name)
    if (model_name, dataset, include_top) in _REGISTRY:
        return _REGISTRY[(model_name, dataset, include_top)]
    if dataset in DEFAULT_DATASETS:
        file_name = weights_file_name(model_name, dataset, include_top=include_top)
        classes = DEFAULT_DATASETS[dataset] if include_top else None
        return WeightsEntry(model_name, dataset, include_top, file_name, num_classes=classes)
    raise ValueError(
        f"Expected weights for {model_name} (include_top={include_top}) to be None, a path to a "
        f"checkpoint, or a dataset registered for it {registered_datasets(model_name)}, but got "
        f"{dataset!r}."
    )


# ----------------------------------------------------------------------------- locations


def default_cache_dir() -> str:
    """`$LARQ_DYSIGN_CACHE_DIR`, else `~/.keras/larq_dysign` (expanded)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR))


def mirror_locations() -> tuple[str | None, str | None]:
    """The configured mirror `(directory, base URL)`, each None when not set.

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
    """`$LARQ_DYSIGN_DOWNLOAD_TIMEOUT` in seconds (default 60).

    Raises:
        ValueError: the variable is set to anything but a number in (0, MAX_TIMEOUT].
    """
    value = os.environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT)
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= MAX_TIMEOUT:  # refuses nan and inf too
        raise ValueError(
            f"Expected {TIMEOUT_ENV} to be a number of seconds in (0, {MAX_TIMEOUT:g}] (how "
            f"long a download may wait for data), but got {value!r}."
        )
    return seconds


def remove_stale_parts(directory: str, *, older_than: float = STALE_PART_SECONDS) -> list[str]:
    """Delete `.part` files older than `older_than` seconds, left by killed downloads."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(directory), ".*.part")):
        with contextlib.suppress(OSError):  # another process removed or renamed it meanwhile
            if time.time() - os.path.getmtime(path) > older_than:
                os.remove(path)
                removed.append(path)
    return removed


# ----------------------------------------------------------------------------- downloads


class _NotOnServer(Exception):
    """HTTP 404: the mirror or registry URL does not hold the file (try the next source)."""


def _describe(entry: WeightsEntry) -> str:
    return f"{entry.model} {entry.dataset!r} weights (include_top={entry.include_top})"


def _problem(path: str, entry: WeightsEntry) -> str | None:
    """Why `path` is not an intact copy of `entry`'s file, or None: the registry's sha256 if
    it has one, else the file must read as weights (and match its `publish_weights` hash)."""
    if entry.sha256:
        actual = sha256_of(path)
        return None if actual == entry.sha256 else f"has sha256 {actual}, not {entry.sha256}"
    try:
        _read_layers(path, "the file")
    except ValueError as error:
        return f"is not intact weights: {error}"
    return None


def _download(url: str, destination: str, entry: WeightsEntry) -> None:
    """Download `url` into `destination` through a `.part` file, renamed once verified.

    `get_file` (tf-keras 2.21) writes straight to its target, ignores the Content-Length (a
    connection closed mid-file "succeeds") and connects without a timeout, so the download
    goes to a `.part` file, removed on any failure, and `_problem` verifies it.
    """
    directory, what = os.path.dirname(destination), _describe(entry)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"Cannot create the weights cache {directory!r} ({error}); set {CACHE_DIR_ENV} to a "
            "writable directory."
        ) from error
    remove_stale_parts(directory)
    part = os.path.join(directory, f".{os.path.basename(destination)}.{uuid.uuid4().hex}.part")
    timeout, kept = download_timeout(), f"Nothing was kept in {directory}."
    previous = socket.getdefaulttimeout()
    try:
        try:
            socket.setdefaulttimeout(timeout)  # the process default, for the download only
            tf.keras.utils.get_file(part, url, cache_dir=directory, cache_subdir=directory)
        except Exception as error:
            cause = error.__context__
            if isinstance(cause, urllib.error.HTTPError) and cause.code == 404:
                raise _NotOnServer(f"{url}: HTTP 404") from error
            reason = getattr(cause, "reason", None) or cause or error
            if isinstance(error, TimeoutError) or isinstance(reason, TimeoutError):
                reason = f"no data for {timeout:g} s; {TIMEOUT_ENV} sets the limit"
            raise OSError(f"Downloading {what} from {url} failed ({reason}). {kept}") from error
        finally:
            socket.setdefaulttimeout(previous)
        if problem := _problem(part, entry):
            raise ValueError(
                f"The download of {what} from {url} ({os.path.getsize(part)} bytes) {problem}: "
                f"it was cut off, or the server holds another file. {kept}"
            )
        if not entry.sha256:
            logger.warning(
                "No sha256 registered for %s: accepted %s, sha256 %s.", what, url, sha256_of(part)
            )
        os.replace(part, destination)
    finally:
        if os.path.exists(part):
            os.remove(part)


def get_weights_file(
    model_name: str,
    dataset: str,
    *,
    include_top: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """The local path of a registered weights file, downloaded into the cache if needed.

    Looks in the mirror directory (read in place), the cache, then downloads from the mirror
    URL or the registry's URL; a bad cache file is replaced only by a verified download.
    `include_top=False` takes the no-top file if found, else the full file (its head is
    skipped when loaded). Use it to fill a cache for an air-gapped machine.

    Example:
        ```python
        path = zoo.get_weights_file("DyResNet18", "imagenet")
        ```

    Raises:
        ValueError: unknown model or dataset, a bad environment variable, a file that is not
            intact and cannot be downloaded again.
        FileNotFoundError: no file anywhere (the message says where it looked and how to
            produce one).
        OSError: the download failed (nothing kept).
    """
    entries = []
    for top in (True,) if include_top else (False, True):  # no-top first, else the full file
        with contextlib.suppress(ValueError):
            entries.append(weights_entry(model_name, dataset, include_top=top))
    if not entries:
        weights_entry(model_name, dataset, include_top=include_top)  # raises, listing datasets
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    mirror_dir, mirror_url = mirror_locations()
    download_timeout()  # a bad value fails now, not after a search
    looked = [
        f"mirror directory: {mirror_dir or f'not set (${MIRROR_DIR_ENV})'}",
        f"cache: {cache_dir} (${CACHE_DIR_ENV} changes it)",
        f"mirror URL: {mirror_url or f'not set (${MIRROR_URL_ENV})'}",
    ]
    for entry in entries:
        path = os.path.join(mirror_dir or "", entry.file_name)
        if mirror_dir and os.path.isfile(path):
            if problem := _problem(path, entry):
                raise ValueError(
                    f"{path} in the mirror directory ({MIRROR_DIR_ENV}) {problem}: replace it "
                    f"with an intact copy of the {_describe(entry)}."
                )
            return path
        path = os.path.join(cache_dir, entry.file_name)
        if not os.path.isfile(path):
            continue
        if not (problem := _problem(path, entry)):
            return path
        if not (mirror_url or entry.url):
            if entry.sha256:  # certainly not the registry's file
                os.remove(path)
            raise ValueError(
                f"The cached {path} {problem}"
                + (" and was removed" if entry.sha256 else "")
                + f"; no URL is set to download the {_describe(entry)} again (set "
                f"{MIRROR_URL_ENV}, or replace the file)."
            )
        logger.warning("Downloading %s again: the cached %s %s.", _describe(entry), path, problem)
        looked.append(f"cache: {path} {problem}")
    for entry in entries:  # a bad cache file is replaced only by a verified download
        url = f"{mirror_url}/{entry.file_name}" if mirror_url else entry.url
        try:
            if url:
                _download(url, os.path.join(cache_dir, entry.file_name), entry)
                return os.path.join(cache_dir, entry.file_name)
        except _NotOnServer as error:
            looked.append(f"download: {error}")
    raise FileNotFoundError(_not_found_message(entries, looked))


def _not_found_message(entries: list[WeightsEntry], looked: list[str]) -> str:
    """Where the file was looked for, and how to produce it."""
    from . import reactnet_import  # it imports this module

    first, names = entries[0], " or ".join(entry.file_name for entry in entries)
    lines = [f"No file for the {_describe(first)} was found. Looked for {names} in:"]
    lines += [f"  - {line}" for line in looked]
    importable = first.dataset == "imagenet" and first.model in reactnet_import.CHECKPOINT_SOURCES
    if importable:
        lines.append(reactnet_import.missing_weights_hint(first.model))
    elif not any(entry.url for entry in entries):
        registered = all(entry not in PUBLISHED_WEIGHTS for entry in entries) and any(
            _REGISTRY.get((e.model, e.dataset, e.include_top)) == e for e in entries
        )
        lines.append(
            "No URL is registered for it (register_weights(..., url=...)), so nothing is "
            "downloaded."
            if registered
            else "None is published: the papers' authors released no checkpoint of this "
            "network, and this project has not trained one."
        )
    train = "Or train" if importable else "To produce the file, train"
    lines.append(f"{train} the model with the recipe and publish its weights:")
    dataset = TRAINING_DATASETS.get(first.dataset, first.dataset)
    notop = "" if first.include_top else " --notop"
    return "\n".join(
        [
            *lines,
            f"  larq-dysign train {first.model} --dataset {dataset} ...",
            f"  larq-dysign publish-weights {first.model} <trained weights .h5> --dataset "
            f"{first.dataset} -o <directory>{notop}",
            "then copy the file into the mirror directory or the cache above (or pass "
            'weights="<path to the .h5>").',
        ]
    )


# ---------------------------------------------------------------------------- checkpoints


def resolve_checkpoint_path(weights: str | os.PathLike) -> str:
    """The path to load: a file, or a TF checkpoint prefix (given, or from its `.index` file
    or the directory's latest checkpoint).

    Raises:
        FileNotFoundError: nothing of the kind exists.
        ValueError: a SavedModel directory (its weights must be saved first); nothing exists
            and `weights` looks like a dataset name (no '/', '~' or '.').
    """
    path = os.path.expanduser(os.fspath(weights))
    if os.path.isdir(path):
        if latest := tf.train.latest_checkpoint(path):
            return latest
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"Expected weights to be a checkpoint, but {path} is a SavedModel directory, "
                "which the zoo does not load. Save its weights: "
                "`tf.keras.models.load_model(path).save_weights('w.h5')`, then pass 'w.h5'."
            )
    elif os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path.removesuffix(".index")
    expected = (
        f"Expected weights to be None, a registered dataset name {registered_datasets()} or the "
        "path to a checkpoint (.h5, .weights.h5 or .keras file, TF checkpoint prefix or "
        f"directory), but got {os.fspath(weights)!r}"
    )
    if isinstance(weights, str) and not re.search(r"[/\\~.]", weights):  # a dataset's name?
        raise ValueError(f"{expected}: no such dataset, and no such file.")
    raise FileNotFoundError(f"{expected}: no such file or checkpoint.")


def _local_path(weights: str | os.PathLike, *, model_name: str, include_top: bool) -> str:
    """The file or TF checkpoint prefix of `weights`: a registered dataset's (found or
    downloaded by `get_weights_file`) or a checkpoint path (`resolve_checkpoint_path`)."""
    if isinstance(weights, str) and weights in _DATASET_CLASSES:
        return get_weights_file(model_name, weights, include_top=include_top)
    return resolve_checkpoint_path(weights)


def recorded_padding(weights, *, model_name: str, include_top: bool = True) -> str | None:
    """The padding `weights` were made for, as their file records it (`PADDING_MARK`).

    Details:
        The zoo constructors call it for `padding=None`, before building: "pytorch" for the
        files `import_reactnet` writes and a `.keras` or whole-model `.h5` file of a model
        built with it, else
        None (the zoo's default; a damaged file is named by the load). A registered dataset
        is looked up as for loading, so its errors come first.

    Raises:
        FileNotFoundError, ValueError, OSError: see `get_weights_file`,
            `resolve_checkpoint_path`.
    """
    if not isinstance(weights, str | os.PathLike):
        return None
    path = _local_path(weights, model_name=model_name, include_top=include_top)
    with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile):
        if zipfile.is_zipfile(path):  # a whole-model .keras: its config says how it was built
            with zipfile.ZipFile(path) as archive:
                return "pytorch" if b'"SpatialReverse"' in archive.read("config.json") else None
        with h5py.File(path, "r") as file:
            value = file.attrs.get(PADDING_MARK)
            if value is None and "SpatialReverse" in str(file.attrs.get("model_config", "")):
                return "pytorch"  # a whole-model .h5: its config says how it was built
            return value.decode("utf8") if isinstance(value, bytes) else value
    return None


def validate_weights_argument(weights, *, include_top: bool, num_classes: int) -> None:
    """Reject a bad `weights` value before a model is built (called by every constructor).

    Raises:
        ValueError: not None/str/PathLike; an unknown dataset name; a registered dataset whose
            class count differs from `num_classes` while `include_top` is True.
        FileNotFoundError: a path that does not exist.
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
    resolve_checkpoint_path(weights)


def _h5_strings(group, name: str) -> list[str]:
    """An HDF5 string-list attribute; Keras splits large ones into `name0`, `name1`, ..."""
    values, chunk = list(group.attrs.get(name, [])), 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(group.attrs[f"{name}{chunk}"])
        chunk += 1
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]


def _weights_sha256(group) -> str:
    """sha256 over every weight of a Keras HDF5 group: names, dtypes, shapes, values."""
    digest = hashlib.sha256()
    for layer in _h5_strings(group, "layer_names"):
        for name in _h5_strings(group[layer], "weight_names"):
            value = group[layer][name][()]
            digest.update(f"{layer}/{name}:{value.dtype.str}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _keras_h5(file, shown: str) -> tuple[str, list, str]:
    """Keras HDF5 weights, positional; a `publish_weights` file's content hash is checked."""
    group = file
    if "layer_names" not in file.attrs and "model_weights" in file:  # model.save("m.h5")
        group = file["model_weights"]
    layers = [
        (name, [group[name][weight].shape for weight in weights])
        for name in _h5_strings(group, "layer_names")
        if (weights := _h5_strings(group[name], "weight_names"))
    ]
    recorded = file.attrs.get(_CONTENT_MARK)
    if recorded is not None and (actual := _weights_sha256(group)) != str(recorded):
        raise ValueError(
            f"{shown} was altered after publish_weights wrote it: its weights hash to sha256 "
            f"{actual}, the file records {recorded}. Replace it with an intact copy."
        )
    origin = ""
    if _MODEL_MARK in file.attrs:
        origin = f" (published for {file.attrs[_MODEL_MARK]} on {file.attrs[_DATASET_MARK]})"
    return "h5", layers, origin


def _saving_lib_layers(file) -> list[tuple[str, list[tuple]]]:
    """Each `layers/<path>` group of a tf-keras `.weights.h5` file, with the shapes of every
    weight below it (its sublayers' too)."""
    layers = []
    for name, group in file.get("layers", {}).items():
        shapes = []
        group.visititems(
            lambda _, item, shapes=shapes: (
                shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None
            )
        )
        layers.append((f"layers/{name}", _sorted(shapes)))
    return layers


def _tf_checkpoint_layers(prefix: str) -> list[tuple[str, list[tuple]]]:
    """The `layer_with_weights-N` of a `save_weights` TF checkpoint; every weight is read
    once, which checks its CRC32C and notices a truncated data file."""
    reader, shapes = tf.train.load_checkpoint(prefix), {}
    for key, shape in reader.get_variable_to_shape_map().items():
        match = re.fullmatch(r"layer_with_weights-(\d+)/.+/\.ATTRIBUTES/VARIABLE_VALUE", key)
        if match and ".OPTIMIZER_SLOT" not in key:
            reader.get_tensor(key)
            shapes.setdefault(int(match.group(1)), []).append(shape)
    return [(f"layer_with_weights-{i}", _sorted(shapes[i])) for i in sorted(shapes)]


def _read_layers(path: str, shown: str) -> tuple[str, list[tuple[str, list[tuple]]], str]:
    """A checkpoint's format, `(layer name or path, weight shapes)` of its layers with
    weights, and origin (" (published for <model> on <dataset>)"), without loading it.

    Raises:
        ValueError: naming `shown`: not a checkpoint, truncated, damaged or altered.
    """
    try:
        if not os.path.isfile(path):  # a TF checkpoint prefix
            fmt, layers, origin = "tf", _tf_checkpoint_layers(path), ""
        elif zipfile.is_zipfile(path):  # a whole-model .keras
            with zipfile.ZipFile(path) as archive:
                if damaged := archive.testzip():
                    raise zipfile.BadZipFile(f"its {damaged} fails the zip CRC check")
                with archive.open("model.weights.h5") as member, h5py.File(member, "r") as file:
                    fmt, layers, origin = "keras", _saving_lib_layers(file), ""
        else:
            with h5py.File(path, "r") as file:
                if "layer_names" not in file.attrs and "layers" in file:
                    fmt, layers, origin = "weights.h5", _saving_lib_layers(file), ""
                else:
                    fmt, layers, origin = _keras_h5(file, shown)
    except _READ_ERRORS as error:
        raise ValueError(
            f"{shown} is neither Keras weights (.h5, .weights.h5, .keras) nor a TF checkpoint, "
            f"or it is truncated or damaged ({error})."
        ) from error
    if not any(shapes for _, shapes in layers):
        raise ValueError(f"{shown} holds no Keras layer weights (a {fmt} file).")
    return fmt, layers, origin


def _saving_lib_paths(model: tf.keras.Model) -> list[str]:
    """Each of `model.layers`' path in a `.weights.h5` file: its class in snake case, `_<k>`
    from the second of a class on (tf-keras 2.21 `saving_lib._save_container_state`)."""
    paths, used = [], {}
    for layer in model.layers:
        name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", type(layer).__name__)
        name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
        name = "private" + name if name.startswith("_") else name
        used[name] = used.get(name, -1) + 1
        paths.append(f"layers/{name}" + (f"_{used[name]}" if used[name] else ""))
    return paths


def _sorted(shapes) -> list[tuple]:
    """Shapes in a canonical order (kernels first) where the file does not keep their order."""
    return sorted((tuple(int(d) for d in shape) for shape in shapes), key=lambda s: (-len(s), s))


def _shapes(layer, fmt: str) -> list[tuple]:
    """A layer's weight shapes as `fmt` stores them: in `get_weights` order, else sorted."""
    shapes = [tuple(w.shape) for w in layer.trainable_weights + layer.non_trainable_weights]
    return shapes if fmt in ("h5", "model") else _sorted(shapes)


def _source_layers(model, source) -> tuple[str, str, str, list]:
    """`source`'s format, description, origin and `(name, shapes)` of its layers with weights,
    in `model`'s order for `.weights.h5` / `.keras` files (shapes None where absent, the
    file's other entries last)."""
    if isinstance(source, tf.keras.Model):
        layers = [
            (layer.name, _shapes(layer, "model")) for layer in source.layers if layer.weights
        ]
        return "model", f"The source model {source.name!r}", "", layers
    path = resolve_checkpoint_path(source)
    fmt, layers, origin = _read_layers(path, path)
    suffix = {"weights.h5": ".weights.h5", "keras": ".keras"}.get(fmt)
    if (suffix and not path.endswith(suffix)) or (fmt == "h5" and path.endswith(".weights.h5")):
        raise ValueError(
            f"{path} is a {fmt} file by its content, but tf-keras chooses its reader by the "
            f"file name: rename it to end with {suffix or '.h5'}."
        )
    if fmt in ("weights.h5", "keras"):
        paths = [p for p, layer in zip(_saving_lib_paths(model), model.layers) if layer.weights]
        stored = dict(layers)
        layers = [(p, stored.get(p)) for p in paths]
        layers += [(p, shapes) for p, shapes in stored.items() if shapes and p not in paths]
    return fmt, f"The checkpoint {path}", origin, layers


def _check(model, source, *, include_top: bool, model_name: str | None) -> tuple[str, bool]:
    """`check_compatible`, also returning whether `source` has a head to skip."""
    model_name = model_name or model.name
    ours = [layer for layer in model.layers if layer.weights]
    fmt, what, origin, saved = _source_layers(model, source)
    kind = "source model" if fmt == "model" else "checkpoint"
    skip_head = len(saved) > len(ours)
    prefix = f"{what} does not fit {model_name}{origin}: first mismatch at"
    for index, layer in enumerate(ours):
        expected = _shapes(layer, fmt)
        name, found = saved[index] if index < len(saved) else (None, None)
        if found is None:
            has = f"no {name!r} entry" if name else f"only {len(saved)} layers with weights"
            top = ": a no-top file? pass include_top=False." if include_top else "."
            raise ValueError(
                f"{prefix} layer #{index} {layer.name!r} with weights {expected}, which the "
                f"{kind} lacks (it has {has}){top}"
            )
        if found != expected:
            raise ValueError(
                f"{prefix} layer #{index} {layer.name!r}: {model_name} has weights of shapes "
                f"{expected}, the {kind}'s layer {name!r} has {found}. Check the model, "
                "input_shape (channels, stem), width_multiplier and num_classes."
            )
        if fmt == "h5" and skip_head and not include_top and name != layer.name:
            raise ValueError(  # tf-keras skips an HDF5 file's head only when loading by name
                f"{prefix} layer #{index} {layer.name!r}: the checkpoint's layer is named "
                f"{name!r}, and a full HDF5 file's head is skipped by loading layers by name."
            )
        if fmt == "model" and re.sub(r"_\d+$", "", name) != re.sub(r"_\d+$", "", layer.name):
            raise ValueError(f"{prefix} layer #{index} {layer.name!r}: the source's is {name!r}.")
    if skip_head and include_top:
        name, found = saved[len(ours)]
        raise ValueError(
            f"{prefix} the {kind}'s layer #{len(ours)} {name!r} with weights {found}, which "
            f"{model_name} lacks ({len(ours)} layers with weights, the {kind} {len(saved)})"
            + (": a full file? include_top=False skips its head." if kind == "checkpoint" else ".")
        )
    return fmt, skip_head


def check_compatible(
    model: tf.keras.Model,
    source: str | os.PathLike | tf.keras.Model,
    *,
    include_top: bool = True,
    model_name: str | None = None,
) -> str:
    """Check that `source`'s weights fit `model`, without assigning any.

    Layers with weights are paired as tf-keras's loaders pair them: by position for HDF5 files,
    TF checkpoints and built models, by layer path (class name and ordinal) for `.weights.h5`
    and `.keras` files; their weight shapes must be equal. A built model's layer names must
    match too, ignoring Keras's `_<n>` suffixes (the recipe's step 1 -> step 2 transfer). With
    `include_top=False`, `source` may have a head (extra trailing layers; an HDF5 file's layer
    names must then match, as tf-keras skips it by loading by name).

    Example:
        ```python
        zoo.weights.check_compatible(step2_model, "runs/fm/step1/DyResNet18_step1.h5")
        zoo.weights.check_compatible(step2_model, step1_model)
        ```

    Args:
        model: the built model to load into.
        source: a checkpoint path (see `resolve_checkpoint_path`) or a built model.
        include_top: False when `model` lacks the head that `source` may have.
        model_name: for messages; default `model.name`.

    Returns:
        The format of `source`: "h5", "weights.h5", "keras", "tf" or "model".

    Raises:
        ValueError: naming `source`, the model and the first mismatching layer (index, name,
            expected and found shapes); an unreadable, damaged or altered file.
        FileNotFoundError: no such checkpoint.
    """
    return _check(model, source, include_top=include_top, model_name=model_name)[0]


def load_pretrained(
    model: tf.keras.Model,
    weights: str | os.PathLike | None,
    *,
    model_name: str,
    include_top: bool,
) -> None:
    """Load `weights` into `model` in place (every zoo constructor calls this): None, a dataset
    registered for `model_name` (see `get_weights_file`), or a checkpoint path.
    `check_compatible` runs first, then tf-keras's `model.load_weights`.

    Raises:
        ValueError, FileNotFoundError, OSError: see `check_compatible`, `get_weights_file`.
    """
    if weights is None:
        return
    path = _local_path(weights, model_name=model_name, include_top=include_top)
    fmt, skip_head = _check(model, path, include_top=include_top, model_name=model_name)
    if fmt == "tf":
        model.load_weights(path).expect_partial()  # a skipped head, optimizer slots
    else:  # tf-keras skips a `.weights.h5` / `.keras` head itself, an HDF5 one by name
        model.load_weights(path, by_name=fmt == "h5" and skip_head)


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

    Writes `<out_dir>/<model>_<dataset>_weights[_notop].h5` (Keras HDF5 weights) through a
    temporary name, recording the model, the dataset, the sha256 of its weights (checked by
    every load, even without a registered sha256), `PADDING_MARK` for a model built with
    `padding="pytorch"`, and `attributes`. Upload it to `<url_base>/<file name>` and add the
    returned entry to `PUBLISHED_WEIGHTS` (or `register_weights`), or copy it into a cache
    or mirror directory: it then loads with `weights=dataset`.

    Example:
        ```python
        published = zoo.publish_weights(trained_model, "out/", dataset="imagenet")
        print(published.entry.sha256)
        ```

    Raises:
        ValueError: unknown model name, bad dataset name, a head whose class count differs
            from the dataset's.
    """
    model_name = model_name or model.name
    get_model_constructor(model_name)
    _check_dataset_name(dataset)
    num_classes = int(model.output_shape[-1]) if include_top else None
    known = _DATASET_CLASSES.get(dataset)
    if include_top and known is not None and known != num_classes:
        raise ValueError(
            f"Expected a model with {known} classes for dataset {dataset!r}, but "
            f"{model_name}'s output has {num_classes}."
        )
    file_name = weights_file_name(model_name, dataset, include_top=include_top)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, file_name)
    with atomic_path(path) as part:
        model.save_weights(part, save_format="h5")
        with h5py.File(part, "a") as file:
            file.attrs.update({_MODEL_MARK: model_name, _DATASET_MARK: dataset})
            if any(isinstance(layer, SpatialReverse) for layer in model.layers):
                file.attrs[PADDING_MARK] = "pytorch"  # see zoo/pytorch_padding.py
            file.attrs.update(attributes or {})
            file.attrs[_CONTENT_MARK] = _weights_sha256(file)
        digest = sha256_of(part)
    url = f"{url_base.rstrip('/')}/{file_name}" if url_base else ""
    entry = WeightsEntry(model_name, dataset, include_top, file_name, digest, url, num_classes)
    return PublishedWeights(path=path, entry=entry)
