"""Time `make demo` as a new user runs it: a fresh clone, the README's command, install included.

Clones this repository (its committed HEAD) into a new directory, runs `make demo` there with
nothing prepared (the clone creates its own .venv and installs the pinned stack; pip's cache and
the system's Fashion-MNIST are what a machine that installed them before has), and records the
wall time of the whole command, the demo's own figures (`out/demo/demo_report.json`: test
accuracy, training minutes, file size, parity, latency) and the machine. Writes
`benchmarks/results/demo.json`; `make_results.py` puts it in the README's headline and
docs/results.md (section 7, which this script prints too).

Run on an otherwise idle machine (the time is the claim):
    python benchmarks/demo_benchmark.py [--demo-args "--epochs 2"] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import make_results  # this folder's: the section docs/results.md shows

from larq_dysign.files import write_atomically

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def run(demo_args: str, keep: bool) -> dict:
    """Clone, `make demo`, read its report; returns the figures."""
    workdir = tempfile.mkdtemp(prefix="larq_dysign_demo_")
    clone = os.path.join(workdir, "larq-dysign")
    subprocess.run(["git", "clone", "--quiet", ROOT, clone], check=True)
    command = ["make", "demo"] + ([f"DEMO_ARGS={demo_args}"] if demo_args else [])
    log_path = os.path.join(workdir, "make_demo.log")
    print(f"$ cd {clone} && {shlex.join(command)}   (log: {log_path})", flush=True)
    load_before = _load()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in process.stdout:  # the demo's own progress, shown and kept
            sys.stdout.write(line)
            log.write(line)
        status = process.wait()
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"make demo failed with exit status {status}; see {log_path}")
    with open(os.path.join(clone, "out", "demo", "demo_report.json")) as f:
        report = json.load(f)
    figures = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(),
            "command": "python benchmarks/demo_benchmark.py"
            + (f" --demo-args {shlex.quote(demo_args)}" if demo_args else ""),
            "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), no GPU",
            "load_average_before": round(load_before, 2),
            "load_average_after": round(_load(), 2),
            "pip_cache": "warm (packages from the local pip cache, not downloaded)",
        },
        "make_demo_seconds": round(seconds, 1),
        "train_seconds": report["train_seconds"],
        "test_accuracy": report["test_accuracy_keras"],
        "model": report["model"],
        "schedule": report.get("schedule"),
        "train_accuracy_per_epoch": report["training_steps"],
        "tflite_bytes": report["tflite_bytes"],
        "parity": report["parity"],
        "latency_ms_host": report["latency_ms_host"],
        "lce_bconv2d": report["ops"].get("LceBconv2d", 0),
    }
    if keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-args", default="", help="passed to make demo as DEMO_ARGS")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its log")
    args = parser.parse_args(argv)
    figures = run(args.demo_args, args.keep)
    write_atomically(os.path.join(RESULTS, "demo.json"), json.dumps(figures, indent=1) + "\n")
    print("\n".join(make_results.demo_rows(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
