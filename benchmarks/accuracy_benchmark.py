"""DySign vs static thresholds on the full Fashion-MNIST split, several seeds per model.

Every run trains one zoo model with the two-step recipe (`larq_dysign.training.train`:
step 1 real weights, step 2 binary weights from step 1; Adam with the rate decaying linearly
to 0 in each step) on batches drawn from all 60,000 training images (pad-crop-flip), then
reads the accuracy on all 10,000 test images. A config is a model, its constructor
arguments and a `Budget` (epochs per recipe step, batch, learning rate, XLA). Experiments:

- `search`: the exploration that chose the small-input presets (static baselines, seed 0;
  a Dy model beside a candidate, `_search_dy_configs`);
- `resnet`, `mobilenet`, `cct`: the evidence, Dy model vs its baseline at the family's
  `small-input` preset (`larq_dysign.zoo.PRESETS`), same network and budget, 5 seeds;
- `study`: the hyper-function study on DyResNet18 (output bound, learning-rate multiplier,
  statistics, reduction, hidden width, threshold groups), 3 seeds, at a cheaper budget;
- `ablation`: DyBinaryCCT with DySign alone and DyPReLU alone against both, 3 seeds, at the
  cct preset's network and the study's budget.

Runs go to `--runs-dir`, one directory each, named by the model, a hash of the model, its
arguments and budget, and the seed; a finished run (its `result.json`, or its entry in the
committed `accuracy.json`) is not repeated, configs that train the same thing share their
runs, and changing a config's arguments or budget starts new runs instead of reusing stale
ones. So the command can be re-run after an interruption, on a fresh clone, or with more
seeds; the evidence at earlier budgets (`EARLIER`) runs only when named with `--configs`.
`--jobs` runs train in parallel, each in its own process with `--threads` TensorFlow
threads; `--max-runs N` starts only the first N of the queue. `--commit` rewrites the
results and docs/results.md after every finished run and commits them (git), so that a run
of hours leaves its evidence on the branch as seeds complete.

Run:
    .venv/bin/python benchmarks/accuracy_benchmark.py --experiments search
    .venv/bin/python benchmarks/accuracy_benchmark.py --experiments study ablation --jobs 2
    .venv/bin/python benchmarks/accuracy_benchmark.py --experiments resnet mobilenet cct --commit
    .venv/bin/python benchmarks/accuracy_benchmark.py --summarize   # rewrite the outputs only

Writes `accuracy.json`, `accuracy.md` and `training_curves.png` to benchmarks/results/ (--out),
from every finished run of the current configs found in `--runs-dir`.
"""
# ruff: noqa: I001  (larq_dysign must be imported before tensorflow)

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import make_results  # this folder's: the budget labels of the generated tables

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results")
DEFAULT_RUNS = os.path.join(ROOT, "out", "accuracy_runs")
TRAIN_EXAMPLES = 60_000


@dataclasses.dataclass(frozen=True)
class Budget:
    """The two-step recipe's budget: `epochs` per step of `steps_per_epoch` updates (None:
    one pass over the 60,000 training images) of `batch_size` images, Adam from
    `learning_rate` decaying linearly to 0 in each step."""

    epochs: int
    batch_size: int = 128
    learning_rate: float = 2e-3
    jit_compile: bool = True
    steps_per_epoch: int | None = None
    threshold_init: str = "zeros"
    augment: bool = True

    @property
    def updates_per_step(self) -> int:
        return self.epochs * (self.steps_per_epoch or TRAIN_EXAMPLES // self.batch_size)

    def label(self) -> str:
        return make_results.budget_label(self.spec())

    def spec(self) -> dict:
        """The budget as recorded and hashed; `threshold_init` and `augment` only when they
        are not the default, so the runs made before the options existed keep their digests."""
        spec = dataclasses.asdict(self)
        if spec["threshold_init"] == "zeros":
            del spec["threshold_init"]
        if spec["augment"]:
            del spec["augment"]
        return spec


@dataclasses.dataclass(frozen=True)
class Config:
    """One trained configuration.

    Attributes:
        experiment: "search", "resnet", "mobilenet", "cct", "study" or "ablation".
        model: zoo model name.
        kwargs: constructor arguments.
        budget: the recipe's budget.
        baseline: the static-threshold config it is compared with (None for baselines).
        reference: for study and ablation variants, the Dy config the option changes.
        note: what the config tests, for the tables.
    """

    experiment: str
    model: str
    kwargs: dict
    budget: Budget
    baseline: str | None = None
    reference: str | None = None
    note: str = ""

    def digest(self) -> str:
        """8 hex digits of what the run trains: model, arguments and budget."""
        spec = {"model": self.model, "kwargs": self.kwargs, "budget": self.budget.spec()}
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]


