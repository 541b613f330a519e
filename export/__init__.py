"""Export of zoo models to LCE-optimized TFLite, and proof of what the file runs.

Example:
    ```python
    from larq_dysign import zoo
    from larq_dysign.export import benchmark, inspect_tflite, to_tflite, verify
    model = zoo.DyResNet18(input_shape=(28, 28, 1), num_classes=10)
    flatbuffer = to_tflite(model, "dyresnet18.tflite")   # raises if a binary layer stays float
    print(inspect_tflite(flatbuffer, model=model))       # ops, weight bytes, coverage, warnings
    print(verify(model, flatbuffer, x_test[:64]))        # Keras vs LCE interpreter
    print(benchmark(flatbuffer, threads=2))              # host latency (not ARM speed)
    ```
"""

from ..files import write_atomically
from .converter import to_tflite
from .coverage import BinaryLayer, Coverage, binary_layers, check_coverage
from .flatbuffer import op_histogram
from .report import TensorInfo, TFLiteReport, inspect_tflite
from .runtime import Latency, Parity, benchmark, verify

__all__ = [
    "BinaryLayer",
    "Coverage",
    "Latency",
    "Parity",
    "TFLiteReport",
    "TensorInfo",
    "benchmark",
    "binary_layers",
    "check_coverage",
    "inspect_tflite",
    "op_histogram",
    "to_tflite",
    "verify",
    "write_atomically",
]
