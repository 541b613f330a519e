"""docs/results.md and the README's generated blocks are what the benchmarks' JSON says."""

import importlib.util
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(name):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_results = _module("make_results")
accuracy_benchmark = _module("accuracy_benchmark")


def test_committed_documents_match_the_committed_json():
    doc, readme = make_results.render()
    with open(make_results.DOC) as f:
        assert f.read() == doc, "docs/results.md is stale: run python benchmarks/make_results.py"
    with open(make_results.README) as f:
        assert f.read() == readme, "README.md's blocks are stale: run benchmarks/make_results.py"


def _run(config, seed, accuracy):
    return {
        "config": config,
        "seed": seed,
        "test_accuracy": accuracy,
        "parameters": 1000,
        "steps_per_recipe_step": 10,
        "seconds_per_update": {"1": 0.1, "2": 0.1},
    }


def test_summary_statistics_and_the_seed_spread_rule():
    runs = [
        *(_run("ReActNet18", s, a) for s, a in enumerate([0.80, 0.81, 0.82])),
        *(_run("DyResNet18", s, a) for s, a in enumerate([0.85, 0.86, 0.87])),  # +5 points
        *(_run("ReActNetA", s, a) for s, a in enumerate([0.80, 0.90, 0.85])),
        *(_run("DyMobileNet", s, a) for s, a in enumerate([0.86, 0.84, 0.88])),  # +1, noisy
    ]
    rows = accuracy_benchmark.summarize(runs)
    dy = rows["DyResNet18"]
    assert dy["mean"] == pytest.approx(0.86) and dy["std"] == pytest.approx(0.01)
    assert dy["difference"] == pytest.approx(0.05)
    assert dy["margin"] == pytest.approx(2 * math.sqrt(2 * 0.01**2 / 3))
    assert dy["exceeds_spread"]
    mobile = rows["DyMobileNet"]
    assert mobile["difference"] == pytest.approx(0.01) and not mobile["exceeds_spread"]
    assert "difference" not in rows["ReActNet18"]
    assert "BinaryCCT" not in rows  # configs without runs are left out
    text = make_results._verdict(dy)
    assert text.startswith("+5.00 points, above the baseline beyond the seed spread")
    assert make_results._verdict(mobile).startswith("+1.00 points, within the seed spread")
