"""Pretrained weights: registry, download through a real local HTTP server, cache, mirrors,
checks before loading, and the publish-weights command."""

import hashlib
import http.server
import logging
import os
import re
import socket
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from larq_dysign import cli, zoo
from larq_dysign.zoo import weights as weights_module

SHAPE = (28, 28, 1)  # the smallest configuration: ReActNet18 with the small stem
CLASSES = 10
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
    model = zoo.ReActNet18(input_shape=SHAPE, num_classes=CLASSES)
    _randomize(model)
    top = weights_module.publish_weights(model, out_dir, dataset="pytest-source")
    notop_model = zoo.ReActNet18(input_shape=SHAPE, include_top=False, weights=top.path)
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
    return zoo.ReActNet18(input_shape=SHAPE, num_classes=CLASSES)


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

    model = zoo.ReActNet18(input_shape=SHAPE, num_classes=CLASSES, weights="pytest-http")

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


def test_corrupted_download_is_rejected_and_removed(source, server, tmp_path):
    data = bytearray(_bytes(source["top"].path))
    data[len(data) // 2] ^= 0xFF
    name = source["top"].entry.file_name
    server.files[name] = bytes(data)
    entry = _register("pytest-corrupt", source, url=f"{server.base_url}/{name}")

    with pytest.raises(weights_module.WeightsChecksumError) as error:
        zoo.get_weights_file("ReActNet18", "pytest-corrupt")

    assert entry.sha256 in str(error.value)
    assert hashlib.sha256(data).hexdigest() in str(error.value)
    assert _files_in(_cache_dir(tmp_path)) == []


def test_corrupted_cached_file_is_removed(source, tmp_path):
    entry = _register("pytest-corrupt-cache", source)  # hashed, no URL
    cache = _cache_dir(tmp_path)
    cache.mkdir()
    (cache / entry.file_name).write_bytes(b"not the published file")

    with pytest.raises(weights_module.WeightsChecksumError, match="was removed"):
        zoo.get_weights_file("ReActNet18", "pytest-corrupt-cache")

    assert _files_in(cache) == []


def test_unhashed_download_that_is_not_weights_is_removed(target, server, tmp_path):
    entry = zoo.register_weights(
        "ReActNet18", "pytest-garbage", num_classes=CLASSES, url=f"{server.base_url}/g.h5"
    )
    server.files["g.h5"] = b"<html>login page of a captive portal</html>"

    with pytest.raises(weights_module.IncompatibleWeightsError, match="neither"):
        weights_module.load_pretrained(
            target, "pytest-garbage", model_name="ReActNet18", include_top=True
        )

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
    expected = (
        (weights_module.WeightsChecksumError, "cut off")
        if hashed
        else (weights_module.IncompatibleWeightsError, "truncated")
    )
    with pytest.raises(expected[0], match=expected[1]) as error:
        zoo.get_weights_file("ReActNet18", "pytest-cut")

    assert f"{len(server.files[name]) // 2} bytes" in str(error.value) or not hashed
    assert len(server.requests) == 1
    assert _files_in(_cache_dir(tmp_path)) == []


def test_a_server_that_stops_sending_times_out_and_leaves_no_file(
    source, server, tmp_path, monkeypatch
):
    name = source["top"].entry.file_name
    server.files[name] = _bytes(source["top"].path)
    server.stall.add(name)
    _register("pytest-stall", source, url=f"{server.base_url}/{name}")
    monkeypatch.setenv(weights_module.TIMEOUT_ENV, "0.5")
    with pytest.raises(weights_module.WeightsDownloadError, match="no data for 0.5 s"):
        zoo.get_weights_file("ReActNet18", "pytest-stall")
    assert _files_in(_cache_dir(tmp_path)) == []
    assert socket.getdefaulttimeout() is None  # the process default is restored

    monkeypatch.setenv(weights_module.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="LARQ_DYSIGN_DOWNLOAD_TIMEOUT.*'soon'"):
        zoo.get_weights_file("ReActNet18", "pytest-stall")


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
    with pytest.raises(weights_module.WeightsNotAvailableError) as error:
        zoo.ReActNet18(input_shape=SHAPE, weights="imagenet")
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
    model = zoo.ReActNet18(input_shape=SHAPE, include_top=False, weights="imagenet")
    np.testing.assert_array_equal(model(images, training=False).numpy(), source["features"])


def test_imagenet_error_names_the_mirror_url_that_lacks_the_file(server, monkeypatch):
    monkeypatch.setenv(weights_module.MIRROR_URL_ENV, server.base_url)

    with pytest.raises(weights_module.WeightsNotAvailableError) as error:
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


def test_tf_checkpoint_loads(source, target, images, tmp_path):
    source["model"].save_weights(str(tmp_path / "ckpt" / "step"))
    for weights in (tmp_path / "ckpt", tmp_path / "ckpt" / "step.index"):
        _zero(target)
        weights_module.load_pretrained(target, weights, model_name="ReActNet18", include_top=True)
        np.testing.assert_array_equal(target(images, training=False).numpy(), source["outputs"])


def test_wrong_num_classes_names_the_first_mismatching_layer(source):
    with pytest.raises(weights_module.IncompatibleWeightsError) as error:
        zoo.ReActNet18(input_shape=SHAPE, num_classes=7, weights=source["top"].path)

    message = str(error.value)
    assert "does not fit ReActNet18" in message
    assert "published for ReActNet18 on pytest-source" in message
    assert re.search(r"layer #\d+ 'logits'", message)
    assert "[(512, 7), (7,)]" in message and "[(512, 10), (10,)]" in message


def test_another_architecture_names_the_first_mismatching_layer(source, target, tmp_path):
    # DyResNet18's first sign layer is a DySign (threshold + hyper function), ReActNet18's an
    # RSign (threshold only): the check stops there, before any weight is assigned
    _randomize(target, seed=3)
    before = [v.numpy() for v in target.weights]
    with pytest.raises(weights_module.IncompatibleWeightsError) as error:
        zoo.DyResNet18(input_shape=SHAPE, num_classes=CLASSES, weights=source["top"].path)
    assert "does not fit DyResNet18" in str(error.value)
    assert "layer #2 'stage1_block1_sign'" in str(error.value)

    # a no-top file into a full model: the head has no counterpart; nothing was assigned
    with pytest.raises(weights_module.IncompatibleWeightsError, match="'logits'.*include_top"):
        weights_module.load_pretrained(
            target, source["notop"].path, model_name="ReActNet18", include_top=True
        )
    for variable, value in zip(target.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_bad_weights_values_fail_before_the_model_is_built(target, tmp_path):
    with pytest.raises(weights_module.WeightsFileNotFoundError, match="no such file"):
        zoo.ReActNet18(input_shape=SHAPE, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match=r"no such dataset.*") as error:
        zoo.ReActNet18(input_shape=SHAPE, weights="imagenett")
    assert "'imagenet'" in str(error.value)
    with pytest.raises(ValueError, match="num_classes=1000"):
        zoo.ReActNet18(input_shape=SHAPE, num_classes=CLASSES, weights="imagenet")
    zoo.register_weights("DyResNet18", "pytest-other-model", num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"registered for it \['imagenet'"):
        weights_module.load_pretrained(
            target, "pytest-other-model", model_name="ReActNet18", include_top=True
        )


def test_publish_weights_command_prints_the_sha256(source, tmp_path, capsys):
    out_dir = tmp_path / "out"

    code = cli.main(
        [
            "publish-weights",
            "ReActNet18",
            source["top"].path,
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
