"""onnxgrow: grow trained ONNX models (wider, deeper) without changing what they compute."""
from __future__ import annotations

from .errors import OnnxGrowError, VerificationFailed
from .io import load, save
from .verify import Report, verify

__all__ = ["OnnxGrowError", "VerificationFailed", "Report", "load", "save", "verify"]
__version__ = "0.1.0"
