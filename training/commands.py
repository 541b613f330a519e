"""`larq-dysign train` and `larq-dysign evaluate`: the training recipe from the command line.

Example:
    ```
    larq-dysign train DyResNet18 --dataset fashion_mnist --epochs 3 --batch-size 64 --out runs/fm
    larq-dysign evaluate runs/fm                     # the saved model of the last step
    larq-dysign export runs/fm -o dyresnet18.tflite  # the same file, to LCE TFLite
    larq-dysign train ReActNetA --dataset imagenet2012 --manual-dir /data/imagenet \\
        --epochs 256 --batch-size 64 --strategy mirrored --teacher resnet34.h5 --out runs/ra
    ```
    Multi-worker: start the same `train` command on every worker with `--strategy
    multiworker` and that worker's `TF_CONFIG`; `--out` must be a directory all workers see.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from ..cli import CommandError, positive_int
from ..zoo.commands import (
    add_model_arguments,
    check_model_arguments,
    check_no_model_flags,
    model_arguments,
)
from ..zoo.presets import get_preset
from . import data, distribute


def _data_kwargs(args, dataset: str, *, train: bool) -> dict:
    kwargs = {}
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    for flag, value, allowed, key in (
        ("--manual-dir", args.manual_dir, "imagenet2012", "manual_dir"),
        ("--fashion-mnist-dir", args.fashion_mnist_dir, "fashion_mnist", "directory"),
    ):
        if value:
            if dataset != allowed:
                raise CommandError(
                    f"{flag} is only for --dataset {allowed}, got --dataset {dataset}.", status=2
                )
            kwargs[key] = value
    if train and args.train_examples:
        kwargs["train_examples"] = args.train_examples
    if train and args.augment is not None:
        if not data.takes_augment(dataset):
            flag = "--augment" if args.augment else "--no-augment"
            raise CommandError(f"{flag} is only for the small datasets.", status=2)
        kwargs["augment"] = args.augment
    if args.eval_examples:
        kwargs["eval_examples"] = args.eval_examples
    return kwargs


def _check_out_dir(out: str) -> None:
    """--out must be a directory this process can create and write in, checked before any
    data is loaded, without leaving anything behind (a temporary file in the nearest
    existing ancestor)."""
    existing = os.path.abspath(out)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(f"{existing} is not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise CommandError(
            f"--out {out!r} cannot be used as the output directory: {error}.", status=2
        ) from error


def _train(args) -> int:
    from . import recipe

    kwargs = model_arguments(args)
    _, constructor = recipe.resolve_model(args.model)
    check_model_arguments(args.model, kwargs, constructor=constructor)
    input_shape = kwargs.pop("input_shape", None)
    num_classes = kwargs.pop("num_classes", None)
    if args.epochs is None and args.preset is None:
        raise CommandError("--epochs is required without --preset.", status=2)
    if args.batch_size is None and args.preset is None:
        args.batch_size = 64
    _check_out_dir(args.out)
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = distribute.make_strategy(args.strategy, tpu=args.tpu)
    results = recipe.train(
        args.model,
        dataset=args.dataset,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        preset=args.preset,
        step=args.step,
        schedule=args.schedule,
        steps_per_epoch=args.steps_per_epoch,
        teacher=args.teacher,
        label_weight=args.label_weight,
        strategy=strategy,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        input_shape=input_shape,
        num_classes=num_classes,
        model_kwargs=kwargs,
        data_kwargs=_data_kwargs(args, args.dataset, train=True),
        init=args.init,
        trainable=args.trainable,
        validate=not args.no_validation,
        validation_steps=args.validation_steps,
        verbose=args.verbose,
        jit_compile=args.jit_compile,
        threshold_init=args.threshold_init,
        fresh=args.fresh,
    )
    for step, result in results.items():
        last = {key: values[-1] for key, values in result.history.items() if values}
        print(f"step {step}: {json.dumps(last, sort_keys=True)} -> {result.model_path}")
    last = results[max(results)]
    print(f"Export it: larq-dysign export {last.model_path} -o {_tflite_name(last)}")
    return 0


def _tflite_name(result) -> str:
    return os.path.splitext(os.path.basename(result.model_path))[0].lower() + ".tflite"


def _evaluate(args) -> int:
    from ..zoo import saved
    from . import recipe

    kwargs = model_arguments(args)
    is_saved = saved.looks_like_saved_model(args.model)
    if is_saved:
        check_no_model_flags(args)
    dataset = args.dataset
    if dataset is None:
        if not is_saved:
            raise CommandError("--dataset is required with a zoo model name.", status=2)
        dataset = saved.read_description(args.model).get("dataset")
        if dataset is None:
            raise CommandError(
                f"{args.model} records no dataset: pass --dataset {{{','.join(data.DATASETS)}}}.",
                status=2,
            )
    binary_weights = kwargs.pop("binary_weights", True)
    weights = kwargs.pop("weights", None)
    if not is_saved:
        _, constructor = recipe.resolve_model(args.model)
        check_model_arguments(args.model, kwargs, constructor=constructor)
    strategy = distribute.make_strategy(args.strategy, tpu=args.tpu)
    if args.preset is not None:
        kwargs = {**get_preset(args.preset, args.model).model_kwargs, **kwargs}
    results = recipe.evaluate(
        args.model,
        weights=weights,
        dataset=dataset,
        batch_size=args.batch_size or 64,
        step=2 if binary_weights else 1,
        strategy=strategy,
        input_shape=kwargs.pop("input_shape", None),
        num_classes=kwargs.pop("num_classes", None),
        model_kwargs=kwargs or None,
        data_kwargs=_data_kwargs(args, dataset, train=False),
        steps=args.steps,
        verbose=args.verbose,
    )
    print(json.dumps({key: float(value) for key, value in results.items()}, sort_keys=True))
    return 0


def _common_arguments(parser: argparse.ArgumentParser, *, dataset_required: bool) -> None:
    parser.add_argument(
        "--dataset",
        required=dataset_required,
        choices=sorted(data.DATASETS),
        help=None if dataset_required else "default: the one a saved model was trained on",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="per-replica batch size (default: the preset's, else 64)",
    )
    parser.add_argument(
        "--strategy", default="default", choices=distribute.STRATEGIES, help="tf.distribute"
    )
    parser.add_argument("--tpu", help="TPU name or grpc:// address (with --strategy tpu)")
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--manual-dir", help="directory of the ILSVRC2012 tar files")
    parser.add_argument("--fashion-mnist-dir", help="directory of the Fashion-MNIST IDX files")
    parser.add_argument(
        "--eval-examples", type=positive_int, help="use only the first N eval examples"
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="0 silent, 1 progress bar (default), 2 one line per epoch",
    )


def add_commands(subparsers) -> None:
    """Add `train` and `evaluate` to the `larq-dysign` command line."""
    train = subparsers.add_parser(
        "train",
        help="train a model with ReActNet's two-step recipe",
        description=(
            "Step 1: binary activations, real weights, weight decay 1e-5; step 2: binary "
            "weights initialized from step 1, no weight decay. Adam, learning rate decaying "
            "linearly to 0; optional distillation from a full-precision teacher. Checkpoints "
            "every epoch: the same command resumes an interrupted run (from the newest intact "
            "checkpoint); other settings on an existing --out are refused unless --fresh. Each "
            "step ends by saving the model as <out>/step<N>/<Model>_step<N>.keras with a .json "
            "describing it: `evaluate`, `export` and `publish-weights` take it as MODEL."
        ),
    )
    add_model_arguments(train, saved_models=False, weights=False, binary_weights=False)
    _common_arguments(train, dataset_required=True)
    train.add_argument(
        "--epochs", type=positive_int, help="epochs of each step (required without --preset)"
    )
    train.add_argument(
        "--steps-per-epoch", type=positive_int, help="default: one pass over the data"
    )
    train.add_argument("--step", choices=("1", "2", "both"), default="both")
    train.add_argument(
        "--schedule",
        choices=("two-step", "one-step"),  # recipe.SCHEDULES (imported lazily)
        default="two-step",
        help="two-step (ReActNet's recipe) or one-step: binary weights from random "
        "initialization in a single step, better at budgets of a few epochs",
    )
    train.add_argument(
        "--teacher",
        help="a saved full-precision Keras model (.h5/.keras/dir), or a tf.keras.applications "
        "model by name with ImageNet weights (resnet50; its own preprocessing is applied)",
    )
    train.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="weight of the label cross-entropy next to distillation (default 0)",
    )
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument(
        "--fresh",
        action="store_true",
        help="delete an earlier run's step directories in --out and start over",
    )
    train.add_argument(
        "--learning-rate",
        type=float,
        help="Adam's initial rate, not scaled with the batch (default: the preset's, else 5e-4)",
    )
    train.add_argument("--weight-decay", type=float, help="override the recipe's per step")
    train.add_argument(
        "--init",
        metavar="W",
        help="weights the first step starts from: imagenet (ReActNet's, after "
        "`larq-dysign import-reactnet`), a checkpoint or a saved model (default: none for "
        "step 1, step 1's in --out for --step 2)",
    )
    train.add_argument(
        "--trainable",
        choices=("all", "thresholds"),
        default="all",
        help="thresholds: train only DySign/DyPReLU (hyper functions and static parts), "
        "RSign/RPReLU and BatchNorm, e.g. first after --init imagenet",
    )
    train.add_argument(
        "--train-examples", type=positive_int, help="use only the first N train examples"
    )
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="pad-crop-flip the train images (cifar10, fashion_mnist; default: the preset's, "
        "else on)",
    )
    train.add_argument(
        "--validation-steps", type=positive_int, help="default: the whole eval split"
    )
    train.add_argument("--no-validation", action="store_true", help="skip per-epoch evaluation")
    train.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        help="compile the train step with XLA (about 2x faster for small-input ResNets on CPU; "
        "default: the preset's, else off)",
    )
    train.add_argument(
        "--threshold-init",
        choices=("zeros", "data"),
        help="sign thresholds of a model trained from scratch: zeros, or the mean of their "
        "inputs over 256 training images (default: the preset's, else zeros)",
    )
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="loss and accuracy on the eval split",
        description="Evaluate a saved model of `larq-dysign train` (MODEL: its .keras, .json "
        "or run directory), or a zoo model with --weights.",
    )
    add_model_arguments(evaluate)
    _common_arguments(evaluate, dataset_required=False)
    evaluate.add_argument("--steps", type=positive_int, help="batches to evaluate (default: all)")
    evaluate.set_defaults(func=_evaluate)
