"""Named training configurations: a model configuration and the budget it was measured with.

A preset is what `benchmarks/accuracy_benchmark.py` measured: constructor arguments for a
model family and the two-step recipe's budget (epochs per step, batch, learning rate, XLA),
chosen as the cheapest configuration found whose static-threshold baseline reaches the bar
(docs/results.md, "Small-input presets", lists the search and the results). The Dy model
of a family uses its family's preset, so a comparison gets the same network and budget.

Example:
    ```python
    from larq_dysign import zoo
    preset = zoo.get_preset("small-input", "DyResNet18")
    model = zoo.get_model("DyResNet18", preset="small-input", input_shape=(28, 28, 1),
                          num_classes=10)   # the preset's model_kwargs under your own
    preset.epochs, preset.batch_size, preset.learning_rate   # the recipe's budget
    ```
"""

from __future__ import annotations

import dataclasses

from .registry import model_family


@dataclasses.dataclass(frozen=True)
class Preset:
    """One family's configuration and budget.

    Attributes:
        model_kwargs: constructor arguments (e.g. `{"stem": "small", "width_multiplier":
            0.25}`); the user's arguments to `get_model` override them.
        epochs: epochs of each step of the two-step recipe.
        batch_size: images per update.
        learning_rate: Adam's initial rate, decaying linearly to 0 in each step.
        jit_compile: compile the train step with XLA.
        description: what the preset is for and what it reached.
        threshold_init: "zeros", or "data": the sign thresholds start at the mean of their
            inputs (`larq_dysign.training.initialize_thresholds`).
        augment: pad-crop-flip the train images of the small datasets (cifar10,
            fashion_mnist); False trains on them as they are.
    """

    model_kwargs: dict
    epochs: int
    batch_size: int
    learning_rate: float
    jit_compile: bool
    description: str
    threshold_init: str = "zeros"
    augment: bool = True


#: preset name -> model family ("resnet", "mobilenet", "cct") -> Preset.
PRESETS: dict[str, dict[str, Preset]] = {
    "small-input": {
        "resnet": Preset(
            model_kwargs={"stem": "small", "width_multiplier": 0.25},
            epochs=3,
            batch_size=64,
            learning_rate=2e-3,
            jit_compile=True,
            description="ResNet-18 for 28x28-32x32 inputs: small stem, widths 16-128; "
            "ReActNet18 90.2% on Fashion-MNIST (mean of 5 seeds, 90.0-90.5; bar 90%; 2 epochs "
            "per step gave 89.4%, mean of 5 seeds).",
        ),
        "mobilenet": Preset(
            model_kwargs={"stem": "small", "width_multiplier": 0.25},
            epochs=4,
            batch_size=64,
            learning_rate=2e-3,
            jit_compile=True,
            threshold_init="data",
            augment=False,
            description="ReActNet-A for 28x28-32x32 inputs: small stem, widths 8-256, the "
            "thresholds started at their inputs' means (its real-valued path drifts from 0), "
            "no pad-crop-flip (at a few epochs it underfits); ReActNetA 90.7% on "
            "Fashion-MNIST (mean of 5 seeds, 90.3-91.1; bar 90%; 3 epochs per step gave 89.9%, "
            "5 epochs 91.3%, 5 epochs with pad-crop-flip 88.5%).",
        ),
        "cct": Preset(
            model_kwargs={"variant": "7/3x2", "width_multiplier": 0.5},
            epochs=2,
            batch_size=64,
            learning_rate=2e-3,
            jit_compile=True,
            augment=False,
            description="CCT-7/3x2 for 28x28-32x32 inputs: 49 tokens on 28x28, dim 128, no "
            "pad-crop-flip; BinaryCCT 86.3% on Fashion-MNIST (5 seeds; bar 85%; with "
            "pad-crop-flip 2 epochs per step gave 84.2%, 3 epochs 85.5% at twice the time).",
        ),
    },
}


def get_preset(name: str, model: str) -> Preset:
    """The preset `name` for the zoo model `model` (its family's entry), as a copy.

    Example:
        ```python
        zoo.get_preset("small-input", "ReActNet18").epochs
        ```

    Args:
        name: a preset name, a key of `PRESETS` (e.g. "small-input").
        model: a zoo model name; its family (`zoo.registry.model_family`) selects the entry.

    Returns:
        A `Preset` (its `model_kwargs` a fresh dict, safe to change).

    Raises:
        ValueError: an unknown preset (the known ones are listed), an unknown model (the
            zoo's are listed), or a family the preset has no entry for.
    """
    if name not in PRESETS:
        raise ValueError(
            f"Expected preset to be one of {', '.join(map(repr, PRESETS))}, but got {name!r}."
        )
    family = model_family(model)
    entries = PRESETS[name]
    if family not in entries:
        raise ValueError(
            f"Preset {name!r} has no entry for {model!r} (family {family!r}); it has "
            f"{', '.join(map(repr, entries))}."
        )
    preset = entries[family]
    return dataclasses.replace(preset, model_kwargs=dict(preset.model_kwargs))
