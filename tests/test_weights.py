"""Pretrained weights: registry, download through a real local HTTP server, cache, mirrors,
every checkpoint format, the compatibility check before loading, and the publish-weights
command. docs/reliability.md ("Weights and downloads") points at the fault tests here."""

import hashlib
import http.server
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import cli, zoo
from larq_dysign.zoo import weights as weights_module
from larq_dysign.zoo.registry import model_family

# one xdist group: its module fixtures (the published model) are built once, not per worker
pytestmark = pytest.mark.xdist_group("test_weights")

SHAPE = (28, 28, 1)  # the smallest configuration: ReActNet18 with the small stem
CLASSES = 10
SMALL = {"input_shape": SHAPE, "width_multiplier": 0.25}  # 128 channels in the last stage
FEATURES = "stage4_block4_prelu"  # the last feature map, the output of include_top=False


class _WeightsServer(http.server.ThreadingHTTPServer):
    """Serves `files` (name -> bytes) under /weights/, counts requests; names in `cut` get a
    Content-Length of N and only N/2 bytes before the connection closes."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.stall: set[str] = set()
        self.released = threading.Event()
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights"

    def stop(self):
        self.released.set()
        if not self.thread.is_alive():
            return
        self.shutdown()
        self.server_close()
        self.thread.join()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        name = self.path.removeprefix("/weights/")
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.server.stall:  # headers, then silence until the test ends
            self.wfile.flush()
            self.server.released.wait(30)
            return
        if name in self.server.cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    weights_server = _WeightsServer()
    yield weights_server
    weights_server.stop()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A temporary cache, no mirrors configured, no proxy for 127.0.0.1."""
    monkeypatch.setenv(weights_module.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(weights_module.MIRROR_URL_ENV, raising=False)
    monkeypatch.delenv(weights_module.MIRROR_DIR_ENV, raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _cache_dir(tmp_path):
    return tmp_path / "cache"


def _files_in(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _randomize(model, seed=0):
    """Every weight random (BatchNorm variances positive), so a weight left unloaded shows."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "moving_variance" in variable.name:
            values = rng.uniform(0.5, 2.0, variable.shape)
        else:
            values = rng.normal(0.0, 0.5, variable.shape)
        variable.assign(values.astype("float32"))


def _zero(model):
    for variable in model.weights:
        variable.assign(tf.zeros_like(variable))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(4, *SHAPE)).astype("float32")


@pytest.fixture(scope="module")
def source(tmp_path_factory, images):
    """A ReActNet18 with random weights, published as a full file and a no-top file (the
    no-top model loads the full file, skipping the head), and its reference outputs."""
    tf.keras.utils.set_random_seed(0)
    out_dir = tmp_path_factory.mktemp("published")
    model = zoo.ReActNet18(**SMALL, num_classes=CLASSES)
    _randomize(model)
    top = weights_module.publish_weights(model, out_dir, dataset="pytest-source")
    notop_model = zoo.ReActNet18(**SMALL, include_top=False, weights=top.path)
    notop = weights_module.publish_weights(
        notop_model, out_dir, dataset="pytest-source", include_top=False
    )
    features = tf.keras.Model(model.input, model.get_layer(FEATURES).output)
    return {
        "model": model,
        "top": top,
        "notop": notop,
        "notop_model": notop_model,
        "outputs": model(images, training=False).numpy(),
        "features": features(images, training=False).numpy(),
    }


@pytest.fixture(scope="module")
def target():
    """A second ReActNet18 to load into (its weights are zeroed before each load)."""
    return zoo.ReActNet18(**SMALL, num_classes=CLASSES)


def _bytes(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _register(dataset, source, *, url="", hashed=True, notop=False):
    published = source["notop"] if notop else source["top"]
    return zoo.register_weights(
        "ReActNet18",
        dataset,
        include_top=not notop,
        num_classes=CLASSES,
        sha256=published.entry.sha256 if hashed else "",
        url=url,
    )


def test_published_files_are_named_and_hashed_like_larq_zoo(source):
    top, notop = source["top"], source["notop"]
    assert os.path.basename(top.path) == "reactnet18_pytest-source_weights.h5"
    assert os.path.basename(notop.path) == "reactnet18_pytest-source_weights_notop.h5"
    assert top.entry.sha256 == hashlib.sha256(_bytes(top.path)).hexdigest()
    assert (top.entry.num_classes, notop.entry.num_classes) == (CLASSES, None)
    # the no-top model loaded the full file without its head: same features as the source
    # (same weights, same ops on the same CPU: the outputs are bit-identical)
    np.testing.assert_array_equal(
        source["notop_model"](np.zeros((1, *SHAPE), "float32"), training=False).numpy(),
        tf.keras.Model(source["model"].input, source["model"].get_layer(FEATURES).output)(
            np.zeros((1, *SHAPE), "float32"), training=False
        ).numpy(),
    )


def test_first_load_downloads_then_the_cache_serves_with_the_server_stopped(
    source, target, images, server, tmp_path
):
    name = source["top"].entry.file_name
    server.files[name] = _bytes(source["top"].path)
    entry = _register("pytest-http", source, url=f"{server.base_url}/{name}")

    model = zoo.ReActNet18(**SMALL, num_classes=CLASSES, weights="pytest-http")

    # identical weights and ops on the same CPU: bit-identical outputs
    np.testing.assert_array_equal(model(images, training=False).numpy(), source["outputs"])
    assert server.requests == [f"/weights/{name}"]
    assert _files_in(_cache_dir(tmp_path)) == [entry.file_name]  # no temporary file left

    server.stop()
    _zero(target)
    weights_module.load_pretrained(
        target, "pytest-http", model_name="ReActNet18", include_top=True
    )
    np.testing.assert_array_equal(target(images, training=False).numpy(), source["outputs"])
    assert len(server.requests) == 1


def test_mirror_url_serves_an_unpublished_entry(
    source, target, images, server, tmp_path, monkeypatch, caplog
):
    entry = _register("pytest-mirror-url", source, hashed=False)  # nothing published
    data = _bytes(source["top"].path)
    server.files[entry.file_name] = data
    monkeypatch.setenv(weights_module.MIRROR_URL_ENV, server.base_url + "/")
    _zero(target)

    with caplog.at_level(logging.WARNING, logger=weights_module.__name__):
        weights_module.load_pretrained(
            target, "pytest-mirror-url", model_name="ReActNet18", include_top=True
        )

    np.testing.assert_array_equal(target(images, training=False).numpy(), source["outputs"])
    assert server.requests == [f"/weights/{entry.file_name}"]
    assert _files_in(_cache_dir(tmp_path)) == [entry.file_name]
    # unverifiable by hash: accepted after the layer check, and its sha256 is logged
    assert hashlib.sha256(data).hexdigest() in caplog.text


@pytest.mark.parametrize("variable", ["dir", "url_path", "file_url"])
def test_mirror_directory_is_read_in_place(source, tmp_path, monkeypatch, variable):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    entry = _register("pytest-mirror-dir", source)
    (mirror / entry.file_name).write_bytes(_bytes(source["top"].path))
    if variable == "dir":
        monkeypatch.setenv(weights_module.MIRROR_DIR_ENV, str(mirror))
    else:
        value = f"file://{mirror}" if variable == "file_url" else str(mirror)
        monkeypatch.setenv(weights_module.MIRROR_URL_ENV, value)

    path = zoo.get_weights_file("ReActNet18", "pytest-mirror-dir")

    assert path == str(mirror / entry.file_name)
    assert _files_in(_cache_dir(tmp_path)) == []  # read in place, not copied


def test_a_mirror_directory_holding_another_file_is_named_and_left_alone(
    source, tmp_path, monkeypatch
):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    entry = _register("pytest-mirror-wrong", source, url="http://127.0.0.1:9/never-used.h5")
    (mirror / entry.file_name).write_bytes(_bytes(source["notop"].path))  # another version
    monkeypatch.setenv(weights_module.MIRROR_DIR_ENV, str(mirror))

    with pytest.raises(ValueError, match="mirror directory.*replace it") as error:
        zoo.get_weights_file("ReActNet18", "pytest-mirror-wrong")

    assert str(mirror / entry.file_name) in str(error.value)
    assert _bytes(mirror / entry.file_name) == _bytes(source["notop"].path)  # read-only
    assert _files_in(_cache_dir(tmp_path)) == []


def test_corrupted_download_is_rejected_and_removed(source, server, tmp_path):
    data = bytearray(_bytes(source["top"].path))
    data[len(data) // 2] ^= 0xFF
    name = source["top"].entry.file_name
    server.files[name] = bytes(data)
    entry = _register("pytest-corrupt", source, url=f"{server.base_url}/{name}")

    with pytest.raises(ValueError) as error:
        zoo.get_weights_file("ReActNet18", "pytest-corrupt")

    assert entry.sha256 in str(error.value)
    assert hashlib.sha256(data).hexdigest() in str(error.value)
    assert _files_in(_cache_dir(tmp_path)) == []


def test_corrupted_cached_file_is_removed(source, tmp_path):
    entry = _register("pytest-corrupt-cache", source)  # hashed, no URL
    cache = _cache_dir(tmp_path)
    cache.mkdir()
    (cache / entry.file_name).write_bytes(b"not the published file")

    with pytest.raises(ValueError, match="was removed"):
        zoo.get_weights_file("ReActNet18", "pytest-corrupt-cache")

    assert _files_in(cache) == []


def _entry_named(message: str, dataset: str, include_top: bool = True) -> bool:
    return f"ReActNet18 {dataset!r} weights (include_top={include_top})" in message


def test_unhashed_download_that_is_not_weights_is_removed(target, server, tmp_path):
    url = f"{server.base_url}/g.h5"
    entry = zoo.register_weights("ReActNet18", "pytest-garbage", num_classes=CLASSES, url=url)
    server.files["g.h5"] = b"<html>login page of a captive portal</html>"

    with pytest.raises(ValueError, match="neither") as error:
        weights_module.load_pretrained(
            target, "pytest-garbage", model_name="ReActNet18", include_top=True
        )

    # the message names what was downloaded, from where; not the temporary file, now deleted
    message = str(error.value)
    assert url in message and _entry_named(message, "pytest-garbage")
    assert ".part" not in message
    assert entry.sha256 == ""
    assert _files_in(_cache_dir(tmp_path)) == []


@pytest.mark.parametrize("hashed", [True, False])
def test_connection_closed_mid_file_leaves_no_file(source, server, tmp_path, hashed):
    name = source["top"].entry.file_name
    server.files[name] = _bytes(source["top"].path)
    server.cut.add(name)
    _register("pytest-cut", source, url=f"{server.base_url}/{name}", hashed=hashed)

    # get_file ignores the Content-Length and returns the half file; the sha256, or without
    # one HDF5's own end-of-file check, rejects it
    with pytest.raises(ValueError, match="cut off" if hashed else "truncated") as error:
        zoo.get_weights_file("ReActNet18", "pytest-cut")

    message = str(error.value)
    assert f"{len(server.files[name]) // 2} bytes" in message or not hashed
    assert f"{server.base_url}/{name}" in message and _entry_named(message, "pytest-cut")
    assert ".part" not in message
    assert len(server.requests) == 1
    assert _files_in(_cache_dir(tmp_path)) == []


def _flip_a_logits_weight(path):
    """Flip the sign bit of the first logits kernel value in place, in the HDF5 file's bytes
    (as a disk or a copy would), leaving the file readable."""
    with h5py.File(path, "r") as file:
        name = file["logits"].attrs["weight_names"][0]
        offset = file["logits"][name].id.get_offset()
    with open(path, "r+b") as file:
        file.seek(offset + 3)  # little-endian float32: the byte with the sign bit
        byte = file.read(1)[0]
        file.seek(offset + 3)
        file.write(bytes([byte ^ 0x80]))


def _truncate(path):
    data = _bytes(path)
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("hashed", [True, False])
@pytest.mark.parametrize("damage", [_truncate, _flip_a_logits_weight])
def test_a_damaged_cache_file_is_downloaded_again(
    source, target, images, server, tmp_path, damage, hashed
):
    # without a registered sha256, truncation fails HDF5's end-of-file check and the bit
    # flip the content hash publish_weights wrote into the file
    name = weights_module.weights_file_name("ReActNet18", "pytest-bad-cache")
    server.files[name] = _bytes(source["top"].path)
    _register("pytest-bad-cache", source, url=f"{server.base_url}/{name}", hashed=hashed)
    cache = _cache_dir(tmp_path)
    cache.mkdir()
    shutil.copy(source["top"].path, cache / name)
    damage(cache / name)
    _zero(target)

    weights_module.load_pretrained(
        target, "pytest-bad-cache", model_name="ReActNet18", include_top=True
    )

    np.testing.assert_array_equal(target(images, training=False).numpy(), source["outputs"])
    assert server.requests == [f"/weights/{name}"]
    assert _files_in(cache) == [name]  # replaced in place, no temporary file left
    assert _bytes(cache / name) == server.files[name]


def test_a_damaged_unhashed_cache_file_is_kept_until_a_good_download_replaces_it(
    source, server, tmp_path
):
    name = weights_module.weights_file_name("ReActNet18", "pytest-bad-cache-no-url")
    cache = _cache_dir(tmp_path)
    cache.mkdir()
    shutil.copy(source["top"].path, cache / name)
    _truncate(cache / name)
    damaged = _bytes(cache / name)

    # no URL: the error names the file, which stays (it may be the user's only copy)
    _register("pytest-bad-cache-no-url", source, hashed=False)
    with pytest.raises(ValueError, match="truncated") as error:
        zoo.get_weights_file("ReActNet18", "pytest-bad-cache-no-url")
    assert str(cache / name) in str(error.value) and "no URL" in str(error.value)

    # a URL whose download is cut off too: refused, and the cache file is untouched
    server.files[name] = _bytes(source["top"].path)
    server.cut.add(name)
    _register("pytest-bad-cache-no-url", source, url=f"{server.base_url}/{name}", hashed=False)
    with pytest.raises(ValueError, match="truncated"):
        zoo.get_weights_file("ReActNet18", "pytest-bad-cache-no-url")
    assert len(server.requests) == 1
    assert _files_in(cache) == [name] and _bytes(cache / name) == damaged


def test_a_server_that_stops_sending_times_out_and_leaves_no_file(
    source, server, tmp_path, monkeypatch
):
    name = source["top"].entry.file_name
    server.files[name] = _bytes(source["top"].path)
    server.stall.add(name)
    _register("pytest-stall", source, url=f"{server.base_url}/{name}")
    monkeypatch.setenv(weights_module.TIMEOUT_ENV, "0.5")
    with pytest.raises(OSError, match="no data for 0.5 s") as error:
        zoo.get_weights_file("ReActNet18", "pytest-stall")
    assert _entry_named(str(error.value), "pytest-stall")
    assert _files_in(_cache_dir(tmp_path)) == []
    assert socket.getdefaulttimeout() is None  # the process default is restored


@pytest.mark.parametrize("value", ["inf", "nan", "1e10", "0", "-5", "soon"])
def test_a_download_timeout_that_is_not_a_usable_number_is_refused_before_any_request(
    source, server, tmp_path, monkeypatch, value
):
    # "inf" and 1e10 used to pass, then fail mid-download with "timestamp out of range"
    name = source["top"].entry.file_name
    server.files[name] = _bytes(source["top"].path)
    _register("pytest-timeout", source, url=f"{server.base_url}/{name}")
    monkeypatch.setenv(weights_module.TIMEOUT_ENV, value)

    with pytest.raises(ValueError) as error:
        zoo.get_weights_file("ReActNet18", "pytest-timeout")

    assert str(error.value) == (
        "Expected LARQ_DYSIGN_DOWNLOAD_TIMEOUT to be a number of seconds in (0, 86400] (how "
        f"long a download may wait for data), but got {value!r}."
    )
    assert server.requests == []
    assert _files_in(_cache_dir(tmp_path)) == []


def test_a_bit_flipped_published_file_is_refused_where_keras_loads_it_silently(
    source, target, images, tmp_path
):
    flipped = tmp_path / "flipped.h5"
    shutil.copy(source["top"].path, flipped)
    _flip_a_logits_weight(flipped)

    # the fault: plain Keras loads the file silently, with the first logits weight negated
    _zero(target)
    target.load_weights(str(flipped))
    loaded, published = (m.get_layer("logits").kernel.numpy() for m in (target, source["model"]))
    assert loaded[0, 0] == -published[0, 0] != 0
    np.testing.assert_array_equal(loaded.ravel()[1:], published.ravel()[1:])

    _randomize(target, seed=5)
    before = [v.numpy() for v in target.weights]
    with pytest.raises(ValueError, match="was altered after publish_weights") as error:
        weights_module.load_pretrained(target, flipped, model_name="ReActNet18", include_top=True)
    assert str(flipped) in str(error.value)
    for variable, value in zip(target.weights, before):  # nothing was assigned
        np.testing.assert_array_equal(variable.numpy(), value)
    assert _bytes(flipped) != _bytes(source["top"].path)  # the file is the user's: kept


_CHILD_DOWNLOAD = """
import larq_dysign, sys
from larq_dysign import zoo
zoo.register_weights("ReActNet18", "pytest-killed", num_classes=10, url=sys.argv[1])
zoo.get_weights_file("ReActNet18", "pytest-killed")
"""


def test_a_killed_download_leaves_only_a_part_file_which_is_later_removed(
    source, server, tmp_path
):
    name = weights_module.weights_file_name("ReActNet18", "pytest-killed")
    url = f"{server.base_url}/{name}"
    server.files[name] = _bytes(source["top"].path)
    server.stall.add(name)  # the child receives the headers, then waits: kill it there
    cache = _cache_dir(tmp_path)
    env = {**os.environ, weights_module.CACHE_DIR_ENV: str(cache)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD_DOWNLOAD, url], env=env)
    try:
        deadline = time.time() + 120
        while not (server.requests and _files_in(cache)) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    # nothing under the final name, only the child's temporary file
    [part] = _files_in(cache)
    assert part.startswith(f".{name}.") and part.endswith(".part")

    server.stall.clear()
    _register("pytest-killed", source, url=url, hashed=False)
    assert zoo.get_weights_file("ReActNet18", "pytest-killed") == str(cache / name)
    assert _bytes(cache / name) == server.files[name]
    assert _files_in(cache) == sorted([name, part])  # another process's download may be live

    a_day_ago = time.time() - weights_module.STALE_PART_SECONDS - 60
    os.utime(cache / part, (a_day_ago, a_day_ago))
    os.remove(cache / name)
    zoo.get_weights_file("ReActNet18", "pytest-killed")
    assert _files_in(cache) == [name]


def test_stale_part_files_of_killed_downloads_are_removed(tmp_path):
    old, fresh, kept = (tmp_path / n for n in (".a.h5.1.part", ".b.h5.2.part", "c.h5"))
    for path in (old, fresh, kept):
        path.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(kept, (two_days_ago, two_days_ago))
    assert weights_module.remove_stale_parts(str(tmp_path)) == [str(old)]
    assert _files_in(tmp_path) == [".b.h5.2.part", "c.h5"]


def test_imagenet_explains_that_nothing_is_published_then_loads_a_cached_file(
    source, images, tmp_path
):
    cache = _cache_dir(tmp_path)
    # no URL anywhere: the error comes without any network access
    with pytest.raises(FileNotFoundError) as error:
        zoo.ReActNet18(**SMALL, weights="imagenet")
    message = str(error.value)
    # ReActNet-18's weights come from the official PyTorch checkpoint (tests of the import:
    # test_reactnet_import.py); training your own stays the other way
    assert "larq-dysign import-reactnet CHECKPOINT --model ReActNet18" in message
    assert "reactnet18_imagenet_weights.h5" in message
    assert str(cache) in message
    assert weights_module.MIRROR_URL_ENV in message and weights_module.MIRROR_DIR_ENV in message
    assert "larq-dysign train ReActNet18 --dataset imagenet2012" in message
    assert "larq-dysign publish-weights ReActNet18" in message
    assert _files_in(cache) == []

    # once a file is in the cache, the same user code loads it (entry unhashed: layer check)
    weights_module.publish_weights(
        source["notop_model"],
        cache,
        dataset="imagenet",
        include_top=False,
        model_name="ReActNet18",
    )
    model = zoo.ReActNet18(**SMALL, include_top=False, weights="imagenet")
    np.testing.assert_array_equal(model(images, training=False).numpy(), source["features"])


def test_imagenet_error_names_the_mirror_url_that_lacks_the_file(server, monkeypatch):
    monkeypatch.setenv(weights_module.MIRROR_URL_ENV, server.base_url)

    with pytest.raises(FileNotFoundError) as error:
        zoo.get_weights_file("DyResNet18", "imagenet", include_top=False)

    message = str(error.value)
    # the no-top file is tried first, then the full file whose head would be skipped
    assert server.requests == [
        "/weights/dyresnet18_imagenet_weights_notop.h5",
        "/weights/dyresnet18_imagenet_weights.h5",
    ]
    assert f"{server.base_url}/dyresnet18_imagenet_weights.h5: HTTP 404" in message
    assert "--notop" in message


def test_include_top_false_prefers_the_notop_file_else_skips_the_head(
    source, images, tmp_path, monkeypatch
):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv(weights_module.MIRROR_DIR_ENV, str(mirror))
    top = _register("pytest-notop", source)
    notop = _register("pytest-notop", source, notop=True)
    (mirror / top.file_name).write_bytes(_bytes(source["top"].path))
    model = source["notop_model"]

    # only the full file: its head is skipped
    assert zoo.get_weights_file("ReActNet18", "pytest-notop", include_top=False).endswith(
        top.file_name
    )
    _zero(model)
    weights_module.load_pretrained(
        model, "pytest-notop", model_name="ReActNet18", include_top=False
    )
    np.testing.assert_array_equal(model(images, training=False).numpy(), source["features"])

    (mirror / notop.file_name).write_bytes(_bytes(source["notop"].path))
    assert zoo.get_weights_file("ReActNet18", "pytest-notop", include_top=False).endswith(
        notop.file_name
    )
    _zero(model)
    weights_module.load_pretrained(
        model, "pytest-notop", model_name="ReActNet18", include_top=False
    )
    np.testing.assert_array_equal(model(images, training=False).numpy(), source["features"])


def _save(path, whole_model=False):
    def save(model, directory):
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (model.save if whole_model else model.save_weights)(str(directory / path))

    return save


# format: (how the source model is saved, the path users pass, check_compatible's answer)
FORMATS = {
    "h5": (_save("w.h5"), "w.h5", "h5"),
    "whole-model h5": (_save("m.h5", whole_model=True), "m.h5", "h5"),
    "weights.h5": (_save("m.weights.h5"), "m.weights.h5", "weights.h5"),
    "keras": (_save("m.keras", whole_model=True), "m.keras", "keras"),
    "tf prefix": (_save("ckpt/step"), "ckpt/step", "tf"),
    "tf index file": (_save("ckpt/step"), "ckpt/step.index", "tf"),
    "tf directory": (_save("ckpt/step"), "ckpt", "tf"),
}


@pytest.fixture(scope="module")
def seven():
    """A ReActNet18 with 7 classes: every checkpoint of the source mismatches at its head."""
    return zoo.ReActNet18(**SMALL, num_classes=7)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_checkpoint_format_loads_after_one_check(
    source, target, seven, images, tmp_path, fmt
):
    save, name, answer = FORMATS[fmt]
    save(source["model"], tmp_path)
    path = tmp_path / name
    assert weights_module.check_compatible(target, path) == answer

    _zero(target)
    weights_module.load_pretrained(target, path, model_name="ReActNet18", include_top=True)
    np.testing.assert_array_equal(target(images, training=False).numpy(), source["outputs"])

    notop = source["notop_model"]  # the full file's head is skipped
    _zero(notop)
    weights_module.load_pretrained(notop, path, model_name="ReActNet18", include_top=False)
    np.testing.assert_array_equal(notop(images, training=False).numpy(), source["features"])

    # the same first-mismatch message in every format, before any weight is assigned
    _randomize(seven, seed=4)
    before = [v.numpy() for v in seven.weights]
    with pytest.raises(ValueError) as error:
        weights_module.load_pretrained(seven, path, model_name="ReActNet18", include_top=True)
    message = str(error.value)
    assert "does not fit ReActNet18: first mismatch at layer #72 'logits'" in message
    assert "[(128, 7), (7,)]" in message and "[(128, 10), (10,)]" in message
    for variable, value in zip(seven.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def _flip_a_middle_byte(path):
    data = bytearray(_bytes(path))
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# format: (the file to damage, how); a bit flip in HDF5 weights without the content hash of
# publish_weights loads unnoticed (HDF5 keeps no checksum): see the bit-flip test below
DAMAGED = {
    "h5 truncated": ("w.h5", _truncate),
    "weights.h5 truncated": ("m.weights.h5", _truncate),
    "keras truncated": ("m.keras", _truncate),
    "keras bit flip": ("m.keras", _flip_a_middle_byte),  # the zip's CRC32
    "tf truncated": ("ckpt/step.data-00000-of-00001", _truncate),
    "tf bit flip": ("ckpt/step.data-00000-of-00001", _flip_a_middle_byte),  # CRC32C
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_checkpoint_is_refused_before_any_weight_is_assigned(
    source, target, tmp_path, case
):
    damaged, damage = DAMAGED[case]
    fmt = next(f for f, (_, name, _) in FORMATS.items() if damaged.startswith(name))
    save, name, _ = FORMATS[fmt]
    save(source["model"], tmp_path)
    damage(tmp_path / damaged)
    _randomize(target, seed=6)
    before = [v.numpy() for v in target.weights]

    with pytest.raises(ValueError, match="damaged") as error:
        weights_module.load_pretrained(
            target, tmp_path / name, model_name="ReActNet18", include_top=True
        )

    assert str(tmp_path / name) in str(error.value)
    for variable, value in zip(target.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_file_named_against_its_format_is_refused_with_the_fix(source, target, tmp_path):
    # tf-keras picks its reader by the name: a .weights.h5 file named w.h5 would be misread
    source["model"].save_weights(str(tmp_path / "m.weights.h5"))
    os.replace(tmp_path / "m.weights.h5", tmp_path / "w.h5")
    with pytest.raises(ValueError, match=r"w\.h5 is a weights\.h5 file.*end with \.weights\.h5"):
        weights_module.check_compatible(target, tmp_path / "w.h5")


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_zoo_model_loads_its_weights_h5_without_the_head(name, images, tmp_path):
    # .weights.h5 files pair layers by tf-keras's path (class and ordinal): checked on each
    # family's layers (DySign's hyper function, the CCT's attention), with a head to skip
    options = {**SMALL, **({"num_layers": 2} if model_family(name) == "cct" else {})}
    model = zoo.get_model(name, num_classes=CLASSES, **options)
    _randomize(model)
    model.save_weights(str(tmp_path / "m.weights.h5"))

    notop = zoo.get_model(
        name, include_top=False, weights=str(tmp_path / "m.weights.h5"), **options
    )

    features = tf.keras.Model(model.input, model.get_layer(notop.layers[-1].name).output)
    np.testing.assert_array_equal(
        notop(images, training=False).numpy(), features(images, training=False).numpy()
    )


def test_check_compatible_takes_a_built_model_as_the_source(source, target, seven):
    assert weights_module.check_compatible(target, source["model"]) == "model"
    assert (
        weights_module.check_compatible(source["notop_model"], source["model"], include_top=False)
        == "model"
    )
    with pytest.raises(ValueError) as error:
        weights_module.check_compatible(seven, source["model"])
    assert str(error.value).startswith(
        "The source model 'ReActNet18' does not fit ReActNet18: first mismatch at layer #72 "
        "'logits': ReActNet18 has weights of shapes [(128, 7), (7,)], the source model's layer "
        "'logits' has [(128, 10), (10,)]."
    )
    with pytest.raises(ValueError, match="layer #72 'logits'.*which ReActNet18 lacks"):
        weights_module.check_compatible(source["notop_model"], source["model"])

    def dense(name):
        inputs = tf.keras.Input((4,))
        return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name=name)(inputs))

    # layer names count too, except the `_<n>` Keras appends to names built twice
    assert weights_module.check_compatible(dense("dense_1"), dense("dense_2")) == "model"
    with pytest.raises(ValueError, match="layer #0 'logits': the source's is 'head'"):
        weights_module.check_compatible(dense("logits"), dense("head"))


def test_skipping_an_hdf5_head_needs_the_layer_names_that_tf_keras_loads_by(tmp_path):
    def dense_stack(*names):
        inputs = tf.keras.Input((4,))
        x = inputs
        for name in names:
            x = tf.keras.layers.Dense(4, name=name)(x)
        return tf.keras.Model(inputs, x, name="stack")

    full = dense_stack("features", "head")
    full.save_weights(str(tmp_path / "full.h5"))
    same, renamed = dense_stack("features"), dense_stack("renamed")
    _zero(same)

    weights_module.load_pretrained(
        same, tmp_path / "full.h5", model_name="stack", include_top=False
    )
    for loaded, saved in zip(same.weights, full.get_layer("features").weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
    # by position alone tf-keras would skip 'renamed' silently: refused instead
    with pytest.raises(ValueError, match="layer #0 'renamed'.*named 'features'.*by name"):
        weights_module.load_pretrained(
            renamed, tmp_path / "full.h5", model_name="stack", include_top=False
        )


def test_wrong_num_classes_names_the_first_mismatching_layer(source):
    with pytest.raises(ValueError) as error:
        zoo.ReActNet18(**SMALL, num_classes=7, weights=source["top"].path)

    message = str(error.value)
    assert "does not fit ReActNet18" in message
    assert "published for ReActNet18 on pytest-source" in message
    assert re.search(r"layer #\d+ 'logits'", message)
    assert "[(128, 7), (7,)]" in message and "[(128, 10), (10,)]" in message


def test_another_architecture_names_the_first_mismatching_layer(source, target, tmp_path):
    # DyResNet18's first sign layer is a DySign (threshold + hyper function), ReActNet18's an
    # RSign (threshold only): the check stops there, before any weight is assigned
    _randomize(target, seed=3)
    before = [v.numpy() for v in target.weights]
    with pytest.raises(ValueError) as error:
        zoo.DyResNet18(**SMALL, num_classes=CLASSES, weights=source["top"].path)
    assert "does not fit DyResNet18" in str(error.value)
    assert "layer #2 'stage1_block1_sign'" in str(error.value)

    # a no-top file into a full model: the head has no counterpart; nothing was assigned
    with pytest.raises(ValueError, match="'logits'.*include_top"):
        weights_module.load_pretrained(
            target, source["notop"].path, model_name="ReActNet18", include_top=True
        )
    for variable, value in zip(target.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_bad_weights_values_fail_before_the_model_is_built(target, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        zoo.ReActNet18(**SMALL, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match=r"no such dataset.*") as error:
        zoo.ReActNet18(**SMALL, weights="imagenett")
    assert "'imagenet'" in str(error.value)
    with pytest.raises(ValueError, match="num_classes=1000"):
        zoo.ReActNet18(**SMALL, num_classes=CLASSES, weights="imagenet")
    zoo.register_weights("DyResNet18", "pytest-other-model", num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"registered for it \['imagenet'"):
        weights_module.load_pretrained(
            target, "pytest-other-model", model_name="ReActNet18", include_top=True
        )


def test_not_found_says_why_nothing_was_downloaded():
    with pytest.raises(FileNotFoundError) as error:  # the zoo's own table: nothing published
        zoo.get_weights_file("BinaryCCT", "imagenet")
    assert "the papers' authors released no checkpoint" in str(error.value)
    zoo.register_weights("ReActNet18", "pytest-no-url", num_classes=CLASSES)  # a user's entry
    with pytest.raises(FileNotFoundError) as error:
        zoo.get_weights_file("ReActNet18", "pytest-no-url")
    message = str(error.value)
    assert "No URL is registered for it (register_weights(..., url=...))" in message
    assert "papers' authors" not in message
    assert "larq-dysign train ReActNet18 --dataset pytest-no-url" in message


def test_bad_locations_are_named(source, server, tmp_path, monkeypatch):
    name = weights_module.weights_file_name("ReActNet18", "pytest-locations")
    server.files[name] = _bytes(source["top"].path)
    _register("pytest-locations", source, url=f"{server.base_url}/{name}")
    for variable in (weights_module.MIRROR_DIR_ENV, weights_module.MIRROR_URL_ENV):
        monkeypatch.setenv(variable, str(tmp_path / "missing"))
        with pytest.raises(ValueError, match=f"Expected {variable} to be .*'{tmp_path}/missing'"):
            zoo.get_weights_file("ReActNet18", "pytest-locations")
        monkeypatch.delenv(variable)
    (tmp_path / "a-file").write_bytes(b"")
    monkeypatch.setenv(weights_module.CACHE_DIR_ENV, str(tmp_path / "a-file" / "cache"))
    with pytest.raises(OSError, match="Cannot create the weights cache.*LARQ_DYSIGN_CACHE_DIR"):
        zoo.get_weights_file("ReActNet18", "pytest-locations")
    assert server.requests == []


def test_publish_weights_command_prints_the_sha256(tmp_path, capsys):
    out_dir = tmp_path / "out"
    trained = zoo.ReActNet18(input_shape=SHAPE, num_classes=CLASSES)  # the CLI's full width
    _randomize(trained)
    trained.save_weights(str(tmp_path / "trained.h5"))

    code = cli.main(
        [
            "publish-weights",
            "ReActNet18",
            str(tmp_path / "trained.h5"),
            "--dataset",
            "pytest-cli",
            "--num-classes",
            str(CLASSES),
            "--input-shape",
            "28,28,1",
            "--notop",
            "-o",
            str(out_dir),
            "--url-base",
            "https://example.org/w",
        ]
    )

    printed = capsys.readouterr().out
    assert code == 0
    files = {
        "reactnet18_pytest-cli_weights.h5": True,
        "reactnet18_pytest-cli_weights_notop.h5": False,
    }
    assert _files_in(out_dir) == sorted(files)
    for name, include_top in files.items():
        digest = hashlib.sha256(_bytes(out_dir / name)).hexdigest()
        assert f"  file: {name}\n  sha256: {digest}\n" in printed
        assert (
            f"WeightsEntry(model='ReActNet18', dataset='pytest-cli', include_top={include_top}, "
            f"file_name='{name}', sha256='{digest}', url='https://example.org/w/{name}'"
        ) in printed
