"""The zoo on the command line: `larq-dysign models`, `publish-weights`, and the one
model-argument parser every command that builds a model shares (train, evaluate, export,
publish-weights).

A MODEL argument is a zoo name (`larq-dysign models`), "module:function", or a saved model
written by `larq-dysign train` (a `.keras` file, its `.json`, or the run directory), which is
built as it was saved and takes no other model flag.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import tempfile

from ..cli import CommandError, parse_input_shape, positive_int
from . import common, saved
from . import weights as weights_module
from .presets import PRESETS
from .registry import get_model, get_model_constructor, list_models, model_family

#: flag -> constructor argument, for the flags `add_model_arguments` adds.
MODEL_FLAGS = {
    "--input-shape": "input_shape",
    "--num-classes": "num_classes",
    "--stem": "stem",
    "--width-multiplier": "width_multiplier",
    "--binary-weights": "binary_weights",
    "--no-dysign": "dysign",
    "--no-dyprelu": "dyprelu",
    "--dysign-option": "dysign_options",
    "--dyprelu-option": "dyprelu_options",
    "--variant": "variant",
    "--num-layers": "num_layers",
    "--mlp-activation": "mlp_activation",
    "--weights": "weights",
}


def _option(text: str) -> tuple[str, object]:
    """ "hidden_units=4" -> ("hidden_units", 4); values are Python literals, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. hidden_units=4), got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    saved_models: bool = True,
    weights: bool = True,
    binary_weights: bool = True,
) -> None:
    """Add MODEL and the model-building flags (the same names in every command).

    Args:
        parser: a sub-command's parser.
        saved_models: MODEL may be a saved model (evaluate, export, publish-weights).
        weights: add `--weights`.
        binary_weights: add `--binary-weights / --no-binary-weights` (`train` sets binary
            weights per recipe step).
    """
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=f"a zoo model ({', '.join(list_models())}), 'module:function'"
        + (
            ", or a saved model of `train` (.keras, its .json, or the run directory)"
            if saved_models
            else ""
        ),
    )
    group = parser.add_argument_group("model (for a zoo model; a saved model is built as saved)")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named configuration (zoo.PRESETS): its model arguments under the flags below"
        + ("; its epochs, batch size, learning rate and XLA unless given" if not weights else ""),
    )
    group.add_argument(
        "--input-shape", metavar="H,W,C", type=parse_input_shape, help="default 224,224,3"
    )
    group.add_argument("--num-classes", metavar="N", type=positive_int, help="default 1000")
    group.add_argument("--stem", choices=common.STEMS, help='default "auto": small below 112 px')
    group.add_argument(
        "--width-multiplier", metavar="X", type=float, help="scale every width (default 1.0)"
    )
    if binary_weights:
        group.add_argument(
            "--binary-weights",
            action=argparse.BooleanOptionalAction,
            help="binary (default) or real weights (--no-binary-weights: a step-1 model)",
        )
    group.add_argument(
        "--no-dysign", dest="dysign", action="store_false", default=None,
        help="Dy models: keep RSign (ablation)",
    )  # fmt: skip
    group.add_argument(
        "--no-dyprelu", dest="dyprelu", action="store_false", default=None,
        help="Dy models: keep RPReLU (ablation)",
    )  # fmt: skip
    for layer in ("dysign", "dyprelu"):
        group.add_argument(
            f"--{layer}-option",
            dest=f"{layer}_options",
            metavar="KEY=VALUE",
            type=_option,
            action="append",
            help=f"an option of every {'DySign' if layer == 'dysign' else 'DyPReLU'}, "
            "e.g. hidden_units=4 (repeatable)",
        )
    group.add_argument("--variant", help='CCT models: "14/7x2", "7/3x1", ...')
    group.add_argument("--num-layers", metavar="N", type=positive_int, help="CCT encoder layers")
    group.add_argument("--mlp-activation", choices=("prelu", "gelu"), help="CCT models")
    if weights:
        group.add_argument(
            "--weights",
            metavar="W",
            help="weights to load: a registered dataset (imagenet), .h5, .weights.h5, .keras "
            "or a TF checkpoint prefix",
        )


def model_arguments(args: argparse.Namespace) -> dict:
    """The constructor keyword arguments the model flags set (only those given)."""
    kwargs = {}
    for name in MODEL_FLAGS.values():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("dysign_options", "dyprelu_options"):
            value = dict(value)
        kwargs[name] = value
    return kwargs


def _flag(name: str) -> str:
    if name in ("dysign", "dyprelu"):
        return f"--no-{name}"
    if name == "preset":
        return "--preset"
    return next(flag for flag, argument in MODEL_FLAGS.items() if argument == name)


def check_model_arguments(model: str, kwargs: dict, *, constructor=None) -> None:
    """Raise a bad-argument `CommandError` for a flag the model's constructor does not take."""
    if constructor is None:
        constructor = get_model_constructor(model)
    parameters = inspect.signature(constructor).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    for name in kwargs:
        if name not in parameters:
            raise CommandError(
                f"{_flag(name)} does not apply to {model}, which takes: "
                f"{', '.join(p for p in parameters if p not in ('input_tensor',))}.",
                status=2,
            )