def _preset_configs() -> dict[str, Config]:
    """The evidence: each family's Dy model vs its baseline at the `small-input` preset."""
    import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
    from larq_dysign.zoo.presets import PRESETS

    configs = {}
    for family, baseline, dy in (
        ("resnet", "ReActNet18", "DyResNet18"),
        ("mobilenet", "ReActNetA", "DyMobileNet"),
        ("cct", "BinaryCCT", "DyBinaryCCT"),
    ):
        preset = PRESETS["small-input"][family]
        budget = Budget(
            epochs=preset.epochs,
            batch_size=preset.batch_size,
            learning_rate=preset.learning_rate,
            jit_compile=preset.jit_compile,
            threshold_init=preset.threshold_init,
            augment=preset.augment,
        )
        configs[baseline] = Config(family, baseline, dict(preset.model_kwargs), budget)
        # the hyper-function options written out, so a change of the layers' defaults is a
        # new config (new runs), never old runs read under a new meaning
        hyper = both_layers(default_options())
        configs[dy] = Config(
            family, dy, {**preset.model_kwargs, **hyper}, budget, baseline=baseline
        )
    original = both_layers(ORIGINAL_OPTIONS)
    configs["DyResNet18 (hidden 8)"] = dataclasses.replace(
        configs["DyResNet18"],
        kwargs={**PRESETS["small-input"]["resnet"].model_kwargs, **original},
        note="the original hyper function (DY-ReLU's rule: hidden 8 at this width)",
    )
    return configs


def default_options() -> dict:
    """The layers' current hyper-function defaults, as `ORIGINAL_OPTIONS`' keys."""
    import inspect

    from larq_dysign.layers import DySign, DyPReLU

    options = {}
    for layer in (DySign, DyPReLU):
        parameters = inspect.signature(layer.__init__).parameters
        keys = ("hidden_units", *ORIGINAL_OPTIONS)
        layer_defaults = {key: parameters[key].default for key in keys}
        assert not options or options == layer_defaults, "DySign and DyPReLU defaults differ"
        options = layer_defaults
    return options


def both_layers(options: dict) -> dict:
    """Model arguments giving DySign and DyPReLU the same hyper-function options."""
    return {"dysign_options": options, "dyprelu_options": options}


SMALL_RESNET = {"stem": "small", "width_multiplier": 0.25}
SMALL_MOBILENET = {"stem": "small", "width_multiplier": 0.25}
SMALL_CCT = {"variant": "7/3x2", "width_multiplier": 0.5}

