"""`larq-dysign train` and `larq-dysign evaluate`: the training recipe from the command line.

Example:
    ```
    larq-dysign train DyResNet18 --dataset fashion_mnist --epochs 3 --batch-size 64 --out runs/fm
    larq-dysign train ReActNetA --dataset imagenet2012 --manual-dir /data/imagenet \\
        --epochs 256 --batch-size 64 --strategy mirrored --teacher resnet34.h5 --out runs/ra
    larq-dysign evaluate DyResNet18 --weights runs/fm/step2/DyResNet18_step2.h5 \\
        --dataset fashion_mnist
    ```
    Multi-worker: start the same `train` command on every worker with `--strategy
    multiworker` and that worker's `TF_CONFIG`; `--out` must be a directory all workers see.
"""

from __future__ import annotations

import argparse
import json

from ..cli import parse_input_shape
from . import data, distribute


def _model_kwargs(args) -> dict:
    kwargs = {"stem": args.stem} if args.stem else {}
    if args.width_multiplier is not None:
        kwargs["width_multiplier"] = args.width_multiplier
    return kwargs


def _data_kwargs(args, *, train: bool) -> dict:
    kwargs = {}
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    if args.manual_dir:
        if args.dataset != "imagenet2012":
            raise SystemExit("--manual-dir is only for --dataset imagenet2012")
        kwargs["manual_dir"] = args.manual_dir
    if args.fashion_mnist_dir:
        if args.dataset != "fashion_mnist":
            raise SystemExit("--fashion-mnist-dir is only for --dataset fashion_mnist")
        kwargs["directory"] = args.fashion_mnist_dir
    if train and args.train_examples:
        kwargs["train_examples"] = args.train_examples
    if train and args.no_augment:
        if args.dataset == "imagenet2012":
            raise SystemExit("--no-augment is only for the small datasets")
        kwargs["augment"] = False
    if args.eval_examples:
        kwargs["eval_examples"] = args.eval_examples
    return kwargs


def _train(args) -> int:
    from . import recipe as training  # TensorFlow is imported only when a command runs

    # MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = distribute.make_strategy(args.strategy, tpu=args.tpu)
    results = training.train(
        args.model,
        dataset=args.dataset,
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        step=args.step,
        steps_per_epoch=args.steps_per_epoch,
        teacher=args.teacher,
        label_weight=args.label_weight,
        strategy=strategy,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        input_shape=args.input_shape,
        num_classes=args.num_classes,
        model_kwargs=_model_kwargs(args),
        data_kwargs=_data_kwargs(args, train=True),
        init_weights=args.init_weights,
        validate=not args.no_validation,
        validation_steps=args.validation_steps,
        verbose=args.verbose,
        jit_compile=args.jit_compile,
    )
    for step, result in results.items():
        last = {key: values[-1] for key, values in result.history.items() if values}
        print(f"step {step}: {json.dumps(last, sort_keys=True)} -> {result.weights_path}")
    return 0


def _evaluate(args) -> int:
    from . import recipe as training

    strategy = distribute.make_strategy(args.strategy, tpu=args.tpu)
    results = training.evaluate(
        args.model,
        weights=args.weights,
        dataset=args.dataset,
        batch_size=args.batch_size,
        step=int(args.step),
        strategy=strategy,
        input_shape=args.input_shape,
        num_classes=args.num_classes,
        model_kwargs=_model_kwargs(args),
        data_kwargs=_data_kwargs(args, train=False),
        steps=args.steps,
        verbose=args.verbose,
    )
    print(json.dumps({key: float(value) for key, value in results.items()}, sort_keys=True))
    return 0


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help='a zoo model (see `larq-dysign models`) or "module:function"'
    )
    parser.add_argument("--dataset", required=True, choices=sorted(data.DATASETS))
    parser.add_argument(
        "--batch-size", type=int, default=64, help="per-replica batch size (default 64)"
    )
    parser.add_argument(
        "--strategy", default="default", choices=distribute.STRATEGIES, help="tf.distribute"
    )
    parser.add_argument("--tpu", help="TPU name or grpc:// address (with --strategy tpu)")
    parser.add_argument(
        "--input-shape",
        type=parse_input_shape,
        help="H,W,C of the model input (default: the dataset's)",
    )
    parser.add_argument("--num-classes", type=int, help="default: the dataset's")
    parser.add_argument(
        "--stem",
        choices=("auto", "imagenet", "small"),
        help='zoo stem (default "auto": small below 112 px)',
    )
    parser.add_argument(
        "--width-multiplier", type=float, help="scale every width of a zoo model (default 1.0)"
    )
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--manual-dir", help="directory of the ILSVRC2012 tar files")
    parser.add_argument("--fashion-mnist-dir", help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--eval-examples", type=int, help="use only the first N eval examples")
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
            "every epoch: the same command resumes an interrupted run."
        ),
    )
    _common_arguments(train)
    train.add_argument("--epochs", type=int, required=True, help="epochs of each step")
    train.add_argument("--steps-per-epoch", type=int, help="default: one pass over the data")
    train.add_argument("--step", choices=("1", "2", "both"), default="both")
    train.add_argument("--teacher", help="a saved full-precision Keras model (.h5/.keras/dir)")
    train.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="weight of the label cross-entropy next to distillation (default 0)",
    )
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument(
        "--learning-rate",
        type=float,
        default=5e-4,
        help="Adam's initial rate, not scaled with the batch (default 5e-4)",
    )
    train.add_argument("--weight-decay", type=float, help="override the recipe's per step")
    train.add_argument("--init-weights", help="step-1 weights for --step 2")
    train.add_argument("--train-examples", type=int, help="use only the first N train examples")
    train.add_argument(
        "--no-augment", action="store_true", help="no pad-crop-flip (cifar10, fashion_mnist)"
    )
    train.add_argument("--validation-steps", type=int, help="default: the whole eval split")
    train.add_argument("--no-validation", action="store_true", help="skip per-epoch evaluation")
    train.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile the train step with XLA (about 2x faster for small-input ResNets on CPU)",
    )
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="loss and accuracy on the eval split")
    _common_arguments(evaluate)
    evaluate.add_argument("--weights", required=True, help="weights written by `train`")
    evaluate.add_argument(
        "--step", choices=("1", "2"), default="2", help="2: binary weights (default)"
    )
    evaluate.add_argument("--steps", type=int, help="batches to evaluate (default: all)")
    evaluate.set_defaults(func=_evaluate)
