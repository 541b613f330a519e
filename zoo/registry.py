"""The model registry: public constructors register themselves by name (as timm does)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

_MODELS: dict[str, Callable[..., tf.keras.Model]] = {}
_FAMILIES: dict[str, str] = {}


def register_model(family: str) -> Callable:
    """Decorator: register a public model constructor under its function name.

    Args:
        family: the model family ("resnet", "mobilenet", "cct"), for listings.
    """

    def decorator(fn: Callable[..., tf.keras.Model]) -> Callable[..., tf.keras.Model]:
        _MODELS[fn.__name__] = fn
        _FAMILIES[fn.__name__] = family
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of every zoo model, e.g. `["BinaryCCT", "DyBinaryCCT", ...]`, sorted."""
    return sorted(_MODELS)


def model_family(name: str) -> str:
    """The family a registered model belongs to."""
    get_model_constructor(name)
    return _FAMILIES[name]


def get_model_constructor(name: str) -> Callable[..., tf.keras.Model]:
    """The constructor registered under `name`.

    Raises:
        ValueError: `name` is not a zoo model; the message lists the known ones.
    """
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}; the zoo has: {', '.join(list_models())}.")
    return _MODELS[name]


def get_model(name: str, preset: str | None = None, **kwargs) -> tf.keras.Model:
    """Build the zoo model `name` with the constructor's keyword arguments.

    Example:
        ```python
        model = zoo.get_model("DyResNet18", input_shape=(28, 28, 1), num_classes=10)
        model = zoo.get_model("DyResNet18", preset="small-input", num_classes=10,
                              input_shape=(28, 28, 1))   # stem, width from the preset
        ```

    Args:
        name: a zoo model name (`list_models()`).
        preset: a preset name (`zoo.PRESETS`, e.g. "small-input"): its `model_kwargs` for
            the model's family come first, `kwargs` override them.
        **kwargs: constructor arguments.

    Raises:
        ValueError: unknown `name` or `preset` (the known ones are listed), or a bad argument.
    """
    constructor = get_model_constructor(name)
    if preset is not None:
        from .presets import get_preset  # presets import this module

        kwargs = {**get_preset(preset, name).model_kwargs, **kwargs}
    return constructor(**kwargs)