def is_saved_model(args: argparse.Namespace) -> bool:
    return saved.looks_like_saved_model(args.model)


def check_no_model_flags(args: argparse.Namespace) -> None:
    """A saved model is built as saved: refuse (status 2) any model flag given with it."""
    kwargs = model_arguments(args)
    if getattr(args, "preset", None):
        kwargs["preset"] = args.preset
    if kwargs:
        flags = ", ".join(_flag(name) for name in kwargs)
        raise CommandError(
            f"{flags}: a saved model ({args.model}) is built as it was saved; give no model "
            "flag with it.",
            status=2,
        )


def load_model(args: argparse.Namespace):
    """The model MODEL and the flags describe, and its saved description (or None).

    A saved model is loaded as saved (no model flag may be given); a zoo name is built with
    the flags (and `--weights`). Raises `CommandError` (status 2) for a flag that does not
    apply; the zoo's own `ValueError`s for bad values.
    """
    kwargs = model_arguments(args)
    if is_saved_model(args):
        check_no_model_flags(args)
        return saved.load_saved_model(args.model)
    check_model_arguments(args.model, kwargs)
    return get_model(args.model, preset=getattr(args, "preset", None), **kwargs), None


# ---------------------------------------------------------------------------- commands


def _models(args) -> int:
    for name in list_models():
        print(f"{name:<14} {model_family(name)}")
    return 0


def _publish_weights(args) -> int:
    """Build MODEL (or load the saved model), write the registry file(s), print each file's
    sha256 and registry entry."""
    if is_saved_model(args):
        if args.checkpoint is not None:
            raise CommandError(
                f"CHECKPOINT: a saved model ({args.model}) carries its weights; got "
                f"{args.checkpoint!r} too.",
                status=2,
            )
        model, description = load_model(args)
        model_name, arguments = description["model"], dict(description["arguments"])
        get_model_constructor(model_name)  # publishing is for zoo models
    else:
        if args.checkpoint is None:
            raise CommandError(
                "CHECKPOINT is required with a zoo model name (or pass a saved model).",
                status=2,
            )
        model_name = args.model
        arguments = model_arguments(args)
        check_model_arguments(model_name, arguments)
        num_classes = arguments.get("num_classes") or weights_module.dataset_num_classes(
            args.dataset
        )
        if num_classes is None:
            raise CommandError(
                f"--dataset {args.dataset!r} is not registered; give its class count with "
                "--num-classes.",
                status=2,
            )
        arguments["num_classes"] = num_classes
        model = get_model_constructor(model_name)(**arguments, weights=args.checkpoint)
    published = [
        weights_module.publish_weights(
            model,
            args.output_dir,
            dataset=args.dataset,
            model_name=model_name,
            url_base=args.url_base,
        )
    ]
    if args.notop:
        arguments = {k: v for k, v in arguments.items() if k not in ("num_classes", "include_top")}
        with tempfile.TemporaryDirectory(prefix="larq_dysign_publish_") as directory:
            full = os.path.join(directory, "full.h5")
            model.save_weights(full, save_format="h5")
            notop = get_model_constructor(model_name)(**arguments, include_top=False, weights=full)
        published.append(
            weights_module.publish_weights(
                notop,
                args.output_dir,
                dataset=args.dataset,
                include_top=False,
                model_name=model_name,
                url_base=args.url_base,
            )
        )
    for item in published:
        print(f"wrote {item.path}")
        print(f"  file: {item.entry.file_name}")
        print(f"  sha256: {item.entry.sha256}")
        print(
            "  registry entry (upload the file, then add to PUBLISHED_WEIGHTS in zoo/weights.py):"
        )
        print(f"    {item.entry!r},")
        print(f"  or at run time: {item.entry.as_code()}")
    print(
        f'Without a registry entry, weights="{args.dataset}" also loads these files from '
        f"${weights_module.MIRROR_DIR_ENV} or the cache ({weights_module.default_cache_dir()})."
    )
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the zoo's models")
    parser.set_defaults(func=_models)

    parser = subparsers.add_parser(
        "publish-weights",
        help="write a trained model's weights as a registry file and print its sha256",
        description=(
            "Load MODEL (a saved model of `larq-dysign train`), or build the zoo model MODEL "
            "with the model flags and load CHECKPOINT into it (.h5, .weights.h5, .keras or a "
            "TF checkpoint prefix, checked layer by layer); write "
            "<model>_<dataset>_weights.h5 (and with --notop <model>_<dataset>_weights_notop.h5) "
            "into the output directory; print each file's sha256 and the registry entry to add."
        ),
    )
    add_model_arguments(parser, weights=False)
    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", nargs="?", help="the trained weights (zoo MODEL)"
    )
    parser.add_argument("--dataset", required=True, help='dataset name, e.g. "imagenet"')
    parser.add_argument("-o", "--output-dir", required=True, help="where to write the files")
    parser.add_argument("--notop", action="store_true", help="also write the no-top file")
    parser.add_argument(
        "--url-base", default="", help="where the files will be uploaded (for the entries' URL)"
    )
    parser.set_defaults(func=_publish_weights)
