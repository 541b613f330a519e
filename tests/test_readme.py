"""Every Python block of the README runs as written (in order, in one fresh interpreter)."""

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_python_blocks_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 3
    script = "\n".join(blocks)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the quickstart wrote a binary file and the examples printed what they promise
    assert (tmp_path / "dyresnet18.tflite").stat().st_size > 0
    assert "LceBconv2d" in result.stdout
    assert "(None, 7, 7, 512)" in result.stdout
