"""`larq-dysign models`: list the zoo."""

from __future__ import annotations

from larq_dysign.zoo.registry import list_models, model_family


def _models(args) -> int:
    for name in list_models():
        print(f"{name:<14} {model_family(name)}")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the zoo's models")
    parser.set_defaults(func=_models)