#: The exploration behind the presets: static baselines, seed 0, cheapest first.
SEARCH = {
    "ResNet-18 w0.25 b64": Config(
        "search", "ReActNet18", SMALL_RESNET, Budget(1, batch_size=64), note="batch 64"
    ),
    "ResNet-18 w0.25 lr5e-3": Config(
        "search", "ReActNet18", SMALL_RESNET, Budget(1, learning_rate=5e-3), note="lr 5e-3"
    ),
    "ResNet-18 w0.25 2 epochs": Config(
        "search", "ReActNet18", SMALL_RESNET, Budget(2), note="2 epochs per step"
    ),
    "ResNet-18 w0.25 stride-2 stem 2 epochs b64": Config(
        "search",
        "ReActNet18",
        {"stem": "small_stride2", "width_multiplier": 0.25},
        Budget(2, batch_size=64),
        note="14x14 after the stem",
    ),
    "ResNet-18 w0.25 2 epochs b64": Config(
        "search", "ReActNet18", SMALL_RESNET, Budget(2, batch_size=64), note="2 epochs, batch 64"
    ),
    "ResNet-18 w0.25 2 epochs b64 lr4e-3": Config(
        "search",
        "ReActNet18",
        SMALL_RESNET,
        Budget(2, batch_size=64, learning_rate=4e-3),
        note="2 epochs, batch 64, lr 4e-3",
    ),
    "ResNet-18 w0.25 3 epochs b64": Config(
        "search", "ReActNet18", SMALL_RESNET, Budget(3, batch_size=64), note="3 epochs, batch 64"
    ),
    "ReActNet-A w0.25 2 epochs": Config(
        "search", "ReActNetA", SMALL_MOBILENET, Budget(2), note="2 epochs per step"
    ),
    "ReActNet-A w0.25 2 epochs b64": Config(
        "search", "ReActNetA", SMALL_MOBILENET, Budget(2, batch_size=64), note="batch 64"
    ),
    "ReActNet-A w0.5 stride-2 stem b64": Config(
        "search",
        "ReActNetA",
        {"stem": "small_stride2", "width_multiplier": 0.5},
        Budget(1, batch_size=64),
        note="widths 16-512, 14x14 after the stem",
    ),
    "ReActNet-A w0.5 stride-2 stem 3 epochs b64": Config(
        "search",
        "ReActNetA",
        {"stem": "small_stride2", "width_multiplier": 0.5},
        Budget(3, batch_size=64),
        note="the ResNet-18 preset's budget; widths 16-512, 14x14 after the stem",
    ),
    "ReActNet-A w0.25 3 epochs b64": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(3, batch_size=64),
        note="the ResNet-18 preset's budget; the control of thresholds from data",
    ),
    "ReActNet-A w0.25 3 epochs b64 thresholds from data": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(3, batch_size=64, threshold_init="data"),
        note="the ResNet-18 preset's budget; thresholds start at their inputs' means",
    ),
    "ReActNet-A w0.5 3 epochs b64 thresholds from data": Config(
        "search",
        "ReActNetA",
        {"stem": "small", "width_multiplier": 0.5},
        Budget(3, batch_size=64, threshold_init="data"),
        note="widths 16-512 at 28x28 after the stem; thresholds start at their inputs' means",
    ),
    "ReActNet-A w0.25 5 epochs b64 thresholds from data": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(5, batch_size=64, threshold_init="data"),
        note="the mobilenet preset with 5 epochs per step: more updates instead of width",
    ),
    "ReActNet-A w0.25 3 epochs b32 thresholds from data": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(3, batch_size=32, threshold_init="data"),
        note="the mobilenet preset at batch 32: twice its updates in its epochs",
    ),
    "ReActNet-A w0.25 3 epochs b64 thresholds from data no augmentation": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(3, batch_size=64, threshold_init="data", augment=False),
        note="the mobilenet preset without pad-crop-flip: it underfits (train under test)",
    ),
    "ReActNet-A w0.25 4 epochs b64 thresholds from data no augmentation": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(4, batch_size=64, threshold_init="data", augment=False),
        note="4 epochs per step without pad-crop-flip: 3 gave 89.87%",
    ),
    "ReActNet-A w0.25 5 epochs b64 thresholds from data no augmentation": Config(
        "search",
        "ReActNetA",
        SMALL_MOBILENET,
        Budget(5, batch_size=64, threshold_init="data", augment=False),
        note="5 epochs per step without pad-crop-flip",
    ),
    "CCT-7/3x2 w0.25 2 epochs": Config(
        "search",
        "BinaryCCT",
        {"variant": "7/3x2", "width_multiplier": 0.25},
        Budget(2),
        note="7 layers, dim 64, 49 tokens",
    ),
    "CCT-7/3x2 w0.5 2 epochs b64": Config(
        "search",
        "BinaryCCT",
        SMALL_CCT,
        Budget(2, batch_size=64),
        note="7 layers, dim 128, 49 tokens",
    ),
    "CCT-7/3x2 w0.5 3 epochs b64": Config(
        "search",
        "BinaryCCT",
        SMALL_CCT,
        Budget(3, batch_size=64),
        note="7 layers, dim 128, 49 tokens; the ResNet-18 preset's budget",
    ),
    "CCT-7/3x2 w0.5 2 epochs b64 no augmentation": Config(
        "search",
        "BinaryCCT",
        SMALL_CCT,
        Budget(2, batch_size=64, augment=False),
        note="without pad-crop-flip, as ReActNet-A's preset: a third cheaper than 3 epochs",
    ),
}

#: The hyper-function study: the ResNet-18 preset's network, at `STUDY_BUDGET`. Every
#: option is written out (not left to the layers' defaults), so a later change of the
#: defaults does not silently reuse these runs under a different meaning.
STUDY_BUDGET = Budget(1, batch_size=64)
STUDY_NETWORK = SMALL_RESNET
#: The hyper function as it was before the study (DY-ReLU's ReLU and reduction 16, hidden
#: width at least 8, one unbounded value per channel, mean statistics, no multiplier).
ORIGINAL_OPTIONS = {
    "hidden_activation": "relu",
    "reduction": 16,
    "min_hidden_units": 8,
    "statistics": "mean",
    "groups": None,
    "bound": None,
    "learning_rate_multiplier": 1.0,
}
#: variant name -> (options changed from ORIGINAL_OPTIONS, what it tests)
STUDY_VARIANTS = {
    "bound 1": ({"bound": 1.0}, "lambda (2 sigmoid(z) - 1), lambda = 1 channel std"),
    "lr x10": ({"learning_rate_multiplier": 10.0}, "hyper-function learning rate x10"),
    "mean_std": ({"statistics": "mean_std"}, "means and stds as statistics"),
    "reduction 4": ({"reduction": 4, "min_hidden_units": 1}, "hidden C/4: 4-32"),
    "reduction 64": ({"reduction": 64, "min_hidden_units": 1}, "hidden C/64: 1-2"),
    "hidden 4": ({"reduction": 64, "min_hidden_units": 4}, "hidden width 4"),
    "hidden 2": ({"reduction": None, "hidden_units": 2}, "hidden width 2"),
    "hidden 2 leaky": (
        {"reduction": None, "hidden_units": 2, "hidden_activation": "leaky_relu"},
        "hidden width 2, leaky ReLU (the default now)",
    ),
    "groups 16": ({"groups": 16}, "16 dynamic values per layer (8 channels each at 128)"),
    "groups 4": ({"groups": 4}, "4 dynamic values per layer"),
}


