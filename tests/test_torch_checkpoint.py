"""The torch-free checkpoint reader, on files written by real torch (make_torch_fixtures.py).

The fixtures were written once by torch 2.13 (see tests/fixtures/torch/versions.txt) in both
formats of `torch.save`; `expected.npz` holds the same tensors as torch's own `.numpy()`.
"""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from larq_dysign.zoo.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    TorchCheckpointError,
    read_checkpoint,
    read_state_dict,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torch")
FORMATS = ("zip", "legacy")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURES, "expected.npz")) as data:
        return {key: data[key] for key in data.files}


def fixture(name: str, fmt: str) -> str:
    return os.path.join(FIXTURES, f"{name}_{fmt}.pth")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_tensor_layout_reads_as_torch_wrote_it(fmt, expected):
    tensors = read_checkpoint(fixture("tensors", fmt))
    assert list(tensors) == [k.split("/", 1)[1] for k in expected if k.startswith("tensors/")]
    for key, array in tensors.items():
        want = expected[f"tensors/{key}"]
        assert array.dtype == want.dtype, key
        assert array.shape == want.shape, key
        np.testing.assert_array_equal(array, want, err_msg=key)
        assert array.flags.c_contiguous, key
    # the layouts the fixture was made for
    assert tensors["scalar"].shape == () and tensors["scalar"] == np.float32(65.9)
    np.testing.assert_array_equal(tensors["offset_slice"], tensors["whole_base"][7:13])
    np.testing.assert_array_equal(
        tensors["strided_view"], tensors["whole_base"].reshape(4, 5)[1:, ::2]
    )
    assert tensors["num_batches_tracked"].dtype == np.int64
    assert tensors["bfloat16"].dtype == np.float32  # widened: NumPy has no bfloat16
    assert tensors["mask"].tolist() == [True, False, True]
    assert tensors["binary_pw.weights"].shape == (6, 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_training_checkpoint_keeps_its_structure(fmt, expected):
    checkpoint = read_checkpoint(fixture("checkpoint", fmt))
    assert set(checkpoint) == {"epoch", "state_dict", "best_top1_acc", "optimizer"}
    assert checkpoint["epoch"] == 7
    assert checkpoint["best_top1_acc"] == np.float32(65.9)
    optimizer = checkpoint["optimizer"]
    assert optimizer["param_groups"][0]["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(
        optimizer["state"][0]["exp_avg"], expected["checkpoint/optimizer/state/0/exp_avg"]
    )
    assert all(key.startswith("module.") for key in checkpoint["state_dict"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_dict_is_found_and_data_parallel_prefix_removed(fmt, expected):
    state = read_state_dict(fixture("checkpoint", fmt))
    assert list(state) == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "prelu.weight",
        "fc.weight",
        "fc.bias",
    ]
    for key, array in state.items():
        np.testing.assert_array_equal(array, expected[f"checkpoint/module.{key}"])
    # a top-level state dict (no "state_dict" entry, no prefix) is returned as it is
    assert "conv.weight" in read_state_dict(fixture("tensors", fmt))


class _Exploit:
    """Pickles as a call of os.system: what a malicious .pth would do on torch.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_bytes(obj) -> bytes:
    stream = io.BytesIO()
    for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, stream, protocol=2)
    pickle.dump(obj, stream, protocol=2)
    pickle.dump([], stream, protocol=2)
    return stream.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_globals_are_refused_by_name_before_running(fmt, tmp_path):
    marker = tmp_path / "exploited"
    payload = {"state_dict": {"w": _Exploit(marker)}}
    path = tmp_path / f"evil_{fmt}.pth"
    if fmt == "legacy":
        path.write_bytes(_legacy_bytes(payload))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", pickle.dumps(payload, protocol=2))
    with pytest.raises(TorchCheckpointError, match=r"'posix\.system'"):
        read_state_dict(path)
    assert not marker.exists()


def test_truncated_storage_is_an_error_not_garbage(tmp_path):
    source = fixture("tensors", "zip")
    damaged = tmp_path / "damaged.pth"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(damaged, "w") as copy:
        for info in original.infolist():
            data = original.read(info)
            if info.filename.endswith("/data/0"):
                data = data[:-4]
            copy.writestr(info.filename, data)
    with pytest.raises(TorchCheckpointError, match="truncated"):
        read_checkpoint(damaged)

    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(fixture("tensors", "legacy"), "rb").read()[:-10])
    with pytest.raises(TorchCheckpointError, match="truncated"):
        read_checkpoint(cut)


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(TorchCheckpointError, match="neither a zip-format nor a legacy-format"):
        read_checkpoint(text)
    archive = tmp_path / "model.keras"
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("config.json", "{}")
    with pytest.raises(TorchCheckpointError, match="not a torch.save checkpoint"):
        read_checkpoint(archive)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(TorchCheckpointError, match="magic number"):
        read_checkpoint(plain)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")
    no_state = tmp_path / "epoch_only.pth"
    no_state.write_bytes(_legacy_bytes({"epoch": 3}))
    with pytest.raises(TorchCheckpointError, match="epoch are not tensors"):
        read_state_dict(no_state)
