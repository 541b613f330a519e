"""docs/results.md and the README's generated blocks are what the benchmarks' JSON says."""

import importlib.util
import json
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
    documents = make_results.render()
    assert set(documents) == {make_results.DOC, make_results.README, make_results.PI_GUIDE}
    for path, text in documents.items():
        with open(path) as f:
            assert f.read() == text, f"{path} is stale: run python benchmarks/make_results.py"


def _run(config, seed, accuracy):
    return {
        "config": config,
        "seed": seed,
        "test_accuracy": accuracy,
        "parameters": 1000,
        "updates_per_recipe_step": 10,
        "seconds_per_update": {"1": 0.1, "2": 0.1},
        "seconds": 60.0,
        "cpu_seconds": 30.0,
    }


def _configs():
    budget = accuracy_benchmark.Budget(1)
    config = accuracy_benchmark.Config
    return {
        "ReActNet18": config("resnet", "ReActNet18", {}, budget),
        "DyResNet18": config("resnet", "DyResNet18", {}, budget, baseline="ReActNet18"),
        "ReActNetA": config("mobilenet", "ReActNetA", {}, budget),
        "DyMobileNet": config("mobilenet", "DyMobileNet", {}, budget, baseline="ReActNetA"),
        "variant": config(
            "study", "DyResNet18", {"x": 1}, budget, baseline="ReActNet18", reference="DyResNet18"
        ),
    }


def test_summary_statistics_and_the_seed_spread_rule():
    runs = [
        *(_run("ReActNet18", s, a) for s, a in enumerate([0.80, 0.81, 0.82])),
        *(_run("DyResNet18", s, a) for s, a in enumerate([0.85, 0.86, 0.87])),  # +5 points
        *(_run("ReActNetA", s, a) for s, a in enumerate([0.80, 0.90, 0.85])),
        *(_run("DyMobileNet", s, a) for s, a in enumerate([0.86, 0.84, 0.88])),  # +1, noisy
        *(_run("variant", s, a) for s, a in enumerate([0.85, 0.86, 0.87, 0.86])),  # 4 seeds
    ]
    rows = accuracy_benchmark.summarize(runs, _configs())
    dy = rows["DyResNet18"]
    assert dy["mean"] == pytest.approx(0.86) and dy["std"] == pytest.approx(0.01)
    assert dy["difference"] == pytest.approx(0.05)
    assert dy["margin"] == pytest.approx(2 * math.sqrt(2 * 0.01**2 / 3))
    assert dy["exceeds_spread"]
    assert dy["minutes"] == pytest.approx(1.0) and dy["cpu_minutes"] == pytest.approx(0.5)
    mobile = rows["DyMobileNet"]
    assert mobile["difference"] == pytest.approx(0.01) and not mobile["exceeds_spread"]
    assert "difference" not in rows["ReActNet18"]
    # a study variant is compared with the static baseline and with its reference Dy config;
    # unequal seed counts enter the standard error
    versus = rows["variant"]["versus_reference"]
    variant_std = rows["variant"]["std"]
    assert versus["difference"] == pytest.approx(0.0, abs=1e-12)
    assert versus["margin"] == pytest.approx(2 * math.sqrt(variant_std**2 / 4 + 0.01**2 / 3))
    assert not versus["exceeds_spread"] and versus["seed_counts"] == [4, 3]
    # a comparison does not replace the row's own seeds (it once did: "2 seeds" for 1 run)
    assert rows["variant"]["seeds"] == [0, 1, 2, 3] and dy["seeds"] == [0, 1, 2]


def test_configs_that_train_the_same_thing_share_their_runs():
    configs = accuracy_benchmark.all_configs()
    study, preset = configs["study ReActNet18"], configs["ReActNet18"]
    same = study.model == preset.model and study.kwargs == preset.kwargs
    assert (study.digest() == preset.digest()) == (same and study.budget == preset.budget)
    # the digest follows what is trained: another budget is another run
    other = accuracy_benchmark.Config(
        "study", study.model, study.kwargs, accuracy_benchmark.Budget(2)
    )
    assert other.digest() != study.digest()
    assert accuracy_benchmark.run_id(study, 3).endswith(f"-{study.digest()}-seed3")


def test_the_plain_sentence_gives_no_verdict_on_a_single_seed():
    runs = [
        *(_run("ReActNet18", s, a) for s, a in enumerate([0.80, 0.81])),
        _run("DyResNet18", 0, 0.85),
        *(_run("ReActNetA", s, a) for s, a in enumerate([0.80, 0.81, 0.82])),
        *(_run("DyMobileNet", s, a) for s, a in enumerate([0.85, 0.86, 0.87])),
    ]
    rows = accuracy_benchmark.summarize(runs, _configs())
    for row in rows.values():
        row["kwargs"], row["budget"] = (
            {},
            accuracy_benchmark.dataclasses.asdict(accuracy_benchmark.Budget(1)),
        )
    sentence = make_results.plain_sentence({"rows": rows})
    assert "too few seeds for a verdict yet: DyResNet18 +4.50 points (1 / 2 seeds)" in sentence
    assert "DySign helps DyMobileNet by 5.00 points" in sentence
    assert "no measurable effect" not in sentence