def _study_configs() -> dict[str, Config]:
    def dy(options: dict, note: str) -> Config:
        return Config(
            "study",
            "DyResNet18",
            {**STUDY_NETWORK, **both_layers(options)},
            STUDY_BUDGET,
            baseline="study ReActNet18",
            reference="study DyResNet18" if options != ORIGINAL_OPTIONS else None,
            note=note,
        )

    configs = {
        "study ReActNet18": Config(
            "study", "ReActNet18", STUDY_NETWORK, STUDY_BUDGET, note="static thresholds (RSign)"
        ),
        "study DyResNet18": dy(ORIGINAL_OPTIONS, "the original hyper function (hidden 8)"),
    }
    for name, (change, note) in STUDY_VARIANTS.items():
        configs[f"study {name}"] = dy({**ORIGINAL_OPTIONS, **change}, note)
    return configs


STUDY = _study_configs()


def _ablation_configs() -> dict[str, Config]:
    """Which part of DyBinaryCCT costs accuracy (seed 0 at the cct preset lost 5.35 points):
    the cct preset's network at the study's budget, with DySign alone and DyPReLU alone."""
    import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
    from larq_dysign.zoo.presets import PRESETS

    network = dict(PRESETS["small-input"]["cct"].model_kwargs)
    options = default_options()  # written out, as for the evidence
    dy = Config(
        "ablation",
        "DyBinaryCCT",
        {**network, **both_layers(options)},
        STUDY_BUDGET,
        baseline="ablation BinaryCCT",
        note="DySign and DyPReLU (the zoo's DyBinaryCCT)",
    )
    return {
        "ablation BinaryCCT": Config(
            "ablation", "BinaryCCT", network, STUDY_BUDGET, note="RSign and RPReLU (static)"
        ),
        "ablation DyBinaryCCT": dy,
        "ablation DySign only": dataclasses.replace(
            dy,
            kwargs={**network, "dyprelu": False, "dysign_options": options},
            reference="ablation DyBinaryCCT",
            note="DyPReLU back to RPReLU",
        ),
        "ablation DyPReLU only": dataclasses.replace(
            dy,
            kwargs={**network, "dysign": False, "dyprelu_options": options},
            reference="ablation DyBinaryCCT",
            note="DySign back to RSign",
        ),
    }


EXPERIMENTS = ("search", "resnet", "mobilenet", "cct", "study", "ablation")
DEFAULT_SEEDS = {"search": [0], "study": [0, 1, 2], "ablation": [0, 1, 2]}
EVIDENCE_SEEDS = [0, 1, 2, 3, 4]
#: Training curves: the train loss and accuracy every this many updates.
CURVE_EVERY = 20


#: Evidence at earlier preset budgets, kept: it shows the effect at a second budget. ResNet-18
#: at 2 epochs per step (its baseline stayed below the 90% bar, so the preset moved to 3); CCT
#: at 3 epochs with pad-crop-flip (the preset moved to 2 epochs without it: as accurate in
#: half the time).
HIDDEN_2_LEAKY = {**ORIGINAL_OPTIONS, **STUDY_VARIANTS["hidden 2 leaky"][0]}
EARLIER = {
    "ReActNet18 (2 x 2 epochs)": Config(
        "resnet", "ReActNet18", SMALL_RESNET, Budget(2, batch_size=64)
    ),
    "DyResNet18 (2 x 2 epochs, hidden 8)": Config(
        "resnet",
        "DyResNet18",
        {**SMALL_RESNET, **both_layers(ORIGINAL_OPTIONS)},
        Budget(2, batch_size=64),
        baseline="ReActNet18 (2 x 2 epochs)",
        note="the original hyper function (hidden 8 at this width)",
    ),
    "BinaryCCT (2 x 3 epochs, pad-crop-flip)": Config(
        "cct", "BinaryCCT", SMALL_CCT, Budget(3, batch_size=64)
    ),
    "DyBinaryCCT (2 x 3 epochs, pad-crop-flip)": Config(
        "cct",
        "DyBinaryCCT",
        {**SMALL_CCT, **both_layers(HIDDEN_2_LEAKY)},
        Budget(3, batch_size=64),
        baseline="BinaryCCT (2 x 3 epochs, pad-crop-flip)",
        note="the cct preset before it dropped pad-crop-flip",
    ),
}


