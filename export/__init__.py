"""Export of zoo models to LCE-optimized TFLite, and proof of what the file runs."""

from larq_dysign.export.flatbuffer import op_histogram

__all__ = ["op_histogram"]