def test_a_difference_at_its_margin_is_called_at_the_edge_not_a_verdict():
    rows = {
        "ReActNet18": {"config": "ReActNet18", "seeds": [0, 1, 2]},
        "DyResNet18": {"config": "DyResNet18", "seeds": [0, 1, 2], "baseline": "ReActNet18"},
        "ReActNetA": {"config": "ReActNetA", "seeds": [0, 1, 2]},
        "DyMobileNet": {"config": "DyMobileNet", "seeds": [0, 1, 2], "baseline": "ReActNetA"},
    }
    comparisons = {"DyResNet18": (0.0029, 0.00287, True), "DyMobileNet": (0.001, 0.003, False)}
    for name, (difference, margin, beyond) in comparisons.items():
        rows[name].update(
            difference=difference, margin=margin, exceeds_spread=beyond, seed_counts=[3, 3]
        )
    for row in rows.values():
        row.update(experiment="resnet", kwargs={}, budget={})
    sentence = make_results.plain_sentence({"rows": rows})
    assert "at the edge of two standard errors" in sentence
    assert "DyResNet18 +0.29 points (+-0.29)" in sentence
    assert "helps" not in sentence
    assert "for DyMobileNet the difference (+0.10 +- 0.30 points)" in sentence
    assert not make_results._at_edge({"difference": 0.0, "margin": 0.0})  # identical seeds


def test_the_demo_line_and_section_come_from_demo_json():
    demo = {
        "meta": {
            "date": "2026-11-27T22:00:00+00:00",
            "commit": "abc1234",
            "command": "python benchmarks/demo_benchmark.py",
            "machine": "2 CPUs (x), no GPU",
            "load_average_before": 0.1,
            "load_average_after": 1.9,
            "pip_cache": "warm",
        },
        "make_demo_seconds": 780.0,
        "train_seconds": 600.0,
        "test_accuracy": 0.8876,
        "model": "DyResNet18",
        "schedule": "one-step",
        "tflite_bytes": 250_000,
        "parity": {"samples": 500, "argmax_agreement": 1.0},
        "lce_bconv2d": 16,
    }
    line = make_results.headline(None, None, None, demo).split("\n")[0]
    assert line == (
        "- `make demo` on a fresh clone: DyResNet18 reaches 88.76% Fashion-MNIST test accuracy, "
        "13.0 min install included (10.0 min of training; 2 CPUs (x), no GPU)."
    )
    doc = make_results.document(None, None, None, None, demo)
    assert "## 7. The demo" in doc and "| `make demo`, install included | 13.0 min |" in doc
    assert make_results.headline(None, None, None, None).startswith("- Everything")


def test_hyper_function_sizes_are_marked_against_the_binary_bytes():
    sizes = [
        {"model": "DyResNet18", "variant": "original", "hyper_mb": 1.68, "binary_mb": 1.37,
         "size_ratio_estimate": 1.394},
        {"model": "DyResNet18", "variant": "reduction 64", "hyper_mb": 0.45, "binary_mb": 1.37,
         "size_ratio_estimate": 1.104},
    ]  # fmt: skip
    assert make_results.hyper_size_rows(sizes)[2:] == [
        "| DyResNet18 | original | 1.68 | 1.37 | 1.39x |",
        "| DyResNet18 | reduction 64 | 0.45 (below) | 1.37 | 1.10x |",
    ]
    doc = make_results.document(None, None, None, None, None, sizes)
    assert "benchmarks/hyper_size_benchmark.py" in doc and "0.45 (below)" in doc