def _search_dy_configs() -> dict[str, Config]:
    """Dy models beside a search config that may become a preset, with the hyper function
    written out as the evidence's: if the preset moves there, the run is the evidence's
    first seed (same digest), and either way it shows whether the gap holds at that budget."""
    hyper = both_layers(default_options())
    configs = {}
    for name, model in (("CCT-7/3x2 w0.5 2 epochs b64 no augmentation", "DyBinaryCCT"),):
        base = SEARCH[name]
        configs[f"{name}, {model}"] = dataclasses.replace(
            base, model=model, kwargs={**base.kwargs, **hyper}, baseline=name, note=model
        )
    return configs


def all_configs() -> dict[str, Config]:
    return {
        **SEARCH,
        **_search_dy_configs(),
        **_preset_configs(),
        **EARLIER,
        **STUDY,
        **_ablation_configs(),
    }


def run_id(config: Config, seed: int) -> str:
    """The run's directory name: configs that train the same thing share their runs."""
    return f"{config.model}-{config.digest()}-seed{seed}"


# ---------------------------------------------------------------------------- one run


def train_one(name: str, seed: int, *, threads: int, runs_dir: str) -> dict:
    """Train config `name` with `seed` in this process; write and return its result."""
    import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
    import tensorflow as tf

    from larq_dysign import training
    from larq_dysign.files import write_atomically

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    config = all_configs()[name]
    budget = config.budget
    directory = os.path.join(runs_dir, run_id(config, seed))
    curve = []

    class Progress(tf.keras.callbacks.Callback):
        """The curve (running train loss and accuracy every CURVE_EVERY updates) and the
        seconds per update after the first 5 of the step (tracing, XLA compilation)."""

        def __init__(self, step):
            super().__init__()
            self.step, self.updates, self.start, self.end = step, 0, None, None

        def on_train_batch_end(self, batch, logs=None):
            self.updates += 1
            if self.updates == 5:
                self.start = time.perf_counter()
            self.end = time.perf_counter()
            if self.updates % CURVE_EVERY == 0:
                update = (self.step - 1) * budget.updates_per_step + self.updates
                curve.append([update, float(logs["loss"]), float(logs["accuracy"])])

    tf.keras.utils.set_random_seed(seed)
    progress, results = {}, {}
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in (1, 2):
        progress[step] = Progress(step)
        results.update(
            training.train(
                config.model,
                dataset="fashion_mnist",
                out_dir=directory,
                epochs=budget.epochs,
                steps_per_epoch=budget.steps_per_epoch,
                batch_size=budget.batch_size,
                step=step,
                learning_rate=budget.learning_rate,
                model_kwargs=config.kwargs,
                callbacks=[progress[step]],
                verbose=2,
                jit_compile=budget.jit_compile,
                threshold_init=budget.threshold_init,
                data_kwargs=None if budget.augment else {"augment": False},
            )
        )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    final = results[2]
    result = {
        "config": name,
        "digest": config.digest(),
        "experiment": config.experiment,
        "model": config.model,
        "kwargs": config.kwargs,
        "budget": budget.spec(),
        "baseline": config.baseline,
        "seed": seed,
        "updates_per_recipe_step": budget.updates_per_step,
        "parameters": int(final.model.count_params()),
        # the eval split of fashion_mnist is the whole test set, evaluated after each epoch
        "test_accuracy": float(final.history["val_accuracy"][-1]),
        "test_loss": float(final.history["val_loss"][-1]),
        "step1_test_accuracy": float(results[1].history["val_accuracy"][-1]),
        "test_accuracy_per_epoch": {
            str(step): [float(a) for a in results[step].history["val_accuracy"]] for step in (1, 2)
        },
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "seconds_per_update": {
            str(step): (p.end - p.start) / (p.updates - 5)
            for step, p in progress.items()
            if p.start and p.updates > 5
        },
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
        # a run resumed after an interruption: its seconds and curve cover the last part only
        "resumed_steps": [step for step in (1, 2) if results[step].initial_iteration > 0],
        "threads": threads,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "curve": curve,
        "weights": final.weights_path,
    }
    write_atomically(os.path.join(directory, "result.json"), json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------------------- summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(row: dict, other: dict) -> dict:
    """`row` minus `other`: the difference of mean accuracies and its 2-standard-error
    margin `2 sqrt(s_a^2/n_a + s_b^2/n_b)` (about a 95% interval); it *exceeds the seed
    spread* when |difference| > margin (and both sides have 2 or more seeds)."""
    n_a, n_b = len(row["test_accuracies"]), len(other["test_accuracies"])
    margin = 2 * math.sqrt(row["std"] ** 2 / n_a + other["std"] ** 2 / n_b)
    difference = row["mean"] - other["mean"]
    return {
        "against": other["config"],
        "difference": difference,
        "margin": margin,
        "exceeds_spread": bool(n_a > 1 and n_b > 1 and abs(difference) > margin),
        "seed_counts": [n_a, n_b],
    }


def summarize(results: list[dict], configs: dict[str, Config] | None = None) -> dict:
    """Per config: accuracy mean and sample std over seeds, minutes per run; the Dy configs
    compared with their baseline (`difference`, `margin`, `exceeds_spread`) and study
    variants with their reference Dy config too (`versus_reference`)."""
    by_config: dict[str, list[dict]] = {}
    for result in results:
        by_config.setdefault(result["config"], []).append(result)
    names = list(configs) if configs else list(by_config)
    rows = {}
    for name in names:
        runs = sorted(by_config.get(name, []), key=lambda r: r["seed"])
        if not runs:
            continue
        accuracies = [r["test_accuracy"] for r in runs]
        mean, std = _mean_std(accuracies)
        config = configs[name] if configs else None
        rows[name] = {
            "config": name,
            "experiment": runs[0].get("experiment"),
            "model": runs[0].get("model"),
            "kwargs": runs[0].get("kwargs"),
            "budget": runs[0].get("budget"),
            "baseline": config.baseline if config else runs[0].get("baseline"),
            "reference": config.reference if config else None,
            "note": config.note if config else "",
            "seeds": [r["seed"] for r in runs],
            "test_accuracies": accuracies,
            "step1_test_accuracies": [r.get("step1_test_accuracy") for r in runs],
            "mean": mean,
            "std": std,
            "parameters": runs[0]["parameters"],
            "updates": runs[0]["updates_per_recipe_step"],
            "minutes": statistics.fmean(r.get("seconds", 0) for r in runs) / 60,
            "cpu_minutes": statistics.fmean(r.get("cpu_seconds", 0) for r in runs) / 60,
            "seconds_per_update": statistics.fmean(
                statistics.fmean(r["seconds_per_update"].values()) for r in runs
            ),
        }
    for row in rows.values():
        base = rows.get(row["baseline"]) if row["baseline"] else None
        if base is not None:
            row.update(compare(row, base))
        reference = rows.get(row["reference"]) if row["reference"] else None
        if reference is not None:
            row["versus_reference"] = compare(row, reference)
    return rows


def _verdict(comparison: dict) -> str:
    if min(comparison["seed_counts"]) < 2:  # no spread to compare with
        return f"{100 * comparison['difference']:+.2f} (1 seed)"
    return f"{100 * comparison['difference']:+.2f} (+-{100 * comparison['margin']:.2f})" + (
        " *" if comparison["exceeds_spread"] else ""
    )


def markdown(rows: dict, meta: dict) -> str:
    lines = [
        "# DySign vs static thresholds on Fashion-MNIST",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}).",
        "Two-step recipe, the budget in the table (epochs per step, batch, Adam lr decaying "
        "linearly to 0); batches drawn from all 60,000 training images; test accuracy on all "
        "10,000 test images. Mean and sample standard deviation over seeds; differences "
        "with 2 standard errors of the difference (+-), * when beyond them. Minutes: wall "
        "time per run on a shared machine (CPU minutes alongside).",
        "",
        "| experiment | config | model | arguments | budget | params | seeds | test "
        "accuracy (%) | vs baseline (points) | vs reference (points) | minutes (CPU) |",
        "| --- | --- | --- | --- | --- | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for row in rows.values():
        # the options dicts are spelled out in accuracy.json; the config name says what changed
        arguments = ", ".join(
            f"{k}={v}" for k, v in row["kwargs"].items() if not k.endswith("_options")
        )
        spread = f" +- {100 * row['std']:.2f}" if len(row["seeds"]) > 1 else ""
        budget = Budget(**row["budget"]).label()
        versus = _verdict(row) if "difference" in row else ""
        reference = _verdict(row["versus_reference"]) if "versus_reference" in row else ""
        lines.append(
            f"| {row['experiment']} | {row['config']} | {row['model']} | {arguments} | "
            f"{budget} | {row['parameters']:,} | {len(row['seeds'])} | "
            f"{100 * row['mean']:.2f}{spread} | {versus} | {reference} | "
            f"{row['minutes']:.1f} ({row['cpu_minutes']:.1f}) |"
        )
    return "\n".join(lines) + "\n"


