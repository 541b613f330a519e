"""`larq-dysign models`: list the zoo. `larq-dysign publish-weights`: write registry files."""

from __future__ import annotations

import sys

from ..cli import parse_input_shape
from . import weights as weights_module
from .registry import get_model_constructor, list_models, model_family


def _models(args) -> int:
    for name in list_models():
        print(f"{name:<14} {model_family(name)}")
    return 0


def _publish_weights(args) -> int:
    """Build MODEL, load the trained CHECKPOINT (checked layer by layer), write the registry
    file(s) and print each file's sha256 and registry entry."""
    num_classes = args.num_classes or weights_module.dataset_num_classes(args.dataset)
    if num_classes is None:
        print(
            f"larq-dysign publish-weights: error: dataset {args.dataset!r} is not registered; "
            "give its class count with --num-classes.",
            file=sys.stderr,
        )
        return 2
    constructor = get_model_constructor(args.model)
    model = constructor(
        input_shape=args.input_shape, num_classes=num_classes, weights=args.checkpoint
    )
    published = [
        weights_module.publish_weights(
            model,
            args.output_dir,
            dataset=args.dataset,
            model_name=args.model,
            url_base=args.url_base,
        )
    ]
    if args.notop:
        notop = constructor(
            input_shape=args.input_shape, include_top=False, weights=args.checkpoint
        )
        published.append(
            weights_module.publish_weights(
                notop,
                args.output_dir,
                dataset=args.dataset,
                include_top=False,
                model_name=args.model,
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
            "Build MODEL, load CHECKPOINT into it (an HDF5 weights file or a TF checkpoint, "
            "checked layer by layer), and write <model>_<dataset>_weights.h5 (and with --notop "
            "<model>_<dataset>_weights_notop.h5) into the output directory; print each file's "
            "sha256 and the registry entry to add."
        ),
    )
    parser.add_argument("model", metavar="MODEL", choices=list_models(), help="a zoo model")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the trained weights")
    parser.add_argument("--dataset", required=True, help='dataset name, e.g. "imagenet"')
    parser.add_argument("-o", "--output-dir", required=True, help="where to write the files")
    parser.add_argument(
        "--num-classes", type=int, default=None, help="default: the registered dataset's"
    )
    parser.add_argument(
        "--input-shape",
        type=parse_input_shape,
        default=(224, 224, 3),
        help="HEIGHT,WIDTH,CHANNELS the model was trained at (default 224,224,3)",
    )
    parser.add_argument("--notop", action="store_true", help="also write the no-top file")
    parser.add_argument(
        "--url-base", default="", help="where the files will be uploaded (for the entries' URL)"
    )
    parser.set_defaults(func=_publish_weights)
