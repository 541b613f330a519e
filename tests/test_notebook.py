"""examples/quickstart.ipynb runs top to bottom (on a subset, so it stays within minutes)."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "examples", "quickstart.ipynb")


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICKSTART_TRAIN_EXAMPLES", "512")
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("QUICKSTART_TEST_EXAMPLES", "500")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # without XLA here: its compiles (train, test, predict) are most of this test's time, and
    # tests/test_demo.py trains the same network with XLA
    fit_cell = next(cell for cell in notebook.cells if "jit_compile=True" in cell.source)
    fit_cell.source = fit_cell.source.replace("jit_compile=True", "jit_compile=False")
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "LceBconv2d" in outputs
    assert re.findall(r"^epoch \d+/\d+: .*$", outputs, re.M) == [  # one line per epoch
        line for line in outputs.splitlines() if line.startswith("epoch ")
    ]
    assert len(re.findall(r"^epoch \d+/1: loss ", outputs, re.M)) == 1
    assert "prediction agreement" in outputs
    assert (tmp_path / "quickstart_dyresnet18.tflite").stat().st_size > 0
    images = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 1  # the thresholds figure


def test_the_committed_notebook_reads_well():
    """Its committed outputs: one line per epoch (no progress bars), the figure kept."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    texts = [
        "".join(output.get("text", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    text = "".join(texts)
    epochs = re.findall(r"^epoch (\d+)/(\d+): loss [\d.]+, train accuracy .*$", text, re.M)
    assert epochs and [int(e) for e, _ in epochs] == list(range(1, int(epochs[0][1]) + 1))
    assert "\r" not in text and "━" not in text and "ETA" not in text  # no progress bars
    figures = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 1
