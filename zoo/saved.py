"""Self-describing saved models: the whole model as `.keras`, and beside it how it was built.

`save_model` writes `<name>.keras` (tf-keras' format: `tf.keras.models.load_model(path)`
reads it with no `custom_objects`, because `import larq_dysign` registers every layer) and
`<name>.json`, which records the zoo name, **every** constructor argument (defaults
included), the input shape and class count, and whatever the writer adds (the training
recipe adds the dataset, the recipe step and its settings). Every consumer (`evaluate`,
`export`, `publish-weights`, the benchmarks) takes such a file, its JSON, or a training run
directory, and needs no other flag.

Example:
    ```python
    model, description = zoo.load_saved_model("runs/fm")  # the last step of a training run
    description["model"], description["arguments"]["width_multiplier"]
    ```
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable

import tensorflow as tf

from ..files import atomic_path, write_json
from .registry import get_model_constructor

FORMAT = "larq-dysign saved model"
VERSION = 1
SUFFIX = ".keras"
#: Constructor arguments that describe no property of the model (how it was built from what).
_NOT_RECORDED = ("input_tensor", "weights")
_STEP_DIRECTORY = re.compile(r"step(\d+)$")


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def constructor_arguments(model: str | Callable, **kwargs) -> dict:
    """Every argument of a model constructor (a zoo name, or the function itself) for these
    keyword arguments: the given ones and the defaults, except `input_tensor` and `weights`.

    Example:
        ```python
        constructor_arguments("ReActNet18", num_classes=10)["stem"]   # "auto"
        ```

    Raises:
        ValueError: an unknown model, or an argument the constructor does not take (the
            message lists the ones it takes).
    """
    constructor = get_model_constructor(model) if isinstance(model, str) else model
    signature = inspect.signature(constructor)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown and not takes_any:
        name = model if isinstance(model, str) else getattr(model, "__name__", repr(model))
        raise ValueError(
            f"{name} does not take {', '.join(unknown)}; its arguments are: "
            f"{', '.join(signature.parameters)}."
        )
    bound = signature.bind_partial(**kwargs)
    bound.apply_defaults()
    return {
        name: _jsonable(value)
        for name, value in bound.arguments.items()
        if name not in _NOT_RECORDED
    }


def description_path(model_path: str | os.PathLike) -> str:
    """The JSON beside a saved `.keras` file: `m.keras` -> `m.json`."""
    return os.path.splitext(os.fspath(model_path))[0] + ".json"


def save_model(
    model: tf.keras.Model,
    path: str | os.PathLike,
    *,
    model_name: str,
    arguments: dict,
    constructor: Callable | None = None,
    **details,
) -> str:
    """Save `model` whole as `path` (`.keras`) and its description as the JSON beside it.

    Both files are written atomically (`larq_dysign.files`), the model first: a JSON never
    describes a model that is not there.

    Args:
        model: the model (its optimizer is not saved).
        path: the `.keras` file to write.
        model_name: its zoo name (or "module:function").
        arguments: the constructor's keyword arguments (completed by
            `constructor_arguments`).
        constructor: the constructor, when `model_name` is not a zoo name.
        **details: more JSON-serializable facts to record (dataset, recipe, ...).

    Returns:
        The JSON's path.

    Raises:
        ValueError: `path` does not end with ".keras", an unknown model or argument.
    """
    path = os.fspath(path)
    if not path.endswith(SUFFIX):
        raise ValueError(f"Expected path to end with {SUFFIX!r}, but got {path!r}.")
    description = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "arguments": constructor_arguments(constructor or model_name, **arguments),
        "input_shape": [int(d) for d in model.input_shape[1:]],
        "num_classes": int(model.output_shape[-1]),
        "parameters": int(model.count_params()),
        **_jsonable(details),
    }
    # a clone without optimizer, compiled losses or metrics: the .keras format saves a
    # compiled model's optimizer state (3x the weights with Adam) and has no switch for it
    inference = tf.keras.models.clone_model(model)
    inference.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        inference.save(tmp)
    json_path = description_path(path)
    write_json(json_path, description)
    return json_path


def _saved_models_in(directory: str) -> list[str]:
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.endswith(SUFFIX)
        and not name.startswith(".")
        and os.path.isfile(description_path(os.path.join(directory, name)))
    )


def find_saved_model(path: str | os.PathLike) -> str:
    """The `.keras` file that `path` designates.

    Accepts a saved `.keras` file, its `.json`, a directory holding one saved model (a
    training step's directory, `runs/fm/step2`), or a training run directory (its last
    step with a saved model).

    Raises:
        FileNotFoundError: naming the path and what was looked for.
        ValueError: a directory with several saved models (they are listed).
    """
    path = os.path.expanduser(os.fspath(path))
    if path.endswith(".json") and os.path.isfile(path):
        path = os.path.splitext(path)[0] + SUFFIX
    if os.path.isfile(path):
        if not path.endswith(SUFFIX):
            raise ValueError(
                f"Expected a saved model ({SUFFIX} file, its .json, or a training run "
                f"directory), but {path!r} is a {os.path.splitext(path)[1] or 'suffix-less'} "
                "file."
            )
        if not os.path.isfile(description_path(path)):
            raise FileNotFoundError(
                f"{path} has no description {os.path.basename(description_path(path))} beside "
                "it (written with the model by `larq-dysign train`); without it, build the "
                "model from the zoo and pass the file as --weights."
            )
        return path
    if os.path.isdir(path):
        steps = sorted(
            (int(m.group(1)), name)
            for name in os.listdir(path)
            if (m := _STEP_DIRECTORY.fullmatch(name)) and os.path.isdir(os.path.join(path, name))
        )
        for _, name in reversed(steps):
            found = _saved_models_in(os.path.join(path, name))
            if found:
                path = os.path.join(path, name)
                break
        found = _saved_models_in(path)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(
                f"{path} holds several saved models ({', '.join(map(os.path.basename, found))}): "
                "pass one of them."
            )
        raise FileNotFoundError(
            f"No saved model in {path}: expected a {SUFFIX} file with its .json (written at "
            "the end of each training step), or step<N>/ directories holding one."
        )
    raise FileNotFoundError(f"{path}: no such file or directory.")


def read_description(path: str | os.PathLike) -> dict:
    """The description of the saved model `path` designates (see `find_saved_model`).

    Raises:
        FileNotFoundError, ValueError: see `find_saved_model`; a JSON that is not a
            description.
    """
    json_path = description_path(find_saved_model(path))
    try:
        with open(json_path) as f:
            description = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path} is not valid JSON ({error}).") from error
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not a larq-dysign model description.")
    return description


def load_saved_model(path: str | os.PathLike) -> tuple[tf.keras.Model, dict]:
    """The model and description that `path` designates (see `find_saved_model`).

    The model is loaded by `tf.keras.models.load_model` (not compiled).

    Example:
        ```python
        model, description = zoo.load_saved_model("runs/fm/step2/DyResNet18_step2.keras")
        ```

    Raises:
        FileNotFoundError, ValueError: see `find_saved_model`; a model file that cannot be
            read.
    """
    model_path = find_saved_model(path)
    description = read_description(model_path)
    try:
        model = tf.keras.models.load_model(model_path, compile=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{model_path} cannot be loaded as a Keras model: {error}") from error
    return model, description


def looks_like_saved_model(text: str) -> bool:
    """Whether a command-line MODEL argument names a saved model rather than a zoo name."""
    return text.endswith((SUFFIX, ".json")) or os.path.isdir(text) or os.sep in text