def test_the_cct_ablation_turns_one_dynamic_layer_back_and_is_tabled_against_both():
    from larq_dysign import layers, zoo

    configs = {
        name: config
        for name, config in accuracy_benchmark.all_configs().items()
        if config.experiment == "ablation"
    }
    counts = {}
    for name, config in configs.items():
        model = zoo.get_model(
            config.model, input_shape=(28, 28, 1), num_classes=10, **config.kwargs
        )
        kinds = [type(layer) for layer in model.layers]
        counts[name] = (kinds.count(layers.DySign), kinds.count(layers.DyPReLU))
    full = counts["ablation DyBinaryCCT"]
    assert full[0] > 0 and full[1] > 0 and counts["ablation BinaryCCT"] == (0, 0)
    assert counts["ablation DySign only"] == (full[0], 0)
    assert counts["ablation DyPReLU only"] == (0, full[1])

    runs = [
        *(_run("ablation BinaryCCT", s, a) for s, a in enumerate([0.80, 0.81, 0.82])),
        *(_run("ablation DyBinaryCCT", s, a) for s, a in enumerate([0.75, 0.76, 0.77])),
        *(_run("ablation DySign only", s, a) for s, a in enumerate([0.79, 0.80, 0.81])),
    ]
    runs = [{**run, "experiment": "ablation"} for run in runs]  # as `collect` reads them
    rows = accuracy_benchmark.summarize(runs, configs)
    table = make_results.study_rows(
        {"rows": rows},
        None,
        experiment="ablation",
        baseline="ablation BinaryCCT",
        reference="ablation DyBinaryCCT",
        versus="DyBinaryCCT",
    )
    assert "vs DyBinaryCCT (points, +- 2 SE)" in table[0]
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| BinaryCCT",
        "| DyBinaryCCT",
        "| DySign only",
    ]
    assert "| (reference) | -5.00 +- 1.63 * |" in table[3]  # 2 sqrt(2 * 0.01^2 / 3)
    assert "| +4.00 +- 1.63 * | -1.00 +- 1.63 |" in table[4]


def test_the_committed_record_survives_a_runs_directory_that_was_not_kept(tmp_path):
    """A fresh clone has no out/accuracy_runs: summarizing there once dropped every earlier
    run from accuracy.json. The record's runs stay; a run in the runs directory replaces the
    recorded run of the same model, digest and seed, and adds the ones the record lacks."""
    configs = accuracy_benchmark.all_configs()
    config = configs["ReActNet18"]
    recorded = [
        {**_run("ReActNet18", seed, 0.90), "model": config.model, "digest": config.digest()}
        for seed in (0, 1)
    ]
    recorded.append({**recorded[0], "digest": "00000000"})  # a config no longer defined
    out = tmp_path / "results"
    out.mkdir()
    (out / "accuracy.json").write_text(json.dumps({"meta": {}, "rows": {}, "runs": recorded}))
    for seed, accuracy in ((1, 0.91), (2, 0.92)):
        run = tmp_path / "runs" / accuracy_benchmark.run_id(config, seed)
        run.mkdir(parents=True)
        result = {**recorded[0], "seed": seed, "test_accuracy": accuracy}
        (run / "result.json").write_text(json.dumps(result))
    results = accuracy_benchmark.collect(
        configs, str(tmp_path / "runs"), accuracy_benchmark.recorded_runs(str(out))
    )
    mine = sorted((r["seed"], r["test_accuracy"]) for r in results if r["config"] == "ReActNet18")
    assert mine == [(0, 0.90), (1, 0.91), (2, 0.92)]
    assert all(r["digest"] == config.digest() for r in results)
    assert accuracy_benchmark.recorded_runs(str(tmp_path / "nothing")) == []


def test_the_queue_skips_recorded_and_finished_runs_and_the_earlier_budgets(tmp_path):
    """On a fresh clone (no runs directory) the record's runs are not trained again; a
    finished run in the runs directory is not either; the earlier budgets' configs share the
    experiment but run only when named."""
    configs = accuracy_benchmark.all_configs()
    base, dy = configs["BinaryCCT"], configs["DyBinaryCCT"]
    recorded = [{"model": base.model, "digest": base.digest(), "seed": 0}]
    finished = tmp_path / accuracy_benchmark.run_id(dy, 1)
    finished.mkdir()
    (finished / "result.json").write_text("{}")
    queue = accuracy_benchmark.pending_runs(
        configs, ["cct"], seeds=[0, 1], runs_dir=str(tmp_path), recorded=recorded
    )
    assert queue == [("DyBinaryCCT", 0), ("BinaryCCT", 1)]
    earlier = "BinaryCCT (2 x 3 epochs, pad-crop-flip)"
    assert configs[earlier].experiment == "cct" and earlier in accuracy_benchmark.EARLIER
    named = accuracy_benchmark.pending_runs(
        configs, ["cct"], names=[earlier], seeds=[0], runs_dir=str(tmp_path)
    )
    assert named == [(earlier, 0)]


@pytest.mark.parametrize("argument", ["--max-runs", "--jobs", "--threads"])
def test_counts_must_be_positive(argument, capsys):
    """`--max-runs 0`, `--jobs 0` or `--threads 0` is refused before any run starts, naming the
    argument and the value (a pool of 0 workers used to raise from ThreadPoolExecutor)."""
    with pytest.raises(SystemExit) as exit_info:
        accuracy_benchmark.main(["--experiments", "mobilenet", argument, "0"])
    assert exit_info.value.code == 2
    assert f"argument {argument}: expected a positive integer, got '0'" in capsys.readouterr().err
