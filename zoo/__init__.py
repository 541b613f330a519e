"""The larq-dysign model zoo: DyBCNN and DyBinaryCCT with their static-threshold baselines.

Example:
    ```python
    from larq_dysign import zoo
    zoo.list_models()
    model = zoo.DyResNet18(input_shape=(28, 28, 1), num_classes=10)
    model = zoo.get_model("ReActNetA", num_classes=10, input_shape=(32, 32, 3))
    model = zoo.get_model("ReActNet18", preset="small-input", input_shape=(28, 28, 1),
                          num_classes=10)
    ```
"""

from .cct import BinaryCCT, DyBinaryCCT
from .imagenet import decode_predictions, normalize, preprocess_input
from .mobilenet import DyMobileNet, ReActNetA
from .presets import PRESETS, Preset, get_preset
from .reactnet_import import import_reactnet
from .registry import get_model, get_model_constructor, list_models
from .resnet import DyResNet18, ReActNet18
from .saved import load_saved_model, read_description, save_model
from .weights import get_weights_file, publish_weights, register_weights

__all__ = [
    "BinaryCCT",
    "DyBinaryCCT",
    "DyMobileNet",
    "DyResNet18",
    "PRESETS",
    "Preset",
    "ReActNet18",
    "ReActNetA",
    "decode_predictions",
    "get_model",
    "get_model_constructor",
    "get_preset",
    "get_weights_file",
    "import_reactnet",
    "list_models",
    "load_saved_model",
    "normalize",
    "preprocess_input",
    "publish_weights",
    "read_description",
    "register_weights",
    "save_model",
]
