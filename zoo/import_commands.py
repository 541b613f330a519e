"""`larq-dysign import-reactnet`: ReActNet's PyTorch checkpoints as the zoo's ImageNet weights.

Example:
    larq-dysign import-reactnet resnet18_step2.pth.tar --model ReActNet18
    larq-dysign import-reactnet mobilenet_step2.pth.tar --model ReActNetA

Errors are one line on stderr (`larq_dysign.cli`): exit status 2 for a bad argument (an
unknown `--model`, a missing file, a file that is not a PyTorch checkpoint or does not fit
the network), 1 for a failure while writing.
"""

from __future__ import annotations

from .reactnet_import import DY_COUNTERPARTS, OFFICIAL_REPOSITORY


def _import_reactnet(args) -> int:
    from . import weights as weights_module
    from .reactnet_import import import_reactnet

    published = import_reactnet(args.checkpoint, model=args.model, cache_dir=args.cache_dir)
    names = " and ".join(item.entry.model for item in published)
    print(
        f'{names} now load these weights with weights="imagenet" (padding="pytorch" chosen '
        f'by itself), e.g. zoo.{DY_COUNTERPARTS[args.model]}(weights="imagenet").'
    )
    if args.cache_dir is not None:
        print(
            f"(written to {args.cache_dir}: set {weights_module.CACHE_DIR_ENV} to it, or copy "
            'the files into the cache, for weights="imagenet" to find them)'
        )
    return 0


def add_commands(subparsers) -> None:
    """Add `import-reactnet` to the `larq-dysign` command line."""
    parser = subparsers.add_parser(
        "import-reactnet",
        help="convert ReActNet's official PyTorch checkpoint into the zoo's ImageNet weights",
        description=(
            "Read an official ReActNet checkpoint (.pth.tar, linked in the README of "
            f"{OFFICIAL_REPOSITORY}) without torch, map every tensor onto the zoo's model and "
            "its Dy counterpart (ReActNet18 -> also DyResNet18, ReActNetA -> also "
            "DyMobileNet, hyper functions at their initial values), and write both as the "
            'registry\'s "imagenet" files into the weights cache; print their sha256.'
        ),
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the official .pth.tar file")
    parser.add_argument(
        "--model",
        default="ReActNet18",
        choices=tuple(DY_COUNTERPARTS),
        help="which network the checkpoint holds (default ReActNet18)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where to write (default: the weights cache, $LARQ_DYSIGN_CACHE_DIR or "
        "~/.keras/larq_dysign)",
    )
    parser.set_defaults(func=_import_reactnet)