PAIRS = [("ReActNet18", "DyResNet18"), ("ReActNetA", "DyMobileNet"), ("BinaryCCT", "DyBinaryCCT")]


def plot_curves(results: list[dict], path: str) -> bool:
    """Train loss per update, Dy vs baseline, mean over seeds, one panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    drawn = False
    for axis, pair in zip(axes, PAIRS):
        for config in pair:
            curves = [r["curve"] for r in results if r["config"] == config and r["curve"]]
            if not curves:
                continue
            drawn = True
            length = min(len(c) for c in curves)
            updates = [point[0] for point in curves[0][:length]]
            loss = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
            axis.plot(updates, loss, label=f"{config} ({len(curves)} seeds)")
        steps = next((r["updates_per_recipe_step"] for r in results if r["config"] in pair), None)
        if steps:
            axis.axvline(steps, color="grey", linestyle=":", label="step 1 -> step 2")
        axis.set_title(" vs ".join(pair))
        axis.set_xlabel("update")
        axis.set_ylabel("train loss (running mean within the epoch)")
        axis.legend()
    figure.tight_layout()
    if drawn:
        figure.savefig(path, dpi=100)
    plt.close(figure)
    return drawn


def plot_study(rows: dict, path: str) -> bool:
    """Each study variant's accuracy (mean +- 2 standard errors) against its size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = {n: r for n, r in rows.items() if r["experiment"] == "study"}
    base = study.get("study ReActNet18")
    if base is None or len(study) < 2:
        return False
    figure, axis = plt.subplots(figsize=(8, 5))
    for name, row in study.items():
        if name == "study ReActNet18":
            continue
        floats = row["parameters"] - base["parameters"]
        error = 2 * row["std"] / math.sqrt(len(row["seeds"]))
        axis.errorbar(floats, 100 * row["mean"], yerr=100 * error, fmt="o", capsize=3)
        axis.annotate(
            name.removeprefix("study "),
            (floats, 100 * row["mean"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.axhline(100 * base["mean"], color="grey", linestyle=":", label="static (ReActNet18)")
    axis.set_xscale("log")
    axis.set_xlabel("hyper-function floats in the network (log)")
    axis.set_ylabel("test accuracy (%), mean +- 2 SE over seeds")
    axis.set_title("DyResNet18 hyper-function variants, Fashion-MNIST")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def recorded_runs(out: str) -> list[dict]:
    """The runs `out/accuracy.json` records: the committed record, which outlives the runs
    directory (a fresh clone, a machine that did not keep out/)."""
    path = os.path.join(out, "accuracy.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f).get("runs", [])


def collect(configs: dict[str, Config], runs_dir: str, recorded: list[dict] = ()) -> list[dict]:
    """Every finished run of the current configs, one entry per config and seed (a run shared
    by two configs appears under both names): the `recorded` runs (`recorded_runs`), and the
    runs in `runs_dir`, which replace a recorded run of the same model, digest and seed."""
    runs = {(r["model"], r.get("digest"), r["seed"]): r for r in recorded}
    if os.path.isdir(runs_dir):
        for entry in sorted(os.listdir(runs_dir)):
            path = os.path.join(runs_dir, entry, "result.json")
            if os.path.exists(path):
                with open(path) as f:
                    result = json.load(f)
                runs[(result["model"], result.get("digest"), result["seed"])] = result
    by_digest: dict[str, list[dict]] = {}
    for key in sorted(runs, key=lambda key: (key[0], str(key[1]), key[2])):
        by_digest.setdefault(key[1], []).append(runs[key])
    results = []
    for name, config in configs.items():
        for result in by_digest.get(config.digest(), []):
            if result["model"] == config.model:
                results.append({**result, "config": name, "experiment": config.experiment})
    return results


def write_outputs(configs: dict[str, Config], runs_dir: str, out: str, meta: dict) -> dict:
    from larq_dysign.files import write_atomically  # after _preset_configs' larq_dysign

    results = collect(configs, runs_dir, recorded_runs(out))
    rows = summarize(results, configs)
    os.makedirs(out, exist_ok=True)
    for result in results:
        result.pop("weights", None)  # a path on the machine that ran it
    document = {"meta": meta, "rows": rows, "runs": results}
    write_atomically(os.path.join(out, "accuracy.json"), json.dumps(document, indent=1))
    write_atomically(os.path.join(out, "accuracy.md"), markdown(rows, meta))
    plot_curves(results, os.path.join(out, "training_curves.png"))
    plot_study(rows, os.path.join(out, "hyper_study.png"))
    return rows


_GIT_LOCK = threading.Lock()


def commit_results(out: str, message: str) -> None:
    """Regenerate docs/results.md and commit the accuracy results with it (a few retries:
    someone else may hold the index lock)."""
    paths = [
        os.path.join(out, "accuracy.json"),
        os.path.join(out, "accuracy.md"),
        os.path.join(out, "training_curves.png"),
        os.path.join(out, "hyper_study.png"),  # docs/results.md section 3 shows it
        # every document make_results.py rewrites, so a regenerated block never stays behind
        make_results.DOC,
        make_results.README,
        make_results.PI_GUIDE,
    ]
    with _GIT_LOCK:
        subprocess.call([sys.executable, os.path.join(HERE, "make_results.py")], cwd=ROOT)
        paths = [p for p in paths if os.path.exists(p)]
        for attempt in range(5):
            subprocess.call(["git", "add", "--", *paths], cwd=ROOT)
            code = subprocess.call(["git", "commit", "-q", "-m", message, "--", *paths], cwd=ROOT)
            if code == 0:
                return
            time.sleep(10 * (attempt + 1))
        print(
            f"not committed (git was busy): {message}; the files are written, and the next "
            "run's commit carries them",
            flush=True,
        )


# ---------------------------------------------------------------------------- main


def pending_runs(
    configs: dict[str, Config],
    experiments: list[str],
    *,
    names: list[str] | None = None,
    seeds: list[int] | None = None,
    runs_dir: str,
    recorded: list[dict] = (),
) -> list[tuple[str, int]]:
    """The `(config, seed)` runs to train, seed-major (every config gets its first seed before
    any gets its second): the experiments' configs (`names` only, if given; the earlier
    budgets' only when named), minus runs finished in `runs_dir` or held by the `recorded`
    runs (a fresh clone has no runs directory, only the committed record); configs that train
    the same thing run once."""
    done = {(r["model"], r.get("digest"), r["seed"]) for r in recorded}
    queue = {}
    for experiment in experiments:
        chosen = [
            name
            for name, config in configs.items()
            if config.experiment == experiment
            and (name in names if names else name not in EARLIER)
        ]
        for seed in seeds or DEFAULT_SEEDS.get(experiment, EVIDENCE_SEEDS):
            for name in chosen:
                config = configs[name]
                finished = os.path.join(runs_dir, run_id(config, seed), "result.json")
                key = (config.model, config.digest(), seed)
                if key not in done and not os.path.exists(finished):
                    queue.setdefault(run_id(config, seed), (name, seed))
    return list(queue.values())


def main(argv=None) -> int:
    from larq_dysign.cli import positive_int  # the CLI's argparse type for counts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=["search"])
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="default: 0 for search, 0-2 for the study and the ablation, 0-4 for the evidence",
    )
    parser.add_argument("--configs", nargs="+", help="only these configs of the experiments")
    parser.add_argument("--jobs", type=positive_int, default=2, help="runs in parallel")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="TensorFlow threads per run"
    )
    parser.add_argument(
        "--max-runs",
        type=positive_int,
        help="start at most this many runs of the queue (fit a wave of runs to the time you have)",
    )
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--commit", action="store_true", help="commit results after each run")
    parser.add_argument(
        "--summarize", action="store_true", help="only rewrite the outputs from finished runs"
    )
    parser.add_argument("--run-one", nargs=2, metavar=("CONFIG", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        train_one(
            args.run_one[0], int(args.run_one[1]), threads=args.threads, runs_dir=args.runs_dir
        )
        return 0

    configs = all_configs()
    unknown = sorted(set(args.configs or []) - set(configs))
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {sorted(configs)}")
    meta = {
        "command": "python benchmarks/accuracy_benchmark.py",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "jobs": args.jobs,
        "threads": args.threads,
        "evidence_seeds": EVIDENCE_SEEDS,
        "study_budget": STUDY_BUDGET.spec(),
    }
    if args.summarize:
        print(markdown(write_outputs(configs, args.runs_dir, args.out, meta), meta))
        return 0

    queue = pending_runs(
        configs,
        args.experiments,
        names=args.configs,
        seeds=args.seeds,
        runs_dir=args.runs_dir,
        recorded=recorded_runs(args.out),
    )
    if args.max_runs is not None and len(queue) > args.max_runs:
        print(f"{len(queue)} runs pending; --max-runs {args.max_runs} starts the first ones")
        queue = queue[: args.max_runs]
    runs = "run" if len(queue) == 1 else "runs"
    print(f"{len(queue)} {runs} to do: {', '.join(f'{n} seed {s}' for n, s in queue)}", flush=True)
    os.makedirs(args.runs_dir, exist_ok=True)

    def launch(item):
        name, seed = item
        directory = os.path.join(args.runs_dir, run_id(configs[name], seed))
        os.makedirs(directory, exist_ok=True)
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--run-one",
            name,
            str(seed),
            "--threads",
            str(args.threads),
            "--runs-dir",
            args.runs_dir,
        ]
        started = time.perf_counter()
        log = os.path.join(directory, "log.txt")
        with open(log, "a") as f:
            code = subprocess.call(
                command,
                stdout=f,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
        minutes = (time.perf_counter() - started) / 60
        if code != 0:
            print(f"{name} seed {seed}: FAILED ({code}, see {log})", flush=True)
            return
        with open(os.path.join(directory, "result.json")) as f:
            accuracy = json.load(f)["test_accuracy"]
        print(f"{name} seed {seed}: {100 * accuracy:.2f}% in {minutes:.1f} min", flush=True)
        with _GIT_LOCK:
            write_outputs(configs, args.runs_dir, args.out, meta)
        if args.commit:
            commit_results(
                args.out,
                f"accuracy evidence: {name} seed {seed} finished, {100 * accuracy:.2f}% "
                f"in {minutes:.0f} min",
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(launch, queue))
    print(markdown(write_outputs(configs, args.runs_dir, args.out, meta), meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
